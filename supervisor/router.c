/* The router: every accepted message lives here (by id, in age order, and in
 * exactly one of: a protocol's queue, a worker's hands, the waiting set, the
 * dead letters) until a worker says ok. */
#include "supervisor/router.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"
#include "ipc/channel.h"
#include "common/compress.h"
#include "common/crypto.h"
#include "supervisor/admission.h"
#include "supervisor/budget.h"
#include "supervisor/clock.h"
#include "supervisor/control.h"
#include "supervisor/errors.h"
#include "supervisor/monitor.h"
#include "supervisor/msgstate.h"
#include "supervisor/proctab.h"
#include "supervisor/router_int.h"
#include "supervisor/spool.h"
#include "supervisor/sup.h"
#include "supervisor/window.h"

struct router router_state;

/* ---- the id index and the age list ---- */

static unsigned id_hash(const char *id) { return id_hash32(id) & (ID_BUCKETS - 1); }

struct smsg *router_find(const char *id)
{
	for (struct smsg *m = router_state.buckets[id_hash(id)]; m; m = m->hnext)
		if (strcmp(m->id, id) == 0)
			return m;
	return NULL;
}

static void index_add(struct smsg *m)
{
	unsigned h = id_hash(m->id);
	m->hnext = router_state.buckets[h];
	router_state.buckets[h] = m;
	router_state.count++;
	router_state.bytes += m->size;
}

static void age_del(struct smsg *m);

static void index_del(struct smsg *m)
{
	struct smsg **pp = &router_state.buckets[id_hash(m->id)];
	while (*pp && *pp != m)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = m->hnext;
	router_state.count--;
	router_state.bytes -= m->size;
}

/* ---- lists: every message is on exactly one ---- */

void mlist_push(struct mlist *l, struct smsg *m)
{
	m->qnext = NULL;
	m->qprev = l->tail;
	if (l->tail)
		l->tail->qnext = m;
	else
		l->head = m;
	l->tail = m;
	l->n++;
}

void mlist_del(struct mlist *l, struct smsg *m)
{
	if (m->qprev)
		m->qprev->qnext = m->qnext;
	else
		l->head = m->qnext;
	if (m->qnext)
		m->qnext->qprev = m->qprev;
	else
		l->tail = m->qprev;
	m->qnext = m->qprev = NULL;
	l->n--;
}

struct mlist *mlist_of(struct smsg *m)
{
	struct rproto *rp = m->at < router_state.nprotos ? &router_state.protos[m->at] : NULL;
	switch (m->state) {
	case SM_QUEUED: return !rp ? NULL : m->in_backfill ? &rp->bf.queue[m->priority] : &rp->queue[m->priority];
	case SM_INFLIGHT: return rp ? &rp->inflight : NULL;
	case SM_WAITING: return &router_state.waiting;
	case SM_DEAD: return &router_state.dead;
	case SM_LIMBO:
	case SM_GONE:
	case SM_NSTATES: return NULL;
	}
	return NULL;
}

static void unlist(struct smsg *m)
{
	struct mlist *l = mlist_of(m);
	if (l)
		mlist_del(l, m);
	m->in_backfill = false;
}

/* The one place a message's state changes: the move must be in msgstate.c's
 * table, and it is kept in the message's trace. A move the table does not have
 * is a bug in the router: fatal in a debug build; in a release build it is
 * logged and made anyway (the event says where to), as before the table, so a
 * message is never stranded by its own bookkeeping. The caller has taken the
 * message off its list and puts it on the new one. */
static void transition(struct smsg *m, enum msg_event ev)
{
	static const enum smsg_state target[EV_COUNT] = {
		[EV_ENQUEUE] = SM_QUEUED, [EV_TAKE] = SM_LIMBO,    [EV_SEND] = SM_INFLIGHT,
		[EV_END] = SM_LIMBO,      [EV_WAIT] = SM_WAITING,  [EV_KILL] = SM_DEAD,
		[EV_REQUEUE] = SM_LIMBO,  [EV_DELIVER] = SM_GONE,  [EV_REMOVE] = SM_GONE,
	};
	int to = msgstate_next(m->state, ev);
	if (to < 0) {
#ifndef NDEBUG
		panic("message %s: '%s' is not a move from state %s", m->id, msgevent_str(ev), msgstate_str(m->state));
#endif
		log_warnx("BUG: message %s: '%s' is not a move from state %s; made anyway", m->id, msgevent_str(ev),
			  msgstate_str(m->state));
		to = (int)target[ev];
	}
	struct move *mv = &m->moves[m->nmoves++ % MAX_MOVES];
	uint64_t since = wall_ms() - m->created_wall_ms;
	mv->ev = (uint8_t)ev;
	mv->to = (uint8_t)to;
	mv->at_ms = since > UINT32_MAX ? UINT32_MAX : (uint32_t)since;
	m->state = (enum smsg_state)to;
}

/* ---- protocols ---- */

/* The router's state for a worker: at its slot's index, no look-up. */
static struct rproto *proc_route(const struct proc *p) { return &router_state.protos[p->slot->idx]; }

struct rproto *rproto_by_name(const char *name)
{
	for (int i = 0; i < router_state.nprotos; i++) /* asked several times per message: the first letter first */
		if (router_state.protos[i].name[0] == name[0] && strcmp(router_state.protos[i].name, name) == 0)
			return &router_state.protos[i];
	return NULL;
}

bool rproto_enabled(const struct rproto *rp) { return config_protocol_enabled(sup.cfg, rp->name); }

/* Usable now: its worker is ready (and its socket open) and its server is not
 * known to be down. */
bool rproto_up(const struct rproto *rp)
{
	struct proc *p = rp->slot->proc;
	return p && !rp->paused && p->state == PROC_READY && p->ch && p->connected && now_ms() >= rp->cool_until;
}

int router_pause(const char *name, bool pause)
{
	struct rproto *rp = rproto_by_name(name);
	if (!rp)
		return -1;
	rp->paused = pause;
	log_info("protocol %s %s by an operator", name, pause ? "paused" : "resumed");
	if (!pause) {
		router_wake(name);
		router_pump(rp);
	}
	return 0;
}

static void router_init_protos(void)
{
	if (router_state.nprotos)
		return;
	for (int i = 0; i < slot_count() && i < MAX_PROTOS; i++) {
		struct rproto *rp = &router_state.protos[i];
		rp->slot = slot_at(i);
		rp->name = rp->slot->proto->name;
		rp->idx = i;
		rp->files = rp->slot->proto->carries & PROTO_FILES;
		rp->meta = rp->slot->proto->carries & PROTO_META;
		router_state.nprotos++;
	}
}

/* ---- outcomes ---- */

/* Packed for every message a client waits for: straight into the body's buffer. */
void router_pack_outcome(msgpack_packer *pk, const struct smsg *m, const char *status)
{
	msgpack_sbuffer *sb = pk_sbuffer(pk);
	const struct hop *last = m->nroute ? &m->route[m->nroute - 1] : NULL;
	mpw_map(sb, 7);
	mpw_kv_str(sb, "id", m->id);
	mpw_kv_str(sb, "status", status);
	mpw_kv_str(sb, "protocol", last ? last->protocol : NULL);
	mpw_kv_u64(sb, "attempts", m->tries);
	mpw_kv_str(sb, "error", strcmp(status, "ok") == 0 ? NULL : m->last_error);
	mpw_kv_u64(sb, "latency_ms", wall_ms() - m->created_wall_ms);
	mpw_str(sb, "route");
	router_pack_route(pk, m);
}

