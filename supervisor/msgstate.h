/* The life of a message as a table (s6's way): for each state, the events it may
 * take and the state each leads to. The router changes a message's state only
 * through router.c's transition(), which looks the pair up here; a pair that is
 * not in the table is a bug, logged loudly (and fatal in a debug build). Pure:
 * no loop, no router, so a unit test walks every cell. */
#ifndef UCGW_MSGSTATE_H
#define UCGW_MSGSTATE_H

#include <stdbool.h>

#include "supervisor/message.h"

enum msg_event {
	EV_ENQUEUE,  /* onto a protocol's queue (a fresh round, a fallback, a steal) */
	EV_TAKE,     /* off its queue, about to be sent */
	EV_SEND,     /* handed to a worker */
	EV_END,      /* the attempt ended (answer, death, timeout): off the worker */
	EV_WAIT,     /* aside until its backoff ends, or until the workers have started */
	EV_KILL,     /* dead-lettered, with a reason */
	EV_REQUEUE,  /* a dead letter back on its way (operator) */
	EV_DELIVER,  /* a worker said ok: gone */
	EV_REMOVE,   /* expired, dropped, purged or never durable: gone */
	EV_COUNT
};

/* The state after `ev` in state `s`, or -1 if the table has no such move. */
int msgstate_next(enum smsg_state s, enum msg_event ev);
const char *msgstate_str(enum smsg_state s);
const char *msgevent_str(enum msg_event ev);

#endif
