/* libucgw: deliver metadata and files through ucgwd, from C.
 *
 *   int err;
 *   ucgw_t *gw = ucgw_open(NULL, NULL, &err);        // $UCGW_SOCKET or /run/ucgw/control.sock
 *   if (!gw) { fprintf(stderr, "%s\n", ucgw_last_error()); ... }
 *   struct ucgw_send_opts o = { .priority = "high", .wait = true };
 *   struct ucgw_outcome out;
 *   if (ucgw_send(gw, json, strlen(json), &o, &out) != UCGW_OK)
 *       fprintf(stderr, "not delivered: %s\n", out.error);
 *   ucgw_close(gw);
 *
 * Blocking and non-blocking use share one handle:
 *  - blocking calls (ucgw_send, ucgw_send_file, ucgw_wait, ucgw_stats...) return
 *    with the daemon's answer, or at their timeout;
 *  - ucgw_send_async() and ucgw_send_file_async() return at once with a request
 *    number. With a callback, the answer is handed to it from ucgw_process(),
 *    which the application calls when ucgw_fd() is readable (poll/epoll/select
 *    for reading only: the descriptor also becomes readable when queued bytes
 *    can be written). Without a callback, ucgw_wait() collects the answer.
 *
 * Threads: a handle may be shared. Every call takes the handle's mutex only
 * briefly; several threads may have requests outstanding on one handle at once
 * (a send that waits for delivery does not hold up the others), and the
 * daemon's replies are routed to them by request number. Callbacks run only
 * inside ucgw_process(), never with the mutex held, so they may call back into
 * the handle. ucgw_close() must not race with other calls on the same handle.
 *
 * Errors: every function that can fail returns an enum ucgw_error; the words
 * (the daemon's own when it refused) are in the outcome's error field where
 * there is an outcome, and in ucgw_last_error(), which is per thread and
 * describes the last failed call that thread made. When ucgwd refused,
 * ucgw_last_code() says why as a number (enum ucgw_code): act on that, not on
 * the words, which may change.
 *
 * The connection: a handle reconnects by itself on the next request after
 * ucgwd stopped or restarted. Every message gets its id (a ULID) before it is
 * sent. A blocking send whose connection breaks before the answer is sent
 * again, with the same id, once ucgwd is back, within its timeout; ucgwd
 * answers a repeated id with the first message's state, so the server gets one
 * message. Non-blocking requests in flight at that moment end with UCGW_E_IO,
 * their outcome's id set: send again with opts.id = that id.
 * ucgw_fd() stays the same descriptor across reconnects. */
#ifndef UCGW_CLIENT_H
#define UCGW_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define UCGW_DEFAULT_SOCKET "/run/ucgw/control.sock"

typedef struct ucgw ucgw_t;
typedef uint64_t ucgw_req_t; /* a request number, > 0 */

enum ucgw_error {
	UCGW_OK = 0,
	UCGW_E_ARG,          /* a bad argument (NULL handle, empty data, ...) */
	UCGW_E_NOMEM,        /* out of memory */
	UCGW_E_NOT_RUNNING,  /* ucgwd is not running: no socket, or nobody listening on it */
	UCGW_E_CONNECT,      /* the socket cannot be used (permission denied, path too long, ...) */
	UCGW_E_IO,           /* the connection to ucgwd broke (it stopped or restarted) */
	UCGW_E_PROTOCOL,     /* ucgwd's answer could not be read, or it found our request malformed */
	UCGW_E_REFUSED,      /* ucgwd refused the request (bad protocol, not JSON, spool full, ...) */
	UCGW_E_UNAUTHORIZED, /* ucgwd wants a valid API key or JWT (security.require_auth) */
	UCGW_E_FAILED,       /* accepted, but it could not be delivered: the outcome says why */
	UCGW_E_TIMEOUT,      /* no answer within the timeout; what ucgwd accepted stays in its spool */
	UCGW_E_FILE,         /* the file to send cannot be opened, or is not a regular file */
	UCGW_E_NOREQ,        /* ucgw_wait/ucgw_cancel: no such outstanding request */
	UCGW_E_COUNT
};

/* Why ucgwd refused a request: the `code` of its error reply
 * (docs/control-protocol.md, "Error codes"); the same numbers as ucgwd's
 * proto/ctl.h. Numbers as HTTP's statuses of the same meaning. */
