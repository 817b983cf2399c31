/* Admission of a checked send and every reply to it: see admission.h. */
#include "supervisor/admission.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "supervisor/control.h"
#include "supervisor/router.h"
#include "supervisor/slot.h"
#include "supervisor/spool.h"
#include "supervisor/sup.h"

/* ---- replies ---- */

static void reply_accepted(uint64_t cid, uint64_t seq, const char *id, const char *dup_state)
{
	struct body b;
	control_body_init(&b);
	msgpack_pack_map(&b.pk, dup_state ? 4 : 2);
	pk_kv_str(&b.pk, "id", id);
	pk_kv_str(&b.pk, "status", "accepted");
	if (dup_state) { /* a send again of a message already accepted */
		pk_key(&b.pk, "duplicate");
		msgpack_pack_true(&b.pk);
		pk_kv_str(&b.pk, "state", dup_state);
	}
	control_reply(cid, seq, true, NULL, &b);
	control_body_free(&b);
}

/* Later sends of a waited-for message's id, each waiting for its outcome too
 * (the message's own slot, m->waiter, holds the first). Rare: a list. */
struct xwaiter {
	char id[UCGW_ID_LEN + 1];
	uint64_t cid, seq;
	struct xwaiter *next;
};
static struct xwaiter *xwaiters;

static void wait_for_outcome(struct smsg *m, uint64_t cid, uint64_t seq)
{
	if (!m->waiter.cid || !control_client(m->waiter.cid)) { /* nobody, or the one who sent first is gone */
		m->waiter = (struct waiter){ cid, seq };
		return;
	}
	struct xwaiter *w = xcalloc(1, sizeof *w);
	memcpy(w->id, m->id, sizeof w->id);
	w->cid = cid;
	w->seq = seq;
	w->next = xwaiters;
	xwaiters = w;
}

void admission_outcome(struct smsg *m, const char *status)
{
	if (!m->waiter.cid && !xwaiters)
		return;
	struct body b;
	control_body_init(&b);
	router_pack_outcome(&b.pk, m, status);
	if (m->waiter.cid)
		control_reply(m->waiter.cid, m->waiter.seq, true, NULL, &b);
	m->waiter.cid = 0;
	for (struct xwaiter **pp = &xwaiters; *pp;) {
		struct xwaiter *w = *pp;
		if (strcmp(w->id, m->id) != 0) {
			pp = &w->next;
			continue;
		}
		control_reply(w->cid, w->seq, true, NULL, &b);
		*pp = w->next;
		free(w);
	}
	control_body_free(&b);
}

/* ---- the outcomes of the last OUTCOMES_KEPT finished messages ---- */

struct outcome {
	char id[UCGW_ID_LEN + 1];
	bool ok;
	const char *state, *protocol; /* static strings; protocol NULL when not known (replayed) */
	uint32_t attempts, latency_ms;
	char *error;                  /* why it failed, or NULL */
	int32_t hnext;                /* the next in its bucket, or -1 */
};

#define OUTCOME_BUCKETS 16384
static struct {
	struct outcome *v;
	uint32_t n, cap, next; /* once full (n == OUTCOMES_KEPT), v[next] is the oldest */
	int32_t *heads;
} O;

static unsigned outcome_bucket(const char *id) { return id_hash32(id) & (OUTCOME_BUCKETS - 1); }

static struct outcome *outcome_find(const char *id)
{
	for (int32_t i = O.heads ? O.heads[outcome_bucket(id)] : -1; i >= 0; i = O.v[i].hnext)
		if (strcmp(O.v[i].id, id) == 0)
			return &O.v[i];
	return NULL;
}

static void outcome_unlink(uint32_t slot)
{
	int32_t *pp = &O.heads[outcome_bucket(O.v[slot].id)];
	while (*pp >= 0 && (uint32_t)*pp != slot)
		pp = &O.v[*pp].hnext;
	if (*pp >= 0)
		*pp = O.v[slot].hnext;
	free(O.v[slot].error);
}