void router_pack_route(msgpack_packer *pk, const struct smsg *m)
{
	msgpack_sbuffer *sb = pk_sbuffer(pk);
	mpw_array(sb, m->nroute);
	for (unsigned i = 0; i < m->nroute; i++) {
		const struct hop *h = &m->route[i];
		mpw_map(sb, 5);
		mpw_kv_str(sb, "protocol", h->protocol);
		mpw_kv_str(sb, "result", h->status == 255 ? "in flight" : job_status_str(h->status));
		mpw_kv_u64(sb, "start_ms", h->start_wall_ms);
		mpw_kv_u64(sb, "ms", h->ms);
		mpw_kv_str(sb, "error", h->error[0] ? h->error : NULL);
	}
}

/* Every reply to a send goes out from admission.c. */
static void answer_waiter(struct smsg *m, const char *status) { admission_outcome(m, status); }

void smsg_free(struct smsg *m)
{
	free(m->route);
	free(m->payload);
	free(m->topic);
	free(m->endpoint);
	free(m->remote_name);
	free(m);
}

/* ---- the routes of messages that are gone ----
 * `trace ID` right after a delivery is the usual question ("which protocol took
 * it, and why not the first?"), so the last RECENT finished messages are kept,
 * without their payloads, in a ring, and their trace is packed only when asked
 * for: packed at once it cost every delivery more than its routing did. */
#define RECENT 256
/* The ring holds copies, in storage of its own: kept as they were, the last
 * messages of a long backlog lay all over the heap and each held its page
 * there, so 2.3 MB of it could not be given back after the drain (memtrim.c).
 * The storage is laid out by field, not by slot: hop k of every slot side by
 * side, each text likewise. A slot of its own (3.9 KB: 16 hops, three texts)
 * was a page, and the ring's 1 MB was all resident after 256 deliveries; by
 * field, only the hops and texts that messages had are touched (a message of
 * one hop and no text: 40 KB of hops for the ring). */
#define RECENT_TEXT 256
static struct recent {
	struct smsg m;      /* finished: on no list, in no index, no payload; route in recent_hops */
	const char *state;  /* a string literal: "delivered", "expired", ...; NULL: free slot */
} recent[RECENT];
static struct hop recent_hops[MAX_ROUTE][RECENT];
static char recent_text[3][RECENT][RECENT_TEXT]; /* topic, endpoint, remote_name */
static unsigned recent_next;

void router_pack_message(msgpack_packer *pk, const struct smsg *m, const char *state)
{
	uint64_t at = m->finished_wall_ms ? m->finished_wall_ms : wall_ms(); /* a finished one's age at its end */
	msgpack_pack_map(pk, 15);
	pk_kv_str(pk, "id", m->id);
	pk_kv_str(pk, "kind", m->kind == JOB_FILE ? "file" : "meta");
	pk_kv_str(pk, "state", state ? state : msgstate_str(m->state));
	pk_kv_str(pk, "protocol", m->worker[0] ? m->worker : m->protocol);
	pk_kv_str(pk, "priority", priority_str(m->priority));
	pk_kv_u64(pk, "attempts", m->tries);
	pk_kv_u64(pk, "size", m->size);
	pk_kv_u64(pk, "age_ms", at - m->created_wall_ms);
	pk_kv_u64(pk, "next_try_ms",
		  !state && m->state == SM_WAITING && m->next_try_ms > now_ms() ? m->next_try_ms - now_ms() : 0);
	pk_kv_str(pk, "last_error", m->last_error[0] ? m->last_error : NULL);
	pk_kv_str(pk, "remote_name", m->remote_name);
	pk_kv_str(pk, "order", m->backlog ? "backfill" : "live"); /* spool.order: backfill.c */
	pk_kv_u64(pk, "accepted_ms", m->created_wall_ms);
	pk_key(pk, "clock_corrected"); /* clock.c */
	if (m->clock_corrected)
		msgpack_pack_true(pk);
	else
		msgpack_pack_false(pk);
	pk_key(pk, "expiry_rebased"); /* its time could not be placed: its expiry counts from when it was read back */
	if (m->expiry_rebased)
		msgpack_pack_true(pk);
	else
		msgpack_pack_false(pk);
}

void router_pack_trace(msgpack_packer *pk, const struct smsg *m, const char *state)
{
	msgpack_pack_map(pk, 4);
	pk_key(pk, "message");
	router_pack_message(pk, m, state);
	pk_key(pk, "route");
	router_pack_route(pk, m);
	pk_key(pk, "states"); /* the latest state changes, oldest first */
	uint32_t n = m->nmoves < MAX_MOVES ? m->nmoves : MAX_MOVES;
	msgpack_pack_array(pk, n);
	for (uint32_t i = m->nmoves - n; i < m->nmoves; i++) {
		const struct move *mv = &m->moves[i % MAX_MOVES];
		msgpack_pack_map(pk, 3);
		pk_kv_str(pk, "event", msgevent_str((enum msg_event)mv->ev));
		pk_kv_str(pk, "state", msgstate_str((enum smsg_state)mv->to));
		pk_kv_u64(pk, "at_ms", mv->at_ms);
	}
	pk_kv_str(pk, "requested", m->protocol);
}

static char *keep_text(char *slot, const char *s)
{
	if (!s)
		return NULL;
	str_copy(slot, RECENT_TEXT, s);
	return slot;
}

/* Keep a copy of m (now finished) for a later trace, and free m; the copy
 * replaces the oldest one kept. */
static void remember(struct smsg *m, const char *state)
{
	unsigned slot = recent_next++ % RECENT;
	struct recent *r = &recent[slot];
	r->m = *m;
	r->m.finished_wall_ms = wall_ms();
	r->m.payload = NULL;
	r->m.route = NULL;
	if (r->m.nroute > MAX_ROUTE)
		r->m.nroute = MAX_ROUTE;
	for (unsigned k = 0; k < r->m.nroute; k++) /* a message that was never tried has no route at all */
		recent_hops[k][slot] = m->route[k];
	r->m.topic = keep_text(recent_text[0][slot], m->topic);
	r->m.endpoint = keep_text(recent_text[1][slot], m->endpoint);
	r->m.remote_name = keep_text(recent_text[2][slot], m->remote_name);
	r->state = state;
	smsg_free(m);
}

bool router_recent_trace(const char *id, msgpack_packer *pk)
{
	for (unsigned i = 0; i < RECENT; i++) {
		unsigned slot = (recent_next - 1 - i) % RECENT;
		const struct recent *r = &recent[slot];
		if (r->state && strcmp(r->m.id, id) == 0) {
			struct hop route[MAX_ROUTE];
			struct smsg m = r->m;
			for (unsigned k = 0; k < m.nroute; k++)
				route[k] = recent_hops[k][slot];
			m.route = route;
			router_pack_trace(pk, &m, r->state);
			return true;
		}
	}
	return false;
}

/* Delivered (or purged, expired, dropped): out of the spool and out of memory.
 * state says which, in words, for a later `trace`. */
void router_forget(struct smsg *m, const char *status, const char *state)
{
	unlist(m);
	age_del(m);
	index_del(m);
	answer_waiter(m, status);
	admission_finished(m, status, state);
	spool_done(m, state); /* before the move: the spool counts its dead letters by their state */
	transition(m, strcmp(status, "ok") == 0 ? EV_DELIVER : EV_REMOVE);
	remember(m, state); /* a copy: m is freed */
}

static void to_dead(struct smsg *m)
{
	unlist(m);
	transition(m, EV_KILL);
	mlist_push(&router_state.dead, m);
	router_state.dead_total++;
	stats_dead(m);
	log_warnx("message %s is dead-lettered: no protocol may deliver it (%s)", m->id, m->last_error);
	spool_dead(m, m->last_error);
	answer_waiter(m, "failed");
	/* The deaths it was held at are in its reason now. A dead letter goes
	 * round again only when requeued, and then with its count started afresh,
	 * as after a restart of ucgwd (the count is not in the spool). Kept, a
	 * quarantined message was quarantined again by the first failed attempt
	 * after its requeue, with no new death: job_finished took the old count
	 * for one reached while that attempt was on its way. */
	m->crashes = 0;
}

