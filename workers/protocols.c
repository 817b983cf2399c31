/* The protocol descriptors (workers/protocols.h): for each protocol, its
 * configuration section, its sandbox additions, then its row. Adding a
 * protocol is its worker file and one block here (workers/README.md). */
#include "workers/protocols.h"

#include <stdio.h>
#include <string.h>

#include "config/keys.h"

/* ---- the configuration sections (docs/configuration.md is generated from them) ---- */

static const struct cfg_key websocket[] = {
	ENABLED,
	SERVERS("server_url", "ws:// or wss:// URL of the server, or a list of them (one connection at a time, to the "
			      "server servers_policy picks; the same headers and credentials for each)"),
	SERVERS_POLICY,
	FAILBACK,
	INT("reconnect_attempts", "3", 0, 1000000, "failed connects in a row before health says down"),
	NUM("reconnect_delay", "5", 0, 3600, "seconds between reconnects (grows with failures)"),
	ENUM("ack", "message", "none|message", "ok when the frame is written (weak), or when the server acks the id"),
	INT("ack_timeout_ms", "10000", 1, 3600000, "an unacked message is retried after this"),
	INT("ping_interval_s", "20", 1, 3600, "WebSocket ping interval"),
	CA_FILE,
	CERT_FILE,
	TLS_KEY_FILE,
	INSECURE,
	MAP("headers", "extra HTTP headers for the upgrade request"),
	SECRET("api_key", "sent in api_key_header"),
	STR("api_key_header", "X-API-Key", "header that carries api_key"),
	SECRET("jwt_secret", "mint a short-lived HS256 bearer token with this secret"),
	COMPRESS("gzip: offer permessage-deflate (RFC 7692) in the upgrade request and, when the server agrees, send "
		 "messages deflated, with the context kept from message to message unless the server asks otherwise "
		 "(client_no_context_takeover), so that similar records cost a few bytes each; a server that does not "
		 "agree gets them uncompressed; zstd: refused, WebSocket has no extension for it; with encryption the "
		 "payload is compressed before it is sealed (see encrypt)"),
	COMPRESS_MIN,
	ENCRYPT,
};

static const struct cfg_key rest[] = {
	ENABLED,
	SERVERS("base_url", "http:// or https:// URL of the server, or a list of them (the same endpoint, headers and "
			    "credentials for each)"),
	SERVERS_POLICY,
	FAILBACK,
	STR("endpoint", "/api/lpr/data", "path appended to base_url"),
	NUM("timeout", "30", 0.001, 3600, "seconds a request may take"),
	INT("retry_attempts", "3", 0, 100, "attempts on REST before the message moves on along its chain (the reference design's retries; between them it waits spool.retry_backoff_min_ms, doubling, or the server's Retry-After; the caller is never blocked)"),
	INT("connections", "8", 1, 256, "keep-alive connections in the pool"),
	ENUM("http2", "auto", "auto|prior-knowledge|off", "HTTP/2: auto offers it over TLS (ALPN) and uses it when the server agrees, HTTP/1.1 otherwise; prior-knowledge speaks it from the start, also over plain http:// (h2c); off: HTTP/1.1 only"),
	INT("streams", "100", 1, 1000, "requests at once per connection under HTTP/2 (multiplexed; the server's own limit, SETTINGS_MAX_CONCURRENT_STREAMS, applies too); HTTP/1.1 carries one per connection, so on a link with round trip R it delivers at most connections / R"),
	INT("batch_max", "1", 1, 10000, "records per POST at most; 1: one record per POST (the reference design's contract); more: records that are JSON objects or arrays, for the usual endpoint, share a POST as a JSON array of {\"id\": message id, \"accepted_at\": RFC 3339 time, \"data\": record}, without an Idempotency-Key header (each record carries its id); the server's answer holds for all of them (2xx: all delivered; 408, 429, 5xx, no answer: all retried); a batch refused otherwise (4xx) is sent again one record per POST, each for its own verdict"),
	INT("batch_linger_ms", "0", 0, 60000, "how long the first record of a batch waits for more (0: a batch takes what is waiting when a connection or stream is free)"),
	MAP("headers", "extra HTTP headers"),
	SECRET("auth_header", "a whole header line, e.g. \"Authorization: Bearer ...\""),
	SECRET("api_key", "sent in api_key_header"),
	STR("api_key_header", "X-API-Key", "header that carries api_key"),
	SECRET("jwt_secret", "mint a short-lived HS256 bearer token with this secret"),
	CA_FILE,
	CERT_FILE,
	TLS_KEY_FILE,
	INSECURE,
	COMPRESS("gzip or zstd: the body of a POST (a batch of rest.batch_max as one body) is compressed and sent with "
		 "Content-Encoding: gzip or zstd, which the server must decode (one that cannot should answer 415 "
		 "Unsupported Media Type: then each message fails for good, so switch compress off); with encryption the payload is compressed "
		 "before it is sealed (see encrypt)"),
	COMPRESS_MIN,
	ENCRYPT,
};