/* A slot for a new outcome: a fresh one until the table is full, then the oldest. */
static struct outcome *outcome_slot(const char *id)
{
	if (!O.heads) {
		O.heads = xmalloc(OUTCOME_BUCKETS * sizeof *O.heads);
		for (unsigned i = 0; i < OUTCOME_BUCKETS; i++)
			O.heads[i] = -1;
	}
	uint32_t slot;
	if (O.n < OUTCOMES_KEPT) {
		if (O.n == O.cap) {
			O.cap = O.cap ? O.cap * 2 : 1024;
			O.v = xrealloc(O.v, O.cap * sizeof *O.v);
		}
		slot = O.n++;
	} else {
		slot = O.next;
		O.next = (O.next + 1) % OUTCOMES_KEPT;
		outcome_unlink(slot);
	}
	struct outcome *o = &O.v[slot];
	memset(o, 0, sizeof *o);
	memcpy(o->id, id, sizeof o->id);
	unsigned b = outcome_bucket(id);
	o->hnext = O.heads[b];
	O.heads[b] = (int32_t)slot;
	return o;
}

/* The router's words for how a message left, as static strings. */
static const char *known_state(const char *state)
{
	static const char *const states[] = { "delivered", "expired", "dropped", "purged" };
	for (size_t i = 0; state && i < sizeof states / sizeof states[0]; i++)
		if (strcmp(state, states[i]) == 0)
			return states[i];
	return state ? "finished" : "delivered"; /* a DONE without a state is older than states: a delivery */
}

static void outcome_keep(const char *id, bool ok, const char *state, const char *protocol, uint32_t attempts,
			 uint32_t latency_ms, const char *error)
{
	if (state && strcmp(state, "not durable") == 0)
		return; /* never accepted: a send again of its id is a new message */
	struct outcome *o = outcome_find(id);
	if (o)
		free(o->error);
	else
		o = outcome_slot(id);
	o->ok = ok;
	o->state = known_state(state);
	o->protocol = protocol;
	o->attempts = attempts;
	o->latency_ms = latency_ms;
	o->error = ok || !error ? NULL : xstrdup(error);
}

void admission_finished(const struct smsg *m, const char *status, const char *state)
{
	const struct hop *last = m->nroute ? &m->route[m->nroute - 1] : NULL;
	const struct slot *slot = last ? slot_at(last->proto) : NULL;
	uint64_t age = wall_ms() - m->created_wall_ms;
	outcome_keep(m->id, strcmp(status, "ok") == 0, state, slot ? slot->proto->name : NULL, m->tries,
		     age > UINT32_MAX ? UINT32_MAX : (uint32_t)age, m->last_error[0] ? m->last_error : state);
}

void admission_replayed_done(const char *id, const char *state)
{
	bool ok = !state || strcmp(state, "delivered") == 0;
	outcome_keep(id, ok, state, NULL, 0, 0, state);
}

static void answer_finished(uint64_t cid, uint64_t seq, const struct outcome *o, bool wait)
{
	if (!wait) {
		reply_accepted(cid, seq, o->id, o->state);
		return;
	}
	struct body b;
	control_body_init(&b);
	msgpack_pack_map(&b.pk, 7); /* as router_pack_outcome; the route is not kept */
	pk_kv_str(&b.pk, "id", o->id);
	pk_kv_str(&b.pk, "status", o->ok ? "ok" : "failed");
	pk_kv_str(&b.pk, "protocol", o->protocol);
	pk_kv_u64(&b.pk, "attempts", o->attempts);
	pk_kv_str(&b.pk, "error", o->error);
	pk_kv_u64(&b.pk, "latency_ms", o->latency_ms);
	pk_key(&b.pk, "route");
	msgpack_pack_array(&b.pk, 0);
	control_reply(cid, seq, true, NULL, &b);
	control_body_free(&b);
}

/* ---- messages being admitted: their record written, not yet durable ---- */

/* A later send of the same id while the first is admitted. */
struct dup {
	uint64_t cid, seq;
	bool wait;
	struct dup *next;
};

struct ticket {
	char id[UCGW_ID_LEN + 1];
	uint64_t cid, seq;
	bool wait;
	struct dup *dups;
	struct ticket *hnext;
};

#define PENDING_BUCKETS 4096
static struct ticket *pending[PENDING_BUCKETS];

static struct ticket **pending_slot(const char *id)
{
	struct ticket **pp = &pending[id_hash32(id) & (PENDING_BUCKETS - 1)];
	while (*pp && strcmp((*pp)->id, id) != 0)
		pp = &(*pp)->hnext;
	return pp;
}

/* The admission ended: out of the table, its later sends freed (answered). */
static void ticket_end(struct ticket *t)
{
	struct ticket **pp = pending_slot(t->id);
	if (*pp == t)
		*pp = t->hnext;
	while (t->dups) {
		struct dup *d = t->dups;
		t->dups = d->next;
		free(d);
	}
	free(t);
}

