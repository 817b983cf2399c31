#include "supervisor/stats.h"

#include <math.h>
#include <string.h>

#include "supervisor/proctab.h"
#include "supervisor/router_int.h"
#include "supervisor/servers.h"
#include "supervisor/window.h"

static unsigned bucket_of(uint64_t us)
{
	if (us < 1)
		return 0;
	unsigned b = (unsigned)(log2((double)us) * 4.0);
	return b < LAT_BUCKETS ? b : LAT_BUCKETS - 1;
}

void stats_latency_add(struct latency *l, uint64_t us)
{
	l->buckets[bucket_of(us)]++;
	l->count++;
	l->sum_us += us;
	if (us > l->max_us)
		l->max_us = us;
}

uint64_t stats_latency_quantile(const struct latency *l, double q)
{
	if (!l->count)
		return 0;
	uint64_t want = (uint64_t)ceil(q * (double)l->count), seen = 0;
	for (unsigned b = 0; b < LAT_BUCKETS; b++) {
		seen += l->buckets[b];
		if (seen >= want && l->buckets[b]) {
			uint64_t upper = (uint64_t)exp2((double)(b + 1) / 4.0);
			return upper < l->max_us ? upper : l->max_us;
		}
	}
	return l->max_us;
}

static struct rproto *rp_of(const struct smsg *m)
{
	if (m->nroute)
		return &router_state.protos[m->route[m->nroute - 1].proto];
	return m->worker[0] ? &router_state.protos[m->at] : NULL;
}

void stats_result(struct rproto *rp, const struct smsg *m, enum job_status st)
{
	const struct hop *h = &m->route[m->nroute - 1];
	switch (st) {
	case JOB_OK:
		rp->st.success++;
		rp->st.bytes += m->size;
		stats_latency_add(&rp->st.lat, h->us);
		break;
	case JOB_RETRY: rp->st.retries++; break;
	case JOB_PERMFAIL: rp->st.failure++; break;
	}
}

void stats_fallback(struct rproto *from, struct rproto *to)
{
	from->st.fallback_out++;
	to->st.fallback_in++;
}

void stats_progress(struct rproto *rp, uint64_t done) {}

void stats_dead(const struct smsg *m)
{
	struct rproto *rp = rp_of(m);
	if (rp)
		rp->st.dead++;
}

void stats_expired(const struct smsg *m)
{
	struct rproto *rp = rp_of(m);
	if (rp)
		rp->st.expired++;
}

void stats_dropped(const struct smsg *m)
{
	struct rproto *rp = rp_of(m);
	if (rp)
		rp->st.dropped++;
}

void stats_pack(msgpack_packer *pk)
{
	msgpack_pack_map(pk, (size_t)router_state.nprotos);
	for (int i = 0; i < router_state.nprotos; i++) {
		const struct rproto *rp = &router_state.protos[i];
		const struct proto_stats *s = &rp->st;
		pk_key(pk, rp->name);
		msgpack_pack_map(pk, 26);
		pk_kv_bool(pk, "enabled", rproto_enabled(rp));
		pk_kv_u64(pk, "success", s->success);
		pk_kv_u64(pk, "failure", s->failure);
		pk_kv_u64(pk, "retries", s->retries);
		pk_kv_u64(pk, "fallback_out", s->fallback_out);
		pk_kv_u64(pk, "fallback_in", s->fallback_in);
		pk_kv_u64(pk, "bytes", s->bytes);
		pk_kv_u64(pk, "dropped", s->dropped);
		pk_kv_u64(pk, "expired", s->expired);
		pk_kv_u64(pk, "dead", s->dead);
		pk_kv_u64(pk, "queued", rproto_queued(rp));
		pk_kv_u64(pk, "inflight", rp->inflight.n);
		pk_kv_u64(pk, "stolen", s->stolen); /* backlog it took over from busier protocols */
		pk_kv_u64(pk, "given", s->given);   /* of its own queue, taken over by others */
		pk_kv_f64(pk, "rate", s->rate);
		window_pack(pk, rp);
		double total = (double)(s->success + s->failure);
		pk_kv_f64(pk, "success_rate", total > 0 ? (double)s->success / total : 0.0);
		pk_kv_f64(pk, "p50_ms", (double)stats_latency_quantile(&s->lat, 0.50) / 1000.0);
		pk_kv_f64(pk, "p90_ms", (double)stats_latency_quantile(&s->lat, 0.90) / 1000.0);
		pk_kv_f64(pk, "p99_ms", (double)stats_latency_quantile(&s->lat, 0.99) / 1000.0);
		pk_kv_f64(pk, "max_ms", (double)s->lat.max_us / 1000.0);
		pk_kv_u64(pk, "samples", s->lat.count); /* 0: the quantiles above mean nothing yet */
		pk_kv_f64(pk, "mean_ms", s->lat.count ? (double)s->lat.sum_us / (double)s->lat.count / 1000.0 : 0.0);
		servers_pack(pk, proctab_find(rp->name)); /* "servers": each of its list, as the worker reports */
	}
}

/* A weight of 0.3 follows a change within a few seconds, and smooths the
 * second-to-second jitter of a worker's batches. */
void stats_second(void)
{
	for (int i = 0; i < router_state.nprotos; i++) {
		struct proto_stats *s = &router_state.protos[i].st;
		double now = (double)(s->success - s->success_at_last_second);
		s->success_at_last_second = s->success;
		s->rate = 0.7 * s->rate + 0.3 * now;
	}
}
