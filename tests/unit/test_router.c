/* The router and protocol selection with a fake process table, spool and
 * clock: router.c, select.c, stats.c and msgstate.c as they are, linked
 * against fakes of what they call (proctab, spool, control, monitor). The
 * clock is wrapped at link time (-Wl,--wrap=now_ms,...). Each test drives the
 * router by its hooks: worker ready and health, results, ticks. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "common/log.h"
#include "common/util.h"
#include "supervisor/budget.h"
#include "supervisor/control.h"
#include "supervisor/errors.h"
#include "supervisor/http.h"
#include "supervisor/monitor.h"
#include "supervisor/msgstate.h"
#include "supervisor/proctab.h"
#include "supervisor/router.h"
#include "supervisor/router_int.h"
#include "supervisor/servers.h"
#include "supervisor/spool.h"
#include "supervisor/sup.h"

struct sup sup;

/* ---- the clock ---- */

static uint64_t clock_ms = 1000000;
uint64_t __wrap_now_ms(void) { return clock_ms; }
uint64_t __wrap_now_us(void) { return clock_ms * 1000; }
uint64_t __wrap_wall_ms(void) { return 1800000000000ull + clock_ms; }
bool __wrap_channel_congested(const struct channel *ch) { return false; }


/* ---- the process table: one fake worker per protocol, its jobs recorded ---- */

static struct proc procs[3];
static const char *const names[3] = { "websocket", "rest", "mqtt" };

struct sent {
	char id[UCGW_ID_LEN + 1];
	char proto[16];
	uint64_t seq;
	bool answered;
};
static struct sent sent[4096];
static unsigned nsent;

struct proc *proctab_find(const char *name)
{
	for (int i = 0; i < 3; i++)
		if (strcmp(procs[i].name, name) == 0)
			return &procs[i];
	return NULL;
}

int proc_send(struct proc *p, const struct msg *m, int fd)
{
	struct sent *s = &sent[nsent++ % 4096];
	str_copy(s->id, sizeof s->id, m->id);
	str_copy(s->proto, sizeof s->proto, p->name);
	s->seq = m->seq;
	s->answered = false;
	return 0;
}

/* budget.c's pages for /metrics and the dashboard: not looked at here */
void http_sb_printf(struct strbuf *b, const char *fmt, ...) {}
void http_sb_json_str(struct strbuf *b, const char *s) {}

const char *proc_state_str(enum proc_state s) { return s == PROC_READY ? "ready" : "not ready"; }

static struct proc *proc_of(const char *name) { return proctab_find(name); }

static void set_up(const char *name, bool up)
{
	struct proc *p = proc_of(name);
	p->connected = up;
	router_worker_health(p, false);
}

/* Answer the n-th job sent: ok, retry or permfail. */
static void answer(unsigned i, enum job_status st)
{
	struct sent *s = &sent[i];
	struct msg r = { .type = MSG_RESULT, .seq = s->seq, .id = s->id, .status = st,
			 .error = st == JOB_OK ? NULL : "refused" };
	s->answered = true;
	router_worker_result(proc_of(s->proto), &r);
}

/* A worker whose server is down answers retry to each job it gets. */
static void answer_down(void)
{
	for (unsigned i = 0; i < nsent; i++)
		if (!sent[i].answered && !proc_of(sent[i].proto)->connected)
			answer(i, JOB_RETRY);
}

/* Time passes, a tick at a time. */
static void advance(uint64_t ms)
{
	for (uint64_t t = 0; t < ms; t += TICK_MS) {
		clock_ms += TICK_MS;
		router_tick();
		answer_down();
	}
}

/* ---- the spool, control and monitor: nothing to do ---- */

