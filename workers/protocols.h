/* The protocol descriptors: one row per protocol, the way a Fluent Bit output
 * plugin is a struct plus an option table plus flags. Everything the
 * supervisor, the configuration and the worker framework know about a
 * protocol is here, and nowhere else asks for a protocol by its name: its
 * executable, what it carries, its configuration section, where the network
 * monitor finds its server, its sandbox, its part in `auto` selection and in
 * fallback chains. Adding a protocol is one worker file and one row
 * (workers/README.md).
 *
 * The rows of the test build (the test worker, the toy protocol) are
 * compiled in only with UCGW_TEST_PROTOCOLS (tests/tools/test_protocols.c):
 * a release or package build has no trace of them. */
#ifndef UCGW_PROTOCOLS_H
#define UCGW_PROTOCOLS_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"

#define PROTO_META 0x1u  /* metadata messages (send) */
#define PROTO_FILES 0x2u /* files (send-file) */
#define PROTO_MAX 8      /* rows at most, test rows included (a message keeps a bit per protocol) */

/* Where the network monitor finds the server: a TCP connect to it is timed. */
struct protocol_server {
	const char *key;      /* the section's key that holds the server: a URL ("mqtts://h:8883/x"),
				 "host:port" or a host */
	const char *port_key; /* an INT key with the port; NULL: the port is in the URL, or the default */
	const char *port;     /* the port of a URL without one */
	const char *tls_scheme, *tls_port; /* a URL whose scheme starts with tls_scheme: tls_port instead */
};

/* The worker's seccomp allow-list beyond the framework's (workers/sandbox.c). */
struct protocol_sandbox {
	const char *const *calls; /* NULL-terminated system call names, each with why in a comment */
	bool network;             /* opens connections: sockets, read-only opens, name resolution */
	bool threads;             /* starts threads (clone with CLONE_THREAD only) */
	bool exec;                /* runs programs: its list covers theirs, ioctl and prlimit64 whole */
};

struct protocol {
	const char *name;   /* the configuration section, the log prefix, `send --protocol NAME` */
	const char *exe;    /* its executable in the worker directory, "ucgw-" and the name */
	const char *help;   /* one line: what over what (the section's help in docs/configuration.md) */
	unsigned carries;   /* PROTO_META and/or PROTO_FILES */
	const struct cfg_key *keys; /* its section: `enabled` first, then its own keys */
	size_t nkeys;
	struct protocol_server server;
	struct protocol_sandbox sandbox;
	/* Its part in `auto` (the protocol_selection section):
	 *  picks:   the selection rules (keys of protocol_selection) whose default it is,
	 *           comma-separated, e.g. "small,high_priority";
	 *  network: the kinds (PROTO_*) whose rules judge the network by its server's
	 *           quality (the reference design measures one server per kind). */
	const char *picks;
	unsigned network;
	/* Its default fallback chain (fallback.chains): the protocols to try after it. */
	const char *fallback;
	/* An INT key of its section: a message it answered retry comes back to it
	 * this many times in all (after a backoff) before its chain goes on, as the
	 * reference design's REST client retries; NULL: the chain goes on at once. */
	const char *retry_key;
	/* What one key's range cannot say about its section, checked at load
	 * (NULL: nothing): returns the key at fault with why written, or NULL. */
	const char *(*check)(const struct cfg_section *s, char *why, size_t len);
	bool test_only;     /* a fixture of the test build: never picked by `auto`, in no list or
			       document a user reads */
};

/* The rows, in table order (production rows first); the index is the
 * protocol's slot in the supervisor. */
size_t protocol_count(void);
const struct protocol *protocol_at(size_t i);
const struct protocol *protocol_find(const char *name); /* NULL: no such protocol */
int protocol_index(const struct protocol *p);
/* Its server key is a list of servers (CFG_SERVERS: config_first_server), not one text. */
bool protocol_server_is_list(const struct protocol *p);
/* The names of the rows a user may name that carry any of `carries`,
 * separated by sep ("websocket, rest, mqtt"). */
void protocol_names(unsigned carries, const char *sep, char *out, size_t len);
/* What a row lacks or repeats (a missing executable, two rows alike...), or
 * NULL when the table is sound: checked by the unit tests and at start-up. */
const char *protocol_table_error(char *buf, size_t len);

#endif