/* ---- sending jobs ---- */

/* The key of security.encryption_key_file, loaded when first needed and again
 * after a reload. */
static bool encryption_key(unsigned char key[CRYPTO_KEY_LEN], char *err, size_t errlen)
{
	static unsigned char cached[CRYPTO_KEY_LEN];
	static uint64_t loaded_at = UINT64_MAX;
	const char *path = config_str(sup.cfg, "security", "encryption_key_file");
	if (!path) {
		snprintf(err, errlen, "encryption asked for, but security.encryption_key_file is not set");
		return false;
	}
	if (loaded_at != sup.reloads) {
		if (crypto_key_load(path, cached, err, errlen) < 0)
			return false;
		loaded_at = sup.reloads;
	}
	memcpy(key, cached, CRYPTO_KEY_LEN);
	return true;
}

bool router_wants_encryption(const struct smsg *m, const char *protocol)
{
	const struct cfg_section *sec = config_section(sup.cfg, protocol);
	return m->kind == JOB_META && (m->encrypt || (cfg_has(sec, "encrypt") && cfg_bool(sec, "encrypt")));
}

/* The seed's EncryptionManager: the payload becomes base64(nonce|tag|ciphertext),
 * sent as a JSON string so that JSON transports still carry JSON. With the
 * protocol's compress on, the plaintext sealed is the payload compressed
 * (ciphertext does not compress, so the worker could not do it after): its
 * magic bytes tell the receiver, who decrypts, what to decompress with. */
static char *sealed_payload(const struct smsg *m, const char *protocol, size_t *len, char *err, size_t errlen)
{
	unsigned char key[CRYPTO_KEY_LEN];
	if (!encryption_key(key, err, errlen))
		return NULL;
	const struct cfg_section *sec = config_section(sup.cfg, protocol);
	int alg = cfg_has(sec, "compress") ? compress_alg_parse(cfg_str(sec, "compress")) : COMPRESS_NONE;
	size_t zlen = 0;
	unsigned char *z = alg > COMPRESS_NONE && m->size >= (size_t)cfg_int(sec, "compress_min_bytes")
				   ? compress_buf((enum compress_alg)alg, m->payload, m->size, &zlen)
				   : NULL;
	char *b64 = crypto_encrypt_b64(key, z ? (const void *)z : m->payload, z ? zlen : m->size, err, errlen);
	free(z);
	crypto_wipe(key, sizeof key);
	if (!b64)
		return NULL;
	char *out = xasprintf("\"%s\"", b64);
	free(b64);
	*len = strlen(out);
	return out;
}

static int send_job(struct rproto *rp, struct proc *p, struct smsg *m)
{
	int fd = -1;
	if (m->kind == JOB_META && !m->payload && spool_load_payload(m) < 0) {
		snprintf(m->last_error, sizeof m->last_error, "cannot read the message back from the spool");
		return -1;
	}
	if (m->kind == JOB_FILE && (fd = spool_open_file(m, m->last_error, sizeof m->last_error)) < 0)
		return -1;
	struct msg j = { .type = MSG_JOB, .seq = ++router_state.job_seq, .id = m->id, .kind = m->kind,
			 .topic = m->topic, .endpoint = m->endpoint, .remote_name = m->remote_name,
			 .size = m->size, .has_fd = fd >= 0, .priority = m->priority,
			 .attempt = m->tries, .accepted_ms = m->created_wall_ms, .clock_corrected = m->clock_corrected };
	char *sealed = NULL;
	if (m->kind == JOB_META) {
		j.payload = m->payload;
		j.payload_len = m->size;
		if (router_wants_encryption(m, rp->name)) {
			char err[200];
			size_t len;
			if (!(sealed = sealed_payload(m, rp->name, &len, err, sizeof err))) {
				snprintf(m->last_error, sizeof m->last_error, "%s", err);
				return -1;
			}
			j.payload = sealed;
			j.payload_len = len;
		}
	}
	int rc = proc_send(p, &j, fd);
	free(sealed);
	if (fd >= 0)
		close(fd);
	if (rc < 0)
		return rc;
	m->job_seq = j.seq;
	m->job_gen = p->gen;
	m->job_start_us = now_us();
	m->job_start_ms = m->job_start_us / 1000;
	if (!m->again_n) /* retries on the same protocol (its descriptor's retry_key) are one attempt of the round */
		m->attempts++;
	m->tries++;
	if (m->nroute == MAX_ROUTE) { /* keep the first hop and the latest ones */
		memmove(&m->route[1], &m->route[2], (MAX_ROUTE - 2) * sizeof m->route[0]);
		m->nroute--;
	} else if (m->nroute == m->caproute) {
		m->caproute = m->caproute ? m->caproute * 2 : 1;
		m->route = xrealloc(m->route, m->caproute * sizeof *m->route);
	}
	struct hop *h = &m->route[m->nroute++];
	memset(h, 0, sizeof *h);
	str_copy(h->protocol, sizeof h->protocol, rp->name);
	h->proto = (uint8_t)rp->idx;
	h->status = 255;
	h->start_wall_ms = wall_ms();
	transition(m, EV_SEND);
	backfill_sent(rp, m);
	mlist_push(&rp->inflight, m);
	p->inflight++;
	router_state.inflight++;
	return 0;
}

static bool drain_token(void)
{
	if (router_state.drain_rate == 0)
		return true;
	if (router_state.credit < 1000)
		return false;
	router_state.credit -= 1000;
	return true;
}

/* spool.drain_rate messages per second: a bucket refilled by the time that
 * passed, keeping fractions, so that any rate is kept (2/s too), and holding
 * at most one tick's worth (or one message), so that no burst builds up. */
static void drain_refill(void)
{
	uint64_t now = now_ms(), cap = router_state.drain_rate * TICK_MS > 1000 ? router_state.drain_rate * TICK_MS : 1000;
	router_state.credit += router_state.drain_rate * (now - router_state.credit_ms);
	if (router_state.credit > cap)
		router_state.credit = cap;
	router_state.credit_ms = now;
}

static void to_waiting(struct smsg *m, uint64_t delay);
#define RESOURCE_RETRY_MS 1000

/* ---- budget hook (budget.c): a message the link's byte budget holds waits on the side ---- */
static bool budget_hold_aside(struct smsg *m)
{
	uint64_t recheck_ms;
	if (!budget_hold(m, m->last_error, sizeof m->last_error, &recheck_ms))
		return false;
	to_waiting(m, recheck_ms);
	return true;
}

/* A backlog is spread, not pinned to whichever protocol answered first: a
 * protocol that is up, with room in its window and nothing of its own queued,
 * takes the oldest queued message of the highest priority from another
 * protocol's queue, if that message's chain has it. Each protocol so pulls
 * work at the pace it delivers: a slow one takes less, an idle one helps. A
 * look at the first STEAL_SCAN of each queue bounds the cost of a queue full of
 * messages it cannot carry. */
#define STEAL_SCAN 32
/* Only a backlog is spread: a message queued for less than this is merely
 * waiting for room in a busy window, and goes the way it was sent. */
