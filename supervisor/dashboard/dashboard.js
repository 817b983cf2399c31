/* ucgw dashboard: reads /api/events (Server-Sent Events, one JSON document a
 * second and on every change) and draws it. No framework, nothing fetched from
 * elsewhere; every text from the gateway goes in as text, never as markup. */
'use strict';

(function () {
  const HISTORY = 300; // seconds drawn
  const STALE_MS = 5000;
  const SVG = 'http://www.w3.org/2000/svg';

  // status word -> [icon, label, tone]
  const STATUS = {
    up: ['✓', 'UP', 'ok'],
    ready: ['✓', 'READY', 'ok'],
    down: ['✕', 'DOWN', 'bad'],
    failed: ['✕', 'FAILED', 'bad'],
    restarting: ['↻', 'RESTARTING', 'warn'],
    starting: ['…', 'STARTING', 'warn'],
    paused: ['‖', 'PAUSED', 'warn'],
    cooling: ['⚠', 'COOLING DOWN', 'warn'],
    stopped: ['■', 'STOPPED', 'muted'],
  };
  // An error's code (proto/ctl.h; the action's HTTP status is the same number)
  // -> what the page does about it. The page acts on these, never on the words.
  const CODE = {
    unauthorized: 401, // the API key or JWT was refused: the field is marked
    forbidden: 403,
    notFound: 404,
    conflict: 409,
    unavailable: 503, // ucgwd is stopping: the next document will say so
  };
  const CODE_HINT = {
    401: 'the API key or JWT was refused',
    403: 'not allowed',
    404: 'not found',
    409: 'not in a state that allows it',
    503: 'ucgwd cannot do it now',
  };
  const QUALITY = {
    excellent: ['✓', 'EXCELLENT', 'ok'],
    good: ['✓', 'GOOD', 'ok'],
    fair: ['~', 'FAIR', 'warn'],
    poor: ['⚠', 'POOR', 'bad'],
    unknown: ['?', 'UNKNOWN', 'muted'],
  };

  const $ = (id) => document.getElementById(id);
  const state = { last: null, lastEventMs: 0, history: {}, endS: 0, key: '' };

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function setBadge(node, def, fallback) {
    const d = def || fallback;
    const text = d[0] + ' ' + d[1];
    if (node.textContent !== text) node.textContent = text;
    node.classList.remove('ok', 'warn', 'bad', 'muted');
    node.classList.add('badge', d[2]);
  }

  function setText(node, text) {
    text = String(text);
    if (node.textContent !== text) node.textContent = text;
  }

  // ---- formatting ----

  function fmtRate(v) { return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2); }
  // latencies are measured in microseconds, in quarter-octave buckets
  function fmtLat(v) { return v >= 1 ? fmtMs(v) : v >= 0.001 ? (v * 1000).toFixed(0) + ' µs' : '< 1 µs'; }
  function fmtMs(v) { return v >= 1000 ? (v / 1000).toFixed(2) + ' s' : v >= 10 ? v.toFixed(0) + ' ms' : v.toFixed(2) + ' ms'; }
  function fmtPct(v) { return v === null || v === undefined ? '–' : (v * 100).toFixed(v >= 0.9995 || v === 0 ? 0 : 1) + ' %'; }
  function fmtInt(v) { return Number(v).toLocaleString('en'); }
  function fmtBytes(v) {
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return (i ? v.toFixed(v >= 100 ? 0 : 1) : v) + ' ' + u[i];
  }
  function fmtAge(s) {
    s = Math.floor(s);
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
    if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
    return Math.floor(s / 86400) + ' d ' + Math.floor((s % 86400) / 3600) + ' h';
  }
  function fmtTime(ms) {
    const d = new Date(ms);
    const two = (n) => String(n).padStart(2, '0');
    const t = two(d.getHours()) + ':' + two(d.getMinutes()) + ':' + two(d.getSeconds());
    return new Date().toDateString() === d.toDateString() ? t : d.toISOString().slice(0, 10) + ' ' + t;
  }

  // ---- history: samples by wall-clock second, merged from each event ----

  function mergeHistory(h) {
    if (!h || !h.protocols) return;
    for (const name in h.protocols) {
      const p = h.protocols[name];
      const store = state.history[name] || (state.history[name] = new Map());
      for (let i = 0; i < h.len; i++) {
        const t = h.end_s - h.len + 1 + i;
        store.set(t, { ok: p.ok[i], bad: p.retry[i] + p.fail[i], p99: p.p99_ms[i] });
      }
      for (const t of store.keys()) if (t <= h.end_s - HISTORY) store.delete(t);
    }
    if (h.end_s > state.endS) state.endS = h.end_s;
  }

  // 60 bars across the history there is (1 to 5 minutes, a bar of 1 to 5 s):
  // the average per second of each, delivered above the line, failed or retried
  // below it (its own scale, at least one pixel).
  function drawChart(svg, name) {
    const store = state.history[name] || new Map();
    let oldest = state.endS;
    for (const t of store.keys()) oldest = Math.min(oldest, t);
    const minutes = Math.min(HISTORY / 60, Math.max(1, Math.ceil((state.endS - oldest + 1) / 60)));
    const N = 60, BUCKET = minutes, SPAN = N * BUCKET, W = 300, H = 60, mid = 40, BW = W / N;
    const ok = new Array(N).fill(0), bad = new Array(N).fill(0);
    let sumOk = 0, sumBad = 0, peak = 0;
    const start = state.endS - SPAN + 1;
    for (const [t, s] of store) {
      const i = Math.floor((t - start) / BUCKET);
      if (i < 0 || i >= N) continue;
      ok[i] += s.ok / BUCKET;
      bad[i] += s.bad / BUCKET;
      sumOk += s.ok;
      sumBad += s.bad;
      peak = Math.max(peak, s.ok);
    }
    const max = Math.max(1, ...ok), maxBad = Math.max(1, ...bad);
    let dOk = '', dBad = '';
    for (let i = 0; i < N; i++) {
      const x = i * BW + 0.5, w = BW - 1;
      if (ok[i] > 0) {
        const h = Math.max(1, (ok[i] / max) * (mid - 2));
        dOk += 'M' + x + ' ' + (mid - h).toFixed(1) + 'h' + w + 'v' + h.toFixed(1) + 'h-' + w + 'z';
      }
      if (bad[i] > 0) {
        const h = Math.max(2, (bad[i] / maxBad) * (H - mid - 2));
        dBad += 'M' + x + ' ' + (mid + 0.5) + 'h' + w + 'v' + h.toFixed(1) + 'h-' + w + 'z';
      }
    }
    svg.querySelector('.bars-ok').setAttribute('d', dOk || 'M0 0');
    svg.querySelector('.bars-bad').setAttribute('d', dBad || 'M0 0');
    svg.dataset.delivered = String(sumOk);
    svg.dataset.failed = String(sumBad);
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    setText(svg.parentNode.querySelector('.chart-scale span'), '−' + minutes + ' min');
    const note = svg.parentNode.querySelector('.chart-note');
    setText(note, 'Last ' + minutes + ' min: ' + fmtInt(sumOk) + ' delivered, ' + fmtInt(sumBad) + ' failed or retried; peak ' +
      fmtInt(peak) + '/s');
    svg.querySelector('title').textContent = name + ', last ' + minutes + ' min: ' + sumOk + ' delivered, ' + sumBad +
      ' failed or retried (bars of ' + BUCKET + ' s; top: delivered per second, bottom: failed or retried)';
  }

  // ---- actions ----

  async function act(action, name, button) {
    const result = $('action-result');
    const headers = { 'Content-Type': 'application/json' };
    const key = $('api-key').value.trim();
    if (key) headers.Authorization = 'Bearer ' + key;
    const label = action + (name ? ' ' + name : '');
    if (button) button.disabled = true;
    result.className = 'action-result';
    result.textContent = label + ': …';
    try {
      const r = await fetch('/api/actions/' + action, {
        method: 'POST', headers, body: JSON.stringify(name ? { name } : {}), credentials: 'omit', cache: 'no-store',
      });
      const body = await r.json().catch(() => ({ ok: false, error: 'HTTP ' + r.status }));
      const code = r.ok && body.ok ? 0 : (Number.isInteger(body.code) ? body.code : r.status);
      const keyField = $('api-key');
      result.dataset.code = String(code);
      keyField.setAttribute('aria-invalid', code === CODE.unauthorized ? 'true' : 'false');
      if (code === CODE.unauthorized) keyField.focus();
      if (!code) {
        let extra = '';
        if (body.requeued !== undefined) extra = ' (' + body.requeued + ' requeued)';
        if (body.retried !== undefined) extra = ' (' + body.retried + ' retried)';
        result.className = 'action-result ok';
        result.textContent = '✓ ' + label + ': done' + extra;
      } else {
        result.className = 'action-result bad';
        const hint = CODE_HINT[code] ? ' (' + CODE_HINT[code] + ')' : '';
        result.textContent = '✕ ' + label + ': ' + (body.error || 'HTTP ' + r.status) + hint;
      }
    } catch (e) {
      result.className = 'action-result bad';
      result.textContent = '✕ ' + label + ': the gateway did not answer';
    } finally {
      if (button) button.disabled = false;
    }
  }

  function actionButton(text, action, name) {
    const b = el('button', { type: 'button', 'data-action': action, 'data-name': name }, text);
    b.addEventListener('click', () => act(action, name, b));
    return b;
  }

  // ---- sections ----

  function protocolCard(name) {
    let card = document.querySelector('.card[data-protocol="' + name + '"]');
    if (card) return card;
    card = el('article', { class: 'card', 'data-protocol': name, 'aria-label': name });
    const head = el('div', { class: 'card-head' });
    head.append(el('h3', {}, name), el('span', { class: 'badge muted status' }, '…'));
    const figs = el('dl', { class: 'figures' });
    for (const [k, label] of [['rate', 'Delivered/s'], ['success', 'Success 1 min'], ['p50', 'p50'], ['p99', 'p99'],
      ['total', 'Delivered'], ['queued', 'Queued · in flight / window']]) {
      const d = el('div');
      d.append(el('dt', {}, label), el('dd', { class: 'f-' + k }, '–'));
      figs.append(d);
    }
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('class', 'chart');
    svg.setAttribute('role', 'img');
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('viewBox', '0 0 300 60');
    const title = document.createElementNS(SVG, 'title');
    const axis = document.createElementNS(SVG, 'line');
    axis.setAttribute('class', 'axis');
    axis.setAttribute('x1', '0'); axis.setAttribute('x2', '300');
    axis.setAttribute('y1', '40.25'); axis.setAttribute('y2', '40.25');
    const okPath = document.createElementNS(SVG, 'path');
    okPath.setAttribute('class', 'bars-ok');
    const badPath = document.createElementNS(SVG, 'path');
    badPath.setAttribute('class', 'bars-bad');
    svg.append(title, axis, okPath, badPath);
    const scale = el('div', { class: 'chart-scale', 'aria-hidden': 'true' });
    scale.append(el('span', {}, '−5 min'), el('span', {}, 'now'));
    const note = el('p', { class: 'chart-note' }, '');
    const why = el('p', { class: 'why' }, '');
    const acts = el('div', { class: 'actions' });
    acts.hidden = true;
    acts.append(actionButton('Pause', 'pause', name), actionButton('Resume', 'resume', name),
      actionButton('Restart worker', 'restart', name));
    card.append(head, why, figs, svg, scale, note, acts);
    $('protocols').append(card);
    return card;
  }

  function renderProtocols(d) {
    const seen = new Set();
    for (const name of Object.keys(d.protocol_stats).sort()) {
      const s = d.protocol_stats[name];
      seen.add(name);
      const card = protocolCard(name);
      card.dataset.status = s.status;
      setBadge(card.querySelector('.status'), STATUS[s.status], ['?', s.status.toUpperCase(), 'muted']);
      setText(card.querySelector('.f-rate'), fmtRate(s.rate_per_s));
      setText(card.querySelector('.f-success'), s.attempts_60s ? fmtPct(s.success_rate_60s) : '– (idle)');
      setText(card.querySelector('.f-p50'), s.success ? fmtLat(s.p50_ms) : '–');
      setText(card.querySelector('.f-p99'), s.success ? fmtLat(s.p99_ms) : '–');
      // taken over: backlog it drained from other protocols' queues (docs/routing.md)
      setText(card.querySelector('.f-total'), fmtInt(s.success) +
        (s.taken_over ? ' · ' + fmtInt(s.taken_over) + ' taken over' : ''));
      setText(card.querySelector('.f-queued'), fmtInt(s.queued) + ' · ' + fmtInt(s.inflight) + ' / ' + fmtInt(s.window));
      card.querySelector('.f-queued').title = 'window: ' + s.window_state;
      card.querySelector('.f-total').dataset.value = String(s.success);
      const net = d.network_quality[name];
      const w = d.workers.find((x) => x.name === name);
      let why = '';
      if (s.status === 'down') why = (net && net.health) || 'the server cannot be reached';
      else if (s.status === 'failed' || s.status === 'restarting') why = (w && w.last_exit) ? 'last exit: ' + w.last_exit : '';
      else if (s.status === 'cooling') why = s.cooling || '';
      else if (s.status === 'paused') why = 'paused by an operator: messages wait';
      setText(card.querySelector('.why'), why);
      drawChart(card.querySelector('svg'), name);
      card.querySelector('.actions').hidden = !d.gateway.actions;
      card.querySelector('button[data-action="pause"]').hidden = s.paused;
      card.querySelector('button[data-action="resume"]').hidden = !s.paused;
    }
    for (const card of document.querySelectorAll('.card[data-protocol]'))
      if (!seen.has(card.dataset.protocol)) card.remove();
  }

  function row(tbody, key, attr, cells) {
    let tr = tbody.querySelector('tr[' + attr + '="' + key + '"]');
    if (!tr) {
      tr = el('tr', { [attr]: key });
      for (const [cls, label] of cells) tr.append(el('td', { class: cls, 'data-label': label }));
      tbody.append(tr);
    }
    return tr;
  }

  function renderNetwork(d) {
    const tbody = $('network').tBodies[0];
    const names = Object.keys(d.network_quality).sort();
    const keep = names.slice(); // and the rows of each protocol's servers
    for (const name of names) {
      const n = d.network_quality[name];
      const tr = row(tbody, name, 'data-server', [['c-name', 'Server'], ['c-link', 'Link'], ['c-quality', 'Quality'],
        ['c-rtt num', 'Round trip'], ['c-loss num', 'Loss'], ['c-health', 'Health']]);
      const nameCell = tr.querySelector('.c-name');
      if (!nameCell.firstChild) nameCell.append(el('b'), el('span', { class: 'mono' }));
      setText(nameCell.firstChild, name + ' ');
      setText(nameCell.lastChild, n.server || '');
      let link = tr.querySelector('.c-link .badge');
      if (!link) { link = el('span', { class: 'badge' }); tr.querySelector('.c-link').append(link); }
      setBadge(link, n.up ? STATUS.up : STATUS.down);
      let q = tr.querySelector('.c-quality .badge');
      if (!q) { q = el('span', { class: 'badge' }); tr.querySelector('.c-quality').append(q); }
      setBadge(q, QUALITY[n.quality], QUALITY.unknown);
      setText(tr.querySelector('.c-rtt'), n.rtt_ms ? fmtMs(n.rtt_ms) : '–');
      setText(tr.querySelector('.c-loss'), fmtPct(n.loss));
      setText(tr.querySelector('.c-health'), n.health || '');
      tr.className = n.up ? (n.quality === 'poor' ? 'row-warn' : '') : 'row-bad';
      tr.dataset.up = String(n.up);
      renderServerRows(d, tbody, name, tr, keep);
    }
    for (const tr of tbody.querySelectorAll('tr')) if (!keep.includes(tr.dataset.server)) tr.remove();
  }

  // A protocol with a list of servers (rest.base_url, mqtt.broker_url): a row
  // under its own for each, with that server's state and counters.
  function renderServerRows(d, tbody, name, parent, keep) {
    const w = d.workers.find((x) => x.name === name);
    const list = (w && w.servers) || [];
    if (list.length < 2) return;
    let prev = parent;
    list.forEach((s, i) => {
      const key = name + '#' + (i + 1);
      keep.push(key);
      const tr = row(tbody, key, 'data-server', [['c-name', 'Server'], ['c-link', 'Link'], ['c-quality', 'Quality'],
        ['c-rtt num', 'Round trip'], ['c-loss num', 'Loss'], ['c-health', 'Health']]);
      if (prev.nextSibling !== tr) prev.after(tr);
      prev = tr;
      const nameCell = tr.querySelector('.c-name');
      if (!nameCell.firstChild) nameCell.append(el('span'), el('span', { class: 'mono' }));
      setText(nameCell.firstChild, '\u2003server ' + (i + 1) + (s.active ? ' (in use) ' : ' '));
      setText(nameCell.lastChild, s.url);
      let link = tr.querySelector('.c-link .badge');
      if (!link) { link = el('span', { class: 'badge' }); tr.querySelector('.c-link').append(link); }
      setBadge(link, s.tried === false ? ['–', 'NOT TRIED', 'muted'] : s.up ? STATUS.up : STATUS.down);
      setText(tr.querySelector('.c-quality'), fmtInt(s.delivered) + ' delivered');
      setText(tr.querySelector('.c-rtt'), s.rtt_ms ? fmtMs(s.rtt_ms) : '–');
      setText(tr.querySelector('.c-loss'), fmtInt(s.failed) + ' failed');
      setText(tr.querySelector('.c-health'), s.up ? '' : s.detail);
      tr.className = s.up || s.tried === false ? 'row-sub' : 'row-sub row-bad';
      tr.dataset.up = String(s.up);
    });
  }

  function renderWorkers(d) {
    const tbody = $('workers').tBodies[0];
    const names = [];
    for (const w of d.workers) {
      names.push(w.name);
      const tr = row(tbody, w.name, 'data-worker', [['c-name', 'Worker'], ['c-state', 'State'], ['c-pid num', 'PID'],
        ['c-restarts num', 'Restarts'], ['c-exit', 'Last exit'], ['c-crash crash', 'Newest crash log'],
        ['c-act act-col', 'Actions']]);
      setText(tr.querySelector('.c-name'), w.name);
      let b = tr.querySelector('.c-state .badge');
      if (!b) { b = el('span', { class: 'badge' }); tr.querySelector('.c-state').append(b); }
      setBadge(b, STATUS[w.status], ['?', String(w.status).toUpperCase(), 'muted']);
      tr.dataset.status = w.status;
      setText(tr.querySelector('.c-pid'), w.pid || '–');
      setText(tr.querySelector('.c-restarts'), w.restarts);
      tr.querySelector('.c-restarts').dataset.value = String(w.restarts);
      setText(tr.querySelector('.c-exit'), w.last_exit || '–');
      const crash = tr.querySelector('.c-crash');
      if (w.crash) {
        if (!crash.querySelector('.summary')) {
          crash.textContent = '';
          crash.append(el('span', { class: 'summary' }), el('span', { class: 'file mono' }));
        }
        setText(crash.querySelector('.summary'), w.crash.summary);
        setText(crash.querySelector('.file'), w.crash.file);
      } else {
        setText(crash, 'none');
      }
      const act = tr.querySelector('.c-act');
      if (d.gateway.actions && !act.firstChild) act.append(actionButton('Restart', 'restart', w.name));
      if (!d.gateway.actions && act.firstChild) act.textContent = '';
      tr.className = w.status === 'failed' ? 'row-bad' : w.status === 'restarting' || w.status === 'starting' ? 'row-warn' : '';
    }
    for (const tr of tbody.querySelectorAll('tr')) if (!names.includes(tr.dataset.worker)) tr.remove();
    for (const th of document.querySelectorAll('#workers .act-col')) th.hidden = !d.gateway.actions;
  }

  function renderSpool(d) {
    const s = d.spool;
    const status = s.full ? 'full' : s.near_limit ? 'near' : 'ok';
    $('spool').dataset.status = status;
    setBadge($('spool-status'), { ok: ['✓', 'OK', 'ok'], near: ['⚠', 'NEAR LIMIT ' + Math.round(s.fill * 100) + ' %', 'bad'],
      full: ['✕', 'FULL', 'bad'] }[status]);
    setText($('spool-policy'), s.full_policy === 'reject' ? 'refuse new messages' : 'drop the oldest');
    setText($('spool-depth'), fmtInt(s.depth));
    setText($('spool-max-messages'), fmtInt(s.max_messages));
    setText($('spool-bytes'), fmtBytes(s.bytes));
    setText($('spool-max-bytes'), fmtBytes(s.max_bytes));
    $('spool-depth-meter').value = s.max_messages ? Math.min(1, s.depth / s.max_messages) : 0;
    $('spool-bytes-meter').value = s.max_bytes ? Math.min(1, s.bytes / s.max_bytes) : 0;
    setText($('spool-oldest'), s.depth ? fmtAge(s.oldest_age_ms / 1000) : '–');
    setText($('spool-waiting'), fmtInt(s.waiting));
    setText($('spool-dead'), fmtInt(s.dead) + (s.dead ? ' ⚠' : ''));
    setText($('spool-rejected'), fmtInt(s.rejected_full));
    document.querySelector('.spool-actions').hidden = !d.gateway.actions;
  }

  function renderLink(d) {
    const l = d.link;
    if (!l) return;
    const status = l.holding ? 'held' : (l.day.budget && l.day.used >= l.warn_percent / 100 * l.day.budget) ||
      (l.month.budget && l.month.used >= l.warn_percent / 100 * l.month.budget) ? 'near' : 'ok';
    $('link').dataset.status = status === 'ok' ? 'ok' : status === 'near' ? 'near' : 'full';
    setBadge($('link-status'), { ok: ['✓', 'WITHIN BUDGET', 'ok'], near: ['⚠', 'NEAR BUDGET', 'bad'],
      held: ['⏸', 'HOLDING (' + String(l.holding).toUpperCase() + ' BUDGET)', 'bad'] }[status]);
    setText($('link-policy'), { hold_files: 'hold files, send metadata', hold_all_but_high: 'hold all but priority high',
      warn: 'only warn' }[l.policy] || l.policy);
    for (const p of ['day', 'month']) {
      const b = l[p];
      setText($('link-' + p), fmtBytes(b.used));
      setText($('link-' + p + '-of'), b.budget ? 'of ' + fmtBytes(b.budget) : '(no budget)');
      $('link-' + p + '-meter').value = b.budget ? Math.min(1, b.used / b.budget) : 0;
      setText($('link-' + p + '-forecast'), fmtBytes(b.projected) +
        (b.budget && b.projected > b.budget ? ' ⚠ over the budget' : ''));
    }
    setText($('link-rate'), fmtBytes(Math.round(l.rate_bytes_per_s)) + '/s' +
      (l.max_bytes_per_s ? ' (cap ' + fmtBytes(l.max_bytes_per_s) + '/s)' : ''));
    setText($('link-held'), fmtInt(l.held));
  }

  function renderErrors(d) {
    const errs = d.recent_errors;
    $('errors').hidden = errs.length === 0;
    $('errors-none').hidden = errs.length !== 0;
    const key = errs.length ? errs[0].time + errs[0].id + errs.length : '';
    if (key === state.errKey) return;
    state.errKey = key;
    const tbody = $('errors').tBodies[0];
    tbody.textContent = '';
    // the same failure again and again (a server down) is one row with a count
    const groups = [];
    for (const e of errs) {
      const g = groups[groups.length - 1];
      if (g && g.protocol === e.protocol && g.message === e.message) g.count++;
      else groups.push(Object.assign({ count: 1 }, e));
    }
    for (const e of groups.slice(0, 15)) {
      const tr = el('tr');
      const reason = el('td', { 'data-label': 'Reason' }, e.message);
      if (e.count > 1) reason.append(el('span', { class: 'repeat' }, ' ×' + e.count + ' (the newest id shown)'));
      tr.append(el('td', { 'data-label': 'Time', class: 'num' }, fmtTime(e.time)),
        el('td', { 'data-label': 'Protocol' }, e.protocol),
        el('td', { 'data-label': 'Message id', class: 'id' }, e.id),
        reason);
      tbody.append(tr);
    }
  }

  function renderOverall(d) {
    const st = Object.values(d.protocol_stats).map((s) => s.status);
    const up = st.filter((s) => s === 'up').length;
    const trouble = st.length - up;
    let def;
    if (d.gateway.state === 'stopping') def = ['■', 'STOPPING', 'warn'];
    else if (st.length && st.every((s) => s === 'paused')) def = ['‖', 'PAUSED', 'warn'];
    else if (st.length && up === 0) def = ['✕', 'DOWN', 'bad'];
    else if (trouble || d.spool.near_limit) def = ['⚠', 'DEGRADED', 'warn'];
    else def = ['✓', 'HEALTHY', 'ok'];
    setBadge($('overall'), def);
    $('overall').dataset.status = def[1].toLowerCase();
    setText($('device'), d.gateway.device_id || 'device');
    setText($('version'), 'ucgw ' + d.gateway.version);
    setText($('uptime'), fmtAge(d.gateway.uptime_s));
    document.title = def[1] + ' · ucgw ' + (d.gateway.device_id || '');
  }

  function renderActions(d) {
    $('actions-panel').hidden = !d.gateway.actions;
    $('auth-field').hidden = !d.gateway.auth_required;
  }

  function render(d) {
    mergeHistory(d.history);
    renderOverall(d);
    renderProtocols(d);
    renderNetwork(d);
    renderWorkers(d);
    renderSpool(d);
    renderLink(d);
    renderErrors(d);
    renderActions(d);
  }

  // ---- the live feed ----

  function setLive(text, tone) {
    const live = $('live');
    setText(live, text);
    live.className = 'live ' + tone;
  }

  function connect() {
    const es = new EventSource('/api/events');
    es.addEventListener('dashboard', (ev) => {
      let d;
      try { d = JSON.parse(ev.data); } catch (e) { return; }
      state.last = d;
      state.lastEventMs = Date.now();
      render(d);
      setLive('● live, ' + fmtTime(d.gateway.time_ms), 'muted');
      document.body.dataset.updated = String(d.gateway.time_ms);
    });
    es.addEventListener('error', () => {
      setLive('✕ not connected: retrying…', 'bad');
    });
  }

  setInterval(() => {
    if (state.lastEventMs && Date.now() - state.lastEventMs > STALE_MS) {
      setLive('⚠ no update for ' + Math.round((Date.now() - state.lastEventMs) / 1000) + ' s', 'bad');
    }
  }, 1000);

  connect();
})();