static const struct cfg_key mqtt[] = {
	ENABLED,
	SERVERS("broker_url", "host, host:port, mqtt://host[:port] or mqtts://host[:port], or a list of them (a "
			      "broker cluster: the same client id, credentials and CA for each; a persistent session is "
			      "each broker's own)"),
	SERVERS_POLICY,
	FAILBACK,
	STR("client_id", NULL, "MQTT client id (default: gateway.device_id)"),
	STR("username", NULL, "MQTT user name"),
	SECRET("password", "MQTT password"),
	ENUM("protocol_version", "5", "3.1.1|5", "MQTT protocol version"),
	INT("qos", "1", 0, 2, "quality of service; ok comes with PUBACK (1), PUBCOMP (2), or once written to the socket (0: no acknowledgment, may be lost with the connection)"),
	STR("topic", "lpr/{device_id}/data", "topic of metadata messages"),
	STR("status_topic", "lpr/{device_id}/status", "retained online/offline status (last will)"),
	INT("keepalive", "60", 5, 65535, "seconds"),
	INT("max_inflight", "100", 1, 65535, "messages in flight without PUBACK, per connection (MQTT 5: or the broker's Receive Maximum, if lower)"),
	INT("connections", "128", 1, 256, "connections to the broker at most, each its own client id (client_id, then client_id-2, -3 ...) and session; the first carries the status topic; more are opened while every open one holds all it may in flight and acknowledgments take 5 ms or more (a long link: a broker's Receive Maximum, 20 by mosquitto's default, allows one connection 20 messages per round trip: a 100 ms, 20 Mbit/s link takes about 80 for its 250-byte detections); the order of messages is kept per connection"),
	INT("ack_timeout_ms", "10000", 1, 3600000, "a message without its PUBACK (QoS 1) or PUBCOMP (QoS 2), or not yet written (QoS 0), this long after it was published is retried, and the connection is reset (nothing it still holds reaches the broker later) and made again (a broker that stopped answering; keepalive alone notices after one to two keepalive periods)"),
	INT("connect_timeout_ms", "10000", 100, 3600000, "a connection without the broker's CONNACK this long after the connect began (TCP, TLS, CONNECT) is reset (its CONNECT cannot reach the broker later and kick the next connection), health says so, and a new one is tried after the usual backoff (a broker that accepts TCP and never answers; keepalive alone notices after one to two keepalive periods)"),
	BOOL("clean_session", "false", "false keeps a persistent session at the broker"),
	BOOL("envelope", "false", "publish {\"id\":..., \"accepted_at\":..., \"data\":...} instead of the payload alone (accepted_at: when ucgwd accepted it, RFC 3339 UTC; with \"clock_corrected\": true when that was corrected after the clock was set)"),
	CA_FILE,
	CERT_FILE,
	TLS_KEY_FILE,
	INSECURE,
	COMPRESS("gzip or zstd: the published payload (with its envelope, if any) is compressed and carries the MQTT 5 "
		 "user property content-encoding: gzip or zstd (a subscriber decompresses what has it); needs "
		 "protocol_version 5, since MQTT 3.1.1 has no way to say so; with encryption the payload is compressed "
		 "before it is sealed (see encrypt)"),
	COMPRESS_MIN,
	ENCRYPT,
};

