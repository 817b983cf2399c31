#include "supervisor/msgstate.h"

#define Q SM_QUEUED
#define F SM_INFLIGHT
#define W SM_WAITING
#define D SM_DEAD
#define L SM_LIMBO
#define G SM_GONE
#define NO (-1)

/* Rows: the state a message is in; columns: the event; cell: where it goes.
 * A message starts in limbo (taken in, on no list) and ends gone. Only a
 * message in no worker's hands may die or be removed: one in flight first has
 * its attempt ended (EV_END), whatever ends it. */
static const signed char table[SM_NSTATES][EV_COUNT] = {
	/*             ENQUEUE TAKE SEND END WAIT KILL REQUEUE DELIVER REMOVE */
	[SM_QUEUED]   = { Q,   L,   NO,  NO, W,   D,   NO,     NO,     G },
	[SM_INFLIGHT] = { NO,  NO,  NO,  L,  NO,  NO,  NO,     NO,     NO },
	[SM_WAITING]  = { Q,   NO,  NO,  NO, W,   D,   NO,     NO,     G },
	[SM_DEAD]     = { NO,  NO,  NO,  NO, NO,  NO,  L,      NO,     G },
	[SM_LIMBO]    = { Q,   NO,  F,   NO, W,   D,   NO,     G,      G },
	[SM_GONE]     = { NO,  NO,  NO,  NO, NO,  NO,  NO,     NO,     NO },
};

int msgstate_next(enum smsg_state s, enum msg_event ev)
{
	if ((unsigned)s >= SM_NSTATES || (unsigned)ev >= EV_COUNT)
		return NO;
	return table[s][ev];
}

const char *msgstate_str(enum smsg_state s)
{
	static const char *const names[SM_NSTATES] = { "queued", "inflight", "waiting", "dead", "moving", "gone" };
	return (unsigned)s < SM_NSTATES ? names[s] : "?";
}

const char *msgevent_str(enum msg_event ev)
{
	static const char *const names[EV_COUNT] = { "enqueue", "take", "send",    "end",   "wait",
						     "kill",    "requeue", "deliver", "remove" };
	return (unsigned)ev < EV_COUNT ? names[ev] : "?";
}