enum ucgw_code {
	UCGW_CODE_NONE = 0,           /* not refused by ucgwd (or by a ucgwd too old to say why) */
	UCGW_CODE_BAD_REQUEST = 400,  /* unknown key, wrong type, value out of range, not JSON, ... */
	UCGW_CODE_UNAUTHORIZED = 401, /* the credential or this user was refused */
	UCGW_CODE_FORBIDDEN = 403,    /* not allowed to do this (a path without its descriptor) */
	UCGW_CODE_NOT_FOUND = 404,    /* no such protocol, worker, message or file */
	UCGW_CODE_CONFLICT = 409,     /* the message is not in a state that allows it */
	UCGW_CODE_TOO_LARGE = 413,    /* over gateway.max_message_bytes, max_frame_bytes or spool.max_bytes */
	UCGW_CODE_CONFIG = 422,       /* reload: the new configuration was refused */
	UCGW_CODE_BUSY = 429,         /* every connection ucgwd allows is taken: try again later */
	UCGW_CODE_INTERNAL = 500,     /* ucgwd could not keep it (not accepted: send it again) */
	UCGW_CODE_UNAVAILABLE = 503,  /* nothing enabled can carry it, or ucgwd is stopping */
	UCGW_CODE_VERSION = 505,      /* ucgwd does not speak this client's protocol version */
	UCGW_CODE_SPOOL_FULL = 507,   /* the spool is full: try again later */
};

/* ttl_s: the message never expires. */
#define UCGW_TTL_NEVER (-1L)

typedef void (*ucgw_progress_fn)(ucgw_t *gw, ucgw_req_t req, uint64_t done, uint64_t size, void *arg);

/* Zero (or NULL for the whole struct) means the daemon's defaults. */
struct ucgw_send_opts {
	const char *protocol;    /* NULL or "auto"; metadata: "mqtt", "rest", "websocket"; files: "sftp", "rsync" */
	const char *priority;    /* NULL ("normal"), "high" or "low" */
	const char *topic;       /* MQTT topic instead of the configured one */
	const char *endpoint;    /* REST path instead of the configured one ("/api/...") */
	const char *remote_name; /* files: the name at the server (default: the file's own) */
	const char *format;      /* metadata: NULL ("json", which ucgwd checks) or "raw" */
	long ttl_s;              /* 0: spool.ttl_s; > 0: seconds; UCGW_TTL_NEVER */
	bool wait;               /* answer with the delivery outcome instead of at acceptance */
	bool encrypt;            /* AES-256-GCM payload encryption (security.encryption_key_file) */
	int timeout_ms;          /* blocking calls: 0: the handle's (ucgw_set_timeout); < 0: none */
	ucgw_progress_fn progress; /* files with wait: bytes delivered so far */
	void *progress_arg;
	/* The message's id, from ucgw_id_new(); NULL: a new one, made here before
	 * the send (a blocking send sends itself again with it after a lost
	 * connection). A send whose answer was lost (UCGW_E_IO, UCGW_E_TIMEOUT) may
	 * be made again with the same id (the outcome's): ucgwd answers it with the
	 * first one's state or outcome and makes no second message
	 * (docs/control-protocol.md). */
	const char *id;
};

/* A message id as ucgwd makes them (a ULID: 26 characters and the NUL). */
#define UCGW_ID_SIZE 27


struct ucgw_outcome {
	ucgw_req_t request;
	char id[32];        /* the message id (the idempotency key at the server) */
	char status[16];    /* "accepted" (without wait), "ok" or "failed"; "" when refused */
	char protocol[16];  /* with wait: the protocol that delivered it (or tried last) */
	unsigned attempts;  /* with wait: deliveries tried */
	uint64_t latency_ms; /* with wait: from acceptance to the outcome */
	char error[512];    /* why it was refused or failed; "" otherwise */
};

/* A reply handed to a callback (from ucgw_process). error is the call's result
 * code; out is never NULL (out->error holds the words when error != UCGW_OK). */
typedef void (*ucgw_callback)(ucgw_t *gw, ucgw_req_t req, int error, const struct ucgw_outcome *out, void *arg);

/* The code of ucgwd's refusal of this thread's last failed call (in a
 * callback: of the request it is called for), UCGW_CODE_NONE when that call
 * did not fail by ucgwd's refusal. */
int ucgw_last_code(void);

/* Connect. socket_path NULL: $UCGW_SOCKET, else UCGW_DEFAULT_SOCKET. auth: an
 * API key or a JWT sent with every request; NULL: $UCGW_JWT, then $UCGW_API_KEY,
 * else none; "": none. NULL on failure, with *error set (may be NULL). */
ucgw_t *ucgw_open(const char *socket_path, const char *auth, int *error);
/* Close the connection and free the handle. Outstanding requests are dropped
 * (their callbacks do not run; what ucgwd accepted is still delivered). */
void ucgw_close(ucgw_t *gw);
/* Replace the credential (a renewed JWT, a rotated key); NULL or "": none. */
int ucgw_set_auth(ucgw_t *gw, const char *auth);
/* The default timeout of blocking calls in ms (< 0: wait as long as it takes, the default). */
void ucgw_set_timeout(ucgw_t *gw, int timeout_ms);