void spool_done(struct smsg *m, const char *state) {}
void spool_dead(struct smsg *m, const char *reason) {}
void spool_requeue(struct smsg *m) {}
int spool_load_payload(struct smsg *m) { return 0; }
int spool_open_file(const struct smsg *m, char *err, size_t errlen) { return -1; }
void admission_outcome(struct smsg *m, const char *status) {}
void admission_finished(const struct smsg *m, const char *status, const char *state) {}
void spool_unwritten(uint64_t *n, uint64_t *bytes) { *n = *bytes = 0; }
void control_reply(uint64_t cid, uint64_t seq, bool ok, const char *error, const struct body *b) {}
void control_event(uint64_t cid, uint64_t seq, const char *name, const struct body *b) {}
void control_body_init(struct body *b) { msgpack_sbuffer_init(&b->sb); msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write); }
void control_body_free(struct body *b) { msgpack_sbuffer_destroy(&b->sb); }
void monitor_sample(int slot, uint64_t rtt_us, bool lost) {}
enum quality monitor_quality(int slot) { return Q_GOOD; }
bool monitor_quality_at_least_good(enum quality q) { return true; }
void errors_record(const char *protocol, const char *id, const char *error) {}
void clock_check(void) {}
bool clock_known_set(void) { return true; }
void servers_pack(msgpack_packer *pk, const struct proc *p) { pk_key(pk, "servers"); msgpack_pack_array(pk, 0); }

/* ---- set-up ---- */

static const char config_text[] =
	"websocket: {server_url: 'ws://127.0.0.1:1/lpr'}\n"
	"rest: {base_url: 'http://127.0.0.1:1', retry_attempts: 3}\n"
	"mqtt: {broker_url: '127.0.0.1:1'}\n"
	"gateway: {window: 4}\n"
	"link: {budget_bytes_per_day: 1000, budget_warn_percent: 90, budget_policy: hold_all_but_high}\n"
	"fallback: {chains: {mqtt: [rest, websocket], rest: [mqtt, websocket], websocket: [rest, mqtt]}}\n";

static const char spool_text[] = "spool: {retry_backoff_min_ms: 1000, retry_backoff_max_ms: 8000}\n";

