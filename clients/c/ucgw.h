/* libucgw: send metadata and files through a running ucgwd, from C.
 *
 *   int err;
 *   ucgw_t *gw = ucgw_open("/run/ucgw/control.sock", NULL, &err);
 *   struct ucgw_outcome out;
 *   struct ucgw_send_opts o = { .protocol = "auto", .wait = true };
 *   if (ucgw_send(gw, "{\"plate\":\"ABC123\"}", 18, &o, &out) == UCGW_OK) ...
 *   ucgw_close(gw);
 *
 * A handle may be shared by threads (calls on it are serialised). Blocking calls
 * return when the daemon answered; ucgw_send_async() returns at once and the
 * callback runs from ucgw_process(), which the application calls when ucgw_fd()
 * is readable (or from any blocking call on the same handle). Callbacks must not
 * call back into the handle. */
#ifndef UCGW_CLIENT_H
#define UCGW_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ucgw ucgw_t;

enum ucgw_error {
	UCGW_OK = 0,
	UCGW_E_ARG,      /* a bad argument */
	UCGW_E_CONNECT,  /* ucgwd is not running, or the socket cannot be reached */
	UCGW_E_IO,       /* the connection broke */
	UCGW_E_PROTOCOL, /* the daemon's answer could not be read */
	UCGW_E_REFUSED,  /* the daemon refused the request: see ucgw_last_error() */
	UCGW_E_FAILED,   /* the message could not be delivered: see the outcome's error */
	UCGW_E_NOMEM,
};

struct ucgw_send_opts {
	const char *protocol;    /* "auto" (NULL) or a protocol name */
	const char *priority;    /* "high", "normal" (NULL), "low" */
	const char *topic;       /* MQTT topic, or NULL */
	const char *endpoint;    /* REST endpoint, or NULL */
	const char *remote_name; /* files: the name at the server, or NULL (the file's own) */
	const char *format;      /* "json" (NULL) or "raw" */
	long ttl_s;              /* 0: the daemon's default */
	bool wait;               /* answer with the delivery outcome, not at acceptance */
	bool encrypt;
};

struct ucgw_outcome {
	char id[32];        /* the message id (the idempotency key at the server) */
	char status[16];    /* "accepted", "ok" or "failed" */
	char protocol[16];  /* the protocol that delivered it (wait) */
	unsigned attempts;
	char error[512];    /* why it failed, "" otherwise */
};

typedef void (*ucgw_callback)(ucgw_t *gw, uint64_t request, int error, const struct ucgw_outcome *out, void *arg);

/* auth: an API key or a JWT (NULL: $UCGW_API_KEY, then $UCGW_JWT, then none). */
ucgw_t *ucgw_open(const char *socket_path, const char *auth, int *error);
void ucgw_close(ucgw_t *gw);

int ucgw_send(ucgw_t *gw, const void *data, size_t len, const struct ucgw_send_opts *opts, struct ucgw_outcome *out);
int ucgw_send_file(ucgw_t *gw, const char *path, const struct ucgw_send_opts *opts, struct ucgw_outcome *out);
/* The per-protocol statistics as a JSON object (malloc'd; the caller frees). */
int ucgw_stats_json(ucgw_t *gw, char **json);

int ucgw_send_async(ucgw_t *gw, const void *data, size_t len, const struct ucgw_send_opts *opts, ucgw_callback cb,
		    void *arg, uint64_t *request);
int ucgw_fd(const ucgw_t *gw);
/* Read what has arrived, run the callbacks; never blocks. */
int ucgw_process(ucgw_t *gw);

const char *ucgw_strerror(int error);
/* The daemon's words for the last refusal on this handle (valid until the next call). */
const char *ucgw_last_error(const ucgw_t *gw);

#ifdef __cplusplus
}
#endif
#endif