static const struct cfg_key sftp[] = {
	ENABLED,
	SERVERS("host", "SSH server (host, host:port or [IPv6]:port), or a list of them (the same user, key, "
		"remote_path and known_hosts; one SSH session at a time, to the server servers_policy picks: failover "
		"only, a file cut off on one server goes to the next, starting over there, before it is answered retry)"),
	SERVERS_POLICY,
	FAILBACK,
	INT("port", "22", 1, 65535, "SSH port of a host given without one"),
	REQUIRED("username", "SSH user"),
	SECRET("password", "password authentication"),
	INFILE("key_file", NULL, "private key for public-key authentication"),
	SECRET("key_passphrase", "passphrase of key_file"),
	STR("remote_path", "/data/lpr_images", "directory files are uploaded to"),
	INFILE("known_hosts", "/etc/ucgw/known_hosts", "host keys trusted"),
	STR("host_key_fingerprint", NULL, "pinned host key, SHA256:... as ssh-keygen -l prints it"),
	INT("buffer_bytes", "1048576", 4096, 67108864,
	    "bytes of one file written ahead of the server's acknowledgements (at most 512 KiB are used)"),
	INT("files_in_flight", "8", 1, 64,
	    "files uploaded at once over the one SSH connection, each on an SFTP channel of its own "
	    "(OpenSSH's MaxSessions, 10 by default, caps the channels of a connection)"),
	NUM("timeout", "30", 0.001, 3600, "seconds a network operation may take"),
};

static const struct cfg_key rsync[] = {
	ENABLED,
	SERVERS("remote_host", "SSH server (host, host:port or [IPv6]:port), or a list of them (the same user, key, "
		"remote_path and known_hosts; one at a time, to the server servers_policy picks: failover only; after a "
		"run cut off by the network, the files go back retry and the next run goes to the next server)"),
	SERVERS_POLICY,
	FAILBACK,
	REQUIRED("remote_user", "SSH user"),
	STR("remote_path", "/data/lpr_images", "directory files are synced to"),
	LIST("options", "-a,--partial", CFG_RSYNC_OPTIONS,
	     "rsync options; refused: those that delete (--delete), write under the final name (--inplace, "
	     "--append), skip files (--dry-run, filters, --max-size) or hide rsync's output (-q)"),
	INT("port", "22", 1, 65535, "SSH port of a host given without one"),
	INFILE("key_file", NULL, "private key for ssh"),
	INFILE("known_hosts", "/etc/ucgw/known_hosts", "host keys trusted (StrictHostKeyChecking=yes)"),
	STR("rsync_path", "rsync", "the rsync program"),
	STR("ssh_path", "ssh", "the ssh program"),
	NUM("timeout", "300", 1, 86400, "seconds a run may take"),
	INT("batch_max", "1000", 1, 100000, "files per rsync run at most"),
};

/* ---- the seccomp additions (workers/sandbox.c holds the framework's lists and why) ---- */

static const char *const ws_calls[] = { NULL };   /* libwebsockets on libuv: the shared lists suffice */
static const char *const rest_calls[] = { NULL }; /* libcurl multi on libuv: likewise */
static const char *const mqtt_calls[] = { NULL }; /* libmosquitto driven from libuv: likewise */
static const char *const sftp_calls[] = {
	/* libssh2 waits on its socket with select/poll from the upload thread */
	"select", "pselect6",
	NULL,
};

