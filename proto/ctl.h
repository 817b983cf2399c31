/* The control protocol's version and the codes of its error replies: the one
 * place they are defined. Plain C with no dependency, so that a client can
 * include or mirror it (clients/c/ucgw.h mirrors the codes as UCGW_CODE_* and
 * checks them against these when built; clients/python/ucgw/_wire.py as Code;
 * supervisor/dashboard/dashboard.js as CODE). docs/control-protocol.md says what
 * each means and which replies carry it.
 *
 * The worker protocol (supervisor <-> workers) has its own version,
 * UCGW_PROTO_VERSION in proto.h: the two change separately. */
#ifndef UCGW_CTL_H
#define UCGW_CTL_H

/* Version 2: error replies carry `code`; a request's body is read strictly (an
 * unknown key, a wrong type or a value out of range is refused, naming the key).
 * Version 1 requests are still answered as version 1 answered them: no `code`,
 * `v` 1, unknown keys ignored. */
#define UCGW_CTL_VERSION 2
#define UCGW_CTL_VERSION_MIN 1 /* the oldest version ucgwd still answers */

/* An error reply's `code`. Numbers as HTTP's statuses of the same meaning, so
 * that the dashboard can pass them on; a successful reply has none (0). */
enum ctl_code {
	CTL_OK = 0,
	CTL_E_BAD_REQUEST = 400,  /* malformed request, unknown command, unknown key, wrong type, out of range, bad value */
	CTL_E_UNAUTHORIZED = 401, /* the peer or the credential was refused (security.*) */
	CTL_E_FORBIDDEN = 403,    /* allowed to connect, not to do this (a path without its descriptor) */
	CTL_E_NOT_FOUND = 404,    /* no such worker, protocol, message or file */
	CTL_E_CONFLICT = 409,     /* the message is not in a state that allows it (retry of one in flight, ...) */
	CTL_E_TOO_LARGE = 413,    /* over gateway.max_message_bytes or gateway.max_frame_bytes */
	CTL_E_CONFIG = 422,       /* reload: the new configuration was refused, the old one stays */
	CTL_E_BUSY = 429,         /* a limit on connections was reached: try again later */
	CTL_E_INTERNAL = 500,     /* ucgwd could not do it (a spool write or sync failed: not accepted) */
	CTL_E_UNAVAILABLE = 503,  /* no enabled protocol can carry it, the one asked for is disabled, or ucgwd is stopping */
	CTL_E_VERSION = 505,      /* the request's protocol version is not spoken */
	CTL_E_SPOOL_FULL = 507,   /* the spool is full (spool.full_policy reject) */
};

/* The code's name as docs/control-protocol.md writes it ("bad_request"), or NULL. */
static inline const char *ctl_code_name(int code)
{
	switch (code) {
	case CTL_E_BAD_REQUEST: return "bad_request";
	case CTL_E_UNAUTHORIZED: return "unauthorized";
	case CTL_E_FORBIDDEN: return "forbidden";
	case CTL_E_NOT_FOUND: return "not_found";
	case CTL_E_CONFLICT: return "conflict";
	case CTL_E_TOO_LARGE: return "too_large";
	case CTL_E_CONFIG: return "config";
	case CTL_E_BUSY: return "busy";
	case CTL_E_INTERNAL: return "internal";
	case CTL_E_UNAVAILABLE: return "unavailable";
	case CTL_E_VERSION: return "version";
	case CTL_E_SPOOL_FULL: return "spool_full";
	default: return NULL;
	}
}

#endif
