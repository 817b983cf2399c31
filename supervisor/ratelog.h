/* A log line that a flood must not repeat: at most one per interval, and the
 * next one says how many were held back. */
#ifndef UCGW_RATELOG_H
#define UCGW_RATELOG_H

#include <stdbool.h>
#include <stdint.h>

struct ratelog {
	uint64_t next_ms;
	unsigned held;
};

/* true: log now, and *held_back is how many were not logged since the last. */
bool ratelog_ok(struct ratelog *r, uint64_t interval_ms, unsigned *held_back);

#endif