#define STEAL_AFTER_MS 250
static struct smsg *steal_candidate(struct rproto *rp)
{
	/* A protocol whose last job failed takes no one else's work: connected but
	 * refusing (a 503), it would take a window of messages away from a
	 * protocol that delivers each time its cool-down ends. */
	if (!rproto_up(rp) || rp->consecutive_failures)
		return NULL;
	uint64_t now = now_ms();
	for (int pr = PRIO_HIGH; pr <= PRIO_LOW; pr++)
		for (int i = 0; i < router_state.nprotos; i++) {
			struct rproto *from = &router_state.protos[i];
			unsigned k = 0;
			if (from == rp)
				continue;
			for (struct smsg *m = from->queue[pr].head; m && k < STEAL_SCAN; m = m->qnext, k++) {
				if (now - m->queued_ms < STEAL_AFTER_MS)
					break; /* the queue is in the order they joined it: the rest are younger */
				if (select_chain_may_take(m, rp))
					return m;
			}
		}
	/* Then the backlogs (live_first): in age order, not join order. */
	for (int pr = PRIO_HIGH; pr <= PRIO_LOW && backfill_may_send(rp, window_limit(rp)); pr++)
		for (int i = 0; i < router_state.nprotos; i++) {
			struct rproto *from = &router_state.protos[i];
			unsigned k = 0;
			for (struct smsg *m = from == rp ? NULL : from->bf.queue[pr].head; m && k < STEAL_SCAN; m = m->qnext, k++)
				if (now - m->queued_ms >= STEAL_AFTER_MS && select_chain_may_take(m, rp))
					return m;
		}
	return NULL;
}

/* The next job for rp: its own queue's first, then its backlog's oldest
 * (live_first, if the live traffic leaves it room), else one it may take over. */
static struct smsg *next_job(struct rproto *rp, unsigned window, bool *stolen)
{
	*stolen = false;
	for (int pr = PRIO_HIGH; pr <= PRIO_LOW; pr++)
		if (rp->queue[pr].head)
			return rp->queue[pr].head;
	struct smsg *m = backfill_next(rp, window);
	if (m)
		return m;
	*stolen = true;
	return steal_candidate(rp);
}

enum take { TAKE_SENT, TAKE_NONE, TAKE_LIMITED };

/* One job for rp: TAKE_NONE if it has none (or no room in its window, or its
 * worker is not ready), TAKE_LIMITED if a shared limit (link.max_bytes_per_s,
 * spool.drain_rate) has no room for it now. */
static enum take pump_one(struct rproto *rp)
{
	struct proc *p = rp->slot->proc;
	if (!p || p->state != PROC_READY || !p->ch || sup.stopping || rp->paused)
		return TAKE_NONE;
	unsigned window = window_limit(rp);
	for (;;) {
		if (p->inflight >= window || !p->ch || channel_congested(p->ch))
			return TAKE_NONE;
		bool stolen;
		struct smsg *m = next_job(rp, window, &stolen);
		if (m && budget_hold_aside(m)) /* budget hook */
			continue;
		if (!m)
			return TAKE_NONE;
		if (!budget_rate_ok(m) || !drain_token()) /* budget hook: link.max_bytes_per_s */
			return TAKE_LIMITED;
		unlist(m);
		transition(m, EV_TAKE);
		if (stolen) {
			struct rproto *from = &router_state.protos[m->at];
			from->st.given++;
			m->tried &= ~(1u << from->idx); /* from never made its attempt: it stays in the round */
			rp->st.stolen++;
			m->tried |= 1u << rp->idx;
			str_copy(m->worker, sizeof m->worker, rp->name); /* its lists are rp's now */
			m->at = (uint8_t)rp->idx;
			log_debug("message %s: %s takes it over from %s's queue", m->id, rp->name, from->name);
		}
		budget_sent(rp->idx, m); /* budget hook */
		errno = 0;
		if (send_job(rp, p, m) < 0) {
			if (errno == EMFILE || errno == ENFILE) { /* out of descriptors: not the message's fault */
				snprintf(m->last_error, sizeof m->last_error, "cannot open its file: %s; trying again",
					 strerror(errno));
				to_waiting(m, RESOURCE_RETRY_MS);
				return TAKE_NONE;
			}
			to_dead(m); /* send_job said why in last_error */
		}
		return TAKE_SENT;
	}
}

/* Give a ready worker as many queued jobs as its window allows.
 *
 * Under a shared limit (link.max_bytes_per_s, spool.drain_rate) the room is
 * shared fairly: every protocol that has a job joins limit_want, and the
 * protocols there are served one job each in turn, starting after the last
 * one served, until each has none left or the limit refuses it. A protocol the
 * limit refused stays in limit_want, so the next pump (a tick, a result), of
 * whichever protocol, serves it in its turn: a backlog with results arriving
 * all the time does not take every refill from a protocol that is pumped only
 * at ticks. Which bucket a job needs (metadata and priority high first) stays
 * budget.c's: a job the shared bucket refuses does not stop a first-class one
 * of another protocol in the same round. */
void router_pump(struct rproto *rp)
{
	if (!budget_rate_capped() && router_state.drain_rate == 0) {
		while (pump_one(rp) == TAKE_SENT)
			;
		return;
	}
	router_state.limit_want |= 1u << rp->idx;
	if (router_state.limit_serving)
		return; /* pumped from inside a round: that round serves it */
	router_state.limit_serving = true;
	int n = router_state.nprotos;
	uint32_t limited = 0, open;
	while ((open = router_state.limit_want & ~limited) != 0) {
		int i = router_state.limit_last;
		do
			i = (i + 1) % n;
		while (!(open & (1u << i)));
		switch (pump_one(&router_state.protos[i])) {
		case TAKE_SENT: router_state.limit_last = i; break;
		case TAKE_NONE: router_state.limit_want &= ~(1u << i); break;
		case TAKE_LIMITED: limited |= 1u << i; break;
		}
	}
	router_state.limit_serving = false;
}

void router_enqueue(struct smsg *m, struct rproto *rp)
{
	unlist(m);
	transition(m, EV_ENQUEUE);
	m->queued_ms = now_ms();
	str_copy(m->worker, sizeof m->worker, rp->name);
	m->at = (uint8_t)rp->idx;
	backfill_push(rp, m);
	if (!router_state.waking)
		router_pump(rp);
}

/* ---- the round: primary, then its fallback chain, then wait ---- */

/* Wait on the side for delay ms (router_sweep_waiting takes it back). */
static void to_waiting(struct smsg *m, uint64_t delay)
{
	backfill_mark(m, "it waits");
	unlist(m);
	if (m->kind == JOB_META && router_state.bytes > PAYLOAD_MEMORY_BUDGET) { /* read back when its turn comes */
		free(m->payload);
		m->payload = NULL;
	}
	transition(m, EV_WAIT);
	m->next_try_ms = now_ms() + delay;
	mlist_push(&router_state.waiting, m);
}

/* The wait after one of prev ms: spool.retry_backoff_min_ms first (prev 0),
 * then twice the last, at most retry_backoff_max_ms. */
static uint64_t next_backoff(uint64_t prev)
{
	uint64_t hi = (uint64_t)config_int(sup.cfg, "spool", "retry_backoff_max_ms");
	uint64_t b = prev ? prev * 2 : (uint64_t)config_int(sup.cfg, "spool", "retry_backoff_min_ms");
	return b < hi ? b : hi;
}

static void wait_round(struct smsg *m, uint64_t retry_after_ms)
{
	m->backoff_ms = next_backoff(m->backoff_ms);
	/* Jitter of up to a half keeps a backlog from returning in one wave. */
	uint64_t delay = m->backoff_ms / 2 + rand_u64() % (m->backoff_ms / 2 + 1);
	if (delay < retry_after_ms)
		delay = retry_after_ms;
	m->retries++;
	to_waiting(m, delay);
	log_debug("message %s waits %llu ms before its next round: %s", m->id, (unsigned long long)delay,
		  m->last_error);
}

/* Nothing can take it now. A dead letter only when the configuration has no
 * protocol that could carry it, which no restart changes; a worker that failed
 * or stopped may come back (a reload, `workers restart`): it waits, saying why. */
