/* The schema: every section and key the loader accepts, with its type, default
 * and one line of help. docs/configuration.md is generated from this table
 * (`ucgwd --config-reference`), so the documentation cannot drift from the code.
 *
 * Adding a key is one line in its section's array; adding a section is one array
 * and one line in cfg_schema[]. Defaults use the text syntax described in
 * config.h (lists "a,b", maps "k=v;k2=v2", list maps "k=a,b;k2=c"). */
#include <string.h>

#include "config/internal.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define BIG CFG_NO_MAX /* byte and message counts: no upper limit */

/*        key   type         default  min  max  choices  flags                   help */
#define STR(k, d, h)         { k, CFG_STR, d, 0, 0, NULL, 0, h }
#define PATH(k, d, h)        { k, CFG_STR, d, 0, 0, NULL, CFG_PATH, h }
/* A file the worker needs (keys, certificates, known_hosts): ucgwd reads it at
 * every start of the worker and hands over its contents, so that a worker
 * running as an unprivileged user in its sandbox needs no access to it. */
#define INFILE(k, d, h)      { k, CFG_STR, d, 0, 0, NULL, CFG_PATH | CFG_READ, h }
#define REQUIRED(k, h)       { k, CFG_STR, NULL, 0, 0, NULL, CFG_REQUIRED, h }
#define SECRET(k, h)         { k, CFG_STR, NULL, 0, 0, NULL, CFG_SECRET, h }
#define OCTAL(k, d, h)       { k, CFG_STR, d, 0, 0, NULL, CFG_OCTAL, h }
#define INT(k, d, lo, hi, h) { k, CFG_INT, d, lo, hi, NULL, 0, h }
#define NUM(k, d, lo, hi, h) { k, CFG_NUM, d, lo, hi, NULL, 0, h }
#define BOOL(k, d, h)        { k, CFG_BOOL, d, 0, 0, NULL, 0, h }
#define ENUM(k, d, c, h)     { k, CFG_ENUM, d, 0, 0, c, 0, h }
#define LIST(k, d, f, h)     { k, CFG_STRLIST, d, 0, 0, NULL, f, h }
#define MAP(k, h)            { k, CFG_STRMAP, NULL, 0, 0, NULL, 0, h }
#define LISTMAP(k, d, f, h)  { k, CFG_LISTMAP, d, 0, 0, NULL, f, h }

/* Keys every protocol section shares. */
#define ENABLED BOOL("enabled", "true", "run this protocol's worker (a section absent from the file is off)")
#define CA_FILE INFILE("ca_file", NULL, "CA certificates to verify the server with (default: the system's)")
#define CERT_FILE INFILE("cert_file", NULL, "client certificate (PEM)")
#define TLS_KEY_FILE INFILE("key_file", NULL, "client key (PEM)")
#define INSECURE BOOL("insecure", "false", "do not verify the server's certificate (logs a warning at every start)")
/* A protocol's servers: one, or a list (a broker cluster, several front ends). */
#define SERVERS(k, h) { k, CFG_STRLIST, NULL, 0, 0, NULL, CFG_REQUIRED | CFG_SERVERS, h }
#define SERVERS_POLICY ENUM("servers_policy", "failover", "failover|spread", \
	"with more than one server: failover sends everything to the first that works and goes back to an earlier one " \
	"after failback_s; spread takes the servers that work in turn; either way a message that fails on one server " \
	"goes to the next before it moves on to the next protocol")
#define FAILBACK INT("failback_s", "60", 1, 86400, \
	"servers_policy failover: seconds on a later server before the first is tried again (and how long a server " \
	"that failed is left out under spread)")
#define ENCRYPT BOOL("encrypt", "false", "encrypt payloads (AES-256-GCM, security.encryption_key_file)")

