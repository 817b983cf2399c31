/* Backlog order after an outage (spool.order). With fifo every message joins
 * its protocol's queue in the order it is routed, as always. With live_first a
 * message that had to wait (the backlog) joins a queue of its own per protocol,
 * kept oldest first, and goes out behind the live messages: a live message
 * queued always goes first, and while live messages come (one in the last
 * LIVE_RECENT_MS) the backlog holds at most spool.backfill_share of the
 * protocol's window, so that a new detection never waits behind the history.
 * Without live traffic the backlog takes the whole window.
 *
 * Backlog, precisely: a message read back from the spool at start, one that
 * entered the waiting set (every protocol of its chain failed or was down, or
 * it waits to try again), or one whose round began while no protocol of its
 * chain was up (accepted during an outage). Once backlog, always backlog: its
 * trace says "backfill"; the others' says "live". */
#include <math.h>
#include <string.h>

#include "common/log.h"
#include "supervisor/router_int.h"
#include "supervisor/sup.h"

#define LIVE_RECENT_MS 1000

static struct {
	uint64_t loaded; /* sup.reloads when read (+1: 0 means never) */
	bool live_first;
	double share;
} B;

static void settings(void)
{
	if (B.loaded == sup.reloads + 1)
		return;
	B.loaded = sup.reloads + 1;
	B.live_first = strcmp(config_str(sup.cfg, "spool", "order"), "live_first") == 0;
	B.share = cfg_num(config_section(sup.cfg, "spool"), "backfill_share");
}

void backfill_mark(struct smsg *m, const char *why)
{
	if (m->backlog)
		return;
	m->backlog = true;
	log_debug("message %s is backlog: %s", m->id, why);
}

/* After the last of l older than m: l stays oldest first. A backlog mostly
 * joins in age order (router_wake), so the walk from the tail is short. */
static void push_in_age_order(struct mlist *l, struct smsg *m)
{
	struct smsg *after = l->tail;
	while (after && after->age_seq > m->age_seq)
		after = after->qprev;
	m->qprev = after;
	m->qnext = after ? after->qnext : l->head;
	if (m->qnext)
		m->qnext->qprev = m;
	else
		l->tail = m;
	if (after)
		after->qnext = m;
	else
		l->head = m;
	l->n++;
}

void backfill_push(struct rproto *rp, struct smsg *m)
{
	settings();
	m->in_backfill = B.live_first && m->backlog;
	if (m->in_backfill) {
		push_in_age_order(&rp->bf.queue[m->priority], m);
		return;
	}
	rp->bf.live_ms = now_ms();
	mlist_push(&rp->queue[m->priority], m);
}

bool backfill_may_send(const struct rproto *rp, unsigned window)
{
	settings();
	if (!B.live_first || !rp->bf.live_ms || now_ms() - rp->bf.live_ms >= LIVE_RECENT_MS)
		return true;
	return rp->bf.inflight < (unsigned)ceil(B.share * window);
}

/* A protocol not up (its link down, or cooling down) gets no backlog job: it
 * would only answer retry, and a job it took in the instant its link came
 * back, before its worker's report of it, would go out ahead of the older
 * ones the report wakes. The queue moves on after QUEUE_STUCK_MS meanwhile. */
struct smsg *backfill_next(struct rproto *rp, unsigned window)
{
	if (!rproto_up(rp))
		return NULL;
	for (int pr = PRIO_HIGH; pr <= PRIO_LOW; pr++)
		if (rp->bf.queue[pr].head)
			return backfill_may_send(rp, window) ? rp->bf.queue[pr].head : NULL;
	return NULL;
}

void backfill_sent(struct rproto *rp, struct smsg *m)
{
	if (!m->backlog)
		return;
	m->bf_held = true;
	rp->bf.inflight++;
}

void backfill_ended(struct rproto *rp, struct smsg *m)
{
	if (!m->bf_held)
		return;
	m->bf_held = false;
	if (rp->bf.inflight)
		rp->bf.inflight--;
}

uint64_t rproto_queued(const struct rproto *rp)
{
	uint64_t n = 0;
	for (int pr = PRIO_HIGH; pr <= PRIO_LOW; pr++)
		n += rp->queue[pr].n + rp->bf.queue[pr].n;
	return n;
}
