/* The router's insides, private to the router: router.c, select.c (which
 * protocol), stats.c (what happened) and window.c (how many jobs at once).
 * Everyone else reads the router through router.h. */
#ifndef UCGW_ROUTER_INT_H
#define UCGW_ROUTER_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "supervisor/message.h"
#include "supervisor/slot.h"
#include "supervisor/stats.h"

#define MAX_PROTOS PROTO_MAX /* one rproto per slot (slot.h), at the slot's index */
#define ID_BUCKETS 65536
#define TICK_MS 100
#define POISON_CRASHES 3   /* a message held by this many dying workers is quarantined */
#define QUEUE_STUCK_MS 500 /* queued on a protocol that is down this long: move on */
#define START_GRACE_MS 5000 /* after a start, how long selection waits for the workers to connect */
#define PAYLOAD_MEMORY_BUDGET (16u << 20) /* payload bytes kept in memory while queued */

struct mlist {
	struct smsg *head, *tail;
	uint64_t n;
};

struct orphan {              /* a job its worker held when its socket closed */
	char id[UCGW_ID_LEN + 1];
	enum job_kind kind;
	unsigned tries;
	uint64_t size, job_start_ms;
};

/* A protocol's backlog under spool.order live_first (backfill.c). */
struct rbackfill {
	struct mlist queue[3];      /* by priority, oldest first */
	unsigned inflight;          /* backlog jobs its worker holds */
	uint64_t live_ms;           /* when a live message last joined its queue */
};

struct rproto {
	const char *name;
	int idx;                    /* its slot's */
	struct slot *slot;          /* its descriptor and its process */
	bool meta, files;           /* what it can carry (its descriptor says) */
	struct mlist queue[3];      /* by priority */
	struct mlist inflight;
	bool paused;                /* an operator paused it: jobs wait */
	unsigned consecutive_failures;
	uint64_t cool_until;        /* monotonic ms; cooling down until then */
	bool probing;               /* the cool-down ended: the next result decides */
	bool link_up;               /* the worker's last health report said connected */
	uint64_t down_since_ms;     /* when its link last went down */
	uint64_t back_ms;           /* when its link last came back after an outage */
	char cool_reason[160];
	/* The ids of the jobs its worker held when its socket closed, while that
	 * worker still ran: they went on at once, and its death, when it comes,
	 * says whether it counts against them (router_worker_lost). */
	struct orphan *orphans;
	unsigned norphans, caporphans;
	struct proto_stats st;
	struct rbackfill bf;
};

struct router {
	struct rproto protos[MAX_PROTOS];
	int nprotos;
	struct smsg *buckets[ID_BUCKETS];
	struct { struct smsg *head, *tail; } all; /* age order */
	uint64_t count, bytes;                    /* live messages */
	struct mlist waiting, dead;
	uint64_t inflight, job_seq;
	uint64_t dead_total, expired, dropped, rejected_full, accepted;
	uint64_t drain_rate, ticks;
	uint64_t credit, credit_ms; /* drain_rate's bucket, in thousandths of a message; refilled when */
	unsigned rr_next;
	/* Shared limits (link.max_bytes_per_s, spool.drain_rate): the protocols
	 * that have a job for them, served one job each in turn, starting after
	 * the last one served, so that one protocol's backlog does not take every
	 * refill (router_pump). */
	uint32_t limit_want;
	int limit_last;
	bool limit_serving;
	unsigned tick_first; /* router_tick pumps from here, one further each tick */
	bool started;        /* the start's gate is open (router_check_start) */
	bool waking;         /* router_wake is routing: queues are pumped once at its end */
	uint64_t workers_ms; /* when the process table came up (0: not yet) */
	uint64_t adopted;    /* messages taken in: each one's age_seq */
	uv_timer_t tick;
};

extern struct router router_state;

void mlist_push(struct mlist *l, struct smsg *m);
void mlist_del(struct mlist *l, struct smsg *m);
struct mlist *mlist_of(struct smsg *m);
struct rproto *rproto_by_name(const char *name);
bool rproto_enabled(const struct rproto *rp);
bool rproto_up(const struct rproto *rp);
void router_enqueue(struct smsg *m, struct rproto *rp);
void router_pump(struct rproto *rp);
void router_wake(const char *name);
void router_sweep_waiting(void);
void router_pack_route(msgpack_packer *pk, const struct smsg *m);
/* Encrypt this message's payload for that protocol (per message, or the section's `encrypt`)? */
bool router_wants_encryption(const struct smsg *m, const char *protocol);

/* select.c */
struct rproto *select_protocol(struct smsg *m);
struct rproto *select_next_in_chain(struct smsg *m, struct rproto *failed);
bool select_chain_all_permfail(const struct smsg *m);
bool select_chain_has(const struct smsg *m, const char *name);
/* May rp take m from another protocol's queue (it carries it, its chain has it, not refused this round)? */
bool select_chain_may_take(const struct smsg *m, const struct rproto *rp);
/* Is a protocol of m's chain (other than rp; before it if ahead_only) up that
 * this round did not find up: one to try now rather than wait? */
bool select_chain_back(const struct smsg *m, const struct rproto *rp, bool ahead_only);
/* Could any enabled protocol carry m? Else (or also) why not now, in words. */
bool select_carriers_configured(const struct smsg *m, char *why, size_t whylen);
/* backfill.c: spool.order live_first */
/* m had to wait (why, for the log): backlog from now on. */
void backfill_mark(struct smsg *m, const char *why);
/* Put m on rp's queue: the live one, or (live_first, a backlog message) the
 * backlog's, in age order. */
void backfill_push(struct rproto *rp, struct smsg *m);
/* The oldest backlog message rp may send now, its window being window; NULL
 * when none or when live traffic holds the rest of the window. */
struct smsg *backfill_next(struct rproto *rp, unsigned window);
/* May rp take a backlog job now (backfill_share of its window)? */
bool backfill_may_send(const struct rproto *rp, unsigned window);
/* A job was sent / its attempt ended: the backlog's count in flight. */
void backfill_sent(struct rproto *rp, struct smsg *m);
void backfill_ended(struct rproto *rp, struct smsg *m);
/* Messages queued on rp, live and backlog. */
uint64_t rproto_queued(const struct rproto *rp);
void rproto_success(struct rproto *rp);
void rproto_failure(struct rproto *rp, enum job_status st, const char *err);

#endif
