// The dashboard page in Debian's chromium, driven by playwright-core.
//
//   node dashboard.test.mjs http://127.0.0.1:PORT/ [full|auth|readonly]
//
// test_dashboard.py starts the daemon and the servers, runs this script, and
// does what it asks for: a line "STEP name" on stdout is answered with a line
// "DONE words" on stdin once done. Screenshots go to $UCGW_ARTIFACTS.
// Plain node (18 or later), no test framework: "ok"/"not ok" lines, exit 1 on
// the first failure (with a screenshot of the page as it was).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { chromium } from 'playwright-core';

const url = process.argv[2];
const mode = process.argv[3] || 'full'; // full | auth | readonly
if (!url) {
  console.error('usage: node dashboard.test.mjs URL [full|auth|readonly]');
  process.exit(2);
}
const origin = new URL(url).origin;
const artifacts = process.env.UCGW_ARTIFACTS || '.';
const executablePath = process.env.UCGW_CHROMIUM || '/usr/bin/chromium';
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };

const input = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
let n = 0;

function ok(what) {
  console.log(`ok ${++n} - ${what}`);
}

function check(cond, what) {
  if (!cond) throw new Error(what);
  ok(what);
}

async function step(name) {
  console.log(`STEP ${name}`);
  const { value, done } = await input.next();
  if (done || !value.startsWith('DONE')) throw new Error(`step ${name}: no answer from the driver`);
  ok(`step ${name}: ${value.slice(5)}`);
}

async function shot(page, name, fullPage = true) {
  const file = path.join(artifacts, `dashboard-${name}.png`);
  await page.screenshot({ path: file, fullPage });
  console.log(`# screenshot ${file}`);
}

// Wait until fn(arg) is true in the page; the message says what did not happen.
async function until(page, what, fn, arg, timeout = 15000) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 100 });
  } catch (e) {
    throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
  }
  ok(what);
}

const text = (page, sel) => page.locator(sel).first().innerText();
const card = (name) => `.card[data-protocol="${name}"]`;
const worker = (name) => `#workers tr[data-worker="${name}"]`;

// security.require_auth on, actions allowed: the key field, a refusal without
// the key, the action with it.
async function authFlow(page) {
  await page.goto(url, { waitUntil: 'load' });
  await until(page, 'live data arrives', () => document.body.dataset.updated);
  check(await page.locator('#api-key').isVisible(), 'the API key field is shown when the gateway requires auth');
  await page.locator(card('testworker') + ' button[data-action="pause"]').click();
  await until(page, 'without the key the button is refused, in words',
    () => /unauthorized: missing credentials/.test(document.getElementById('action-result').textContent));
  check((await page.locator(card('testworker')).getAttribute('data-status')) === 'up', 'and nothing happened');
  check((await page.locator('#action-result').getAttribute('data-code')) === '401' &&
    (await page.locator('#api-key').getAttribute('aria-invalid')) === 'true',
    'the page acts on the code 401: the key field is marked');
  await page.locator('#api-key').fill(process.env.UCGW_TEST_KEY);
  await page.locator(card('testworker') + ' button[data-action="pause"]').click();
  await until(page, 'with the key: PAUSED',
    (sel) => document.querySelector(sel + ' .status').textContent.includes('PAUSED'), card('testworker'));
  check((await page.locator('#api-key').getAttribute('aria-invalid')) === 'false', 'and the key field no longer marked');
  await shot(page, 'auth', false);
}

// The default: read-only, no button anywhere.
async function readOnlyFlow(page) {
  await page.goto(url, { waitUntil: 'load' });
  await until(page, 'live data arrives', () => document.body.dataset.updated);
  check((await page.locator('button:visible').count()) === 0, 'no button is shown on a read-only dashboard');
  check(!(await page.locator('#actions-panel').isVisible()), 'no actions panel');
  await shot(page, 'readonly', false);
}

