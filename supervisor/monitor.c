#include "supervisor/monitor.h"

#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "supervisor/sup.h"
#include "workers/protocols.h"

/* The last network_monitor.history measurements per server (the seed judges by
 * its last ten, the default), in a ring sized when the server is first seen,
 * one per protocol at its slot's index (slot.h). Their sums are kept as
 * samples come and go: quality is asked for every message `auto` routes, and
 * the ring may hold thousands. */
static struct server {
	uint64_t *rtt_us;
	bool *lost;
	unsigned n, head, cap; /* cap 0: no sample yet */
	uint64_t rtt_sum;  /* of the samples not lost */
	unsigned nlost;
} servers[PROTO_MAX];

const char *monitor_quality_str(enum quality q)
{
	static const char *const names[] = { "unknown", "poor", "fair", "good", "excellent" };
	return names[q];
}

bool monitor_quality_at_least_good(enum quality q) { return q >= Q_GOOD; }

static struct server *server(int slot, bool create)
{
	if (slot < 0 || slot >= PROTO_MAX)
		return NULL;
	struct server *sv = &servers[slot];
	if (!sv->cap && create) {
		sv->cap = (unsigned)config_int(sup.cfg, "network_monitor", "history");
		sv->rtt_us = xcalloc(sv->cap, sizeof *sv->rtt_us);
		sv->lost = xcalloc(sv->cap, sizeof *sv->lost);
	}
	return sv->cap ? sv : NULL;
}

void monitor_sample(int slot, uint64_t rtt_us, bool lost)
{
	struct server *s = server(slot, true);
	if (!s)
		return;
	if (s->n == s->cap) { /* the oldest sample leaves */
		if (s->lost[s->head])
			s->nlost--;
		else
			s->rtt_sum -= s->rtt_us[s->head];
	} else {
		s->n++;
	}
	s->rtt_us[s->head] = rtt_us;
	s->lost[s->head] = lost;
	if (lost)
		s->nlost++;
	else
		s->rtt_sum += rtt_us;
	s->head = (s->head + 1) % s->cap;
}

static uint64_t rtt_of(const struct server *s)
{
	unsigned ok = s ? s->n - s->nlost : 0;
	return ok ? s->rtt_sum / ok : 0;
}

static double loss_of(const struct server *s) { return s && s->n ? (double)s->nlost / s->n : 0.0; }

uint64_t monitor_rtt_us(int slot) { return rtt_of(server(slot, false)); }

double monitor_loss(int slot) { return loss_of(server(slot, false)); }

/* The seed's thresholds: latency in ms and loss as a fraction. */
enum quality monitor_quality(int slot)
{
	struct server *s = server(slot, false);
	if (!s || !s->n)
		return Q_UNKNOWN;
	double ms = (double)rtt_of(s) / 1000.0, loss = loss_of(s);
	if (loss >= 1.0)
		return Q_POOR;
	if (ms < 50 && loss < 0.01)
		return Q_EXCELLENT;
	if (ms < 100 && loss < 0.05)
		return Q_GOOD;
	if (ms < 200 && loss < 0.1)
		return Q_FAIR;
	return Q_POOR;
}
