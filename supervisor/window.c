/* The adaptive window, after Vector's adaptive request concurrency: per
 * metadata protocol, the number of jobs its worker may hold grows while the
 * worker keeps it full and latency stays flat, and shrinks multiplicatively
 * when latency rises or the worker answers retry (the server refused, the
 * connection broke). On a long link a protocol delivers at most window / RTT:
 * a fixed window of 256 caps WebSocket at 2,560 messages/s on a 100 ms link
 * that carries 10,000; the window grows to the bandwidth-delay product instead.
 *
 * Decisions are taken once per period (twice the mean latency, at least
 * PERIOD_MIN_US), on the period's mean latency:
 * - any retry, or a mean above the recent mean by more than DEVIATION_SCALE
 *   times its deviation, or above twice the lowest recent mean (a full
 *   bandwidth-delay product queued somewhere on the path): shrink to
 *   DECREASE of the window;
 * - else, when the window was full in the period and throughput did not fall:
 *   double it until the first shrink (slow start), then grow it by an
 *   eighth (at least one job);
 * - else hold.
 * gateway.window is where it starts and the least it shrinks to (the fixed
 * window of before, so no path does worse than it did), gateway.window_max
 * the most (and BYTES_BUDGET). File protocols keep gateway.window: each job holds a descriptor,
 * and a job's latency there is a file's transfer, not a round trip. */
#include "supervisor/window.h"

#include <math.h>
#include <stdio.h>

#include "common/util.h"
#include "supervisor/router_int.h"
#include "supervisor/sup.h"

#define PERIOD_MIN_US 50000 /* below this, latencies on loopback are noise */
#define EWMA_ALPHA 0.4
#define DEVIATION_SCALE 2.5
#define DECREASE 0.9
#define BASE_DRIFT 1.01 /* the lowest mean forgets, 1 % a period, so a path that got longer is learnt */
/* Above gateway.window, the window holds at most this many payload bytes
 * (by the recent mean size): 4096 messages of 1 MiB would be 4 GiB in the
 * worker's memory. The bandwidth-delay product of a camera's link is far
 * below (20 Mbit/s x 100 ms: 250 KB). */
#define BYTES_BUDGET (64.0 * 1024 * 1024)

struct awin {
	const struct config *cfg; /* the configuration lo and hi were read from */
	double limit;
	unsigned lo, hi;
	bool adaptive, slow_start;
	uint64_t start_us, n, sum_us, retries;
	bool at_limit;
	double past_us, dev_us, base_us, past_rate, mean_size;
	char why[64];
};

static struct awin W[MAX_PROTOS];

static struct awin *refresh(const struct rproto *rp)
{
	struct awin *w = &W[rp->idx];
	if (w->cfg == sup.cfg)
		return w;
	w->cfg = sup.cfg;
	w->lo = (unsigned)config_int(sup.cfg, "gateway", "window");
	unsigned hi = (unsigned)config_int(sup.cfg, "gateway", "window_max");
	w->hi = hi > w->lo ? hi : w->lo;
	w->adaptive = rp->meta && !rp->files && w->hi > w->lo;
	if (w->limit < w->lo || !w->adaptive) {
		w->limit = w->lo;
		w->slow_start = true;
	}
	if (w->limit > w->hi)
		w->limit = w->hi;
	snprintf(w->why, sizeof w->why, "%s", !w->adaptive ? "fixed" : "starting");
	return w;
}

unsigned window_limit(struct rproto *rp) { return (unsigned)refresh(rp)->limit; }

/* At the floor nothing shrinks, and slow start goes on: a worker still
 * opening its connections (mqtt) queues what it holds, and its latency falls
 * as they come up. */
static void shrink(struct awin *w, const char *fmt, double v)
{
	w->slow_start &= w->limit <= w->lo;
	w->limit = w->limit * DECREASE < w->lo ? w->lo : w->limit * DECREASE;
	snprintf(w->why, sizeof w->why, fmt, v);
}

static void grow(struct awin *w)
{
	double step = w->slow_start ? w->limit : fmax(1.0, w->limit / 8);
	double by_bytes = fmax(w->lo, BYTES_BUDGET / fmax(1.0, w->mean_size));
	double top = fmin(w->hi, by_bytes);
	if (w->limit >= top) {
		snprintf(w->why, sizeof w->why, "%s", top < w->hi ? "at 64 MiB of payloads" : "at window_max");
		return;
	}
	w->limit = fmin(w->limit + step, top);
	snprintf(w->why, sizeof w->why, "%s", "growing");
}

static void decide(struct awin *w, uint64_t period_us)
{
	double cur = (double)w->sum_us / (double)w->n, rate = (double)w->n * 1e6 / (double)period_us;
	if (w->past_us == 0) {
		w->past_us = w->base_us = cur;
	} else if (w->retries) {
		shrink(w, "shrunk: %.0f retries", (double)w->retries);
	} else if (cur > w->past_us + fmax(DEVIATION_SCALE * w->dev_us, 0.05 * w->past_us)) {
		shrink(w, "shrunk: latency rose to %.1f ms", cur / 1000);
	} else if (cur > 2 * w->base_us) {
		shrink(w, "shrunk: latency %.1f times the lowest", cur / w->base_us);
	} else if (w->at_limit && rate >= 0.95 * w->past_rate) {
		grow(w);
	} else {
		snprintf(w->why, sizeof w->why, "%s", w->at_limit ? "held: throughput fell" : "held: not full");
	}
	w->dev_us = (1 - EWMA_ALPHA) * w->dev_us + EWMA_ALPHA * fabs(cur - w->past_us);
	w->past_us = (1 - EWMA_ALPHA) * w->past_us + EWMA_ALPHA * cur;
	w->base_us = fmin(cur, w->base_us * BASE_DRIFT);
	w->past_rate = rate;
}

void window_result(struct rproto *rp, enum job_status st, uint64_t us, uint64_t inflight, uint64_t size)
{
	struct awin *w = refresh(rp);
	if (!w->adaptive)
		return;
	w->mean_size = w->mean_size ? 0.99 * w->mean_size + 0.01 * (double)size : (double)size;
	uint64_t now = now_us();
	if (!w->start_us)
		w->start_us = now;
	w->n++;
	w->sum_us += us;
	w->retries += st == JOB_RETRY;
	w->at_limit |= inflight >= (uint64_t)w->limit;
	uint64_t period = (uint64_t)(2 * w->past_us) > PERIOD_MIN_US ? (uint64_t)(2 * w->past_us) : PERIOD_MIN_US;
	if (now - w->start_us < period)
		return;
	decide(w, now - w->start_us);
	w->start_us = now;
	w->n = w->sum_us = w->retries = 0;
	w->at_limit = false;
}

unsigned window_now(const struct rproto *rp) { return (unsigned)refresh(rp)->limit; }

const char *window_phase(const struct rproto *rp) { return refresh(rp)->why; }

void window_pack(msgpack_packer *pk, const struct rproto *rp)
{
	const struct awin *w = refresh(rp);
	pk_kv_u64(pk, "window", (uint64_t)w->limit);
	pk_kv_u64(pk, "window_max", w->hi);
	pk_kv_str(pk, "window_state", w->why);
}