static void no_carrier(struct smsg *m)
{
	const char *what = m->kind == JOB_FILE ? "file" : "message";
	char why[sizeof m->last_error];
	bool configured = select_carriers_configured(m, why, sizeof why);
	if (configured) {
		snprintf(m->last_error, sizeof m->last_error, "no worker can take this %s now: %s", what, why);
		wait_round(m, 0);
		return;
	}
	if (strcmp(m->protocol, "auto") != 0)
		snprintf(m->last_error, sizeof m->last_error,
			 "protocol %s is not enabled in the configuration, or cannot carry a %s", m->protocol, what);
	else
		snprintf(m->last_error, sizeof m->last_error,
			 "no protocol enabled in the configuration can carry this %s", what);
	to_dead(m);
}

/* Before the workers had their chance to connect after a start, a message read
 * back from the spool none of whose chain is up waits for them
 * (router_check_start) instead of going down its chain to protocols merely not
 * connected yet, or dying. A new message sent meanwhile goes its way at once,
 * as later: its chain and the waiting set say why it waits. */
static void hold_for_start(struct smsg *m)
{
	snprintf(m->last_error, sizeof m->last_error,
		 "held at start until the workers have connected (at most %d ms)", START_GRACE_MS);
	to_waiting(m, START_GRACE_MS);
}

/* Start a fresh round at the head of the message's chain. */
void router_route(struct smsg *m)
{
	m->again = m->again_n = 0;
	m->attempts = 0;
	m->tried = m->tried_down = 0;
	memset(m->permfail, 0, sizeof m->permfail);
	struct rproto *rp = select_protocol(m);
	if (!router_state.started && (m->replayed || !router_state.workers_ms) && (!rp || !rproto_up(rp))) {
		hold_for_start(m);
		return;
	}
	if (!rp || !rproto_up(rp))
		backfill_mark(m, "no protocol of its chain is up");
	if (!rp) {
		no_carrier(m);
		return;
	}
	if (budget_hold_aside(m)) /* budget hook */
		return;
	m->tried = 1u << rp->idx;
	m->round_primary = rp->idx;
	m->round_retry = false;
	router_enqueue(m, rp);
}

/* The reference design's REST client tries rest.retry_attempts times, sleeping
 * 2^k seconds in between, before it gives up. The supervisor does the same
 * for a protocol whose descriptor names such a key (retry_key), without
 * blocking anyone: the message waits on the side (retry_backoff_min_ms,
 * doubling; or the server's Retry-After) and comes back to the same protocol.
 * True when it waits for that. */
static bool try_again_later(struct smsg *m, struct rproto *rp, uint64_t retry_after_ms)
{
	const char *key = rp->slot->proto->retry_key;
	if (!key || (int64_t)m->again_n + 1 >= config_int(sup.cfg, rp->name, key))
		return false;
	if (select_chain_back(m, rp, true)) /* never wait on it while one before it in the chain is back */
		return false;
	uint64_t delay = next_backoff(0); /* doubled again_n times: a shift would overflow (retry_attempts <= 100) */
	for (unsigned k = 0; k < m->again_n; k++)
		delay = next_backoff(delay);
	if (delay < retry_after_ms)
		delay = retry_after_ms;
	m->again_n++;
	m->again = (uint8_t)(rp->idx + 1);
	to_waiting(m, delay);
	log_debug("message %s: %s answered retry (%s); trying it again in %llu ms (%u of %s.%s)", m->id, rp->name,
		  m->last_error, (unsigned long long)delay, m->again_n + 1, rp->name, key);
	return true;
}

/* After a failure on rp: the next protocol of the chain, else wait or die. */
static void reroute(struct smsg *m, struct rproto *rp, enum job_status st, uint64_t retry_after_ms)
{
	if (!rproto_up(rp))
		m->tried_down |= 1u << rp->idx;
	if (st == JOB_RETRY && try_again_later(m, rp, retry_after_ms))
		return;
	m->again_n = 0;
	if (st == JOB_PERMFAIL)
		m->permfail[rp->idx] = true;
	else
		m->round_retry = true;
	if (select_chain_back(m, rp, true)) { /* one ahead of rp came back: a round starts at the head */
		router_route(m);
		return;
	}
	struct rproto *next = select_next_in_chain(m, rp);
	if (next) {
		m->tried |= 1u << next->idx;
		stats_fallback(rp, next);
		log_debug("message %s: %s failed (%s); trying %s", m->id, rp->name, m->last_error, next->name);
		router_enqueue(m, next);
		return;
	}
	if (select_chain_all_permfail(m)) {
		to_dead(m);
		return;
	}
	/* The round is over, but a protocol of its chain (not the one that just
	 * failed, not one that refused it for good) that failed this round while it
	 * was down is up again: it came back while the round went on. A new round
	 * starts at the head of the chain now, rather than after a backoff spent
	 * waiting on protocols that are down. */
	if (select_chain_back(m, rp, false)) {
		log_debug("message %s: round over (%s), but its chain has a protocol up: a new round now", m->id,
			  m->last_error);
		router_route(m);
		return;
	}
	/* Its attempt began before rp came back from an outage: it failed of the
	 * outage, as those that waited, and goes round now as they did at the wake
	 * (in its place among the backlog), not after a backoff behind younger ones. */
	if (rp->back_ms && m->job_start_ms < rp->back_ms && rproto_up(rp)) {
		router_route(m);
		return;
	}
	wait_round(m, retry_after_ms);
}

static struct smsg *take_inflight(struct rproto *rp, uint64_t seq)
{
	for (struct smsg *m = rp->inflight.head; m; m = m->qnext)
		if (m->job_seq == seq)
			return m;
	return NULL;
}

static void hop_end(struct smsg *m, enum job_status st, const char *err)
{
	struct hop *h = &m->route[m->nroute - 1];
	h->status = (uint8_t)st;
	uint64_t us = now_us() - m->job_start_us;
	h->ms = (uint32_t)(us / 1000);
	h->us = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
	str_copy(h->error, sizeof h->error, err ? err : "");
	if (err)
		snprintf(m->last_error, sizeof m->last_error, "%s: %s", h->protocol, err);
}

/* A message in hand at every death of its workers is the likely cause:
 * quarantine it rather than let it crash-loop the workers. m is on no list. */
static void quarantine(struct smsg *m, const char *last)
{
	snprintf(m->last_error, sizeof m->last_error,
		 "quarantined: %u workers died with this message in hand (last: %s)", m->crashes, last);
	to_dead(m);
}

/* An attempt is over, whatever comes of the message: out of flight, its hop
 * ended, counted in the protocol's stats (and recent errors). */
static void attempt_ended(struct rproto *rp, struct proc *p, struct smsg *m, enum job_status st, const char *err)
{
	window_result(rp, st, now_us() - m->job_start_us, rp->inflight.n, m->size);
	mlist_del(&rp->inflight, m);
	backfill_ended(rp, m);
	if (p && p->inflight)
		p->inflight--;
	router_state.inflight--;
	transition(m, EV_END);
	hop_end(m, st, err);
	stats_result(rp, m, st);
	if (st != JOB_OK)
		errors_record(rp->name, m->id, err);
}

static void job_finished(struct rproto *rp, struct proc *p, struct smsg *m, enum job_status st,
			 const char *err, uint64_t retry_after_ms)
{
	attempt_ended(rp, p, m, st, err);
	if (st == JOB_OK) {
		rproto_success(rp);
		router_forget(m, "ok", "delivered");
	} else {
		rproto_failure(rp, st, err);
		if (m->crashes >= POISON_CRASHES) { /* reached while this attempt was on its way (router_worker_lost) */
			char last[200];
			snprintf(last, sizeof last, "then %s answered %s: %s", rp->name, job_status_str(st),
				 err ? err : "no reason given");
			quarantine(m, last);
		} else {
			reroute(m, rp, st, retry_after_ms);
		}
	}
}

