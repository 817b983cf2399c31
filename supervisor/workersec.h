/* What the supervisor does so that a worker can run unprivileged and sandboxed:
 * it reads the files the worker needs (keys, certificates, known_hosts) and
 * sends their contents with the config, and in the forked child, before exec,
 * it drops to security.worker_user (when ucgwd runs as root), sets
 * no_new_privs and resource limits. The seccomp filter itself is installed by
 * the worker (workers/sandbox.c) once its libraries are initialised. */
#ifndef UCGW_WORKERSEC_H
#define UCGW_WORKERSEC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "config/config.h"

/* Decided in the parent (getpwnam is not safe between fork and exec), applied
 * in the child. */
struct worker_creds {
	bool drop;           /* ucgwd is root and worker_user is not root: change user */
	uid_t uid;
	gid_t gid;
	bool sandbox;        /* security.sandbox */
	unsigned long nofile; /* RLIMIT_NOFILE for the worker */
	char error[256];     /* non-empty: the child writes this and exits UCGW_EXIT_CONFIG */
};

/* Resolve security.worker_user and security.sandbox for the next start. */
void worker_creds_resolve(const struct config *cfg, struct worker_creds *c);

/* In the child, after fork: change user, no_new_privs, rlimits. Only
 * async-signal-safe calls. On failure writes a line to fd 2 and _exit(2). */
void worker_creds_apply(const struct worker_creds *c, const char *worker);

/* The body of MSG_CONFIG: {"sandbox": bool, "files": {key: contents}} for every
 * CFG_READ key of the section that is set; a file that cannot be read is sent
 * as a string saying why, for the worker to report. A read that overran its
 * time limit (a hung file system: not the worker's configuration at fault)
 * also sets hung to why, "" otherwise. Caller frees. */
void *worker_config_body(const struct cfg_section *sec, bool sandbox, size_t *len, char *hung, size_t hunglen);

/* Log the sandbox settings once per (re)load: a warning when it is off. */
void worker_sandbox_announce(const struct config *cfg);

#endif
