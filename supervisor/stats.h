/* Per-protocol counters and a latency histogram in bounded memory. */
#ifndef UCGW_STATS_H
#define UCGW_STATS_H

#include <msgpack.h>
#include <stdint.h>

#include "proto/proto.h"

#define LAT_BUCKETS 128 /* four per power of two of microseconds */

struct latency {
	uint64_t buckets[LAT_BUCKETS];
	uint64_t count, max_us, sum_us;
};

struct proto_stats {
	uint64_t success, failure, retries, fallback_out, fallback_in, bytes;
	uint64_t dropped, expired, dead;
	uint64_t stolen, given;  /* jobs taken from another protocol's queue; taken from this one's */
	uint64_t success_at_last_second;
	double rate;             /* deliveries per second, an exponentially weighted moving average */
	struct latency lat;
};

void stats_latency_add(struct latency *l, uint64_t us);
uint64_t stats_latency_quantile(const struct latency *l, double q); /* microseconds */

struct rproto;
struct smsg;
void stats_result(struct rproto *rp, const struct smsg *m, enum job_status st);
void stats_fallback(struct rproto *from, struct rproto *to);
void stats_progress(struct rproto *rp, uint64_t done);
void stats_dead(const struct smsg *m);
void stats_expired(const struct smsg *m);
void stats_dropped(const struct smsg *m);
void stats_pack(msgpack_packer *pk);
/* Once a second: each protocol's delivery rate. */
void stats_second(void);

#endif