void router_worker_result(struct proc *p, const struct msg *res)
{
	struct rproto *rp = proc_route(p);
	struct smsg *m = take_inflight(rp, res->seq);
	if (!m || m->job_gen != p->gen || strcmp(m->id, res->id) != 0) {
		log_debug("stale result for job %llu from %s ignored", (unsigned long long)res->seq, p->name);
		return;
	}
	enum job_status st = res->status <= JOB_PERMFAIL ? (enum job_status)res->status : JOB_RETRY;
	job_finished(rp, p, m, st, res->error ? res->error : (st == JOB_OK ? NULL : "no reason given"),
		     res->retry_after_ms);
	router_pump(rp);
}

void router_worker_progress(struct proc *p, const struct msg *pm)
{
	struct rproto *rp = proc_route(p);
	struct smsg *m = take_inflight(rp, pm->seq);
	if (!m)
		return;
	m->done_bytes = pm->done;
	m->progress_ms = now_ms(); /* progress keeps a long transfer from timing out */
	stats_progress(rp, pm->done);
	if (m->waiter.cid && m->kind == JOB_FILE) { /* a file's bytes; rest's move to its next server says none */
		struct body b;
		control_body_init(&b);
		msgpack_pack_map(&b.pk, 3);
		pk_kv_str(&b.pk, "id", m->id);
		pk_kv_u64(&b.pk, "done", pm->done);
		pk_kv_u64(&b.pk, "size", m->size);
		control_event(m->waiter.cid, m->waiter.seq, "progress", &b);
		control_body_free(&b);
	}
}

/* The worker's socket closed (or failed) while the process still runs: no
 * result can come back over it, so every job it held goes on now, as at its
 * death, rather than when it exits or is killed (up to ping_timeout_ms later).
 * Whether its loss counts against those jobs towards the quarantine is not
 * known yet (an operator's kill -9 closes the socket too): its exit says, and
 * router_worker_lost counts it then, once, for those still here. */
void router_worker_orphaned(struct proc *p)
{
	struct rproto *rp = proc_route(p);
	rp->link_up = false;
	char why[200];
	snprintf(why, sizeof why, "worker closed its socket with the job in hand (%s)", p->channel_error);
	if (rp->inflight.n)
		log_info("worker %s (pid %d) closed its socket with %llu job%s in hand; %s on now", p->name,
			 (int)p->pid, (unsigned long long)rp->inflight.n, rp->inflight.n == 1 ? "" : "s",
			 rp->inflight.n == 1 ? "it goes" : "they go");
	while (rp->inflight.head) {
		struct smsg *m = rp->inflight.head;
		if (rp->norphans == rp->caporphans) {
			rp->caporphans = rp->caporphans ? rp->caporphans * 2 : 16;
			rp->orphans = xrealloc(rp->orphans, rp->caporphans * sizeof *rp->orphans);
		}
		struct orphan *o = &rp->orphans[rp->norphans++];
		str_copy(o->id, sizeof o->id, m->id);
		o->kind = m->kind;
		o->tries = m->tries;
		o->size = m->size;
		o->job_start_ms = m->job_start_ms;
		job_finished(rp, p, m, JOB_RETRY, why, 0);
	}
	p->inflight = 0;
}

void router_worker_lost(struct proc *p)
{
	struct rproto *rp = proc_route(p);
	rp->link_up = false;
	char why[200];
	snprintf(why, sizeof why, "worker died with the job in hand (%s)", p->last_exit);
	while (rp->inflight.head) {
		struct smsg *m = rp->inflight.head;
		/* A worker killed from outside or restarted on request did not die of
		 * its jobs: they go round again without counting towards quarantine. */
		if (p->blameless_exit || ++m->crashes < POISON_CRASHES) {
			job_finished(rp, p, m, JOB_RETRY, why, 0);
			continue;
		}
		attempt_ended(rp, p, m, JOB_PERMFAIL, why);
		quarantine(m, p->last_exit);
	}
	p->inflight = 0;
	/* The jobs it held when its socket closed went on then (router_worker_orphaned);
	 * its death counts against those still here just as against the ones above.
	 * One that another worker holds now is judged when that attempt ends
	 * (job_finished): its result may yet be a delivery. */
	for (unsigned i = 0; i < rp->norphans && !p->blameless_exit; i++) {
		struct smsg *m = router_find(rp->orphans[i].id);
		if (!m || m->state == SM_DEAD || ++m->crashes < POISON_CRASHES || m->state == SM_INFLIGHT)
			continue;
		quarantine(m, p->last_exit); /* off its queue or the waiting set */
	}
	rp->norphans = 0;
	/* Its queue goes elsewhere too, unless it comes back soon: the sweep reroutes
	 * queued messages of a protocol that is not up. */
}

void router_worker_ready(struct proc *p)
{
	router_check_start();
	router_wake(p->name);
	struct rproto *rp = proc_route(p);
	rp->link_up = p->connected;
	router_pump(rp);
}

void router_worker_health(struct proc *p, bool measured)
{
	struct rproto *rp = proc_route(p);
	if (p->connected && measured) /* a report without a measurement is no new sample */
		monitor_sample(rp->idx, p->rtt_us, false);
	else if (!p->connected)
		monitor_sample(rp->idx, 0, true);
	/* Only a link that comes back wakes the messages waiting for it (and ends a
	 * cool-down that its loss caused); a server that answers errors on a live
	 * link stays cooled down, however often the worker says it is connected. */
	bool came_back = p->connected && !rp->link_up;
	uint64_t now = now_ms();
	if (!p->connected && rp->link_up)
		rp->down_since_ms = now;
	rp->link_up = p->connected;
	/* Only after a real outage, though: a server that accepts connections and
	 * closes them makes a link that flaps with every request (down on the
	 * failure, up at once on the next connect), and each flap must not send
	 * every waiting message again. Down for less than the shortest backoff is
	 * no outage. */
	uint64_t least = (uint64_t)config_int(sup.cfg, "spool", "retry_backoff_min_ms");
	if (came_back && (!rp->down_since_ms || now - rp->down_since_ms >= least)) {
		rp->back_ms = now;
		rp->cool_until = 0;
		rp->consecutive_failures = 0;
		router_wake(p->name);
	} else if (came_back) {
		log_debug("%s: link back after %llu ms; waiting messages keep their backoff", p->name,
			  (unsigned long long)(now - rp->down_since_ms));
	}
	if (p->connected)
		router_pump(rp);
	router_check_start();
}

void router_worker_drain(struct proc *p) { router_pump(proc_route(p)); }

/* A path came back: every waiting message whose chain has it starts a new
 * round now, at the head of its chain (not on the protocol it last waited for),
 * in priority then age order, so that the queues it joins are in that order.
 * Every one joins its queue before any is handed out: pumped as each joined,
 * the first window would take the oldest of those queued so far, not of all
 * (a backlog queue in age order already holds some). */
void router_wake(const char *name)
{
	if (!router_state.started || !router_state.waiting.n || router_state.waking)
		return;
	router_state.waking = true;
	for (int pr = PRIO_HIGH; pr <= PRIO_LOW; pr++)
		for (struct smsg *m = router_state.all.head; m; m = m->anext)
			if (m->state == SM_WAITING && m->priority == (enum priority)pr &&
			    (!name || !m->tried || select_chain_has(m, name))) /* !tried: no round yet, no chain */
				router_route(m);
	router_state.waking = false;
	for (int i = 0; i < router_state.nprotos; i++)
		router_pump(&router_state.protos[i]);
}

/* The gate of a start: open once every enabled worker is connected (or failed,
 * or stopped), or START_GRACE_MS after the process table came up; then the
 * messages read back from the spool (and those held meanwhile) are routed,
 * with every worker there to take them. */