/* rsync: the worker runs the rsync program, which runs ssh, and the filter
 * is inherited across execve; so this list also covers what rsync and
 * OpenSSH's client do. It is the broadest list, and still keeps out what an
 * attacker would want next: ptrace, mount, module loading, bpf, kexec,
 * namespaces (unshare/setns), keyctl, personality, reboot. */
static const char *const rsync_calls[] = {
	/* uv_spawn of rsync, rsync's fork of ssh, waiting for them */
	"clone", "clone3", "fork", "vfork", "execve", "wait4", "waitid", "kill", "setsid", "setpgid", "getpgrp",
	"getppid", "dup", "dup2", "dup3", "socketpair", "pipe", "select", "pselect6",
	/* the staging directory of each run: symlinks to /proc/<pid>/fd/N or copies */
	"openat", "open", "mkdir", "mkdirat", "symlink", "symlinkat", "unlink", "unlinkat", "rmdir", "getdents64",
	"readlink", "readlinkat", "lstat", "stat", "sendfile", "fchmod", "chdir", "fchdir", "getcwd", "umask",
	"ftruncate", "utimensat", "fadvise64", "access", "faccessat", "faccessat2", "statfs", "fstatfs",
	/* libuv closes the descriptors a child must not inherit; ssh closes all it inherited */
	"close_range",
	/* the loader of rsync and ssh */
	"arch_prctl", "set_tid_address", "set_robust_list", "rseq", "prlimit64", "getrlimit", "setrlimit",
	"sysinfo", "sched_getaffinity",
	/* ssh: its connection, no core dumps of itself, its terminal checks */
	"socket", "connect", "getsockopt", "setsockopt", "getsockname", "getpeername", "shutdown", "bind",
	"prctl", "ioctl", "getresuid", "getresgid", "getgroups", "alarm",
	/* ssh's ControlMaster: the master listens on a unix socket in the staging
	 * directory (made under a temporary name, then linked to its own), and
	 * each run's ssh passes it its descriptors */
	"listen", "accept", "accept4", "link", "linkat",
	NULL,
};

/* ---- checks of a section at load ---- */

/* compress: what a protocol cannot carry is said at load, not at the first message. */
static const char *websocket_check(const struct cfg_section *s, char *why, size_t len)
{
	if (strcmp(cfg_str(s, "compress"), "zstd") != 0)
		return NULL;
	snprintf(why, len, "zstd has no WebSocket extension (RFC 7692 defines only permessage-deflate); use gzip, "
			   "which negotiates permessage-deflate, or none");
	return "compress";
}

static const char *mqtt_check(const struct cfg_section *s, char *why, size_t len)
{
	const char *c = cfg_str(s, "compress");
	if (strcmp(c, "none") == 0 || strcmp(cfg_str(s, "protocol_version"), "5") == 0)
		return NULL;
	snprintf(why, len, "%s needs protocol_version 5 (the content-encoding user property tells the subscriber; "
			   "MQTT 3.1.1 has no way to say a payload is compressed)", c);
	return "compress";
}

/* ---- the rows ---- */