async function fullFlow(page) {
  // ---- it loads, from the gateway alone, with its policy ----
  const resp = await page.goto(url, { waitUntil: 'load' });
  check(resp.status() === 200, 'the page loads (200)');
  const csp = (await resp.allHeaders())['content-security-policy'] || '';
  check(csp.includes("default-src 'self'"), `Content-Security-Policy: ${csp}`);
  await until(page, 'live data arrives over /api/events', () => document.body.dataset.updated);
  await until(page, 'mqtt, rest and websocket cards show UP',
    () => ['mqtt', 'rest', 'websocket'].every((p) => {
      const c = document.querySelector(`.card[data-protocol="${p}"]`);
      return c && c.dataset.status === 'up' && c.querySelector('.status').textContent.includes('UP');
    }), null, 20000);
  await until(page, 'the overall status says HEALTHY', () => document.getElementById('overall').textContent.includes('HEALTHY'));
  check((await page.locator('#workers tbody tr').count()) === 3, 'three workers listed');
  check((await text(page, worker('mqtt') + ' .c-state')).includes('READY'), 'the mqtt worker is READY');
  await until(page, 'a round-trip time for each server',
    () => [...document.querySelectorAll('#network tbody tr')].every((tr) => tr.querySelector('.c-rtt').textContent !== '–'));
  check((await text(page, '#device')) === 'gate-2-cam', 'the device id in the header');
  check((await page.locator('#errors-none').isVisible()), '"No errors" before anything failed');

  // ---- a burst of sends moves the counters and the charts ----
  const before = await page.evaluate(() => Object.fromEntries(['mqtt', 'rest', 'websocket'].map((p) => {
    const c = document.querySelector(`.card[data-protocol="${p}"]`);
    return [p, { total: +c.querySelector('.f-total').dataset.value, chart: +c.querySelector('svg').dataset.delivered }];
  })));
  await step('burst');
  const want = { mqtt: 400, rest: 200, websocket: 300 };
  await until(page, 'the counters move by what was sent (400 mqtt, 200 rest, 300 websocket)',
    ([b, w]) => Object.keys(w).every((p) =>
      +document.querySelector(`.card[data-protocol="${p}"] .f-total`).dataset.value >= b[p].total + w[p]), [before, want]);
  await until(page, 'the charts draw the burst',
    ([b, w]) => Object.keys(w).every((p) => {
      const svg = document.querySelector(`.card[data-protocol="${p}"] svg`);
      return +svg.dataset.delivered >= b[p].chart + w[p] && svg.querySelector('.bars-ok').getAttribute('d').length > 10;
    }), [before, want]);
  for (const p of Object.keys(want)) {
    const rate = parseFloat(await text(page, card(p) + ' .f-rate'));
    check(rate > 0, `${p}: ${rate} delivered/s`);
    const p99 = await text(page, card(p) + ' .f-p99');
    check(/ms$|s$/.test(p99), `${p}: p99 ${p99}`);
  }
  await until(page, 'the REST refusal is in the recent errors',
    () => [...document.querySelectorAll('#errors tbody tr')].some((tr) =>
      tr.children[1].textContent === 'rest' && /400/.test(tr.children[3].textContent) && tr.children[2].textContent.length === 26));
  await shot(page, 'desktop');

  // ---- a phone-sized screen ----
  await page.setViewportSize(PHONE);
  await page.waitForTimeout(300);
  const widths = await page.evaluate(() => ({
    doc: document.documentElement.scrollWidth,
    widest: Math.max(...[...document.querySelectorAll('main section, .card')].map((e) => e.getBoundingClientRect().right)),
  }));
  check(widths.doc <= PHONE.width && widths.widest <= PHONE.width,
    `nothing wider than the phone (${widths.doc}, ${Math.round(widths.widest)} <= ${PHONE.width})`);
  check(await page.locator(worker('mqtt') + ' .c-restarts').isVisible(), 'worker rows readable on the phone');
  await shot(page, 'phone');
  await page.setViewportSize(DESKTOP);

  // ---- kill -9 of a worker: RESTARTING, then READY with a restart more ----
  const restarts = +(await page.locator(worker('mqtt') + ' .c-restarts').getAttribute('data-value'));
  await step('kill-mqtt');
  await until(page, 'the mqtt worker shows RESTARTING',
    (sel) => { const tr = document.querySelector(sel); return tr.dataset.status === 'restarting' && tr.querySelector('.c-state').textContent.includes('RESTARTING'); },
    worker('mqtt'), 5000);
  check((await text(page, card('mqtt') + ' .status')).includes('RESTARTING'), 'the mqtt card says RESTARTING');
  check((await text(page, '#overall')).includes('DEGRADED'), 'the overall status says DEGRADED');
  check((await text(page, worker('mqtt') + ' .c-exit')).includes('SIGKILL'), 'last exit: killed by SIGKILL');
  await until(page, 'the newest crash log summary is shown',
    (sel) => /killed by signal 9/.test(document.querySelector(sel + ' .c-crash').textContent), worker('mqtt'));
  await shot(page, 'restarting', false);
  await until(page, `the mqtt worker READY again with ${restarts + 1} restarts`,
    ([sel, r]) => { const tr = document.querySelector(sel); return tr.dataset.status === 'ready' && +tr.querySelector('.c-restarts').dataset.value === r; },
    [worker('mqtt'), restarts + 1], 15000);
  await until(page, 'the mqtt card UP again', (sel) => document.querySelector(sel).dataset.status === 'up', card('mqtt'), 15000);

  // ---- the broker stops: the MQTT card turns DOWN ----
  await step('stop-broker');
  await until(page, 'the mqtt card shows DOWN',
    (sel) => { const c = document.querySelector(sel); return c.dataset.status === 'down' && c.querySelector('.status').textContent.includes('DOWN'); },
    card('mqtt'), 15000);
  check((await page.locator('#network tr[data-server="mqtt"]').getAttribute('data-up')) === 'false' &&
    (await text(page, '#network tr[data-server="mqtt"] .c-link')).includes('DOWN'), 'the mqtt server row says DOWN');
  check((await text(page, '#overall')).includes('DEGRADED'), 'the overall status says DEGRADED');
  check(await page.locator(card('rest')).getAttribute('data-status') === 'up', 'the other cards stay UP');
  await shot(page, 'broker-down');

  // ---- buttons (metrics.dashboard_actions is on here) ----
  check(await page.locator('#actions-panel').isVisible(), 'the actions panel is shown when actions are allowed');
  await page.locator(card('rest') + ' button[data-action="pause"]').click();
  await until(page, 'Pause: the rest card says PAUSED',
    (sel) => document.querySelector(sel + ' .status').textContent.includes('PAUSED'), card('rest'));
  check((await text(page, '#action-result')).includes('pause rest: done'), 'the button says it is done');
  await page.locator(card('rest') + ' button[data-action="resume"]').click();
  await until(page, 'Resume: the rest card UP again', (sel) => document.querySelector(sel).dataset.status === 'up', card('rest'));

  // ---- a spool near its limit ----
  check((await text(page, '#spool-status')).includes('OK'), 'the spool says OK');
  await step('fill-spool');
  await until(page, 'the spool says NEAR LIMIT',
    () => document.getElementById('spool').dataset.status === 'near' &&
      document.getElementById('spool-status').textContent.includes('NEAR LIMIT'));
  check((await text(page, '#spool-depth')) === '850', 'the spool holds 850 messages');
  check((await text(page, card('rest') + ' .status')).includes('PAUSED'), 'the paused protocols say PAUSED');
  await shot(page, 'spool-near-limit');

  await step('start-broker');
  await until(page, 'the broker back: the mqtt card UP again',
    (sel) => document.querySelector(sel).dataset.status === 'up', card('mqtt'), 20000);
  await until(page, 'the spool drains and says OK again',
    () => document.getElementById('spool').dataset.status === 'ok' && document.getElementById('spool-depth').textContent === '0',
    null, 30000);
  await until(page, 'the overall status says HEALTHY again', () => document.getElementById('overall').textContent.includes('HEALTHY'));

}

