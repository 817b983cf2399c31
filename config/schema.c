/* The schema: every section and key the loader accepts, with its type, default
 * and one line of help. docs/configuration.md is generated from this table
 * (`ucgwd --config-reference`), so the documentation cannot drift from the code.
 * The daemon's own sections are here; each protocol's section is in its
 * descriptor (workers/protocols.c).
 *
 * Adding a key is one line in its section's array; adding a section is one array
 * and one line in before[] or after[]. Defaults use the text syntax described in
 * config.h (lists "a,b", maps "k=v;k2=v2", list maps "k=a,b;k2=c"). */
#include <string.h>

#include "config/internal.h"
#include "config/keys.h"
#include "workers/protocols.h"

static const struct cfg_key gateway[] = {
	STR("device_id", "ucgw-edge", "this camera's name; {device_id} in topics"),
	PATH("control_socket", "/run/ucgw/control.sock", "the control socket ucgwctl and clients use"),
	OCTAL("control_socket_mode", "0660", "permissions of the control socket (octal)"),
	INT("control_idle_timeout_s", "300", 1, 86400, "a control connection with no request in flight that sends none this long is closed (a long send --wait is in flight and never cut)"),
	INT("control_stall_timeout_s", "30", 1, 3600, "a control client with replies waiting that reads none of them this long is disconnected"),
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
	INT("max_messages", "200000", 1, BIG, "messages kept at most; each waiting one costs ucgwd 0.6 KB of memory, and 160 bytes more for each attempt its trace keeps (up to 16): 1.8 KB after a minute of retries, 3.2 KB at worst (200,000: 125 to 640 MB; given back once they are delivered)"),
	ENUM("full_policy", "reject", "reject|drop_oldest", "when full: refuse new messages, or drop the oldest (counted, logged)"),
	INT("ttl_s", "604800", 0, BIG, "default time to live of a message (0: forever)"),
	INT("drain_rate", "0", 0, BIG, "jobs handed out per second at most (0: no limit)"),
	INT("retry_backoff_min_ms", "1000", 1, 86400000, "first wait after every protocol failed"),
	INT("retry_backoff_max_ms", "300000", 1, 86400000, "the wait doubles up to this (with jitter)"),
	INT("segment_bytes", "67108864", 4096, BIG, "size at which the spool starts a new segment file"),
	ENUM("order", "fifo", "fifo|live_first", "after an outage: every message in the order it is routed (fifo), or new messages first and the backlog behind them, oldest first (live_first). Backlog: a message read back from the spool at start, one that waited for a backoff or for a path to come back, or one whose round began while no protocol of its chain was up; `trace` says live or backfill"),
	NUM("backfill_share", "0.25", 0, 1, "live_first: the share of each protocol's window the backlog may hold while live messages come (one in the last second); a queued live message always goes first; with no live traffic the backlog takes the whole window (0: the backlog waits for a second without live messages)"),
};

/* The rules pick among the descriptors (workers/protocols.c): choices and
 * defaults come from the rows, put in by build_schema(). */
#define PICK(k, kind, h) { k, CFG_ENUM, NULL, 0, 0, NULL, kind, h }

static const struct cfg_key link[] = {
	INT("budget_bytes_per_day", "0", 0, BIG, "bytes the workers may put on the wire per day (local time), both directions, as the kernel counts them on their TCP connections (TLS, HTTP headers, MQTT and SSH framing, retransmissions, reconnects; rsync: its protocol's bytes through ssh); 0: no daily budget. The count survives a restart (state_dir/link-budget)"),
	INT("budget_bytes_per_month", "0", 0, BIG, "the same per month, from budget_month_start_day; 0: no monthly budget"),
	INT("budget_month_start_day", "1", 1, 28, "the day of the month the monthly budget starts again (a carrier's billing day)"),
	INT("budget_warn_percent", "90", 1, 100, "from this share of a budget used, budget_policy applies (and a warning is logged once per period)"),
	ENUM("budget_policy", "hold_files", "hold_files|hold_all_but_high|warn", "near the budget: hold files and keep sending metadata, hold everything but priority high, or only warn; held messages stay in the spool (never dropped or dead-lettered, but spool.ttl_s still applies) saying why, and go when the period starts again or a reload raises the budget"),
	INT("max_bytes_per_s", "0", 0, BIG, "bytes per second all workers share (0: no cap): a job is handed out only while the link's bucket has room; metadata and priority high go first, files and the rest take what is left, so a backlog of images cannot starve the detections. A file is handed out whole and goes at the link's speed: the cap holds on average, over the time a file takes"),
};

static struct cfg_key protocol_selection[] = {
	BOOL("auto_select", "true", "choose by the rules below when a message says auto"),
	BOOL("priority_based", "true", "high priority picks the fastest or most reliable protocol"),
	BOOL("network_aware", "true", "use the measured network quality"),
	ENUM("policy", "rules", "rules|round_robin", "the reference design's rules, or its load balancer"),
	INT("small_bytes", "1024", 0, BIG, "metadata below this is small"),
	INT("medium_bytes", "10000", 0, BIG, "metadata below this is medium; above, large"),
	INT("file_small_bytes", "1048576", 0, BIG, "files below this are small"),
	PICK("high_priority", CFG_PICK_META, "high-priority metadata on a good network"),
	PICK("high_priority_poor", CFG_PICK_META, "high-priority metadata on a network worse than good"),
	PICK("small", CFG_PICK_META, "small metadata on a good network"),
	PICK("small_poor", CFG_PICK_META, "small metadata on a network worse than good"),
	PICK("medium", CFG_PICK_META, "medium metadata"),
	PICK("large", CFG_PICK_META, "large metadata"),
	PICK("file_high_priority", CFG_PICK_FILES, "high-priority files"),
	PICK("file_small", CFG_PICK_FILES, "small files on a good network"),
	PICK("file_small_poor", CFG_PICK_FILES, "small files on a network worse than good"),
	PICK("file_large", CFG_PICK_FILES, "large files"),
};