static const struct protocol production[] = {
	{ .name = "websocket", .exe = "ucgw-websocket", .help = "Metadata over WebSocket (libwebsockets).",
	  .carries = PROTO_META, SECTION_KEYS(websocket),
	  .server = { .key = "server_url", .port = "80", .tls_scheme = "wss", .tls_port = "443" },
	  .sandbox = { .calls = ws_calls, .network = true, .threads = true },
	  .picks = "high_priority,small", .network = PROTO_META, .fallback = "rest,mqtt", .check = websocket_check },
	{ .name = "rest", .exe = "ucgw-rest", .help = "Metadata over HTTP POST (libcurl).",
	  .carries = PROTO_META, SECTION_KEYS(rest),
	  .server = { .key = "base_url", .port = "80", .tls_scheme = "https", .tls_port = "443" },
	  .sandbox = { .calls = rest_calls, .network = true, .threads = true },
	  .picks = "small_poor,medium", .fallback = "mqtt,websocket", .retry_key = "retry_attempts" },
	{ .name = "mqtt", .exe = "ucgw-mqtt", .help = "Metadata over MQTT (libmosquitto).",
	  .carries = PROTO_META, SECTION_KEYS(mqtt),
	  .server = { .key = "broker_url", .port = "1883", .tls_scheme = "mqtts", .tls_port = "8883" },
	  .sandbox = { .calls = mqtt_calls, .network = true, .threads = true },
	  .picks = "high_priority_poor,large", .fallback = "rest,websocket", .check = mqtt_check },
	{ .name = "sftp", .exe = "ucgw-sftp", .help = "Files over SFTP (libssh2).",
	  .carries = PROTO_FILES, SECTION_KEYS(sftp),
	  .server = { .key = "host", .port_key = "port" },
	  .sandbox = { .calls = sftp_calls, .network = true, .threads = true },
	  .picks = "file_high_priority,file_small", .network = PROTO_FILES, .fallback = "rsync" },
	{ .name = "rsync", .exe = "ucgw-rsync", .help = "Files with rsync over ssh.",
	  .carries = PROTO_FILES, SECTION_KEYS(rsync),
	  .server = { .key = "remote_host", .port_key = "port" },
	  .sandbox = { .calls = rsync_calls, .exec = true },
	  .picks = "file_small_poor,file_large", .fallback = "sftp" },
};

#ifdef UCGW_TEST_PROTOCOLS
/* tests/tools/test_protocols.c: the rows of the test build, NULL-terminated. */
extern const struct protocol *const test_protocols[];
#endif

static const struct protocol *table[PROTO_MAX];
static size_t ntable;

static void fill(void)
{
	if (ntable)
		return;
	for (size_t i = 0; i < COUNT(production) && ntable < PROTO_MAX; i++)
		table[ntable++] = &production[i];
#ifdef UCGW_TEST_PROTOCOLS
	for (size_t i = 0; test_protocols[i] && ntable < PROTO_MAX; i++)
		table[ntable++] = test_protocols[i];
#endif
}

size_t protocol_count(void)
{
	fill();
	return ntable;
}

const struct protocol *protocol_at(size_t i)
{
	fill();
	return i < ntable ? table[i] : NULL;
}

const struct protocol *protocol_find(const char *name)
{
	fill();
	for (size_t i = 0; i < ntable; i++)
		if (strcmp(table[i]->name, name) == 0)
			return table[i];
	return NULL;
}

int protocol_index(const struct protocol *p)
{
	fill();
	for (size_t i = 0; i < ntable; i++)
		if (table[i] == p)
			return (int)i;
	return -1;
}

void protocol_names(unsigned carries, const char *sep, char *out, size_t len)
{
	size_t used = 0;
	fill();
	out[0] = '\0';
	for (size_t i = 0; i < ntable; i++) {
		if (table[i]->test_only || !(table[i]->carries & carries))
			continue;
		int n = snprintf(out + used, len - used, "%s%s", used ? sep : "", table[i]->name);
		if (n < 0 || (size_t)n >= len - used)
			return;
		used += (size_t)n;
	}
}

/* The row's key of that name, or NULL. */
static const struct cfg_key *key_in(const struct protocol *p, const char *key)
{
	for (size_t k = 0; key && k < p->nkeys; k++)
		if (strcmp(p->keys[k].key, key) == 0)
			return &p->keys[k];
	return NULL;
}

static bool has_key(const struct protocol *p, const char *key, enum cfg_type type)
{
	const struct cfg_key *k = key_in(p, key);
	return k && k->type == type;
}

bool protocol_server_is_list(const struct protocol *p)
{
	const struct cfg_key *k = key_in(p, p->server.key);
	return k && k->type == CFG_STRLIST && (k->flags & CFG_SERVERS);
}

/* The key that holds a protocol's server: a text key (a host, with port_key),
 * or a list of servers (CFG_SERVERS: URLs, each with its port or the default;
 * with port_key, hosts, each "host:port" or port_key's port). */