static const struct cfg_key gateway[] = {
	STR("device_id", "ucgw-edge", "this camera's name; {device_id} in topics"),
	PATH("control_socket", "/run/ucgw/control.sock", "the control socket ucgwctl and clients use"),
	OCTAL("control_socket_mode", "0660", "permissions of the control socket (octal)"),
	PATH("state_dir", "/var/lib/ucgw", "where the spool lives unless spool.dir says otherwise"),
	PATH("crash_dir", "/var/log/ucgw/crash", "one crash log per abnormal worker exit, under <worker>/"),
	INT("crash_logs_keep", "20", 1, 1000, "crash logs kept per worker"),
	ENUM("log_level", "info", "error|warning|info|debug", "least important messages logged"),
	PATH("worker_dir", NULL, "where the worker executables are (default: the installed libexec dir)"),
	INT("max_frame_bytes", "16777216", 4096, 1073741824,
	    "largest frame between the processes and on the control socket; must hold a message of max_message_bytes "
	    "plus 16384 (as base64 when an encryption key is set)"),
	INT("max_message_bytes", "1048576", 1, 268435456, "largest metadata message accepted"),
	INT("window", "256", 1, 65536, "jobs in flight per worker: a file protocol's fixed window, and where a metadata protocol's adaptive window starts and the least it shrinks to"),
	INT("window_max", "4096", 1, 65536, "the most a metadata protocol's adaptive window grows to, and to no more than 64 MiB of payloads by their recent mean size (it grows while the worker keeps it full and latency stays flat, towards the link's bandwidth-delay product, and shrinks when latency rises or the server refuses; equal to window or below: fixed at window)"),
	INT("job_timeout_ms", "60000", 100, 86400000, "a job without an answer (or progress) this long is retried elsewhere"),
	INT("restart_backoff_min_ms", "100", 1, 3600000, "first delay before restarting a dead worker"),
	INT("restart_backoff_max_ms", "30000", 1, 3600000, "the delay doubles up to this"),
	INT("restart_reset_after_s", "60", 1, 86400, "a worker up this long starts again from the first delay"),
	INT("restart_max_deaths", "5", 1, 1000, "this many deaths within restart_window_s: the worker is marked failed"),
	INT("restart_window_s", "60", 1, 86400, "the window for restart_max_deaths"),
	INT("handshake_timeout_ms", "5000", 10, 600000, "a worker not ready this long after its start is killed"),
	INT("ping_interval_ms", "1000", 10, 600000, "how often the supervisor pings each worker"),
	INT("ping_timeout_ms", "5000", 10, 600000, "a worker silent this long, or still running this long after its socket closed, is killed"),
	INT("shutdown_timeout_ms", "10000", 0, 600000, "on SIGTERM, how long jobs in flight may finish"),
};

static const struct cfg_key spool[] = {
	PATH("dir", NULL, "the spool directory (default: state_dir/spool)"),
	ENUM("fsync", "batch", "always|batch|never", "how durable `accepted` is: each message, groups, or the page cache"),
	INT("fsync_interval_ms", "10", 1, 10000, "group commit interval for fsync: batch"),
	INT("max_bytes", "1073741824", 1, BIG, "bytes of messages kept at most"),
	INT("max_messages", "200000", 1, BIG, "messages kept at most; each waiting one costs ucgwd 0.6 KB of memory, and 160 bytes more for each attempt its trace keeps (up to 16): 1.7 KB after a minute of retries, 3.2 KB at worst (200,000: 125 to 640 MB; given back once they are delivered)"),
	ENUM("full_policy", "reject", "reject|drop_oldest", "when full: refuse new messages, or drop the oldest (counted, logged)"),
	INT("ttl_s", "604800", 0, BIG, "default time to live of a message (0: forever)"),
	INT("drain_rate", "0", 0, BIG, "jobs handed out per second at most (0: no limit)"),
	INT("retry_backoff_min_ms", "1000", 1, 86400000, "first wait after every protocol failed"),
	INT("retry_backoff_max_ms", "300000", 1, 86400000, "the wait doubles up to this (with jitter)"),
	INT("segment_bytes", "67108864", 4096, BIG, "size at which the spool starts a new segment file"),
};

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
	INT("batch_max", "1", 1, 10000, "records per POST at most; 1: one record per POST (the reference design's contract); more: records that are JSON objects or arrays, for the usual endpoint, share a POST as a JSON array of {\"id\": message id, \"data\": record}, without an Idempotency-Key header (each record carries its id); the server's answer holds for all of them (2xx: all delivered; 408, 429, 5xx, no answer: all retried); a batch refused otherwise (4xx) is sent again one record per POST, each for its own verdict"),
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
	INT("connections", "32", 1, 64, "connections to the broker at most, each its own client id (client_id, then client_id-2, -3 ...) and session; the first carries the status topic; more are opened while every open one holds all it may in flight and acknowledgments take 5 ms or more (a long link: a broker's Receive Maximum, 20 by mosquitto's default, allows one connection 20 messages per round trip); the order of messages is kept per connection"),
	INT("ack_timeout_ms", "10000", 1, 3600000, "a message without its PUBACK (QoS 1) or PUBCOMP (QoS 2), or not yet written (QoS 0), this long after it was published is retried, and the connection is reset (nothing it still holds reaches the broker later) and made again (a broker that stopped answering; keepalive alone notices after one to two keepalive periods)"),
	INT("connect_timeout_ms", "10000", 100, 3600000, "a connection without the broker's CONNACK this long after the connect began (TCP, TLS, CONNECT) is reset (its CONNECT cannot reach the broker later and kick the next connection), health says so, and a new one is tried after the usual backoff (a broker that accepts TCP and never answers; keepalive alone notices after one to two keepalive periods)"),
	BOOL("clean_session", "false", "false keeps a persistent session at the broker"),
	BOOL("envelope", "false", "publish {\"id\":..., \"data\":...} instead of the payload alone"),
	CA_FILE,
	CERT_FILE,
	TLS_KEY_FILE,
	INSECURE,
	ENCRYPT,
};

