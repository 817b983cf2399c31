#include "supervisor/history.h"

#include <string.h>

#include "common/util.h"
#include "supervisor/router.h"
#include "workers/protocols.h"

static struct history_sample ring[PROTO_MAX][HISTORY_SECONDS];
static unsigned head, count; /* head: where the next sample goes */
static uint64_t end_s;       /* wall second the newest sample covers */
static struct {
	uint64_t ok, retry, fail;
	uint64_t buckets[LAT_BUCKETS];
	uint64_t lat_count;
} prev[PROTO_MAX];
static bool primed;

static void remember(void)
{
	for (int i = 0; i < router_nprotos(); i++) {
		struct router_proto rp;
		router_proto(i, &rp);
		const struct proto_stats *s = rp.stats;
		prev[i].ok = s->success;
		prev[i].retry = s->retries;
		prev[i].fail = s->failure;
		prev[i].lat_count = s->lat.count;
		memcpy(prev[i].buckets, s->lat.buckets, sizeof prev[i].buckets);
	}
}

static uint32_t clamp32(uint64_t v) { return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v; }

static void push(const struct history_sample *per_proto)
{
	for (int i = 0; i < PROTO_MAX; i++)
		ring[i][head] = per_proto ? per_proto[i] : (struct history_sample){ 0 };
	head = (head + 1) % HISTORY_SECONDS;
	if (count < HISTORY_SECONDS)
		count++;
}

void history_tick(void)
{
	uint64_t now_s = wall_ms() / 1000;
	if (!primed || now_s + 60 < end_s) { /* the first tick, or the clock went back a lot */
		count = head = 0;
		end_s = now_s;
		remember();
		primed = true;
		return;
	}
	if (now_s <= end_s) /* same second */
		return;
	/* The sample of second now_s holds what was answered since the last one.
	 * Seconds without a tick (a stalled loop) become empty samples, the counts
	 * of the whole gap going to the newest one. */
	uint64_t gap = now_s - end_s;
	if (gap > HISTORY_SECONDS)
		gap = HISTORY_SECONDS;
	for (uint64_t g = 1; g < gap; g++)
		push(NULL);
	struct history_sample s[PROTO_MAX] = { 0 };
	for (int i = 0; i < router_nprotos(); i++) {
		struct router_proto rp;
		router_proto(i, &rp);
		const struct proto_stats *st = rp.stats;
		s[i].ok = clamp32(st->success - prev[i].ok);
		s[i].retry = clamp32(st->retries - prev[i].retry);
		s[i].fail = clamp32(st->failure - prev[i].fail);
		struct latency d = { .count = st->lat.count - prev[i].lat_count, .max_us = st->lat.max_us };
		for (unsigned b = 0; b < LAT_BUCKETS; b++)
			d.buckets[b] = st->lat.buckets[b] - prev[i].buckets[b];
		s[i].p50_us = clamp32(stats_latency_quantile(&d, 0.5));
		s[i].p99_us = clamp32(stats_latency_quantile(&d, 0.99));
	}
	push(s);
	end_s = now_s;
	remember();
}

unsigned history_len(void) { return count; }
uint64_t history_end_s(void) { return end_s; }

const struct history_sample *history_get(int idx, unsigned i)
{
	if (idx < 0 || idx >= PROTO_MAX || i >= count)
		return NULL;
	return &ring[idx][(head + HISTORY_SECONDS - count + i) % HISTORY_SECONDS];
}

void history_sum(int idx, unsigned seconds, uint64_t *ok, uint64_t *retry, uint64_t *fail)
{
	*ok = *retry = *fail = 0;
	if (seconds > count)
		seconds = count;
	for (unsigned i = count - seconds; i < count; i++) {
		const struct history_sample *s = history_get(idx, i);
		*ok += s->ok;
		*retry += s->retry;
		*fail += s->fail;
	}
}
