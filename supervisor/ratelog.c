#include "supervisor/ratelog.h"

#include "common/util.h"

bool ratelog_ok(struct ratelog *r, uint64_t interval_ms, unsigned *held_back)
{
	uint64_t now = now_ms();
	if (now < r->next_ms) {
		r->held++;
		return false;
	}
	r->next_ms = now + interval_ms;
	*held_back = r->held;
	r->held = 0;
	return true;
}