static const struct cfg_key sftp[] = {
	ENABLED,
	REQUIRED("host", "SSH server"),
	INT("port", "22", 1, 65535, "SSH port"),
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
	REQUIRED("remote_host", "SSH server"),
	REQUIRED("remote_user", "SSH user"),
	STR("remote_path", "/data/lpr_images", "directory files are synced to"),
	LIST("options", "-a,--partial", CFG_RSYNC_OPTIONS,
	     "rsync options; refused: those that delete (--delete), write under the final name (--inplace, "
	     "--append), skip files (--dry-run, filters, --max-size) or hide rsync's output (-q)"),
	INT("port", "22", 1, 65535, "SSH port"),
	INFILE("key_file", NULL, "private key for ssh"),
	INFILE("known_hosts", "/etc/ucgw/known_hosts", "host keys trusted (StrictHostKeyChecking=yes)"),
	STR("rsync_path", "rsync", "the rsync program"),
	STR("ssh_path", "ssh", "the ssh program"),
	NUM("timeout", "300", 1, 86400, "seconds a run may take"),
	INT("batch_max", "1000", 1, 100000, "files per rsync run at most"),
};

static const struct cfg_key protocol_selection[] = {
	BOOL("auto_select", "true", "choose by the rules below when a message says auto"),
	BOOL("priority_based", "true", "high priority picks the fastest or most reliable protocol"),
	BOOL("network_aware", "true", "use the measured network quality"),
	ENUM("policy", "rules", "rules|round_robin", "the reference design's rules, or its load balancer"),
	INT("small_bytes", "1024", 0, BIG, "metadata below this is small"),
	INT("medium_bytes", "10000", 0, BIG, "metadata below this is medium; above, large"),
	INT("file_small_bytes", "1048576", 0, BIG, "files below this are small"),
	ENUM("high_priority", "websocket", "websocket|rest|mqtt", "high-priority metadata on a good network"),
	ENUM("high_priority_poor", "mqtt", "websocket|rest|mqtt", "high-priority metadata on a network worse than good"),
	ENUM("small", "websocket", "websocket|rest|mqtt", "small metadata on a good network"),
	ENUM("small_poor", "rest", "websocket|rest|mqtt", "small metadata on a network worse than good"),
	ENUM("medium", "rest", "websocket|rest|mqtt", "medium metadata"),
	ENUM("large", "mqtt", "websocket|rest|mqtt", "large metadata"),
	ENUM("file_high_priority", "sftp", "sftp|rsync", "high-priority files"),
	ENUM("file_small", "sftp", "sftp|rsync", "small files on a good network"),
	ENUM("file_small_poor", "rsync", "sftp|rsync", "small files on a network worse than good"),
	ENUM("file_large", "rsync", "sftp|rsync", "large files"),
};

