/* The process table: one worker per enabled protocol, started with its end of a
 * socketpair on fd 3 and its stderr captured; handshake, pings, restarts. */
#ifndef UCGW_PROCTAB_H
#define UCGW_PROCTAB_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "config/config.h"
#include "proto/proto.h"
#include "supervisor/restart.h"
#include "supervisor/slot.h"

enum proc_state { PROC_STARTING, PROC_READY, PROC_BACKOFF, PROC_FAILED, PROC_STOPPED };

#define STDERR_LINES 200

struct server_state;

struct proc {
	char name[32];                 /* the protocol, and the config section */
	struct slot *slot;             /* its protocol's slot (slot.h): descriptor, router, monitor, history */
	const struct cfg_section *section;
	pid_t pid;                     /* 0 when not running */
	uint32_t gen;                  /* bumped on every start; stale reports are ignored */
	enum proc_state state;
	unsigned restarts;
	char last_exit[128];           /* "killed by signal 9 (SIGKILL)", "" before any exit */
	uint64_t start_ms, start_wall_ms, ready_ms;
	struct channel *ch;
	int errfd;
	uv_poll_t *errpoll;
	char *errbuf;                  /* partial line */
	size_t errlen;
	char *lines[STDERR_LINES];     /* ring of the last lines written to stderr */
	unsigned nlines, line_head;
	uv_timer_t timer;              /* handshake deadline, then pings; or the backoff wait */
	uint64_t ping_seq, last_pong_ms;
	struct restart_state rs;
	unsigned start_failures;       /* starts in a row that failed for want of a resource */
	char kill_reason[160];         /* why the supervisor killed it, for the crash log */
	char channel_error[96];        /* why its socket closed, while it is given time to exit */
	bool hello_seen;
	bool stop_requested;           /* an exit we asked for: no crash log, no restart */
	bool restart_requested;        /* start again right after the exit */
	bool killed_for_cause;         /* the supervisor killed it for what it did (hung, bad frame) */
	bool blameless_exit;           /* the last exit was asked for, or a SIGKILL from someone
	                                * else (an operator, a test): not the jobs' fault */
	bool removed;                  /* protocol disabled by a reload: forget after exit */
	bool connected;                /* the worker's view of its server */
	char health[512];
	uint64_t rtt_us;          /* the last round trip the worker measured */
	struct server_state *servers;  /* each server of its list, as it last reported (servers.h) */
	unsigned nservers;
	unsigned inflight;             /* jobs in hand (the router keeps the list) */
	void *body;                    /* MSG_CONFIG body of the last start: the files read for it */
	size_t body_len;
	struct proc *next;
};

void proctab_init(void);
/* Start, restart or stop workers so that the table matches the configuration. */
void proctab_apply_config(const struct config *old, const struct config *cfg);
struct proc *proctab_find(const char *name);
struct proc *proctab_first(void);
const char *proc_state_str(enum proc_state s);
/* Operator restart: also brings a failed or stopped worker back. */
void proctab_restart(struct proc *p);
/* Send a job frame; -1 when the worker is not ready. */
int proc_send(struct proc *p, const struct msg *m, int fd);
/* Kill a worker that misbehaved; handled like a crash with this reason. */
void proc_kill(struct proc *p, const char *reason);
/* Shutdown: TERM every worker; call done() once all have exited. */
void proctab_stop_all(uint64_t kill_after_ms, void (*done)(void));
bool proctab_all_settled(void); /* no worker still starting (for READY=1) */
unsigned proctab_running(void);

#endif