/* Load text as the configuration. */
static void load_text(const char *text)
{
	char path[] = "/tmp/ucgw-test-router-XXXXXX", err[512];
	int fd = mkstemp(path);
	CHECK(fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	close(fd);
	struct config *old = sup.cfg;
	if (config_load(path, &sup.cfg, err, sizeof err) < 0) {
		fprintf(stderr, "config: %s\n", err);
		exit(1);
	}
	unlink(path);
	if (old)
		config_free(old);
	sup.reloads++;
}

/* Load config_text with this spool section (NULL: spool_text) as the configuration. */
static void load_config_with(const char *more)
{
	char *text = xasprintf("%s%s", config_text, more ? more : spool_text);
	load_text(text);
	free(text);
}

static void load_config(void) { load_config_with(NULL); }

static unsigned next_id;

static struct smsg *message(const char *protocol, enum priority prio)
{
	struct smsg *m = xcalloc(1, sizeof *m);
	snprintf(m->id, sizeof m->id, "M%025u", ++next_id);
	m->kind = JOB_META;
	m->priority = prio;
	m->state = SM_LIMBO;
	str_copy(m->protocol, sizeof m->protocol, protocol);
	m->created_wall_ms = __wrap_wall_ms();
	m->size = 10;
	m->payload = xstrdup("{\"a\":1}\n\n");
	return m;
}

/* A fresh router between tests: every message answered or forgotten, workers as given. */
static void workers(bool ws, bool rest, bool mqtt)
{
	bool up[3] = { ws, rest, mqtt };
	for (int i = 0; i < 3; i++) {
		struct proc *p = &procs[i];
		str_copy(p->name, sizeof p->name, names[i]);
		p->slot = slot_find(names[i]); /* as proctab.c links them */
		p->slot->proc = p;
		p->state = PROC_READY;
		p->ch = (struct channel *)p; /* never looked into: channel_congested is faked */
		p->gen = 1;
		p->connected = up[i];
		router_state.protos[i].link_up = up[i];
	}
}

static struct smsg *accept_msg(const char *protocol, enum priority prio)
{
	struct smsg *m = message(protocol, prio);
	router_adopt(m);
	router_route(m);
	return m;
}

static unsigned sent_to(const char *proto, unsigned from)
{
	unsigned n = 0;
	for (unsigned i = from; i < nsent; i++)
		n += strcmp(sent[i].proto, proto) == 0;
	return n;
}

/* Answer ok every job not answered yet. */
static void deliver_all(void)
{
	for (unsigned i = 0; i < nsent; i++)
		if (!sent[i].answered)
			answer(i, JOB_OK);
}

/* ---- the tests ---- */

static void test_table(void)
{
	/* Every cell: what may happen to a message in each state. */
	static const struct {
		enum smsg_state from;
		enum msg_event ev;
		int to;
	} allowed[] = {
		{ SM_QUEUED, EV_ENQUEUE, SM_QUEUED },   { SM_QUEUED, EV_TAKE, SM_LIMBO },
		{ SM_QUEUED, EV_WAIT, SM_WAITING },     { SM_QUEUED, EV_KILL, SM_DEAD },
		{ SM_QUEUED, EV_REMOVE, SM_GONE },      { SM_INFLIGHT, EV_END, SM_LIMBO },
		{ SM_WAITING, EV_ENQUEUE, SM_QUEUED },  { SM_WAITING, EV_WAIT, SM_WAITING },
		{ SM_WAITING, EV_KILL, SM_DEAD },       { SM_WAITING, EV_REMOVE, SM_GONE },
		{ SM_DEAD, EV_REQUEUE, SM_LIMBO },      { SM_DEAD, EV_REMOVE, SM_GONE },
		{ SM_LIMBO, EV_ENQUEUE, SM_QUEUED },    { SM_LIMBO, EV_SEND, SM_INFLIGHT },
		{ SM_LIMBO, EV_WAIT, SM_WAITING },      { SM_LIMBO, EV_KILL, SM_DEAD },
		{ SM_LIMBO, EV_DELIVER, SM_GONE },      { SM_LIMBO, EV_REMOVE, SM_GONE },
	};
	unsigned moves = 0;
	for (int s = 0; s < SM_NSTATES; s++)
		for (int e = 0; e < EV_COUNT; e++) {
			int want = -1;
			for (size_t k = 0; k < sizeof allowed / sizeof allowed[0]; k++)
				if (allowed[k].from == (enum smsg_state)s && allowed[k].ev == (enum msg_event)e)
					want = allowed[k].to;
			CHECK(msgstate_next((enum smsg_state)s, (enum msg_event)e) == want);
			moves += want >= 0;
		}
	CHECK(moves == sizeof allowed / sizeof allowed[0]);
	/* Nothing leaves "gone", and a message in flight only ends its attempt. */
	for (int e = 0; e < EV_COUNT; e++) {
		CHECK(msgstate_next(SM_GONE, (enum msg_event)e) == -1);
		CHECK((msgstate_next(SM_INFLIGHT, (enum msg_event)e) >= 0) == (e == EV_END));
	}
	CHECK(strcmp(msgstate_str(SM_WAITING), "waiting") == 0 && strcmp(msgevent_str(EV_KILL), "kill") == 0);
}

/* A life through the router: its trace holds each move, in order. */
static void test_moves_recorded(void)
{
	workers(true, true, true);
	unsigned from = nsent;
	struct smsg *m = accept_msg("rest", PRIO_NORMAL);
	CHECK(m->state == SM_INFLIGHT && sent_to("rest", from) == 1);
	CHECK(m->nmoves == 3);
	CHECK(m->moves[0].ev == EV_ENQUEUE && m->moves[1].ev == EV_TAKE && m->moves[2].ev == EV_SEND);
	CHECK(m->moves[2].to == SM_INFLIGHT);
	answer(nsent - 1, JOB_PERMFAIL); /* rest refuses it for good: the chain goes on (mqtt) */
	CHECK(m->state == SM_INFLIGHT && strcmp(sent[nsent - 1].proto, "mqtt") == 0);
	CHECK(m->moves[3].ev == EV_END && m->moves[4].ev == EV_ENQUEUE);
	answer(nsent - 1, JOB_OK);
	CHECK(router_state.count == 0);
}

/* After a restart: the spool's auto messages are held until the workers are
 * there, then routed; never dead-lettered because no worker existed yet. */
static void test_replay_auto(void)
{
	router_state.started = false;
	router_state.workers_ms = 0;
	for (int i = 0; i < 3; i++) {
		procs[i].name[0] = '\0'; /* the process table does not exist yet */
		slot_find(names[i])->proc = NULL;
	}
	unsigned from = nsent;
	struct smsg *ms[5];
	for (int i = 0; i < 5; i++) {
		ms[i] = message("auto", PRIO_NORMAL);
		router_recover(ms[i]);
		CHECK(ms[i]->state == SM_WAITING && strstr(ms[i]->last_error, "held at start"));
	}
	CHECK(nsent == from && router_state.dead.n == 0);
	/* The table comes up; no worker connected yet: still held. */
	workers(false, false, false);
	router_workers_started();
	advance(1000);
	CHECK(!router_state.started && nsent == from && router_state.dead.n == 0);
	/* mqtt connects, the others within the grace: the gate opens, all go out. */
	set_up("mqtt", true);
	set_up("rest", true);
	set_up("websocket", true);
	CHECK(router_state.started && router_state.dead.n == 0);
	advance(400); /* a protocol with room takes what waited in another's queue (250 ms) */
	CHECK(nsent - from == 5);
	deliver_all();
	CHECK(router_state.count == 0 && router_state.dead.n == 0);

	/* A worker that never connects: the grace ends, the messages route and wait,
	 * none dies. */
	router_state.started = false;
	workers(false, false, false);
	router_workers_started();
	struct smsg *m = message("auto", PRIO_NORMAL);
	router_recover(m);
	advance(START_GRACE_MS + 2 * TICK_MS);
	CHECK(router_state.started && m->state != SM_DEAD);
	advance(3000);
	CHECK(m->state != SM_DEAD && router_state.dead.n == 0);
	set_up("rest", true); /* back: it goes out at once */
	CHECK(m->state == SM_INFLIGHT);
	deliver_all();
	CHECK(router_state.count == 0);
}

/* A message for mqtt that fell back to rest goes back to mqtt (the head of its
 * chain) as soon as mqtt is up, not to rest where it last waited. */
static void test_retry_from_head(void)
{
	workers(false, true, false); /* only rest's link is up, and its server answers retry */
	unsigned from = nsent;
	struct smsg *m = accept_msg("mqtt", PRIO_NORMAL);
	CHECK(m->state == SM_INFLIGHT && sent_to("mqtt", from) == 1);
	answer_down(); /* mqtt: broker unreachable; on along the chain, to rest */
	CHECK(m->state == SM_INFLIGHT && sent_to("rest", from) == 1);
	answer(nsent - 1, JOB_RETRY); /* rest fails: it waits to try rest again */
	CHECK(m->state == SM_WAITING && m->again);
	set_up("mqtt", true);         /* mqtt is back: wakes it, to mqtt at once */
	CHECK(m->state == SM_INFLIGHT && strcmp(sent[nsent - 1].proto, "mqtt") == 0);
	answer(nsent - 1, JOB_OK);
	CHECK(router_state.count == 0);

	/* mqtt back while rest held it (no wake-up: a link that flapped): rest's
	 * failure starts a round at the head at once, no wait on rest. */
	set_up("mqtt", false);
	advance(2000);
	from = nsent;
	m = accept_msg("mqtt", PRIO_NORMAL);
	answer_down();
	CHECK(m->state == SM_INFLIGHT && strcmp(m->worker, "rest") == 0);
	procs[2].connected = true;
	router_state.protos[2].link_up = true;
	answer(nsent - 1, JOB_RETRY);
	CHECK(m->state == SM_INFLIGHT && strcmp(sent[nsent - 1].proto, "mqtt") == 0);
	answer(nsent - 1, JOB_OK);
	CHECK(router_state.count == 0);
}

static void pause_all(bool pause)
{
	for (int i = 0; i < 3; i++)
		router_pause(names[i], pause);
}

/* Advance until every message given waits (they move in step: accepted together). */
static bool all_wait(struct smsg **ms, int n)
{
	for (int t = 0; t < 100; t++) {
		int w = 0;
		for (int i = 0; i < n; i++)
			w += ms[i]->state == SM_WAITING;
		if (w == n)
			return true;
		advance(TICK_MS);
	}
	return false;
}

/* A protocol that comes back wakes the messages waiting for it: high priority
 * first, then by age. */
static void test_wake_order(void)
{
	workers(true, true, true);
	pause_all(true);
	struct smsg *ms[6];
	enum priority prio[6] = { PRIO_LOW, PRIO_NORMAL, PRIO_HIGH, PRIO_LOW, PRIO_HIGH, PRIO_NORMAL };
	for (int i = 0; i < 6; i++)
		ms[i] = accept_msg("mqtt", prio[i]);
	CHECK(all_wait(ms, 6)); /* each walked its chain of paused protocols, and waits */
	char ids[6][UCGW_ID_LEN + 1]; /* a delivered message is freed: keep its id */
	for (int i = 0; i < 6; i++)
		str_copy(ids[i], sizeof ids[i], ms[i]->id);
	unsigned from = nsent;
	router_pause("mqtt", false);
	CHECK(nsent - from == 4); /* the window */
	static const int order[6] = { 2, 4, 1, 5, 0, 3 };
	for (unsigned k = 0; k < 4; k++)
		CHECK(strcmp(sent[from + k].id, ids[order[k]]) == 0);
	deliver_all();
	for (unsigned k = 4; k < 6; k++)
		CHECK(strcmp(sent[from + k].id, ids[order[k]]) == 0);
	deliver_all();
	pause_all(false);
	CHECK(router_state.count == 0);
}

/* A backlog queued on one protocol spreads to the others of each message's
 * chain when they are up, by what each takes at its pace. */
static void test_spread(void)
{
	workers(true, true, true);
	pause_all(true);
	for (int i = 0; i < 60; i++)
		accept_msg(i % 3 == 0 ? "websocket" : i % 3 == 1 ? "rest" : "mqtt", PRIO_NORMAL);
	advance(2000);
	unsigned from = nsent;
	uint64_t stolen0 = router_state.protos[0].st.stolen, stolen2 = router_state.protos[2].st.stolen;
	router_pause("rest", false); /* rest first: everything goes its way */
	CHECK(sent_to("rest", from) == 4);
	router_pause("websocket", false); /* then the others take what rest has not */
	router_pause("mqtt", false);
	advance(TICK_MS);
	CHECK(sent_to("websocket", from) == 4 && sent_to("mqtt", from) == 4);
	/* a message taken over is the taker's: on its list, under its name */
	for (int i = 0; i < 3; i++)
		for (struct smsg *m = router_state.protos[i].inflight.head; m; m = m->qnext)
			CHECK(strcmp(m->worker, router_state.protos[i].name) == 0);
	/* rest is slow: it answers one job for every three the others answer. */
	for (int round = 0; round < 400 && router_state.count; round++) {
		for (unsigned i = from; i < nsent; i++)
			if (!sent[i].answered && strcmp(sent[i].proto, "rest") == 0 && round % 3 == 0) {
				answer(i, JOB_OK);
				break;
			}
		for (unsigned i = from; i < nsent; i++)
			if (!sent[i].answered && strcmp(sent[i].proto, "rest") != 0) {
				answer(i, JOB_OK);
				break;
			}
		advance(TICK_MS);
	}
	deliver_all();
	CHECK(router_state.count == 0);
	unsigned r = sent_to("rest", from), w = sent_to("websocket", from), q = sent_to("mqtt", from);
	printf("backlog of 60, rest three times slower: rest %u, websocket %u, mqtt %u jobs\n", r, w, q);
	CHECK(r + w + q == 60 && w > 0 && q > 0 && r < w + q);
	CHECK(router_state.protos[0].st.stolen > stolen0 || router_state.protos[2].st.stolen > stolen2);
}

/* Dead only when the configuration has nothing that could carry it. */
static void test_dead_only_for_good(void)
{
	workers(true, true, true);
	procs[1].state = PROC_FAILED; /* rest failed: a restart may bring it back */
	struct smsg *m = message("rest", PRIO_NORMAL);
	m->kind = JOB_FILE; /* no metadata protocol carries a file */
	router_adopt(m);
	router_route(m);
	CHECK(m->state == SM_DEAD && strstr(m->last_error, "not enabled in the configuration"));
	router_forget(m, "failed", "purged");
	procs[0].state = procs[2].state = PROC_FAILED;
	m = accept_msg("auto", PRIO_NORMAL);
	CHECK(m->state == SM_WAITING && strstr(m->last_error, "no worker can take this message now"));
	procs[0].state = procs[1].state = procs[2].state = PROC_READY;
	router_worker_ready(&procs[1]); /* a worker back: it goes at once, not after its backoff */
	CHECK(m->state == SM_INFLIGHT);
	deliver_all();
	CHECK(router_state.count == 0 && router_state.dead.n == 0);
}

/* Answer proto's open jobs: mqtt delivers, the others refuse (a 503). */
static void answer_proto(const char *proto, unsigned from)
{
	for (unsigned i = from; i < nsent; i++)
		if (!sent[i].answered && strcmp(sent[i].proto, proto) == 0)
			answer(i, strcmp(proto, "mqtt") == 0 ? JOB_OK : JOB_RETRY);
}

/* A message taken over by a protocol that then refuses it goes back to its own
 * protocol in the same round, not to a backoff while its own is up and idle;
 * and a refusing protocol takes no more over. */
static void test_taken_over_then_refused(void)
{
	workers(false, true, true); /* rest connected, but its server refuses */
	unsigned from = nsent;
	for (int i = 0; i < 12; i++)
		accept_msg("mqtt", PRIO_NORMAL); /* mqtt's window full: a backlog */
	clock_ms += 300;
	router_tick(); /* rest, idle, takes some over */
	CHECK(sent_to("rest", from) > 0);
	answer_proto("rest", from);
	unsigned rest_jobs = sent_to("rest", from);
	for (int k = 0; k < 20 && router_state.count; k++) {
		answer_proto("mqtt", from);
		advance(TICK_MS);
	}
	CHECK(router_state.count == 0 && router_state.waiting.n == 0); /* all delivered by mqtt, none waits a backoff */
	CHECK(sent_to("rest", from) == rest_jobs); /* refusing, rest took no more */
	deliver_all();
}

/* The sweep of a stuck queue while the protocol it reroutes to takes over
 * messages of that same queue: no list is corrupted, nothing held twice. */
static void test_stuck_sweep_while_taken_over(void)
{
	workers(false, true, true);
	unsigned from = nsent;
	for (int i = 0; i < 4; i++)
		accept_msg("rest", PRIO_NORMAL); /* rest's window full, never answered */
	CHECK(sent_to("rest", from) == 4);
	router_pause("mqtt", true); /* mqtt's queue is stuck */
	advance(60000 - 500);
	for (int i = 0; i < 3; i++)
		accept_msg("mqtt", PRIO_NORMAL);
	advance(700); /* rest's jobs time out, then the stuck sweep moves mqtt's queue */
	uint64_t n = 0;
	for (int i = 0; i < router_state.nprotos; i++) {
		n += router_state.protos[i].inflight.n;
		for (int pr = PRIO_HIGH; pr <= PRIO_LOW; pr++)
			n += router_state.protos[i].queue[pr].n;
	}
	CHECK(n + router_state.waiting.n + router_state.dead.n == router_state.count); /* each live message on exactly one list */
	CHECK(router_state.protos[2].queue[PRIO_NORMAL].n == 0);
	router_pause("mqtt", false);
	for (int k = 0; k < 50 && router_state.count; k++) {
		deliver_all();
		advance(TICK_MS);
	}
	CHECK(router_state.count == 0);
}

/* Periods in local time: a day is its date, a month starts on its start day. */
static void test_budget_periods(void)
{
	setenv("TZ", "UTC", 1);
	tzset();
	uint64_t mar5 = 1772712000000ull; /* 2026-03-05 12:00 UTC */
	CHECK(budget_day_key(mar5) == 20260305);
	CHECK(budget_month_key(mar5, 1) == 202603);
	CHECK(budget_month_key(mar5, 5) == 202603);
	CHECK(budget_month_key(mar5, 6) == 202602);
	CHECK(budget_month_key(1767614400000ull, 10) == 202512); /* 2026-01-05: still December's period */
}

/* Past budget_warn_percent, hold_all_but_high holds a normal message in the
 * spool, saying why, and lets a high one go. Last: the count stays used. */
static void test_budget_holds(void)
{
	workers(true, true, true);
	budget_wire("mqtt", 950);
	unsigned before = nsent;
	struct smsg *normal = accept_msg("mqtt", PRIO_NORMAL), *high = accept_msg("mqtt", PRIO_HIGH);
	CHECK(normal->state == SM_WAITING && budget_is_held(normal));
	CHECK(strcmp(normal->last_error, "held: daily byte budget 95% used (950 of 1000 bytes; "
					 "link.budget_policy hold_all_but_high)") == 0);
	CHECK(high->state == SM_INFLIGHT && sent_to("mqtt", before) == 1);
	advance(2000); /* no sweep lets it go while the budget holds it */
	CHECK(normal->state == SM_WAITING && sent_to("mqtt", before) == 1);
	deliver_all();
}

/* Position in the sent log (from `from`) of the job for id, or -1. */
static int sent_at(const char *id, unsigned from)
{
	for (unsigned i = from; i < nsent; i++)
		if (strcmp(sent[i].id, id) == 0)
			return (int)(i - from);
	return -1;
}

/* mqtt's link is down (and every other's): n messages for mqtt wait, backlog.
 * Their ids in ids. */
static void outage_backlog(int n, char ids[][UCGW_ID_LEN + 1])
{
	workers(false, false, false);
	set_up("mqtt", false);
	struct smsg *ms[32];
	for (int i = 0; i < n; i++) {
		ms[i] = accept_msg("mqtt", PRIO_NORMAL);
		str_copy(ids[i], UCGW_ID_LEN + 1, ms[i]->id);
		CHECK(ms[i]->backlog); /* accepted while its chain had no protocol up */
	}
	CHECK(all_wait(ms, n));
	advance(1000); /* down long enough to be an outage */
}

/* spool.order live_first: after an outage the backlog goes oldest first, a
 * message that arrives while it drains goes at the next free slot of the
 * window, and while live ones come the backlog holds at most its share. */
static void test_live_first(void)
{
	load_config_with("spool: {order: live_first, backfill_share: 0.5, retry_backoff_min_ms: 1000,"
			 " retry_backoff_max_ms: 8000}\n");
	char ids[12][UCGW_ID_LEN + 1];
	outage_backlog(12, ids);
	/* Two whose backoff ended wait in mqtt's backlog queue for the link, while
	 * the oldest still waits its backoff: the wake must not hand out the
	 * queue's before the oldest has joined it. */
	router_route(router_find(ids[5]));
	router_route(router_find(ids[9]));
	CHECK(router_find(ids[5])->state == SM_QUEUED && router_find(ids[5])->in_backfill);
	CHECK(router_find(ids[0])->state == SM_WAITING);
	unsigned from = nsent;
	set_up("mqtt", true); /* the link is back: the backlog goes, oldest first, a window of it */
	CHECK(nsent - from == 4);
	for (int i = 0; i < 4; i++)
		CHECK(sent_at(ids[i], from) == i);
	struct smsg *live = accept_msg("mqtt", PRIO_NORMAL); /* arrives now: waits only for a free slot */
	char live_id[UCGW_ID_LEN + 1];
	str_copy(live_id, sizeof live_id, live->id);
	CHECK(!live->backlog && live->state == SM_QUEUED);
	answer(from, JOB_OK);
	CHECK(sent_at(live_id, from) == 4 && live->state == SM_INFLIGHT);
	/* Live traffic now: the backlog holds at most half the window (2 of 4). */
	answer(from + 1, JOB_OK);
	answer(from + 2, JOB_OK);
	CHECK(router_state.protos[2].bf.inflight <= 2);
	struct smsg *live2 = accept_msg("mqtt", PRIO_NORMAL);
	CHECK(live2->state == SM_INFLIGHT); /* a slot was kept free for it */
	CHECK(router_state.protos[2].bf.inflight + 2 == router_state.protos[2].inflight.n);
	/* A second without live traffic: the backlog takes the whole window again. */
	for (int k = 0; k < 40 && router_state.count; k++) {
		deliver_all();
		advance(TICK_MS);
	}
	CHECK(router_state.count == 0);
	/* The backlog went out complete, oldest first. */
	int last = -1;
	for (int i = 0; i < 12; i++) {
		int at = sent_at(ids[i], from);
		CHECK(at > last);
		last = at;
	}
	CHECK(sent_at(live_id, from) < sent_at(ids[11], from));
	load_config();
}

/* spool.order fifo (the default): a message that arrives after the outage
 * queues behind the backlog; its trace says live, theirs backfill. */
static void test_fifo_order(void)
{
	char ids[8][UCGW_ID_LEN + 1];
	outage_backlog(8, ids);
	unsigned from = nsent;
	set_up("mqtt", true);
	struct smsg *live = accept_msg("mqtt", PRIO_NORMAL);
	char live_id[UCGW_ID_LEN + 1];
	str_copy(live_id, sizeof live_id, live->id);
	CHECK(!live->backlog && live->state == SM_QUEUED);
	for (int k = 0; k < 40 && router_state.count; k++) {
		deliver_all();
		advance(TICK_MS);
	}
	CHECK(router_state.count == 0);
	CHECK(sent_at(live_id, from) == 8);
}

/* Under link.max_bytes_per_s, a protocol with a backlog (its results
 * arriving all the time, each one pumping it) does not take every refill: a
 * few messages for another protocol, idle and connected, go in their turn,
 * not after the whole backlog. */
static void test_cap_shared_fairly(void)
{
	load_text("websocket: {server_url: 'ws://127.0.0.1:1/lpr'}\n"
		  "rest: {base_url: 'http://127.0.0.1:1'}\n"
		  "mqtt: {broker_url: '127.0.0.1:1'}\n"
		  "gateway: {window: 4}\n"
		  "link: {max_bytes_per_s: 1000}\n"
		  "fallback: {enabled: false}\n");
	workers(true, true, true);
	char ws_ids[40][UCGW_ID_LEN + 1], mq_ids[3][UCGW_ID_LEN + 1];
	unsigned from = nsent;
	for (int i = 0; i < 40; i++) {
		struct smsg *m = message("websocket", PRIO_NORMAL);
		m->size = 250; /* 4 a second under the cap */
		str_copy(ws_ids[i], sizeof ws_ids[i], m->id);
		router_adopt(m);
		router_route(m);
	}
	for (int k = 0; k < 10; k++) { /* the backlog is going: a second of it */
		deliver_all();
		advance(TICK_MS);
	}
	unsigned ws_before = sent_to("websocket", from);
	CHECK(ws_before < 40);
	for (int i = 0; i < 3; i++) {
		struct smsg *m = message("mqtt", PRIO_NORMAL);
		m->size = 250;
		str_copy(mq_ids[i], sizeof mq_ids[i], m->id);
		router_adopt(m);
		router_route(m);
	}
	int mq_at = -1;
	for (int k = 0; k < 200 && router_state.count; k++) {
		deliver_all();
		advance(TICK_MS);
		if (mq_at < 0 && sent_at(mq_ids[2], from) >= 0)
			mq_at = (int)sent_to("websocket", from);
	}
	CHECK(router_state.count == 0);
	/* one job each in turn: mqtt's three went with the next few of websocket's */
	CHECK(mq_at >= 0 && mq_at - (int)ws_before <= 4);
	if (!(mq_at >= 0 && mq_at - (int)ws_before <= 4))
		fprintf(stderr, "mqtt's last went after websocket's %d (of 40; %u before mqtt's arrived)\n", mq_at,
			ws_before);
	for (int i = 0; i < 40; i++)
		CHECK(sent_at(ws_ids[i], from) >= 0);
	load_config();
}

/* The rate cap is charged a job's size when it is handed out, and the bytes
 * on the wire when the worker reports them: a compressed job that took less
 * than its size gives the difference back. */
static void test_cap_credits_compression(void)
{
	load_text("websocket: {server_url: 'ws://127.0.0.1:1/lpr'}\n"
		  "rest: {base_url: 'http://127.0.0.1:1'}\n"
		  "mqtt: {broker_url: '127.0.0.1:1'}\n"
		  "link: {max_bytes_per_s: 1000}\n"
		  "fallback: {enabled: false}\n");
	workers(true, true, true);
	advance(2000); /* the bucket full: a second's worth */
	struct smsg *a = message("websocket", PRIO_NORMAL);
	a->size = 1000;
	router_adopt(a);
	router_route(a);
	CHECK(a->state == SM_INFLIGHT); /* the bucket is empty now */
	deliver_all();
	budget_wire("websocket", 100); /* compressed: 100 bytes went */
	struct smsg *b = message("websocket", PRIO_NORMAL);
	b->size = 500;
	router_adopt(b);
	router_route(b);
	CHECK(b->state == SM_INFLIGHT); /* 900 came back: no wait */
	deliver_all();
	load_config();
}

int main(void)
{
	load_config();
	router_state.started = true; /* the start's gate: test_replay_auto closes it again */
	router_state.workers_ms = 1;
	workers(true, true, true);
	/* router_init without its timer: the tests tick by hand */
	sup.loop = uv_default_loop();
	router_init();
	uv_timer_stop(&router_state.tick);
	router_state.started = true;
	test_table();
	test_moves_recorded();
	test_replay_auto();
	test_retry_from_head();
	test_wake_order();
	test_spread();
	test_dead_only_for_good();
	test_stuck_sweep_while_taken_over();
	test_taken_over_then_refused();
	test_fifo_order();
	test_live_first();
	test_budget_periods();
	test_cap_shared_fairly();
	test_budget_holds(); /* its budget stays used: only tests without a byte budget after it */
	test_cap_credits_compression();
	return CHECK_DONE();
}
