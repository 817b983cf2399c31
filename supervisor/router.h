/* The router: takes accepted messages, picks a worker, keeps a window of jobs in
 * flight per worker, and reroutes when a worker answers retry/permfail, dies or
 * times out. The process table calls these hooks. */
#ifndef UCGW_ROUTER_H
#define UCGW_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "proto/proto.h"
#include "supervisor/stats.h"

struct proc;

void router_worker_ready(struct proc *p);
void router_worker_result(struct proc *p, const struct msg *m);
void router_worker_progress(struct proc *p, const struct msg *m);
/* The worker died or was killed: every job it held goes elsewhere, and its
 * death counts against them (and against those it held when its socket closed)
 * unless it was blameless. */
void router_worker_lost(struct proc *p);
/* Its socket closed while the process runs: every job it held goes elsewhere
 * now; whether that counts against them its exit decides (router_worker_lost). */
void router_worker_orphaned(struct proc *p);
/* A health report arrived (p->connected and p->health updated); measured: it
 * came with a round trip (p->rtt_us), a new sample for the network monitor. */
void router_worker_health(struct proc *p, bool measured);
void router_worker_drain(struct proc *p);
unsigned router_inflight(void);
/* The jobs a worker holds, with those it held when its socket closed (sent on
 * since), and one line for each: for its crash log. */
unsigned router_jobs_held(const struct proc *p);
void router_describe_jobs(const struct proc *p, FILE *out);

struct smsg;
void router_init(void);
/* Every TICK_MS: timeouts, stuck queues, backoffs ended, expiry (a unit test calls it by hand). */
void router_tick(void);
/* Pause or resume handing jobs to a protocol (its queue waits, or moves on). */
int router_pause(const char *name, bool pause);
/* Refuse or drop the oldest when `size` more would go over the spool's bounds:
 * 0, or the refusal's code (CTL_E_TOO_LARGE, CTL_E_SPOOL_FULL) with err said. */
int router_make_room(uint64_t size, char *err, size_t errlen);
/* Take in a message (new or recovered), then route it. */
void router_adopt(struct smsg *m);
void router_route(struct smsg *m);
/* A message read back from the spool at start (held until the workers connect). */
void router_recover(struct smsg *m);
/* The process table is up: selection starts once each worker had its chance to connect. */
void router_workers_started(void);
void router_check_start(void);
/* A dead letter back on its way (`queue requeue`); nothing for any other state. */
void router_requeue(struct smsg *m);
/* Leave for good: delivered ("ok") or given up ("failed"); answers the client waiting for it. */
void router_forget(struct smsg *m, const char *status, const char *state);
/* The outcome a client waiting for m hears (status "ok" or "failed"). */
void router_pack_outcome(msgpack_packer *pk, const struct smsg *m, const char *status);
/* A message as `queue` and `trace` show it; state NULL: its current one. */
void router_pack_message(msgpack_packer *pk, const struct smsg *m, const char *state);
void router_pack_trace(msgpack_packer *pk, const struct smsg *m, const char *state);
/* The packed trace reply of one of the last finished messages, or NULL. */
bool router_recent_trace(const char *id, msgpack_packer *pk); /* packs its trace if it finished lately */
/* What `status` shows of the messages. */
struct router_counts {
	uint64_t depth, bytes, oldest_wall_ms, waiting, dead;
	uint64_t accepted, dropped, expired, rejected_full;
};
void router_counts(struct router_counts *c);
/* Hand back the pages of the id index that are all empty again after a
 * backlog drained (memtrim.c); the bytes handed back. */
size_t router_release_empty_index(void);
/* One protocol as the router sees it, by its slot's index (slot.h): a
 * read-only snapshot for the metrics, the dashboard, the history and the
 * admission checks. */
struct router_proto {
	const char *name;
	bool enabled, meta, files, paused;
	const char *cooling;      /* why it cools down; NULL when it does not */
	uint64_t queued, inflight;
	unsigned window;          /* jobs its worker may hold now */
	const char *window_phase; /* how the adaptive window moves */
	const struct proto_stats *stats;
};
int router_nprotos(void);
void router_proto(int idx, struct router_proto *out);
/* May a payload of len more bytes stay in memory while it is queued (else the
 * router reads it back from the spool when its turn comes)? */
bool router_payload_fits(uint64_t len);
/* A message taken in by admission.c, counted in `status`. */
void router_count_accepted(void);
bool router_paused(const char *protocol);
/* Why the protocol cools down, or NULL when it does not. */
const char *router_cooling(const char *protocol);
/* `queue`: up to limit messages (dead letters only, if asked), oldest first. */
void router_pack_queue(msgpack_packer *pk, uint64_t limit, bool dead_only);
/* `queue retry`: a waiting message (every one) goes round now. */
void router_retry(struct smsg *m);
uint64_t router_retry_all(void);
/* `queue requeue all`: every dead letter back on its way; how many. */
uint64_t router_requeue_all(void);
/* A live message by its id, or NULL (delivered, purged or never accepted). */
struct smsg *router_find(const char *id);
/* `select`: what auto would pick now for such a message, and the fallback
 * chain after it (or after `asked`, a protocol's name); -1 with why for a
 * protocol that does not exist. Nothing is routed. */
int router_select_dry_run(msgpack_packer *pk, bool file, int priority, uint64_t size, const char *asked, char *err,
			  size_t errlen);
/* The protocols' names, ", " between them (the test worker's only where it runs). */
void router_protocol_names(char *out, size_t len);
/* A message refused for want of room (the spool's file system is full): counted with the others. */
void router_count_rejected(void);
/* Free a message the router never adopted (refused, or its record not written). */
void smsg_free(struct smsg *m);

#endif