static bool server_key_ok(const struct protocol *p)
{
	return has_key(p, p->server.key, CFG_STR) || protocol_server_is_list(p);
}

/* Rows in the source, whether or not the table could hold them all. */
static size_t rows_written(void)
{
	size_t n = COUNT(production);
#ifdef UCGW_TEST_PROTOCOLS
	for (size_t i = 0; test_protocols[i]; i++)
		n++;
#endif
	return n;
}

const char *protocol_table_error(char *buf, size_t len)
{
	fill();
	if (rows_written() > PROTO_MAX) {
		snprintf(buf, len, "%zu protocols, more than PROTO_MAX (%d)", rows_written(), PROTO_MAX);
		return buf;
	}
	for (size_t i = 0; i < ntable; i++) {
		const struct protocol *p = table[i];
		char exe[64];
		snprintf(exe, sizeof exe, "ucgw-%s", p->name ? p->name : "");
		if (!p->name || !p->name[0] || strlen(p->name) > 15 || strspn(p->name, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(p->name))
			snprintf(buf, len, "row %zu: a name of 1 to 15 lower-case letters, digits or _ is needed", i);
		else if (!p->exe || strcmp(p->exe, exe) != 0)
			snprintf(buf, len, "%s: its executable must be %s", p->name, exe);
		else if (!p->help || !p->help[0])
			snprintf(buf, len, "%s: no help text", p->name);
		else if (!p->carries || (p->carries & ~(PROTO_META | PROTO_FILES)))
			snprintf(buf, len, "%s: carries neither metadata nor files", p->name);
		else if (!p->keys || !p->nkeys || strcmp(p->keys[0].key, "enabled") != 0)
			snprintf(buf, len, "%s: its section must begin with `enabled`", p->name);
		else if (!p->sandbox.calls)
			snprintf(buf, len, "%s: no sandbox list (an empty one is { NULL })", p->name);
		else if (!p->test_only && !server_key_ok(p))
			snprintf(buf, len, "%s: the network monitor needs server.key, a text key of its section or "
					   "a list of servers (CFG_SERVERS)", p->name);
		else if (p->server.key && !p->server.port_key && !p->server.port)
			snprintf(buf, len, "%s: a server URL without a port needs server.port", p->name);
		else if (p->server.port_key && !has_key(p, p->server.port_key, CFG_INT))
			snprintf(buf, len, "%s: server.port_key %s is not an integer key of its section", p->name,
				 p->server.port_key);
		else if (!p->server.tls_scheme != !p->server.tls_port)
			snprintf(buf, len, "%s: server.tls_scheme and tls_port go together", p->name);
		else if (p->retry_key && !has_key(p, p->retry_key, CFG_INT))
			snprintf(buf, len, "%s: retry_key %s is not an integer key of its section", p->name, p->retry_key);
		else if ((p->network & ~p->carries) || (p->test_only && (p->network || p->picks)))
			snprintf(buf, len, "%s: judges the network for a kind it does not carry, or is a test row that "
				 "takes part in `auto`", p->name);
		else
			buf[0] = '\0';
		if (buf[0])
			return buf;
		for (size_t j = 0; j < i; j++)
			if (strcmp(table[j]->name, p->name) == 0 || strcmp(table[j]->exe, p->exe) == 0) {
				snprintf(buf, len, "rows %zu and %zu are both %s", j, i, p->name);
				return buf;
			}
	}
	for (unsigned kind = PROTO_META; kind <= PROTO_FILES; kind <<= 1) {
		int judges = 0;
		for (size_t i = 0; i < ntable; i++)
			judges += (table[i]->network & kind) != 0;
		if (judges != 1) {
			snprintf(buf, len, "%d rows judge the network for %s; exactly one must", judges,
				 kind == PROTO_META ? "metadata" : "files");
			return buf;
		}
	}
	return NULL;
}