/* ---- blocking ---- */

/* Send a metadata message. Without opts->wait, returns UCGW_OK once ucgwd has
 * the message in its spool (out->status "accepted"); with wait, once it is
 * delivered (UCGW_OK, "ok") or given up (UCGW_E_FAILED, "failed"). out may be NULL. */
int ucgw_send(ucgw_t *gw, const void *data, size_t len, const struct ucgw_send_opts *opts, struct ucgw_outcome *out);
/* Send a file: it is opened here, with the caller's rights, and the descriptor
 * handed to ucgwd, which reads it from there. */
int ucgw_send_file(ucgw_t *gw, const char *path, const struct ucgw_send_opts *opts, struct ucgw_outcome *out);
/* Send what an open descriptor refers to (a memfd, say); the descriptor stays
 * the caller's. Give opts->remote_name: there is no file name to take. */
int ucgw_send_fd(ucgw_t *gw, int fd, const struct ucgw_send_opts *opts, struct ucgw_outcome *out);

/* Wait for the answer to a request sent with ucgw_send_async(..., cb = NULL, ...).
 * timeout_ms: 0 only checks, < 0 waits as long as it takes. UCGW_E_TIMEOUT leaves
 * the request outstanding (wait again, or ucgw_cancel it). */
int ucgw_wait(ucgw_t *gw, ucgw_req_t req, int timeout_ms, struct ucgw_outcome *out);

/* The daemon's answers as JSON text (malloc'd; the caller frees). */
int ucgw_stats_json(ucgw_t *gw, char **json);
int ucgw_status_json(ucgw_t *gw, char **json);

/* The per-protocol statistics as an array (one malloc'd block; free() it). */
struct ucgw_stats {
	char protocol[16];
	bool enabled;
	uint64_t success, failure, retries, fallback_out, fallback_in, bytes, dropped, expired, dead, queued,
		inflight;
	double success_rate; /* 0..1 */
	double p50_ms, p90_ms, p99_ms, max_ms;
};
int ucgw_stats(ucgw_t *gw, struct ucgw_stats **list, size_t *count);

/* ---- non-blocking ---- */

/* Queue the request and return at once (the bytes go out now or from
 * ucgw_process). cb != NULL: it receives the answer from ucgw_process();
 * cb == NULL: collect the answer with ucgw_wait() (or drop it with ucgw_cancel;
 * uncollected answers are kept until ucgw_close). *req (may be NULL) names it. */
int ucgw_send_async(ucgw_t *gw, const void *data, size_t len, const struct ucgw_send_opts *opts, ucgw_callback cb,
		    void *arg, ucgw_req_t *req);
int ucgw_send_file_async(ucgw_t *gw, const char *path, const struct ucgw_send_opts *opts, ucgw_callback cb,
			 void *arg, ucgw_req_t *req);
/* Forget an outstanding request: its answer (and callback) will not come. The
 * message itself, if ucgwd accepted it, is still delivered. */
int ucgw_cancel(ucgw_t *gw, ucgw_req_t req);

/* A descriptor to poll for reading: it is readable when ucgw_process() has work
 * (answers arrived, queued bytes can be written, callbacks are due). The same
 * descriptor for the life of the handle. */
int ucgw_fd(const ucgw_t *gw);
/* Write what is queued, read what has arrived, run due callbacks; never blocks.
 * UCGW_OK, or UCGW_E_IO when the connection was lost (the callbacks of the
 * requests in flight ran with UCGW_E_IO; the next request reconnects). */
int ucgw_process(ucgw_t *gw);
/* Requests sent whose answers have not been handed out yet. */
size_t ucgw_pending(ucgw_t *gw);
/* Block until every queued request has been written to ucgwd (not answered),
 * for at most timeout_ms (< 0: no limit), or until the connection is lost
 * (those requests end with UCGW_E_IO): for a program that sends without
 * waiting and then exits. Queued bytes otherwise go out from ucgw_process, a
 * blocking call or ucgw_wait on the handle. */
int ucgw_flush(ucgw_t *gw, int timeout_ms);

/* A new message id (a ULID: the time in ms, then 80 random bits) for
 * opts->id, so that a send can be made again, after a lost answer, as the
 * same message. UCGW_OK, or UCGW_E_NOMEM when no random bytes can be had. */
int ucgw_id_new(char id[UCGW_ID_SIZE]);

/* ---- errors ---- */

/* A fixed description of an error code ("ucgwd is not running", ...). */
const char *ucgw_strerror(int error);
/* The words of the last failed call made by this thread (the daemon's own for a
 * refusal), or "". Valid until this thread's next call into libucgw. */
const char *ucgw_last_error(void);
const char *ucgw_version(void);

#ifdef __cplusplus
}
#endif
#endif