const consoleErrors = [], foreign = [], failed = [];

async function main() {
  fs.mkdirSync(artifacts, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ucgw-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
    viewport: DESKTOP,
  });
  let page, status = 0;
  try {
    page = context.pages()[0] || await context.newPage();
    page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') consoleErrors.push(m.text()); });
    page.on('pageerror', (e) => consoleErrors.push(String(e)));
    context.on('request', (r) => { if (!r.url().startsWith(origin + '/')) foreign.push(r.url()); });
    context.on('response', (r) => { if (r.status() >= 400) failed.push(`${r.status()} ${r.url()}`); });
    await ({ full: fullFlow, auth: authFlow, readonly: readOnlyFlow }[mode])(page);
    // a refused action (auth) answers 401 and the browser logs that one failed load
    const expected = (t) => mode === 'auth' && /401/.test(t);
    const errs = consoleErrors.filter((t) => !expected(t));
    check(errs.length === 0, `no console errors or warnings${errs.length ? ': ' + errs.join(' | ') : ''}`);
    check(foreign.length === 0, `every request went to the gateway${foreign.length ? ': ' + foreign.join(' ') : ''}`);
    const bad = failed.filter((t) => !expected(t));
    check(bad.length === 0, `no request failed${bad.length ? ': ' + bad.join(' ') : ''}`);
    console.log(`# ${n} checks passed`);
  } catch (e) {
    console.log(`not ok ${++n} - ${e.message}`);
    if (consoleErrors.length) console.log('# console: ' + consoleErrors.join(' | '));
    if (page) await shot(page, 'failure').catch(() => {});
    status = 1;
  }
  await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
  process.exit(status);
}

main().catch((e) => {
  console.log(`not ok - ${e.stack || e}`);
  process.exit(1);
});
