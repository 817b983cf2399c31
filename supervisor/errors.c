#include "supervisor/errors.h"

#include <stdio.h>

#include "common/util.h"

static struct recent_error ring[RECENT_ERRORS];
static unsigned head, count;

void errors_record(const char *protocol, const char *id, const char *reason)
{
	struct recent_error *e = &ring[head];
	e->wall_ms = wall_ms();
	snprintf(e->protocol, sizeof e->protocol, "%s", protocol);
	snprintf(e->id, sizeof e->id, "%s", id);
	snprintf(e->reason, sizeof e->reason, "%s", reason ? reason : "");
	head = (head + 1) % RECENT_ERRORS;
	if (count < RECENT_ERRORS)
		count++;
}

const struct recent_error *errors_get(unsigned i)
{
	if (i >= count)
		return NULL;
	return &ring[(head + RECENT_ERRORS - 1 - i) % RECENT_ERRORS];
}
