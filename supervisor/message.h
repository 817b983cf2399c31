/* The supervisor's record of one accepted message or file: what it is, where it
 * is in the spool, and the route it has taken so far. */
#ifndef UCGW_MESSAGE_H
#define UCGW_MESSAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/util.h"
#include "proto/proto.h"

#define MAX_ROUTE 16
#define MAX_MOVES 8 /* the latest state changes kept for `trace` */

enum smsg_state {
	SM_QUEUED,   /* waiting for a worker */
	SM_INFLIGHT, /* a worker holds it */
	SM_WAITING,  /* every protocol of its chain failed; waits for its next try */
	SM_DEAD,     /* no protocol may deliver it: dead-letter area */
	SM_LIMBO,    /* between two lists while the router moves it: on none */
	SM_GONE,     /* delivered or removed: out of the spool, kept only for `trace` */
	SM_NSTATES
};

struct hop {                  /* one attempt */
	char protocol[16];
	uint8_t proto;            /* the protocol's index (slot.h) */
	uint8_t status;           /* enum job_status, or 255 while in flight */
	uint64_t start_wall_ms;
	uint32_t ms;              /* how long the attempt took */
	uint32_t us;              /* the same in microseconds (capped): latency statistics */
	char error[120];
};

struct waiter {               /* the client waiting for the outcome (send --wait) */
	uint64_t cid, seq;   /* cid 0: nobody waits (client ids start at 1) */
};

struct smsg {
	char id[UCGW_ID_LEN + 1];
	enum job_kind kind;
	enum priority priority;
	enum smsg_state state;
	char protocol[16];        /* asked for: a name or "auto" */
	char *topic, *endpoint, *remote_name;
	bool encrypt;
	uint64_t created_wall_ms, expires_wall_ms; /* expires 0: never */
	uint64_t finished_wall_ms;  /* delivered or given up (0: not yet), for a later trace */
	uint64_t size;            /* payload bytes, or the file's size */
	char *payload;            /* loaded payload (NULL while only on disk) */
	/* where the spool keeps it */
	uint64_t seg, off;
	uint32_t reclen;
	/* routing */
	unsigned attempts, retries;   /* attempts in this round; rounds of backoff */
	unsigned crashes;         /* workers that died holding it */
	uint64_t next_try_ms;     /* SM_WAITING: monotonic ms */
	uint64_t backoff_ms;
	uint8_t again, again_n;   /* waits to try protocol again-1 once more; how often it did this round */
	uint64_t job_seq, job_gen, job_start_ms; /* SM_INFLIGHT */
	uint64_t job_start_us;
	uint64_t progress_ms;     /* last progress report: a long transfer is not a stuck one */
	char worker[16];          /* SM_QUEUED, SM_INFLIGHT: the protocol whose queue or worker has it */
	uint8_t at;               /* ... and its index (slot.h) */
	bool permfail[8];         /* per protocol index: said permfail this round (PROTO_MAX) */
	struct hop *route;        /* allocated as it grows (most messages take one hop) */
	unsigned nroute, caproute;
	unsigned tries;           /* attempts in all (the route keeps the first and the latest MAX_ROUTE) */
	char last_error[160];
	uint64_t done_bytes;      /* file progress */
	struct waiter waiter;
	uint32_t tried;           /* bit per protocol index: tried in this round */
	uint32_t tried_down;      /* bit per protocol index: failed this round while not up */
	bool replayed;            /* read back from the spool at start: held until the workers connect */
	int round_primary;        /* protocol index that began this round */
	bool round_retry;         /* some protocol answered retry in this round */
	uint64_t queued_ms;       /* when it joined its current queue */
	/* live_first (backfill.c): a backlog message is sent behind the live ones */
	bool backlog;             /* it had to wait: backlog, not live (for good) */
	bool in_backfill;         /* SM_QUEUED: on its protocol's backlog queue */
	bool bf_held;             /* SM_INFLIGHT: counted among its protocol's backlog jobs */
	uint64_t age_seq;         /* adoption order: the backlog goes oldest first */
	/* the clock (clock.c) */
	uint64_t boot_ms;         /* CLOCK_BOOTTIME when accepted */
	bool clock_unset;         /* accepted in this boot before the clock was known set: to correct */
	bool clock_corrected;     /* created_wall_ms was corrected once the clock was set */
	bool expiry_rebased;      /* its time cannot be placed: its expiry counts from when it was read back */
	bool expiry_unset;        /* ... read back before the clock was known set: to move with the correction */
	uint64_t rebased_wall_ms; /* ... the wall time then */
	struct move {             /* a state change (msgstate.h), for `trace` */
		uint8_t ev, to;
		uint32_t at_ms;       /* since created_wall_ms */
	} moves[MAX_MOVES];       /* a ring: the latest MAX_MOVES */
	uint32_t nmoves;
	struct smsg *qnext, *qprev; /* in a queue */
	struct smsg *anext, *aprev; /* in age order, all live messages */
	struct smsg *snext, *sprev; /* in the spool's own index of its live records */
	bool spooled;               /* ... and on it */
	struct smsg *hnext;         /* in the id hash */
};

#endif
