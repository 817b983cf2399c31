/* The recent errors: a bounded ring of failed attempts, for the dashboard. */
#ifndef UCGW_ERRORS_H
#define UCGW_ERRORS_H

#include <stdint.h>

#define RECENT_ERRORS 50

struct recent_error {
	uint64_t wall_ms;
	char protocol[16];
	char id[32];
	char reason[160];
};

void errors_record(const char *protocol, const char *id, const char *reason);
/* The i-th newest (0 = newest); NULL past the end. */
const struct recent_error *errors_get(unsigned i);

#endif
