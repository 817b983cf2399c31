/* The framework every protocol worker shares: fd 3 to the supervisor, the
 * hello/config/ready handshake, pings, signals, crash backtraces, the job list.
 * A protocol supplies a struct worker_ops and one file (see workers/README.md). */
#ifndef UCGW_WORKER_H
#define UCGW_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/log.h"
#include "common/util.h"
#include "config/config.h"
#include "proto/proto.h"
#include "workers/wire.h"

struct job {
	uint64_t seq;                  /* the supervisor's handle for this attempt */
	char id[UCGW_ID_LEN + 1];      /* the message id: the idempotency key at the server */
	enum job_kind kind;
	char *payload;                 /* JOB_META: the bytes to deliver (NUL-terminated copy) */
	size_t payload_len;
	char *topic, *endpoint, *remote_name; /* per-message overrides, NULL when not given */
	int fd;                        /* JOB_FILE: open, readable descriptor, -1 otherwise */
	uint64_t size;                 /* JOB_FILE: size when the supervisor opened it */
	enum priority priority;
	unsigned attempt;
	uint64_t accepted_ms;          /* when the gateway accepted it (wall clock, ms since the epoch; 0: unknown) */
	bool clock_corrected;          /* ... corrected after the clock was set: it was stamped before */
	uint64_t start_ms;             /* when the worker received it */
	void *priv;                    /* the protocol's own state for this job */
	struct job *prev, *next;       /* the framework's list of jobs in hand */
};

struct worker_ops {
	const char *name; /* "mqtt": the config section and the log prefix */
	/* Read the section and start connecting. Return 0, or UCGW_EXIT_CONFIG with a
	 * one-line reason in err when the configuration cannot work. */
	int (*init)(uv_loop_t *loop, const struct cfg_section *cfg, char *err, size_t errlen);
	/* Take a job. Answer it later with worker_result(), exactly once. */
	void (*submit)(struct job *job);
	/* Stop: close connections. Jobs still in hand are answered retry by the framework. */
	void (*shutdown)(void);
};

/* Runs the worker; returns the process exit code. */
int worker_main(int argc, char **argv, const struct worker_ops *ops);
#define WORKER_MAIN(ops) \
	int main(int argc, char **argv) { return worker_main(argc, argv, &(ops)); }

uv_loop_t *worker_loop(void);
const char *worker_device_id(void);
/* Answer a job and free it (closes its fd). error may be NULL for JOB_OK. */
void worker_result(struct job *job, enum job_status st, uint64_t retry_after_ms, const char *fmt, ...)
	PRINTF(4, 5);
/* Report the connection to the server; sent only when something changed. */
void worker_health(bool connected, uint64_t rtt_us, const char *fmt, ...) PRINTF(3, 4);
/* Send the last health again with body (raw msgpack: {"servers": [...]},
 * workers/servers.c): each server's own state. */
void worker_health_body(const void *body, size_t len);
bool worker_connected(void);
void worker_progress(struct job *job, uint64_t done);
/* Jobs in hand, oldest first (for answering them all when a connection drops). */
struct job *worker_jobs(void);
/* "Bearer <JWT>": an HS256 token for this device, minted from secret and
 * minted again before it expires; NULL when secret is NULL. */
const char *worker_bearer(const char *secret);
/* A file of the section (ca_file, cert_file, key_file, known_hosts: the keys
 * marked CFG_READ) as the supervisor read it at this start, since the worker
 * itself may not be allowed to: its contents (NUL-terminated; *len without the
 * NUL), or NULL with *why saying why it could not be read, or NULL with *why
 * NULL when the key is not set. */
const char *worker_file(const char *key, size_t *len, const char **why);
/* Does this worker run sandboxed (security.sandbox)? */
bool worker_sandboxed(void);
/* Expand "{device_id}" in a template; caller frees. */
char *worker_expand(const char *tmpl);
/* Look host up in libuv's thread pool, then call done(arg, why) from the loop:
 * why is NULL when the name resolves, else the resolver's reason. For the
 * libraries that look names up inside their connect call and so would block
 * the loop for as long as DNS takes (libmosquitto; libwebsockets as Debian
 * builds it, without its own asynchronous DNS): asked after this has answered,
 * they get their answer from a resolver that has just answered. done runs
 * inside this call only when the lookup cannot start (out of memory). */
void worker_resolve(const char *host, void (*done)(void *arg, const char *why), void *arg);

#endif
