#include "supervisor/restart.h"

#include <string.h>

#include "common/util.h"

void restart_reset(struct restart_state *st) { memset(st, 0, sizeof *st); }

static unsigned deaths_within(const struct restart_state *st, uint64_t now, uint64_t window)
{
	unsigned n = 0;
	for (unsigned i = 0; i < st->ndeaths; i++)
		if (now - st->deaths[i] <= window)
			n++;
	return n;
}

struct restart_decision restart_on_exit(struct restart_state *st, const struct restart_policy *pol,
					uint64_t now, uint64_t ran_ms, int exit_code, uint64_t rnd)
{
	struct restart_decision d = { RESTART_AFTER, 0, 0 };
	st->deaths[st->head] = now;
	st->head = (st->head + 1) % RESTART_HISTORY;
	if (st->ndeaths < RESTART_HISTORY)
		st->ndeaths++;
	d.recent = deaths_within(st, now, pol->window_ms);
	if (exit_code == UCGW_EXIT_CONFIG) {
		d.action = RESTART_BAD_CONFIG;
		return d;
	}
	if (d.recent >= pol->max_deaths) {
		d.action = RESTART_FAILED;
		return d;
	}
	if (st->backoff_ms == 0 || ran_ms >= pol->reset_after_ms)
		st->backoff_ms = pol->backoff_min_ms;
	uint64_t base = st->backoff_ms;
	/* Jitter of +-25% keeps workers that died together from restarting together. */
	uint64_t span = base / 2;
	d.delay_ms = base - base / 4 + (span ? rnd % (span + 1) : 0);
	st->backoff_ms = base * 2 > pol->backoff_max_ms ? pol->backoff_max_ms : base * 2;
	return d;
}
