#include "supervisor/slot.h"

#include <stddef.h>

static struct slot slots[PROTO_MAX];
static int nslots;

static void fill(void)
{
	if (nslots)
		return;
	for (size_t i = 0; i < protocol_count() && i < PROTO_MAX; i++) {
		slots[nslots] = (struct slot){ .idx = nslots, .proto = protocol_at(i) };
		nslots++;
	}
}

int slot_count(void)
{
	fill();
	return nslots;
}

struct slot *slot_at(int idx)
{
	fill();
	return idx >= 0 && idx < nslots ? &slots[idx] : NULL;
}

struct slot *slot_find(const char *name)
{
	const struct protocol *p = protocol_find(name);
	return p ? slot_at(protocol_index(p)) : NULL;
}

struct slot *slot_network_judge(unsigned kind)
{
	fill();
	for (int i = 0; i < nslots; i++)
		if (slots[i].proto->network & kind)
			return &slots[i];
	return NULL;
}