void router_check_start(void)
{
	if (router_state.started || !router_state.workers_ms)
		return;
	bool all = true;
	for (int i = 0; i < router_state.nprotos; i++) {
		struct proc *p = router_state.protos[i].slot->proc;
		if (p && p->state != PROC_FAILED && p->state != PROC_STOPPED && !(p->state == PROC_READY && p->connected))
			all = false;
	}
	if (!all && now_ms() - router_state.workers_ms < START_GRACE_MS)
		return;
	router_state.started = true;
	log_info("%s: %llu held message%s go%s out", all ? "every worker connected" : "start grace over",
		 (unsigned long long)router_state.waiting.n, router_state.waiting.n == 1 ? "" : "s", router_state.waiting.n == 1 ? "es" : "");
	router_wake(NULL);
}

void router_workers_started(void)
{
	router_state.workers_ms = now_ms();
	router_check_start();
}

unsigned router_inflight(void) { return router_state.inflight; }

unsigned router_jobs_held(const struct proc *p) { return p->inflight + proc_route(p)->norphans; }

void router_describe_jobs(const struct proc *p, FILE *out)
{
	const struct rproto *rp = proc_route(p);
	for (struct smsg *m = rp->inflight.head; m; m = m->qnext)
		fprintf(out, "job: %s kind=%s size=%llu attempt=%u age_ms=%llu\n", m->id,
			m->kind == JOB_FILE ? "file" : "meta", (unsigned long long)m->size, m->tries,
			(unsigned long long)(now_ms() - m->job_start_ms));
	for (unsigned i = 0; i < rp->norphans; i++) {
		const struct orphan *o = &rp->orphans[i];
		fprintf(out, "job: %s kind=%s size=%llu attempt=%u age_ms=%llu sent_on=socket_closed\n", o->id,
			o->kind == JOB_FILE ? "file" : "meta", (unsigned long long)o->size, o->tries,
			(unsigned long long)(now_ms() - o->job_start_ms));
	}
}

/* ---- timers: job timeouts, waiting rounds, time-to-live, drain rate ---- */

void router_sweep_waiting(void)
{
	if (!router_state.started)
		return;
	uint64_t now = now_ms();
	struct smsg *m = router_state.waiting.head;
	while (m) {
		struct smsg *next = m->qnext;
		if (m->next_try_ms <= now && m->again) { /* the same protocol once more, if it is up */
			struct rproto *rp = &router_state.protos[m->again - 1];
			m->again = 0;
			if (rproto_up(rp)) {
				router_enqueue(m, rp);
			} else {
				m->again_n = 0;
				reroute(m, rp, JOB_RETRY, 0);
			}
		} else if (m->next_try_ms <= now) {
			router_route(m);
		}
		m = next;
	}
}

static void sweep_timeouts(void)
{
	uint64_t now = now_ms(), limit = (uint64_t)config_int(sup.cfg, "gateway", "job_timeout_ms");
	for (int i = 0; i < router_state.nprotos; i++) {
		struct rproto *rp = &router_state.protos[i];
		struct proc *p = rp->slot->proc;
		struct smsg *m = rp->inflight.head;
		while (m) {
			struct smsg *next = m->qnext;
			uint64_t last = m->progress_ms > m->job_start_ms ? m->progress_ms : m->job_start_ms;
			if (now - last > limit)
				job_finished(rp, p, m, JOB_RETRY, "no answer within gateway.job_timeout_ms", 0);
			m = next;
		}
	}
}

/* Every message of l queued this long moves on (with why, as the status st).
 * Taken off first, each into limbo, so that the pump a reroute runs cannot take
 * one of them over meanwhile. A live queue is in join order: a young message
 * ends the walk; a backlog's is in age order: it is walked to its end. */
static void move_stuck(struct rproto *rp, struct mlist *l, bool join_order, const char *why, enum job_status st)
{
	struct mlist stuck = { 0 };
	uint64_t now = now_ms();
	for (struct smsg *m = l->head, *next; m; m = next) {
		next = m->qnext;
		if (now - m->queued_ms <= QUEUE_STUCK_MS) {
			if (join_order)
				break;
			continue;
		}
		unlist(m);
		transition(m, EV_TAKE);
		mlist_push(&stuck, m);
	}
	struct smsg *m;
	while ((m = stuck.head)) {
		mlist_del(&stuck, m);
		snprintf(m->last_error, sizeof m->last_error, "%s: %s", rp->name, why);
		reroute(m, rp, st, 0);
	}
}

/* Messages queued on a protocol that is down or gone move on along their chain. */
static void sweep_stuck_queues(void)
{
	for (int i = 0; i < router_state.nprotos; i++) {
		struct rproto *rp = &router_state.protos[i];
		struct proc *p = rp->slot->proc;
		bool lost = p && p->state == PROC_READY && !p->ch; /* its socket closed: it is on its way out */
		bool stuck = !p || rp->paused || p->state == PROC_FAILED || p->state == PROC_STOPPED ||
			     (p->state == PROC_READY && !p->connected) || lost || now_ms() < rp->cool_until;
		if (!stuck)
			continue;
		char why[sizeof ((struct smsg *)0)->last_error];
		snprintf(why, sizeof why, "%s",
			 !p ? "protocol disabled" : rp->paused ? "paused by an operator" :
			 lost ? "its worker closed its socket and is on its way out" :
			 p->state == PROC_READY ? (p->health[0] ? p->health : "server unreachable") :
			 proc_state_str(p->state));
		for (int pr = PRIO_HIGH; pr <= PRIO_LOW; pr++) {
			move_stuck(rp, &rp->queue[pr], true, why, !p ? JOB_PERMFAIL : JOB_RETRY);
			move_stuck(rp, &rp->bf.queue[pr], false, why, !p ? JOB_PERMFAIL : JOB_RETRY);
		}
	}
}

static void sweep_expired(void)
{
	uint64_t wall = wall_ms();
	struct smsg *m = router_state.all.head;
	while (m) {
		struct smsg *next = m->anext;
		if (m->expires_wall_ms && wall >= m->expires_wall_ms && m->state != SM_INFLIGHT) {
			router_state.expired++;
			stats_expired(m);
			log_warnx("message %s expired after %llu s undelivered (last error: %s)", m->id,
				  (unsigned long long)((wall - m->created_wall_ms) / 1000),
				  m->last_error[0] ? m->last_error : "none");
			snprintf(m->last_error, sizeof m->last_error, "expired: time to live passed");
			router_forget(m, "failed", "expired");
		}
		m = next;
	}
}

/* A cool-down that is over: one waiting message probes the protocol (it would
 * otherwise wait for its own backoff); its result decides (select.c). */
static void end_cooling(void)
{
	uint64_t now = now_ms();
	for (int i = 0; i < router_state.nprotos; i++) {
		struct rproto *rp = &router_state.protos[i];
		if (!rp->cool_until || now < rp->cool_until)
			continue;
		rp->cool_until = 0;
		rp->probing = true;
		struct smsg *m = router_state.waiting.head;
		while (m && !(select_chain_has(m, rp->name) && (m->kind == JOB_FILE ? rp->files : rp->meta)))
			m = m->qnext;
		log_info("protocol %s: cool-down over; %s", rp->name,
			 m ? "a waiting message probes it" : "the next message probes it");
		if (m) {
			m->tried |= 1u << rp->idx;
			router_enqueue(m, rp);
		}
	}
}

static void on_tick(uv_timer_t *t) { router_tick(); }

void router_tick(void)
{
	router_check_start();
	drain_refill();
	end_cooling();
	sweep_timeouts();
	sweep_stuck_queues();
	router_sweep_waiting();
	if (++router_state.ticks % (1000 / TICK_MS) == 0) {
		clock_check(); /* a clock set now corrects expiries too: before they are looked at */
		sweep_expired();
		stats_second();
	}
	/* from a different protocol each tick: none is always first */
	int n = router_state.nprotos;
	router_state.tick_first = n ? (router_state.tick_first + 1) % (unsigned)n : 0;
	for (int k = 0; k < n; k++)
		router_pump(&router_state.protos[(router_state.tick_first + (unsigned)k) % (unsigned)n]);
}