static const char *state_name(const struct smsg *m)
{
	/* SM_LIMBO: between two lists, or (admitted, not yet durable) not yet routed */
	static const char *const states[] = { "queued", "inflight", "waiting", "dead", "accepted", "gone" };
	return (unsigned)m->state < sizeof states / sizeof states[0] ? states[m->state] : "accepted";
}

/* A send of a message in the spool: "accepted" as the first was, or with wait
 * its outcome (at once for a dead letter, else when it comes). */
static void answer_live(uint64_t cid, uint64_t seq, struct smsg *m, bool wait)
{
	if (!wait) {
		reply_accepted(cid, seq, m->id, state_name(m));
	} else if (m->state == SM_DEAD) {
		struct body b;
		control_body_init(&b);
		router_pack_outcome(&b.pk, m, "failed");
		control_reply(cid, seq, true, NULL, &b);
		control_body_free(&b);
	} else {
		wait_for_outcome(m, cid, seq);
	}
}

bool admission_known(uint64_t cid, uint64_t seq, const char *id, bool wait)
{
	struct ticket *t = *pending_slot(id);
	if (t) { /* answered with the first, once it is durable */
		struct dup *d = xcalloc(1, sizeof *d);
		*d = (struct dup){ cid, seq, wait, t->dups };
		t->dups = d;
		return true;
	}
	struct smsg *m = router_find(id);
	if (m) {
		answer_live(cid, seq, m, wait);
		return true;
	}
	const struct outcome *o = outcome_find(id);
	if (o) {
		answer_finished(cid, seq, o, wait);
		return true;
	}
	return false;
}

/* The record could not be kept: the first send and every later one hear why. */
static void refuse_all(struct ticket *t, const char *err)
{
	if (!t->wait || !router_find(t->id)) /* a waiting first one adopted hears it as its outcome */
		control_fail(t->cid, t->seq, CTL_E_INTERNAL, "not accepted: %s", err);
	for (struct dup *d = t->dups; d; d = d->next)
		control_fail(d->cid, d->seq, CTL_E_INTERNAL, "not accepted: %s", err);
}

/* Its record is written (or could not be): the router takes it in, and routes
 * it once it is durable. */
static void written(struct smsg *m, const char *err, void *arg)
{
	struct ticket *t = arg;
	if (err) {
		refuse_all(t, err);
		smsg_free(m);
		ticket_end(t);
		return;
	}
	router_adopt(m);
	router_count_accepted();
}

/* Durable as spool.fsync asks: answer "accepted" and route it. If the sync
 * failed it is not accepted after all: withdrawn (its DONE written), and
 * nothing of it went out, since nothing is routed before this. The message
 * may have left meanwhile (dropped by spool.full_policy, purged): accepted
 * all the same. */
static void durable(const char *err, void *arg)
{
	struct ticket *t = arg;
	struct smsg *m = router_find(t->id);
	bool unrouted = m && m->state == SM_LIMBO && !m->nroute;
	if (err) {
		refuse_all(t, err);
		if (unrouted) {
			snprintf(m->last_error, sizeof m->last_error, "not accepted: %s", err);
			router_forget(m, "failed", "not durable");
		}
		ticket_end(t);
		return;
	}
	if (!t->wait)
		reply_accepted(t->cid, t->seq, t->id, NULL);
	char id[UCGW_ID_LEN + 1];
	memcpy(id, t->id, sizeof id);
	struct dup *dups = t->dups;
	t->dups = NULL;
	ticket_end(t); /* first: the later sends of the id now find the message (or how it left) */
	for (struct dup *d = dups; d;) {
		struct dup *next = d->next;
		if (!admission_known(d->cid, d->seq, id, d->wait))
			control_fail(d->cid, d->seq, CTL_E_INTERNAL, "not accepted: the message left before it was durable");
		free(d);
		d = next;
	}
	if (unrouted)
		router_route(m);
}

void admission_start(uint64_t cid, uint64_t seq, struct smsg *m, bool wait, const void *payload, size_t len,
		     int fd)
{
	char err[512];
	struct ticket *t = xcalloc(1, sizeof *t);
	memcpy(t->id, m->id, sizeof t->id);
	t->cid = cid;
	t->seq = seq;
	t->wait = wait;
	struct ticket **pp = pending_slot(t->id);
	t->hnext = *pp;
	*pp = t;
	if (wait)
		m->waiter = (struct waiter){ cid, seq };
	if (spool_add(m, payload, len, fd, written, durable, t, err, sizeof err) < 0)
		written(m, err, t); /* not taken at all: the spool calls neither back */
}