static const struct cfg_key fallback[] = {
	BOOL("enabled", "true", "reroute a message when its protocol fails"),
	INT("max_attempts", "3", 1, 100, "attempts per round before the message waits"),
	INT("cool_after_failures", "5", 1, 1000, "failures in a row after which a protocol cools down (is not chosen)"),
	INT("cool_down_ms", "10000", 100, 3600000, "how long a protocol cools down; then one message probes it"),
	LISTMAP("chains", "websocket=rest,mqtt;rest=mqtt,websocket;mqtt=rest,websocket;sftp=rsync;rsync=sftp",
		CFG_PROTOCOLS, "for each protocol, the protocols to try next, in order"),
};

static const struct cfg_key network_monitor[] = {
	INT("interval_ms", "5000", 100, 3600000, "probe interval"),
	INT("timeout_ms", "2000", 10, 600000, "a probe without answer this long counts as lost"),
	INT("history", "10", 1, 10000, "recent measurements per server that round trip, loss and quality are judged by (the reference design's last ten)"),
};

static const struct cfg_key metrics[] = {
	STR("listen", "127.0.0.1:9630", "address of the metrics and dashboard listener (empty: off)"),
	BOOL("dashboard_actions", "false", "allow the dashboard's buttons"),
};

static const struct cfg_key security[] = {
	PATH("encryption_key_file", NULL, "AES-256 key: 32 raw bytes, or hex, or base64"),
	SECRET("jwt_secret", "HS256 secret for JWTs on the control socket"),
	LIST("api_keys", NULL, CFG_SECRET, "API keys accepted on the control socket (api_keys_file: one per line)"),
	BOOL("require_auth", "false", "every control request needs an API key or JWT"),
	LIST("allowed_users", NULL, 0, "users allowed on the control socket"),
	LIST("allowed_groups", NULL, 0, "groups allowed on the control socket"),
	PATH("audit_log", NULL, "where refusals are written"),
	STR("worker_user", NULL, "user the workers run as when ucgwd starts as root (default: ucgw if that user exists, else nobody; root: no drop, with a warning)"),
	BOOL("sandbox", "true", "workers run under a seccomp allow-list, no_new_privs and resource limits (false: for debugging only; logs a warning at every start)"),
};

static const struct cfg_key testworker[] = {
	ENABLED,
	ENUM("mode", "normal", "normal|crash|exit2|hang|slow", "what the test worker does"),
	INT("delay_ms", "0", 0, 3600000, "answer each job after this long"),
	INT("ready_delay_ms", "0", 0, 3600000, "sleep this long before ready"),
	PATH("record", NULL, "append one line per delivered job here"),
	PATH("down_file", NULL, "while this file exists, every job is answered retry (a server that is down)"),
};

#define SECTION(name, worker, help) { #name, worker, name, COUNT(name), help }

const struct cfg_schema_section cfg_schema[] = {
	SECTION(gateway, NULL, "The daemon itself."),
	SECTION(spool, NULL, "The store-and-forward spool."),
	SECTION(websocket, "ucgw-websocket", "Metadata over WebSocket (libwebsockets)."),
	SECTION(rest, "ucgw-rest", "Metadata over HTTP POST (libcurl)."),
	SECTION(mqtt, "ucgw-mqtt", "Metadata over MQTT (libmosquitto)."),
	SECTION(sftp, "ucgw-sftp", "Files over SFTP (libssh2)."),
	SECTION(rsync, "ucgw-rsync", "Files with rsync over ssh."),
	SECTION(protocol_selection, NULL, "How `auto` picks a protocol."),
	SECTION(fallback, NULL, "Rerouting when a protocol fails."),
	SECTION(network_monitor, NULL, "Round-trip time and loss per server."),
	SECTION(metrics, NULL, "Prometheus metrics and the dashboard, on loopback."),
	SECTION(security, NULL, "Who may use the control socket; payload encryption; the workers' sandbox."),
	SECTION(testworker, "ucgw-testworker", "A worker for the tests only."),
};
const size_t cfg_schema_len = COUNT(cfg_schema);

/* The test worker's section is valid (the tests need it) but a fixture: it is
 * left out of the reference and of the lists of valid names a user reads. */
bool cfg_section_hidden(const struct cfg_schema_section *s) { return strcmp(s->name, "testworker") == 0; }