void router_init(void)
{
	router_init_protos();
	router_state.drain_rate = (uint64_t)config_int(sup.cfg, "spool", "drain_rate");
	router_state.credit = 1000;
	router_state.credit_ms = now_ms();
	uv_timer_init(sup.loop, &router_state.tick);
	uv_timer_start(&router_state.tick, on_tick, TICK_MS, TICK_MS);
}

/* ---- accepting ---- */

/* Over the bounds? Either refuse (backpressure) or drop the oldest. */
int router_make_room(uint64_t size, char *err, size_t errlen)
{
	uint64_t max_n = (uint64_t)config_int(sup.cfg, "spool", "max_messages");
	uint64_t max_b = (uint64_t)config_int(sup.cfg, "spool", "max_bytes");
	bool drop = strcmp(config_str(sup.cfg, "spool", "full_policy"), "drop_oldest") == 0;
	uint64_t un, ub; /* accepted in this turn, their records not yet written */
	spool_unwritten(&un, &ub);
	if (size > max_b) {
		snprintf(err, errlen, "message of %llu bytes is larger than spool.max_bytes (%llu)",
			 (unsigned long long)size, (unsigned long long)max_b);
		return CTL_E_TOO_LARGE;
	}
	while (router_state.count + un + 1 > max_n || router_state.bytes + ub + size > max_b) {
		struct smsg *old = router_state.all.head;
		while (old && old->state == SM_INFLIGHT)
			old = old->anext;
		if (!drop || !old) {
			router_state.rejected_full++;
			snprintf(err, errlen, "spool full: %llu messages, %llu bytes (spool.max_messages %llu, "
					      "spool.max_bytes %llu); not accepted, try again later",
				 (unsigned long long)(router_state.count + un), (unsigned long long)(router_state.bytes + ub),
				 (unsigned long long)max_n, (unsigned long long)max_b);
			return CTL_E_SPOOL_FULL;
		}
		router_state.dropped++;
		stats_dropped(old);
		log_warnx("spool full: dropping the oldest message %s (%llu bytes, policy drop_oldest)", old->id,
			  (unsigned long long)old->size);
		snprintf(old->last_error, sizeof old->last_error, "dropped: spool full (policy drop_oldest)");
		router_forget(old, "failed", "dropped");
	}
	return 0;
}

/* A message read back from the spool at start: a dead letter stays one; the
 * others are held until the workers have had their chance (router_check_start). */
void router_recover(struct smsg *m)
{
	bool dead = m->state == SM_DEAD; /* the spool's record of it; from here on the router's */
	m->state = SM_LIMBO;
	m->replayed = true;
	router_adopt(m);
	backfill_mark(m, "read back from the spool at start");
	if (dead) {
		transition(m, EV_KILL);
		mlist_push(&router_state.dead, m);
		return;
	}
	router_route(m);
}

/* A dead letter back on its way, from a fresh backoff (`queue requeue`). */
void router_requeue(struct smsg *m)
{
	if (m->state != SM_DEAD)
		return;
	unlist(m);
	transition(m, EV_REQUEUE);
	m->backoff_ms = 0;
	spool_requeue(m);
	router_route(m);
}

void router_count_rejected(void) { router_state.rejected_full++; }

/* The id index's buckets (512 KB in router_state) are static: a backlog
 * touches every page of them, and after the drain they are NULL again but
 * still resident. A page of buckets that are all NULL is handed back; the
 * kernel gives a zero page, which reads as NULL, when it is touched again.
 * Returns the bytes handed back. */
size_t router_release_empty_index(void)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	uintptr_t lo = ((uintptr_t)router_state.buckets + pg - 1) & ~(uintptr_t)(pg - 1);
	uintptr_t hi = ((uintptr_t)(router_state.buckets + ID_BUCKETS)) & ~(uintptr_t)(pg - 1);
	size_t released = 0;
	for (uintptr_t p = lo; p + pg <= hi; p += pg) {
		struct smsg *const *b = (struct smsg *const *)p;
		size_t n = pg / sizeof *b, i = 0;
		while (i < n && !b[i])
			i++;
		if (i == n && madvise((void *)p, pg, MADV_DONTNEED) == 0)
			released += pg;
	}
	return released;
}

void router_counts(struct router_counts *c)
{
	*c = (struct router_counts){ .depth = router_state.count, .bytes = router_state.bytes,
				     .oldest_wall_ms = router_state.all.head ? router_state.all.head->created_wall_ms : 0,
				     .waiting = router_state.waiting.n, .dead = router_state.dead.n, .accepted = router_state.accepted,
				     .dropped = router_state.dropped, .expired = router_state.expired, .rejected_full = router_state.rejected_full };
}

int router_nprotos(void) { return router_state.nprotos; }

void router_proto(int idx, struct router_proto *out)
{
	const struct rproto *rp = &router_state.protos[idx];
	*out = (struct router_proto){ .name = rp->name, .enabled = rproto_enabled(rp), .meta = rp->meta,
				      .files = rp->files, .paused = rp->paused,
				      .cooling = now_ms() < rp->cool_until ? rp->cool_reason : NULL,
				      .queued = rproto_queued(rp),
				      .inflight = rp->inflight.n, .window = window_now(rp),
				      .window_phase = window_phase(rp), .stats = &rp->st };
}

bool router_payload_fits(uint64_t len) { return router_state.bytes + len <= PAYLOAD_MEMORY_BUDGET; }

void router_count_accepted(void) { router_state.accepted++; }

bool router_paused(const char *protocol)
{
	struct rproto *rp = rproto_by_name(protocol);
	return rp && rp->paused;
}

const char *router_cooling(const char *protocol)
{
	struct rproto *rp = rproto_by_name(protocol);
	return rp && now_ms() < rp->cool_until ? rp->cool_reason : NULL;
}

void router_pack_queue(msgpack_packer *pk, uint64_t limit, bool dead_only)
{
	uint64_t n = 0, k = 0;
	for (struct smsg *m = router_state.all.head; m && n < limit; m = m->anext)
		n += !dead_only || m->state == SM_DEAD;
	msgpack_pack_array(pk, n);
	for (struct smsg *m = router_state.all.head; m && k < n; m = m->anext)
		if (!dead_only || m->state == SM_DEAD) {
			router_pack_message(pk, m, NULL);
			k++;
		}
}

void router_retry(struct smsg *m)
{
	if (m->state != SM_WAITING)
		return;
	m->next_try_ms = 0;
	router_sweep_waiting();
}

uint64_t router_retry_all(void)
{
	uint64_t n = router_state.waiting.n;
	for (struct smsg *m = router_state.waiting.head; m; m = m->qnext)
		m->next_try_ms = 0;
	router_sweep_waiting();
	return n;
}

uint64_t router_requeue_all(void)
{
	uint64_t n = 0, had = router_state.dead.n; /* one pass: a message may die again at once */
	for (; router_state.dead.head && n < had; n++)
		router_requeue(router_state.dead.head);
	return n;
}

/* Take a message in (new, or recovered from the spool) in age order. */
void router_adopt(struct smsg *m)
{
	m->age_seq = ++router_state.adopted;
	index_add(m);
	m->anext = NULL;
	m->aprev = router_state.all.tail;
	if (router_state.all.tail)
		router_state.all.tail->anext = m;
	else
		router_state.all.head = m;
	router_state.all.tail = m;
}

static void age_del(struct smsg *m)
{
	if (m->aprev)
		m->aprev->anext = m->anext;
	else
		router_state.all.head = m->anext;
	if (m->anext)
		m->anext->aprev = m->aprev;
	else
		router_state.all.tail = m->aprev;
}
