/* The link's byte budgets and shared rate cap (the `link` section): bytes on
 * the wire as the workers count them (workers/wire.c), per day and per month,
 * kept in the state directory across restarts; near a budget, messages the
 * policy names are held in the spool; a token bucket that every job passes
 * before the router hands it to a worker, metadata and priority high first. */
#ifndef UCGW_BUDGET_H
#define UCGW_BUDGET_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct smsg;
struct strbuf;

/* Read state_dir/link-budget (the counts of the periods in progress) and
 * start the once-a-second tick. */
void budget_init(void);
/* Write the counts (at shutdown; the tick writes them every few seconds). */
void budget_close(void);
/* A worker's report: bytes on the wire since its last one. */
void budget_wire(const char *worker, uint64_t bytes);
/* Should m wait for the budget? Then why, in words ("held: daily byte budget
 * 95% used ..."), for its last_error; it is held for at most *recheck_ms, and
 * let go sooner when the budget allows (budget_release). */
bool budget_hold(const struct smsg *m, char *why, size_t whylen, uint64_t *recheck_ms);
/* Is link.max_bytes_per_s set (the rate cap in force)? */
bool budget_rate_capped(void);
/* Is there room in the rate cap for m now? */
bool budget_rate_ok(const struct smsg *m);
/* m goes to the worker of protocol index proto: its bytes come off the bucket. */
void budget_sent(int proto, const struct smsg *m);
/* Is this a message the budget holds (its last_error says so)? */
bool budget_is_held(const struct smsg *m);
/* What `status`, /metrics and the dashboard show. */
void budget_pack(msgpack_packer *pk);
void budget_metrics(struct strbuf *b);
void budget_dashboard_json(struct strbuf *b);
/* Unit tests: the period a wall-clock time (ms) falls in, as a number
 * (day: YYYYMMDD; month: YYYYMM of its first day), in local time. */
uint64_t budget_day_key(uint64_t wall);
uint64_t budget_month_key(uint64_t wall, int start_day);

#endif
