/* One slot per protocol of the descriptor table (workers/protocols.h), at the
 * protocol's index there: where the supervisor keeps what it knows of that
 * protocol's worker. The slot holds the descriptor and the process; the
 * router's queues (router_int.h), the adaptive window, the network monitor's
 * samples and the history's ring are arrays of their modules at the same
 * index. A job's result comes from a known process: p->slot reaches all of it,
 * with no look-up by name. */
#ifndef UCGW_SLOT_H
#define UCGW_SLOT_H

#include "workers/protocols.h"

struct proc;

struct slot {
	int idx;
	const struct protocol *proto;
	struct proc *proc; /* NULL while the protocol is disabled (proctab.c keeps it) */
};

int slot_count(void);
struct slot *slot_at(int idx);
struct slot *slot_find(const char *name); /* NULL: no such protocol */
/* The slot whose protocol judges the network for this kind (PROTO_META,
 * PROTO_FILES): the selection rules read its server's quality. */
struct slot *slot_network_judge(unsigned kind);

#endif