static struct cfg_key fallback[] = {
	BOOL("enabled", "true", "reroute a message when its protocol fails"),
	INT("max_attempts", "3", 1, 100, "attempts per round before the message waits"),
	INT("cool_after_failures", "5", 1, 1000, "failures in a row after which a protocol cools down (is not chosen)"),
	INT("cool_down_ms", "10000", 100, 3600000, "how long a protocol cools down; then one message probes it"),
	LISTMAP("chains", NULL, /* each row's fallback, by build_schema() */
		CFG_PROTOCOLS, "for each protocol, the protocols to try next, in order"),
};

static const struct cfg_key network_monitor[] = {
	INT("interval_ms", "5000", 100, 3600000, "probe interval"),
	INT("timeout_ms", "2000", 10, 600000, "a probe without answer this long counts as lost"),
	INT("history", "10", 1, 10000, "recent measurements per server that round trip, loss and quality are judged by (the reference design's last ten)"),
};

static const struct cfg_key metrics[] = {
	STR("listen", "127.0.0.1:9630", "address of the metrics and dashboard listener, HOST:PORT on loopback (empty: off; another address needs allow_remote)"),
	BOOL("allow_remote", "false", "allow a listen address that is not loopback (0.0.0.0:9630, a LAN address): /metrics and the read-only dashboard then answer anyone who can reach the port (the dashboard only to a Host that is an IP address, not a name); actions stay loopback only"),
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

#define SECTION(name, help) { #name, NULL, name, COUNT(name), help, NULL }

static const struct cfg_schema_section before[] = {
	SECTION(gateway, "The daemon itself."),
	SECTION(spool, "The store-and-forward spool."),
};
/* ... then one section per protocol, in the descriptor table's order ... */
static const struct cfg_schema_section after[] = {
	SECTION(link, "Byte budgets and a rate cap for a metered link (LTE, satellite)."),
	SECTION(protocol_selection, "How `auto` picks a protocol."),
	SECTION(fallback, "Rerouting when a protocol fails."),
	SECTION(network_monitor, "Round-trip time and loss per server."),
	SECTION(metrics, "Prometheus metrics and the dashboard, on loopback."),
	SECTION(security, "Who may use the control socket; payload encryption; the workers' sandbox."),
};

static struct cfg_schema_section all[COUNT(before) + PROTO_MAX + COUNT(after)];
const struct cfg_schema_section *cfg_schema = all;
size_t cfg_schema_len;

static bool in_list(const char *list, const char *word)
{
	size_t n = strlen(word);
	for (const char *p = list; p && *p; p += strcspn(p, ","), p += *p == ',')
		if (strncmp(p, word, n) == 0 && (p[n] == ',' || p[n] == '\0'))
			return true;
	return false;
}

/* The selection rules' choices and defaults, and the default fallback chains,
 * from the rows: a protocol's row says which rules pick it and what follows it. */
static void fill_protocol_keys(void)
{
	static char choices[2][256], chains[1024];
	for (size_t i = 0; i < protocol_count(); i++) {
		const struct protocol *p = protocol_at(i);
		for (unsigned kind = 0; kind < 2 && !p->test_only; kind++)
			if (p->carries & (kind ? PROTO_FILES : PROTO_META))
				snprintf(choices[kind] + strlen(choices[kind]), sizeof choices[kind] - strlen(choices[kind]),
					 "%s%s", choices[kind][0] ? "|" : "", p->name);
		if (p->fallback)
			snprintf(chains + strlen(chains), sizeof chains - strlen(chains), "%s%s=%s", chains[0] ? ";" : "",
				 p->name, p->fallback);
	}
	for (size_t k = 0; k < COUNT(protocol_selection); k++) {
		struct cfg_key *key = &protocol_selection[k];
		if (!(key->flags & (CFG_PICK_META | CFG_PICK_FILES)))
			continue;
		key->choices = choices[(key->flags & CFG_PICK_FILES) != 0];
		for (size_t i = 0; i < protocol_count(); i++)
			if (in_list(protocol_at(i)->picks, key->key))
				key->def = protocol_at(i)->name;
	}
	for (size_t k = 0; k < COUNT(fallback); k++)
		if (strcmp(fallback[k].key, "chains") == 0)
			fallback[k].def = chains;
}

/* Once, before main: every user of cfg_schema sees the whole table. */
__attribute__((constructor)) static void build_schema(void)
{
	size_t n = 0;
	fill_protocol_keys();
	for (size_t i = 0; i < COUNT(before); i++)
		all[n++] = before[i];
	for (size_t i = 0; i < protocol_count(); i++) {
		const struct protocol *p = protocol_at(i);
		all[n++] = (struct cfg_schema_section){ p->name, p->exe, p->keys, p->nkeys, p->help, p };
	}
	for (size_t i = 0; i < COUNT(after); i++)
		all[n++] = after[i];
	cfg_schema_len = n;
}

/* A test build's rows (the test worker, the toy protocol) are valid (the
 * tests need them) but fixtures: left out of the reference and of the lists
 * of valid names a user reads. */
bool cfg_section_hidden(const struct cfg_schema_section *s) { return s->protocol && s->protocol->test_only; }
