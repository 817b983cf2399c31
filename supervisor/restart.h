/* The restart policy, as pure functions so that tests can drive the clock:
 * back off with jitter, reset after a good run, fail after N deaths in T, never
 * restart a worker that exits with the bad-configuration code. */
#ifndef UCGW_RESTART_H
#define UCGW_RESTART_H

#include <stdint.h>

struct restart_policy {
	uint64_t backoff_min_ms;  /* first delay (about 100 ms) */
	uint64_t backoff_max_ms;  /* cap of the doubling (30 s) */
	uint64_t reset_after_ms;  /* a run this long resets the backoff (60 s) */
	uint64_t window_ms;       /* deaths counted within this window (T) */
	unsigned max_deaths;      /* this many deaths within T: failed (N) */
};

#define RESTART_HISTORY 64

struct restart_state {
	uint64_t backoff_ms;                /* next base delay; 0 = not started */
	uint64_t deaths[RESTART_HISTORY];   /* monotonic ms of recent deaths, ring */
	unsigned ndeaths, head;
};

enum restart_action { RESTART_AFTER, RESTART_FAILED, RESTART_BAD_CONFIG };

struct restart_decision {
	enum restart_action action;
	uint64_t delay_ms;  /* RESTART_AFTER: wait this long */
	unsigned recent;    /* deaths within the window, this one included */
};

/* A worker died at `now` after running `ran_ms`; exit_code is its exit status,
 * or -1 when a signal killed it. rnd supplies the jitter. */
struct restart_decision restart_on_exit(struct restart_state *st, const struct restart_policy *pol,
					uint64_t now, uint64_t ran_ms, int exit_code, uint64_t rnd);
void restart_reset(struct restart_state *st);

#endif
