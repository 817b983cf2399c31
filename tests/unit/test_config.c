/* The configuration loader: the reference design's file as written, defaults,
 * every error with its FILE:LINE:COL, secrets from files, the packed form the
 * workers get, the accessors' refusals and the Markdown reference. Each case
 * prints its name and PASS or FAIL; the exit status is 1 when any case failed.
 * Files are written into a fresh mkdtemp directory; the fixtures are in
 * tests/unit/configs/. */
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"

static char tmpdir[] = "/tmp/ucgw-test-config-XXXXXX";
static char fixtures[600];
static int case_failures, cases_failed, cases_run;

#define EXPECT(cond)                                                                     \
	do {                                                                             \
		if (!(cond)) {                                                           \
			case_failures++;                                                 \
			printf("    %s:%d: not true: %s\n", __FILE__, __LINE__, #cond);       \
		}                                                                        \
	} while (0)

static void run(const char *name, void (*fn)(void))
{
	case_failures = 0;
	fn();
	cases_run++;
	if (case_failures)
		cases_failed++;
	printf("%-36s %s\n", name, case_failures ? "FAIL" : "PASS");
	fflush(stdout);
}
#define RUN(fn) run(#fn, fn)

/* ---- files ---- */

/* A path in the temporary directory; a few can be alive at once. */
static const char *tmp_path(const char *name)
{
	static char bufs[4][600];
	static int next;
	char *p = bufs[next++ % 4];
	snprintf(p, sizeof bufs[0], "%s/%s", tmpdir, name);
	return p;
}

static const char *write_file(const char *name, const char *text, size_t len, mode_t mode)
{
	const char *path = tmp_path(name);
	unlink(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, text, len) != (ssize_t)len) {
		perror(path);
		exit(2);
	}
	close(fd);
	chmod(path, mode); /* after creation: the umask must not change what a test means */
	return path;
}

static const char *write_text(const char *name, const char *text)
{
	return write_file(name, text, strlen(text), 0644);
}

static const char *fixture(const char *name)
{
	static char path[700];
	snprintf(path, sizeof path, "%s/%s", fixtures, name);
	return path;
}

/* ---- loading ---- */

static struct config *load_path(const char *path)
{
	char err[1024] = "";
	struct config *c = NULL;
	if (config_load(path, &c, err, sizeof err) != 0) {
		printf("    unexpected error: %s\n", err);
		case_failures++;
		return NULL;
	}
	return c;
}

static struct config *load_text(const char *text)
{
	return load_path(write_text("ok.yaml", text));
}

/* ok so far, and line is one line that starts with prefix and holds every one
 * of the words in ap (a NULL-terminated list); else say why and count it. */
static void check_line(int src, bool ok, const char *line, const char *prefix, va_list ap)
{
	ok = ok && strncmp(line, prefix, strlen(prefix)) == 0 && !strchr(line, '\n');
	for (const char *w = va_arg(ap, const char *); w; w = va_arg(ap, const char *))
		if (!strstr(line, w)) {
			printf("    missing words: '%s'\n", w);
			ok = false;
		}
	if (!ok) {
		printf("    %s:%d: got    '%s'\n    wanted prefix '%s'\n", __FILE__, src, line, prefix);
		case_failures++;
	}
}

/* Loading text of len bytes fails with one line "PATH:LINE:COL: " followed by
 * every one of the words (a NULL-terminated list). */
static void fails_at(int src, const char *text, size_t len, int line, int col, ...)
{
	char err[1024] = "", prefix[700];
	struct config *c = (struct config *)&err; /* must stay untouched on failure */
	const char *path = write_file("bad.yaml", text, len, 0644);
	bool ok = config_load(path, &c, err, sizeof err) == -1 && c == (struct config *)&err;
	snprintf(prefix, sizeof prefix, "%s:%d:%d: ", path, line, col);
	va_list ap;
	va_start(ap, col);
	check_line(src, ok, err, prefix, ap);
	va_end(ap);
}
#define FAILS(text, line, col, ...) fails_at(__LINE__, text, strlen(text), line, col, __VA_ARGS__, (char *)NULL)

/* Loading text loads, with exactly one warning "PATH:LINE:COL: " followed by
 * every one of the words. */
static void warns_at(int src, const char *text, int line, int col, ...)
{
	char err[1024] = "", prefix[700];
	struct config *c = NULL;
	const char *path = write_file("warn.yaml", text, strlen(text), 0644);
	bool ok = config_load(path, &c, err, sizeof err) == 0 && c && c->nwarnings == 1;
	const char *w0 = ok ? c->warnings[0] : err;
	snprintf(prefix, sizeof prefix, "%s:%d:%d: ", path, line, col);
	va_list ap;
	va_start(ap, col);
	check_line(src, ok, w0, prefix, ap);
	va_end(ap);
	config_free(c);
}
#define WARNS(text, line, col, ...) warns_at(__LINE__, text, line, col, __VA_ARGS__, (char *)NULL)

/* ---- values as text, to compare any type in one line ---- */

static int key_index(const struct cfg_section *s, const char *key)
{
	for (size_t i = 0; i < s->schema->nkeys; i++)
		if (strcmp(s->schema->keys[i].key, key) == 0)
			return (int)i;
	return -1;
}

static void list_text(const struct cfg_value *v, char *buf, size_t len)
{
	size_t o = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < v->nitems && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? "," : "", v->items[i]);
}

/* The value in the schema's default syntax: "a,b", "k=v;k2=v2", "k=a,b;k2=". */
static void value_text(const struct cfg_key *k, const struct cfg_value *v, char *buf, size_t len)
{
	if (!v->set) {
		snprintf(buf, len, "(unset)");
		return;
	}
	size_t o = 0;
	char sub[512];
	switch (k->type) {
	case CFG_STR:
	case CFG_ENUM: snprintf(buf, len, "%s", v->s); break;
	case CFG_INT: snprintf(buf, len, "%lld", (long long)v->i); break;
	case CFG_NUM: snprintf(buf, len, "%g", v->d); break;
	case CFG_BOOL: snprintf(buf, len, "%s", v->b ? "true" : "false"); break;
	case CFG_STRLIST: list_text(v, buf, len); break;
	case CFG_STRMAP:
	case CFG_LISTMAP:
		buf[0] = '\0';
		for (size_t i = 0; i < v->nitems && o < len; i++) {
			if (k->type == CFG_LISTMAP)
				list_text(&v->sub[i], sub, sizeof sub);
			o += (size_t)snprintf(buf + o, len - o, "%s%s=%s", i ? ";" : "", v->items[i],
					      k->type == CFG_LISTMAP ? sub : v->vals[i]);
		}
		break;
	}
}

static bool sec_value_is(int src, const struct cfg_section *s, const char *key, const char *want)
{
	int i = key_index(s, key);
	char got[1024] = "(no such key)";
	if (i >= 0)
		value_text(&s->schema->keys[i], &s->values[i], got, sizeof got);
	if (i >= 0 && strcmp(got, want) == 0)
		return true;
	printf("    %s:%d: %s.%s is '%s', wanted '%s'\n", __FILE__, src, s->schema->name, key, got, want);
	case_failures++;
	return false;
}
#define VALUE_IS(cfg, sec, key, want) sec_value_is(__LINE__, config_section(cfg, sec), key, want)

/* ---- the reference design's file ---- */

#define SEED_DELETE "options: [\"-azP\", \"--delete\"]"

/* The reference design's file, whose rsync options ask for --delete, which
 * is refused; and the path of the same file without that one item (every line
 * and column where it was). */
static char *seed_text(void)
{
	static char text[4096];
	FILE *f = fopen(fixture("communication_config.yaml"), "r");
	size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
	if (f)
		fclose(f);
	text[n] = '\0';
	return text;
}

static const char *seed_without_delete(void)
{
	char text[4096];
	snprintf(text, sizeof text, "%s", seed_text());
	char *at = strstr(text, SEED_DELETE);
	if (!at) {
		printf("    test bug: '%s' not in the seed file\n", SEED_DELETE);
		case_failures++;
		return fixture("communication_config.yaml");
	}
	memcpy(at, "options: [\"-azP\"]            ", strlen(SEED_DELETE));
	return write_text("seed.yaml", text);
}

static struct config *load_seed(void)
{
	return load_path(seed_without_delete());
}

static void seed_file_loads_as_written(void)
{
	/* as written it loads, with two warnings: its "--delete" makes the rsync
	 * worker refuse to start, and its sftp.key_file is not on this machine */
	const char *text = seed_text();
	EXPECT(strstr(text, SEED_DELETE) != NULL);
	char err[1024];
	struct config *w = NULL;
	EXPECT(config_load(write_text("warn.yaml", text), &w, err, sizeof err) == 0 && w && w->nwarnings == 2);
	if (w && w->nwarnings == 2) {
		EXPECT(strstr(w->warnings[0], "warn.yaml:28:21: refused option '--delete' in 'options' of section 'rsync': "
					      "it can delete files on the server") &&
		       strstr(w->warnings[0], "the rsync worker will not start until it is removed"));
		EXPECT(strstr(w->warnings[1], "cannot read sftp.key_file /home/camuser/.ssh/id_rsa: No such file or "
					      "directory; the sftp worker refuses to start without it"));
	}
	config_free(w);
	const char *path = seed_without_delete();
	struct config *c = load_path(path);
	if (!c)
		return;
	EXPECT(strcmp(c->path, path) == 0);
	VALUE_IS(c, "websocket", "server_url", "ws://lprserver:8765");
	VALUE_IS(c, "websocket", "reconnect_attempts", "3");
	VALUE_IS(c, "websocket", "reconnect_delay", "5");
	VALUE_IS(c, "rest", "base_url", "http://lprserver:8000");
	VALUE_IS(c, "rest", "timeout", "30");
	VALUE_IS(c, "rest", "retry_attempts", "3");
	VALUE_IS(c, "mqtt", "broker_url", "lprserver");
	VALUE_IS(c, "mqtt", "client_id", "aicamera-edge-001");
	VALUE_IS(c, "mqtt", "username", "edge_user");
	VALUE_IS(c, "mqtt", "password", "secure_password");
	VALUE_IS(c, "sftp", "host", "lprserver");
	VALUE_IS(c, "sftp", "username", "edge_user");
	VALUE_IS(c, "sftp", "key_file", "/home/camuser/.ssh/id_rsa");
	VALUE_IS(c, "sftp", "remote_path", "/data/lpr_images");
	VALUE_IS(c, "rsync", "remote_host", "lprserver");
	VALUE_IS(c, "rsync", "remote_user", "edge_user");
	VALUE_IS(c, "rsync", "remote_path", "/data/lpr_images");
	VALUE_IS(c, "rsync", "options", "-azP");
	VALUE_IS(c, "protocol_selection", "auto_select", "true");
	VALUE_IS(c, "protocol_selection", "priority_based", "true");
	VALUE_IS(c, "protocol_selection", "network_aware", "true");
	VALUE_IS(c, "fallback", "enabled", "true");
	VALUE_IS(c, "fallback", "max_attempts", "3");
	VALUE_IS(c, "fallback", "chains", "websocket=rest,mqtt;rest=mqtt,websocket;mqtt=rest,websocket;sftp=rsync;rsync=sftp");
	/* the typed accessors agree */
	EXPECT(strcmp(config_first_server(c, "mqtt", "broker_url"), "lprserver") == 0);
	EXPECT(config_int(c, "websocket", "reconnect_attempts") == 3);
	EXPECT(cfg_num(config_section(c, "websocket"), "reconnect_delay") == 5.0);
	EXPECT(config_bool(c, "protocol_selection", "network_aware"));
	const struct cfg_value *opts = cfg_get(config_section(c, "rsync"), "options");
	EXPECT(opts->nitems == 1 && strcmp(opts->items[0], "-azP") == 0 && opts->line == 28 && opts->col == 12);
	/* where things were */
	const struct cfg_section *m = config_section(c, "mqtt");
	EXPECT(m->present && m->line == 12 && m->col == 1);
	const struct cfg_value *b = cfg_get(m, "broker_url");
	EXPECT(b->line == 13 && b->col == 15);
	EXPECT(cfg_get(m, "qos")->line == 0); /* a default */
	/* which workers run */
	const char *on[] = { "websocket", "rest", "mqtt", "sftp", "rsync" };
	for (size_t i = 0; i < 5; i++)
		EXPECT(config_protocol_enabled(c, on[i]));
	EXPECT(!config_protocol_enabled(c, "testworker"));
	EXPECT(!config_protocol_enabled(c, "gateway")); /* not a protocol at all */
	EXPECT(!config_section(c, "gateway")->present && config_section(c, "gateway")->line == 0);
	config_free(c);
}

/* ---- defaults ---- */

static const struct {
	const char *sec, *key, *value;
} defaults[] = {
	{ "gateway", "device_id", "ucgw-edge" },
	{ "gateway", "control_socket", "/run/ucgw/control.sock" },
	{ "gateway", "control_socket_mode", "0660" },
	{ "gateway", "state_dir", "/var/lib/ucgw" },
	{ "gateway", "crash_dir", "/var/log/ucgw/crash" },
	{ "gateway", "crash_logs_keep", "20" },
	{ "gateway", "log_level", "info" },
	{ "gateway", "worker_dir", "(unset)" },
	{ "gateway", "max_frame_bytes", "16777216" },
	{ "gateway", "max_message_bytes", "1048576" },
	{ "gateway", "window", "256" },
	{ "gateway", "job_timeout_ms", "60000" },
	{ "gateway", "restart_backoff_min_ms", "100" },
	{ "gateway", "restart_backoff_max_ms", "30000" },
	{ "gateway", "restart_reset_after_s", "60" },
	{ "gateway", "restart_max_deaths", "5" },
	{ "gateway", "restart_window_s", "60" },
	{ "gateway", "handshake_timeout_ms", "5000" },
	{ "gateway", "ping_interval_ms", "1000" },
	{ "gateway", "ping_timeout_ms", "5000" },
	{ "gateway", "shutdown_timeout_ms", "10000" },
	{ "spool", "dir", "(unset)" },
	{ "spool", "fsync", "batch" },
	{ "spool", "fsync_interval_ms", "10" },
	{ "spool", "max_bytes", "1073741824" },
	{ "spool", "max_messages", "200000" },
	{ "spool", "full_policy", "reject" },
	{ "spool", "ttl_s", "604800" },
	{ "spool", "drain_rate", "0" },
	{ "spool", "retry_backoff_min_ms", "1000" },
	{ "spool", "retry_backoff_max_ms", "300000" },
	{ "spool", "segment_bytes", "67108864" },
	{ "websocket", "enabled", "true" },
	{ "websocket", "server_url", "(unset)" },
	{ "websocket", "ack", "message" },
	{ "websocket", "ack_timeout_ms", "10000" },
	{ "websocket", "ping_interval_s", "20" },
	{ "websocket", "headers", "(unset)" },
	{ "websocket", "api_key", "(unset)" },
	{ "websocket", "api_key_header", "X-API-Key" },
	{ "websocket", "insecure", "false" },
	{ "websocket", "encrypt", "false" },
	{ "rest", "endpoint", "/api/lpr/data" },
	{ "rest", "timeout", "30" },
	{ "rest", "connections", "8" },
	{ "rest", "auth_header", "(unset)" },
	{ "mqtt", "client_id", "(unset)" },
	{ "mqtt", "protocol_version", "5" },
	{ "mqtt", "qos", "1" },
	{ "mqtt", "topic", "lpr/{device_id}/data" },
	{ "mqtt", "status_topic", "lpr/{device_id}/status" },
	{ "mqtt", "keepalive", "60" },
	{ "mqtt", "max_inflight", "100" },
	{ "mqtt", "ack_timeout_ms", "10000" },
	{ "mqtt", "clean_session", "false" },
	{ "mqtt", "envelope", "false" },
	{ "sftp", "port", "22" },
	{ "sftp", "remote_path", "/data/lpr_images" },
	{ "sftp", "known_hosts", "/etc/ucgw/known_hosts" },
	{ "sftp", "buffer_bytes", "1048576" },
	{ "sftp", "files_in_flight", "8" },
	{ "sftp", "timeout", "30" },
	{ "rsync", "options", "-a,--partial" },
	{ "rsync", "port", "22" },
	{ "rsync", "rsync_path", "rsync" },
	{ "rsync", "ssh_path", "ssh" },
	{ "rsync", "timeout", "300" },
	{ "rsync", "batch_max", "1000" },
	{ "protocol_selection", "policy", "rules" },
	{ "protocol_selection", "small_bytes", "1024" },
	{ "protocol_selection", "medium_bytes", "10000" },
	{ "protocol_selection", "file_small_bytes", "1048576" },
	{ "fallback", "enabled", "true" },
	{ "fallback", "max_attempts", "3" },
	{ "network_monitor", "interval_ms", "5000" },
	{ "network_monitor", "timeout_ms", "2000" },
	{ "network_monitor", "history", "10" },
	{ "metrics", "listen", "127.0.0.1:9630" },
	{ "metrics", "dashboard_actions", "false" },
	{ "security", "api_keys", "(unset)" },
	{ "security", "require_auth", "false" },
	{ "testworker", "mode", "normal" },
	{ "testworker", "delay_ms", "0" },
	{ "testworker", "ready_delay_ms", "0" },
};

static void defaults_fill_every_key(void)
{
	/* a file that names one section: every other section is there, at its defaults */
	struct config *c = load_text("gateway:\n  window: 8\n");
	if (!c)
		return;
	for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
		if (strcmp(defaults[i].key, "window") != 0)
			VALUE_IS(c, defaults[i].sec, defaults[i].key, defaults[i].value);
	VALUE_IS(c, "gateway", "window", "8");
	for (size_t i = 0; i < cfg_schema_len; i++) {
		const struct cfg_section *s = &c->sections[i];
		EXPECT(s->schema == &cfg_schema[i]);
		EXPECT(s->present == (i == 0));
		for (size_t k = 0; k < s->schema->nkeys; k++) {
			const struct cfg_value *v = &s->values[k];
			bool given = i == 0 && strcmp(s->schema->keys[k].key, "window") == 0;
			EXPECT(given || (v->set == (s->schema->keys[k].def != NULL) && v->line == 0 && v->col == 0));
		}
		/* a protocol section is packed even when absent, for the reload comparison */
		EXPECT(!s->schema->worker == !s->packed);
	}
	config_free(c);
}

static void empty_values_keep_defaults(void)
{
	/* `key:` and `key: ~` say nothing; "" in quotes is an empty string */
	struct config *c = load_text("gateway:\n  window:\n  device_id: ~\n  worker_dir: null\n"
				     "metrics:\n  listen: \"\"\nrest:\n  base_url: b\n  headers:\ntestworker:\n");
	if (!c)
		return;
	VALUE_IS(c, "gateway", "window", "256");
	VALUE_IS(c, "gateway", "device_id", "ucgw-edge");
	VALUE_IS(c, "gateway", "worker_dir", "(unset)");
	VALUE_IS(c, "metrics", "listen", "");
	VALUE_IS(c, "rest", "headers", "(unset)");
	EXPECT(config_protocol_enabled(c, "testworker")); /* `testworker:` alone is present */
	config_free(c);
}

static void server_lists(void)
{
	/* one server as a string (as before), or a list; the first is what is probed */
	struct config *c = load_text("rest:\n  base_url: http://a:1\nmqtt:\n  broker_url: [b:1, \"mqtts://c:2\"]\n"
				     "  servers_policy: spread\n  failback_s: 5\n");
	if (!c)
		return;
	size_t n;
	char *const *v = cfg_servers(config_section(c, "rest"), "base_url", &n);
	EXPECT(n == 1 && strcmp(v[0], "http://a:1") == 0);
	v = cfg_servers(config_section(c, "mqtt"), "broker_url", &n);
	EXPECT(n == 2 && strcmp(v[0], "b:1") == 0 && strcmp(v[1], "mqtts://c:2") == 0);
	EXPECT(strcmp(config_first_server(c, "mqtt", "broker_url"), "b:1") == 0);
	VALUE_IS(c, "mqtt", "servers_policy", "spread");
	VALUE_IS(c, "rest", "servers_policy", "failover");
	EXPECT(config_int(c, "mqtt", "failback_s") == 5 && config_int(c, "rest", "failback_s") == 60);
	config_free(c);
}

static void full_fixture_every_type(void)
{
	struct config *c = load_path(fixture("full.yaml"));
	if (!c)
		return;
	VALUE_IS(c, "gateway", "control_socket_mode", "0600");
	VALUE_IS(c, "gateway", "log_level", "debug");
	VALUE_IS(c, "spool", "fsync", "always");
	VALUE_IS(c, "spool", "ttl_s", "0");
	VALUE_IS(c, "websocket", "reconnect_delay", "0.25");
	VALUE_IS(c, "websocket", "headers", "X-Camera=cam-7;X-Empty=");
	VALUE_IS(c, "websocket", "insecure", "true");
	VALUE_IS(c, "rest", "headers", "Accept=application/json");
	VALUE_IS(c, "rest", "auth_header", "Authorization: Bearer abc");
	VALUE_IS(c, "mqtt", "password", "p@ss: word");
	VALUE_IS(c, "mqtt", "protocol_version", "3.1.1");
	VALUE_IS(c, "mqtt", "clean_session", "true");
	VALUE_IS(c, "sftp", "port", "2222");
	VALUE_IS(c, "rsync", "options", "-a,--bwlimit=500");
	VALUE_IS(c, "protocol_selection", "policy", "round_robin");
	VALUE_IS(c, "fallback", "chains", "mqtt=rest;sftp=;rest=");
	VALUE_IS(c, "metrics", "listen", "");
	VALUE_IS(c, "security", "api_keys", "key-one,key-two");
	VALUE_IS(c, "security", "allowed_users", "camuser");
	VALUE_IS(c, "testworker", "mode", "slow");
	/* enabled: false: present, validated, but no worker */
	EXPECT(config_section(c, "sftp")->present && !config_protocol_enabled(c, "sftp"));
	EXPECT(config_protocol_enabled(c, "rsync") && config_protocol_enabled(c, "testworker"));
	config_free(c);
}

/* ---- errors ---- */

/* gateway.max_frame_bytes must hold a message of max_message_bytes plus 16384
 * (FRAME_ENVELOPE_MAX), as base64 of nonce|tag|ciphertext in quotes once an
 * encryption key is configured. */
static void errors_frame_limit(void)
{
	struct config *c = load_text("gateway:\n  max_message_bytes: 4096\n  max_frame_bytes: 20480\n");
	EXPECT(c != NULL);
	config_free(c);
	FAILS("gateway:\n  max_message_bytes: 4097\n  max_frame_bytes: 20480\n", 3, 20,
	      "gateway.max_frame_bytes (20480) is too small for gateway.max_message_bytes (4097): a message of that "
	      "size needs frames of up to 20481 bytes (plus 16384 for the rest of the frame)",
	      "raise max_frame_bytes or lower max_message_bytes");
	/* max_frame_bytes left at its default: the message's key is where it went wrong */
	FAILS("gateway:\n  max_message_bytes: 16777216\n", 2, 22, "gateway.max_frame_bytes (16777216) is too small");
	const char *key = write_file("frame.key", "0123456789abcdef0123456789abcdef", 32, 0600);
	char text[512];
	/* 4096 bytes sealed: base64 of 4124 bytes (5500) and the quotes */
	snprintf(text, sizeof text, "gateway:\n  max_message_bytes: 4096\n  max_frame_bytes: %d\n"
				    "security:\n  encryption_key_file: %s\n", 5502 + 16384, key);
	c = load_text(text);
	EXPECT(c != NULL);
	config_free(c);
	snprintf(text, sizeof text, "gateway:\n  max_message_bytes: 4096\n  max_frame_bytes: %d\n"
				    "security:\n  encryption_key_file: %s\n", 5501 + 16384, key);
	FAILS(text, 3, 20, "needs frames of up to 21886 bytes (as base64 once encrypted with "
			   "security.encryption_key_file, plus 16384 for the rest of the frame)");
}

static void errors_unknown_names(void)
{
	FAILS("mqtt:\n  brokr_url: x\n", 2, 3, "unknown key 'brokr_url' in section 'mqtt' (did you mean 'broker_url'?)");
	FAILS("mqtt:\n  broker_url: x\n  qso: 1\n", 3, 3, "unknown key 'qso' in section 'mqtt' (did you mean 'qos'?)");
	FAILS("mqtt:\n  broker_url: x\n  pasword_file: /x\n", 3, 3, "(did you mean 'password_file'?)");
	FAILS("mqtt:\n  broker_url: x\n  zzzzzzzzzz: 1\n", 3, 3, "unknown key 'zzzzzzzzzz' in section 'mqtt'");
	FAILS("gateway:\n  server_url: x\n", 2, 3, "unknown key 'server_url' in section 'gateway' (it belongs in section 'websocket')");
	FAILS("mqqt:\n  broker_url: x\n", 1, 1, "unknown section 'mqqt' (did you mean 'mqtt'?)");
	FAILS("gateway: {}\nweb_socket: {}\n", 2, 1, "unknown section 'web_socket' (did you mean 'websocket'?)");
	FAILS("logging:\n  level: 1\n", 1, 1, "unknown section 'logging', expected one of: gateway, spool, websocket");
	/* far from every key: no guess */
	FAILS("mqtt:\n  broker_url: x\n  b: 1\n", 3, 3, "unknown key 'b' in section 'mqtt'");
	char err[1024];
	struct config *c = NULL;
	const char *p = write_text("b.yaml", "mqtt:\n  b: 1\n");
	EXPECT(config_load(p, &c, err, sizeof err) == -1 && !strstr(err, "did you mean"));
}

static void errors_wrong_types(void)
{
	FAILS("gateway:\n  window: lots\n", 2, 11, "bad value 'lots' for 'window' in section 'gateway', expected an integer from 1 to 65536");
	FAILS("gateway:\n  window: 0x10\n", 2, 11, "expected an integer");
	FAILS("gateway:\n  window: 1.5\n", 2, 11, "expected an integer");
	FAILS("mqtt:\n  broker_url: x\n  qos: 3\n", 3, 8, "bad value '3' for 'qos' in section 'mqtt', expected an integer from 0 to 2");
	FAILS("sftp:\n  host: h\n  username: u\n  port: 70000\n", 4, 9, "expected an integer from 1 to 65535");
	FAILS("sftp:\n  host: h\n  username: u\n  files_in_flight: 0\n", 4, 20,
	      "bad value '0' for 'files_in_flight' in section 'sftp', expected an integer from 1 to 64");
	FAILS("sftp:\n  host: h\n  username: u\n  files_in_flight: many\n", 4, 20, "expected an integer from 1 to 64");
	FAILS("spool:\n  max_bytes: 0\n", 2, 14, "expected an integer of at least 1");
	FAILS("gateway:\n  window: 99999999999999999999999\n", 2, 11, "expected an integer");
	FAILS("fallback:\n  enabled: maybe\n", 2, 12, "bad value 'maybe' for 'enabled' in section 'fallback', expected true or false");
	FAILS("spool:\n  fsync: sometimes\n", 2, 10, "expected one of: always, batch, never");
	FAILS("gateway:\n  log_level: INFO\n", 2, 14, "expected one of: error, warning, info, debug");
	FAILS("rsync:\n  remote_host: h\n  remote_user: u\n  options: -a\n", 4, 12,
	      "'options' in section 'rsync' is a single value, expected a list of strings");
	FAILS("rsync:\n  remote_host: h\n  remote_user: u\n  options: [-a, [x]]\n", 4, 17,
	      "a list as an item in 'options' of section 'rsync', expected a list of non-empty strings");
	FAILS("rsync:\n  remote_host: h\n  remote_user: u\n  options: [-a, \"\"]\n", 4, 17, "an empty item");
	FAILS("rest:\n  base_url: {a: b}\n", 2, 13,
	      "'base_url' in section 'rest' is a mapping, expected a server, or a list of servers");
	FAILS("rest:\n  base_url: [a, \"\"]\n", 2, 17, "an empty item in 'base_url' of section 'rest'");
	FAILS("rest:\n  base_url: []\n", 2, 13, "empty value for required key 'base_url' in section 'rest'");
	FAILS("rest:\n  base_url: [a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q]\n", 2, 13,
	      "17 servers in 'base_url' of section 'rest', expected at most 16");
	FAILS("rest:\n  base_url: x\n  timeout: -1\n", 3, 12, "expected a number from 0.001 to 3600");
	FAILS("rest:\n  base_url: x\n  timeout: nan\n", 3, 12, "expected a number");
	FAILS("rest:\n  base_url: x\n  timeout: .inf\n", 3, 12, "expected a number");
	FAILS("rest:\n  base_url: x\n  headers: [a]\n", 3, 12, "'headers' in section 'rest' is a list, expected a mapping of names to strings");
	FAILS("rest:\n  base_url: x\n  headers: {A: [1]}\n", 3, 16, "'A' in 'headers' of section 'rest' is a list, expected a string");
	FAILS("gateway:\n  control_socket_mode: rw-rw----\n", 2, 24, "expected an octal file mode such as 0660");
	FAILS("gateway:\n  control_socket_mode: \"0980\"\n", 2, 24, "expected an octal file mode");
	FAILS("gateway:\n  control_socket_mode: \"17777\"\n", 2, 24, "expected an octal file mode");
	FAILS("gateway: 5\n", 1, 10, "section 'gateway' is a single value, expected a mapping of keys to values");
	FAILS("gateway:\n  [a]: 1\n", 2, 3, "a list as a key in section 'gateway', expected a key name");
}

static void warnings_rsync_options(void)
{
#define RSYNC "rsync:\n  remote_host: h\n  remote_user: u\n  options: "
	WARNS(RSYNC "[-a, --delete]\n", 4, 17,
	      "refused option '--delete' in 'options' of section 'rsync': it can delete files on the server");
	WARNS(RSYNC "[-a, --delete-after]\n", 4, 17, "refused option '--delete-after'", "can delete files");
	WARNS(RSYNC "[--del]\n", 4, 13, "refused option '--del'");
	WARNS(RSYNC "[-a, --remove-source-files]\n", 4, 17, "refused option '--remove-source-files'");
	WARNS(RSYNC "[-a, --inplace]\n", 4, 17, "refused option '--inplace' in 'options' of section 'rsync': "
	      "rsync would write under the final name, so the server could see a half file");
	WARNS(RSYNC "[-a, --append]\n", 4, 17, "refused option '--append'", "a half file");
	WARNS(RSYNC "[-a, --append-verify]\n", 4, 17, "refused option '--append-verify'", "a half file");
	WARNS(RSYNC "[-a, \"--temp-dir=/big\"]\n", 4, 17, "refused option '--temp-dir' (in '--temp-dir=/big')",
	      "copies the file into place under its final name");
	/* one item per line: the position is the item's */
	WARNS(RSYNC "\n    - -a\n    - --partial\n    - -azn\n", 7, 7, "refused option '-n' (in '-azn')",
	      "rsync would not send the files and still exit 0, so each would be answered ok");
	WARNS(RSYNC "[-a, --dry-run]\n", 4, 17, "refused option '--dry-run'");
	WARNS(RSYNC "[-a, \"--exclude=*.jpg\"]\n", 4, 17, "refused option '--exclude' (in '--exclude=*.jpg')",
	      "skip a file and still exit 0");
	WARNS(RSYNC "[-a, --max-size=1m]\n", 4, 17, "refused option '--max-size'");
	WARNS(RSYNC "[-aC]\n", 4, 13, "refused option '-C' (in '-aC')");
	WARNS(RSYNC "[-avq]\n", 4, 13, "refused option '-q' (in '-avq')", "hides the output the worker reads");
	WARNS(RSYNC "[-a, --stderr=all]\n", 4, 17, "refused option '--stderr=all'");
	WARNS(RSYNC "[-a, -M, --inplace]\n", 4, 17, "refused option '-M'", "passes options to the server's rsync");
	/* allowed: an option's argument is not an option; negations; rsync's own default */
	struct config *c = load_text(RSYNC "[-azP, --bwlimit=500, -e, -n, \"-B1024nq\", --no-inplace, --stderr=errors, "
				     "--max-delete=0, --include=x, -vhi]\n");
	if (c)
		EXPECT(cfg_get(config_section(c, "rsync"), "options")->nitems == 10);
	config_free(c);
	/* the worker's own check, on a section from elsewhere */
	char *items[] = { "-a", "--partial", "-azn" }, opt[64];
	size_t at = 99;
	const char *why = cfg_rsync_refused(items, 3, &at, opt, sizeof opt);
	EXPECT(why && strstr(why, "answered ok") && at == 2 && strcmp(opt, "-n") == 0);
	EXPECT(cfg_rsync_refused(items, 2, &at, opt, sizeof opt) == NULL);
#undef RSYNC
}

static void errors_fallback_chains(void)
{
	FAILS("fallback:\n  chains:\n    mqtt: [rest, sfpt]\n", 3, 18,
	      "unknown protocol 'sfpt' in 'chains' of section 'fallback' (did you mean 'sftp'?)");
	FAILS("fallback:\n  chains:\n    carrier_pigeon: [rest]\n", 3, 5, "unknown protocol 'carrier_pigeon'",
	      "expected one of: websocket, rest, mqtt, sftp, rsync");
	FAILS("fallback:\n  chains:\n    mqtt: rest\n", 3, 11, "'mqtt' in 'chains' of section 'fallback' is a single value, expected a list of protocol names");
	FAILS("fallback:\n  chains:\n    mqtt: [rest]\n    mqtt: [sftp]\n", 4, 5, "duplicate name 'mqtt' in 'chains' of section 'fallback'");
	FAILS("fallback:\n  chains: [mqtt]\n", 2, 11, "expected a mapping of protocol names to lists of protocol names");
}

static void errors_required_and_duplicates(void)
{
	/* a missing required key points at its section */
	FAILS("gateway: {}\nmqtt:\n  client_id: x\n", 2, 1, "missing required key 'broker_url' in section 'mqtt'",
	      "or enabled: false");
	FAILS("sftp:\n  host: h\n", 1, 1, "missing required key 'username' in section 'sftp'");
	FAILS("websocket:\n", 1, 1, "missing required key 'server_url' in section 'websocket'");
	/* an empty one points at itself */
	FAILS("mqtt:\n  broker_url: \"\"\n", 2, 15, "empty value for required key 'broker_url' in section 'mqtt'");
	FAILS("mqtt:\n  broker_url:\n  qos: 1\n", 2, 14, "empty value for required key 'broker_url'");
	FAILS("mqtt:\n  broker_url: a\n  broker_url: b\n", 3, 3,
	      "duplicate key 'broker_url' in section 'mqtt' (first at 2:3), expected each key once");
	FAILS("mqtt:\n  broker_url: a\nmqtt:\n  broker_url: b\n", 3, 1,
	      "duplicate section 'mqtt' (first at 1:1), expected each section once");
	/* disabled: incomplete is fine, and `enabled` may come last */
	struct config *c = load_text("mqtt:\n  qos: 2\n  enabled: false\n");
	EXPECT(c && !config_protocol_enabled(c, "mqtt") && config_section(c, "mqtt")->present);
	config_free(c);
	/* but what is there is still checked */
	FAILS("mqtt:\n  enabled: false\n  qos: 7\n", 3, 8, "expected an integer from 0 to 2");
	FAILS("mqtt:\n  enabled: nope\n", 2, 12, "expected true or false");
}

static void errors_file_level(void)
{
	FAILS("gateway: [1\n", 2, 1, "YAML syntax error: did not find expected ',' or ']'",
	      "(while parsing a flow sequence at 1:10)");
	FAILS("gateway:\n  window: 1\n bad: 2\n", 3, 2, "YAML syntax error");
	FAILS("gateway:\n\twindow: 1\n", 2, 1, "YAML syntax error: found character that cannot start any token");
	FAILS("gateway:\n  window: *nothing\n", 2, 11, "found undefined alias");
	FAILS("gateway:\n  device_id: \"a\xff\"\n", 2, 16, "invalid", "expected UTF-8 text");
	FAILS("", 1, 1, "the file is empty, expected a mapping of sections");
	FAILS("# only a comment\n\n", 1, 1, "the file is empty");
	FAILS("- a\n- b\n", 1, 1, "the top level is a list, expected a mapping of sections");
	FAILS("just text\n", 1, 1, "the top level is a single value");
	FAILS("gateway: {}\n---\nmqtt: {}\n", 2, 1, "a second YAML document, expected one document per file");
	fails_at(__LINE__, "gateway:\n  device_id: \"a\\0b\"\n", 29, 2, 14, "a NUL character in a string", (char *)NULL);

	char err[512];
	struct config *c = NULL;
	EXPECT(config_load("/nonexistent/ucgw.yaml", &c, err, sizeof err) == -1 && c == NULL);
	EXPECT(strcmp(err, "cannot open /nonexistent/ucgw.yaml: No such file or directory") == 0);
	EXPECT(config_load(tmpdir, &c, err, sizeof err) == -1 && c == NULL);
	EXPECT(strstr(err, " is not a regular file (it is a directory)"));
}

static void errors_stay_one_line_and_short(void)
{
	/* a value with a newline, and a very long name, do not break the message */
	FAILS("gateway:\n  window: \"1\\n2\"\n", 2, 11, "bad value '1?2' for 'window'");
	char text[4096] = "gateway:\n  window: ";
	memset(text + strlen(text), 'k', 3000);
	strcat(text, "\n");
	FAILS(text, 2, 11, "bad value 'kkkk", "kkk...' for 'window'");
	/* a short error buffer is cut, never overrun */
	char small[16];
	struct config *c = NULL;
	const char *p = write_text("s.yaml", "mqqt: {}\n");
	EXPECT(config_load(p, &c, small, sizeof small) == -1 && strlen(small) == sizeof small - 1);
	EXPECT(config_load(p, &c, NULL, 0) == -1);
	/* a list no one needs: refused before it costs much */
	size_t n = 10001, len = 0;
	char *big = malloc(n * 4 + 64);
	len += (size_t)sprintf(big, "security:\n  allowed_users: [");
	for (size_t i = 0; i < n; i++)
		len += (size_t)sprintf(big + len, "%su", i ? "," : "");
	len += (size_t)sprintf(big + len, "]\n");
	fails_at(__LINE__, big, len, 2, 19 + 2 * 10000, "too many items in 'allowed_users'", (char *)NULL);
	free(big);
}

/* ---- secrets ---- */

static void secret_files(void)
{
	char text[1024], words[800];
	const char *pw = write_file("pw", "s3cret\n", 7, 0600);
	snprintf(text, sizeof text, "mqtt:\n  broker_url: x\n  password_file: %s\n", pw);
	struct config *c = load_text(text);
	if (c) {
		VALUE_IS(c, "mqtt", "password", "s3cret");
		EXPECT(cfg_get(config_section(c, "mqtt"), "password")->line == 3);
		config_free(c);
	}
	/* CRLF, and a path relative to the configuration file's directory */
	write_file("rel.secret", "tok\r\n", 5, 0400);
	c = load_text("security:\n  jwt_secret_file: rel.secret\n");
	if (c) {
		VALUE_IS(c, "security", "jwt_secret", "tok");
		config_free(c);
	}
	/* a list secret: one per line */
	const char *keys = write_file("keys", "key-a\n\nkey-b\r\n", 14, 0600);
	snprintf(text, sizeof text, "security:\n  api_keys_file: %s\n", keys);
	c = load_text(text);
	if (c) {
		VALUE_IS(c, "security", "api_keys", "key-a,key-b");
		config_free(c);
	}
	/* others may read it: refused, with the fix */
	pw = write_file("pw644", "s3cret\n", 7, 0644);
	snprintf(text, sizeof text, "mqtt:\n  broker_url: x\n  password_file: %s\n", pw);
	snprintf(words, sizeof words, "password_file %s is readable by others (mode 0644); chmod 600 it", pw);
	FAILS(text, 3, 18, words);
	pw = write_file("pw620", "s3cret\n", 7, 0620);
	snprintf(text, sizeof text, "mqtt:\n  broker_url: x\n  password_file: %s\n", pw);
	FAILS(text, 3, 18, "is writable by its group (mode 0620); chmod 600 it");
	/* both forms */
	pw = write_file("pw600", "s3cret\n", 7, 0600);
	snprintf(text, sizeof text, "mqtt:\n  broker_url: x\n  password: a\n  password_file: %s\n", pw);
	FAILS(text, 4, 3, "both 'password' (at 3:3) and 'password_file' given in section 'mqtt', expected only one of them");
	snprintf(text, sizeof text, "mqtt:\n  broker_url: x\n  password_file: %s\n  password: a\n", pw);
	FAILS(text, 4, 3, "both 'password_file' (at 3:3) and 'password' given");
	/* missing, empty, not a file, not a secret */
	FAILS("mqtt:\n  broker_url: x\n  password_file: /nonexistent/pw\n", 3, 18,
	      "cannot read password_file /nonexistent/pw: No such file or directory");
	pw = write_file("empty", "\n", 1, 0600);
	snprintf(text, sizeof text, "mqtt:\n  broker_url: x\n  password_file: %s\n", pw);
	FAILS(text, 3, 18, "is empty, expected the secret in it");
	snprintf(text, sizeof text, "mqtt:\n  broker_url: x\n  password_file: %s\n", tmpdir);
	FAILS(text, 3, 18, "is not a regular file");
	FAILS("mqtt:\n  broker_url: x\n  password_file:\n", 3, 17, "'password_file' in section 'mqtt' is empty, expected a file name");
	FAILS("mqtt:\n  broker_url_file: /x\n", 2, 3,
	      "unknown key 'broker_url_file' in section 'mqtt' (only secrets can be given as KEY_file)");
	if (geteuid() != 0) { /* root reads anything */
		pw = write_file("pw000", "s3cret\n", 7, 0000);
		snprintf(text, sizeof text, "mqtt:\n  broker_url: x\n  password_file: %s\n", pw);
		FAILS(text, 3, 18, "cannot read password_file", "Permission denied");
	}
}

static void secrets_never_in_messages(void)
{
	char err[1024];
	struct config *c = NULL;
	const char *text = "security:\n  api_keys: hunter2\n";
	const char *p = write_text("sec.yaml", text);
	EXPECT(config_load(p, &c, err, sizeof err) == -1);
	EXPECT(strstr(err, "expected a list of strings") && !strstr(err, "hunter2"));
	/* nor in the reference */
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	config_write_reference(f);
	fclose(f);
	EXPECT(strstr(buf, "| `password` | string, *secret* | – |") != NULL);
	free(buf);
}

/* ---- packing ---- */

/* Every key of a section and of its unpacked copy, compared as text. */
static void same_values(const struct cfg_section *a, const struct cfg_section *b)
{
	for (size_t k = 0; k < a->schema->nkeys; k++) {
		char va[1024], vb[1024];
		value_text(&a->schema->keys[k], &a->values[k], va, sizeof va);
		value_text(&b->schema->keys[k], &b->values[k], vb, sizeof vb);
		if (strcmp(va, vb) != 0) {
			printf("    %s.%s: '%s' unpacked as '%s'\n", a->schema->name, a->schema->keys[k].key, va, vb);
			case_failures++;
		}
	}
}

static void round_trip(const struct config *c)
{
	for (size_t i = 0; i < cfg_schema_len; i++) {
		const struct cfg_section *s = &c->sections[i];
		if (!s->schema->worker)
			continue;
		struct cfg_section w;
		char err[256] = "";
		if (cfg_section_unpack(s->schema->name, s->packed, s->packed_len, &w, err, sizeof err) != 0) {
			printf("    unpack %s: %s\n", s->schema->name, err);
			case_failures++;
			continue;
		}
		EXPECT(w.present && w.schema == s->schema);
		EXPECT(cfg_section_equal(s, &w));
		same_values(s, &w);
		cfg_section_free(&w);
	}
}

static void pack_unpack_round_trip(void)
{
	struct config *seed = load_seed();
	struct config *full = load_path(fixture("full.yaml"));
	if (seed)
		round_trip(seed);
	if (full)
		round_trip(full);
	/* the worker's accessors work on the unpacked copy; unset stays unset */
	if (seed) {
		struct cfg_section w;
		char err[256];
		const struct cfg_section *m = config_section(seed, "mqtt");
		EXPECT(cfg_section_unpack("mqtt", m->packed, m->packed_len, &w, err, sizeof err) == 0);
		EXPECT(strcmp(cfg_str(&w, "client_id"), "aicamera-edge-001") == 0 && cfg_int(&w, "qos") == 1);
		EXPECT(cfg_str(&w, "ca_file") == NULL && !cfg_bool(&w, "insecure"));
		cfg_section_free(&w);
		cfg_section_free(&w); /* freeing twice is harmless */
	}
	config_free(seed);
	config_free(full);
}

static void pack_equality_decides_restarts(void)
{
	const char *base = "mqtt:\n  broker_url: b\n  client_id: one\nrest:\n  base_url: http://r\n";
	struct config *a = load_text(base), *b = load_text(base);
	/* saying the default out loud is no change */
	struct config *same = load_text("rest:\n  base_url: http://r\n  connections: 8\n"
					"mqtt:\n  qos: 1\n  client_id: one\n  broker_url: b\n");
	struct config *other = load_text("mqtt:\n  broker_url: b\n  client_id: two\nrest:\n  base_url: http://r\n");
	if (!a || !b || !same || !other)
		goto out;
	for (size_t i = 0; i < cfg_schema_len; i++)
		if (a->sections[i].schema->worker) {
			EXPECT(a->sections[i].packed_len == b->sections[i].packed_len);
			EXPECT(cfg_section_equal(&a->sections[i], &b->sections[i]));
			EXPECT(cfg_section_equal(&a->sections[i], &same->sections[i]));
		}
	EXPECT(!cfg_section_equal(config_section(a, "mqtt"), config_section(other, "mqtt")));
	EXPECT(cfg_section_equal(config_section(a, "rest"), config_section(other, "rest")));
out:
	config_free(a);
	config_free(b);
	config_free(same);
	config_free(other);
}

/* The packed bytes with the first `old` (of oldlen bytes) replaced by new. */
static unsigned char *patched(const struct cfg_section *s, const char *old, size_t oldlen, const char *new,
			      size_t newlen, size_t *len)
{
	const unsigned char *p = s->packed;
	for (size_t i = 0; i + oldlen <= s->packed_len; i++)
		if (memcmp(p + i, old, oldlen) == 0) {
			unsigned char *out = malloc(s->packed_len - oldlen + newlen);
			memcpy(out, p, i);
			memcpy(out + i, new, newlen);
			memcpy(out + i + newlen, p + i + oldlen, s->packed_len - i - oldlen);
			*len = s->packed_len - oldlen + newlen;
			return out;
		}
	printf("    test bug: bytes to patch not found\n");
	case_failures++;
	return NULL;
}

static void unpack_refuses(int src, const char *name, const void *buf, size_t len, const char *words)
{
	struct cfg_section w;
	char err[256] = "";
	int rc = cfg_section_unpack(name, buf, len, &w, err, sizeof err);
	if (rc == -1 && strstr(err, words) && w.values == NULL && w.packed == NULL)
		return;
	printf("    %s:%d: unpack gave %d '%s', wanted a refusal with '%s'\n", __FILE__, src, rc, err, words);
	case_failures++;
	if (rc == 0)
		cfg_section_free(&w);
}
#define REFUSED(name, buf, len, words) unpack_refuses(__LINE__, name, buf, len, words)

#define PATCH_REFUSED(s, old, new, words)                                                         \
	do {                                                                                      \
		size_t n_;                                                                        \
		unsigned char *b_ = patched(s, old, sizeof old - 1, new, sizeof new - 1, &n_);    \
		if (b_)                                                                           \
			REFUSED((s)->schema->name, b_, n_, words);                                \
		free(b_);                                                                         \
	} while (0)

static void unpack_refuses_bad_bytes(void)
{
	struct config *c = load_seed();
	if (!c)
		return;
	const struct cfg_section *m = config_section(c, "mqtt");
	/* every truncation, and a byte too many */
	for (size_t n = 0; n < m->packed_len; n++) {
		unsigned char *cut = malloc(n + 1);
		memcpy(cut, m->packed, n);
		REFUSED("mqtt", cut, n, "section 'mqtt'");
		free(cut);
	}
	unsigned char *longer = malloc(m->packed_len + 1);
	memcpy(longer, m->packed, m->packed_len);
	longer[m->packed_len] = 0xc0;
	REFUSED("mqtt", longer, m->packed_len + 1, "1 bytes left over");
	free(longer);
	/* garbage, and counts that claim more than there is */
	REFUSED("mqtt", "\xc1", 1, "not a msgpack map");
	REFUSED("mqtt", "\xdf\xff\xff\xff\xff", 5, "the bytes end");
	REFUSED("mqtt", "\x81\xa3qos\xdd\xff\xff\xff\xff", 10, "section 'mqtt'");
	REFUSED("mqtt", "\x80", 1, "key 'enabled' missing");
	REFUSED("mqtt", NULL, 0, "no bytes");
	REFUSED("nosuch", m->packed, m->packed_len, "no section 'nosuch'");
	/* wrong types and values the schema refuses */
	PATCH_REFUSED(m, "\xa3qos\x01", "\xa3qos\xa1x", "bad value for 'qos', expected an integer from 0 to 2");
	PATCH_REFUSED(m, "\xa3qos\x01", "\xa3qos\x03", "bad value for 'qos'");
	PATCH_REFUSED(m, "\xa3qos\x01", "\xa3qos\xcb\x3f\xf0\0\0\0\0\0\0", "bad value for 'qos'");
	PATCH_REFUSED(m, "\xa3qos", "\xa3qox", "unknown key 'qox'");
	PATCH_REFUSED(m, "\xa3qos\x01", "\xa5topic\xa1x", "key 'topic' twice");
	PATCH_REFUSED(m, "\xa1" "5", "\xa1" "4", "bad value for 'protocol_version', expected one of: 3.1.1, 5");
	PATCH_REFUSED(m, "\xa9" "client_id\xb1" "aicamera-edge-001", "\xa9" "client_id\xa3" "a\0b", "bad value for 'client_id'");
	PATCH_REFUSED(m, "\xa7" "enabled\xc3", "\xa7" "enabled\x01", "bad value for 'enabled', expected true or false");
	const struct cfg_section *r = config_section(c, "rsync");
	PATCH_REFUSED(r, "\x91\xa4-azP", "\x91\x01", "bad value for 'options', expected a list of strings");
	/* a missing key: one entry fewer, header and all */
	size_t n = m->packed_len - 9; /* the last entry: "\xa7" "encrypt" "\xc2" */
	unsigned char *less = malloc(m->packed_len);
	memcpy(less, m->packed, n);
	EXPECT(memcmp((const char *)m->packed + n, "\xa7" "encrypt\xc2", 9) == 0 && less[0] == 0xde);
	less[2]--;
	REFUSED("mqtt", less, n, "key 'encrypt' missing");
	free(less);
	config_free(c);
}

/* ---- accessors ---- */

static const struct config *panic_cfg;
static void read_int_as_str(void) { config_str(panic_cfg, "mqtt", "qos"); }
static void read_str_as_int(void) { config_int(panic_cfg, "mqtt", "broker_url"); }
static void read_int_as_num(void) { cfg_num(config_section(panic_cfg, "mqtt"), "qos"); }
static void read_list_as_str(void) { config_str(panic_cfg, "rsync", "options"); }
static void read_unknown_key(void) { cfg_get(config_section(panic_cfg, "mqtt"), "brokr_url"); }
static void read_unknown_section(void) { config_section(panic_cfg, "mqqt"); }

/* fn must end the process with a panic naming words. */
static void panics(int src, void (*fn)(void), const char *words)
{
	int fds[2];
	if (pipe(fds) < 0)
		return;
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		dup2(fds[1], 2);
		fn();
		_exit(0);
	}
	close(fds[1]);
	char out[4096] = "";
	size_t len = 0;
	ssize_t got;
	while ((got = read(fds[0], out + len, sizeof out - 1 - len)) > 0)
		len += (size_t)got;
	out[len] = '\0';
	close(fds[0]);
	int st = 0;
	waitpid(pid, &st, 0);
	if (WIFEXITED(st) && WEXITSTATUS(st) != 0 && strstr(out, "panic: ") && strstr(out, words))
		return;
	printf("    %s:%d: wanted a panic with '%s', got status %d and '%.200s'\n", __FILE__, src, words, st, out);
	case_failures++;
}

static void accessors_panic_on_misuse(void)
{
	struct config *c = load_seed();
	if (!c)
		return;
	panic_cfg = c;
	panics(__LINE__, read_int_as_str, "'mqtt.qos' read as the wrong type");
	panics(__LINE__, read_str_as_int, "'mqtt.broker_url' read as the wrong type");
	panics(__LINE__, read_int_as_num, "'mqtt.qos' read as the wrong type");
	panics(__LINE__, read_list_as_str, "'rsync.options' read as the wrong type");
	panics(__LINE__, read_unknown_key, "no key 'brokr_url' in configuration section 'mqtt'");
	panics(__LINE__, read_unknown_section, "no configuration section 'mqqt'");
	/* what is allowed */
	const struct cfg_section *m = config_section(c, "mqtt");
	EXPECT(cfg_has(m, "qos") && !cfg_has(m, "brokr_url") && !cfg_has(m, "password_file"));
	EXPECT(strcmp(cfg_str(m, "protocol_version"), "5") == 0); /* an ENUM reads as a string */
	EXPECT(cfg_get(m, "qos")->i == 1);
	config_free(c);
}

/* ---- the schema and its reference ---- */

static void schema_is_consistent(void)
{
	for (size_t i = 0; i < cfg_schema_len; i++) {
		const struct cfg_schema_section *s = &cfg_schema[i];
		EXPECT(s->help && *s->help && s->nkeys > 0);
		bool has_enabled = false;
		for (size_t k = 0; k < s->nkeys; k++) {
			const struct cfg_key *key = &s->keys[k];
			EXPECT(key->help && *key->help && strlen(key->key) < 60);
			EXPECT((key->type == CFG_ENUM) == (key->choices != NULL));
			EXPECT(!(key->flags & CFG_REQUIRED) || !key->def);
			EXPECT(!(key->flags & CFG_SECRET) || !key->def);
			has_enabled |= strcmp(key->key, "enabled") == 0 && key->type == CFG_BOOL;
			for (size_t j = 0; j < k; j++)
				EXPECT(strcmp(s->keys[j].key, key->key) != 0);
		}
		EXPECT(!s->worker || has_enabled); /* every protocol can be switched off */
		for (size_t j = 0; j < i; j++)
			EXPECT(strcmp(cfg_schema[j].name, s->name) != 0);
	}
}

static void reference_covers_the_schema(void)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	config_write_reference(f);
	fclose(f);
	for (size_t i = 0; i < cfg_schema_len; i++) {
		char line[256];
		snprintf(line, sizeof line, "\n## `%s`\n\n%s", cfg_schema[i].name, cfg_schema[i].help);
		if (cfg_section_hidden(&cfg_schema[i])) { /* the test worker: no user's business */
			EXPECT(strstr(buf, line) == NULL);
			continue;
		}
		EXPECT(strstr(buf, line) != NULL);
		for (size_t k = 0; k < cfg_schema[i].nkeys; k++) {
			snprintf(line, sizeof line, "| `%s` | ", cfg_schema[i].keys[k].key);
			EXPECT(strstr(buf, line) != NULL);
		}
	}
	EXPECT(strstr(buf, "| key | type | default | description |") != NULL);
	EXPECT(strstr(buf, "| `broker_url` | string or list of strings, required | – |") != NULL);
	EXPECT(strstr(buf, "| `qos` | integer, 0 to 2 | `1` |") != NULL);
	EXPECT(strstr(buf, "| `fsync` | one of: always, batch, never | `batch` |") != NULL);
	EXPECT(strstr(buf, "| `options` | list of strings | `[-a, --partial]` |") != NULL);
	EXPECT(strstr(buf, "`{websocket: [rest, mqtt], rest: [mqtt, websocket], mqtt: [rest, websocket], "
			   "sftp: [rsync], rsync: [sftp]}`") != NULL);
	EXPECT(strstr(buf, "| `api_keys` | list of strings, *secret* | – |") != NULL);
	EXPECT(strstr(buf, "Worker: `ucgw-mqtt`") != NULL);
	EXPECT(strstr(buf, "KEY_file") != NULL);
	free(buf);
}

/* Every key naming a file to read, with what must not hang or flood the
 * daemon in its place: refused at load (start, -n, reload) by key and path. */
static void errors_named_files(void)
{
	static const char *const keys[][3] = {
		/* section, key, the rest of a section that loads */
		{ "sftp", "key_file", "  host: h\n  username: u\n" },
		{ "sftp", "known_hosts", "  host: h\n  username: u\n  password: p\n" },
		{ "rsync", "key_file", "  remote_host: h\n  remote_user: u\n" },
		{ "rsync", "known_hosts", "  remote_host: h\n  remote_user: u\n" },
		{ "mqtt", "ca_file", "  broker_url: h\n" },
		{ "mqtt", "cert_file", "  broker_url: h\n" },
		{ "mqtt", "key_file", "  broker_url: h\n" },
		{ "rest", "ca_file", "  base_url: http://h\n" },
		{ "websocket", "key_file", "  server_url: ws://h\n" },
		{ "security", "encryption_key_file", "" },
		{ "mqtt", "password_file", "  broker_url: h\n" },
	};
	const char *fifo = tmp_path("fifo"), *loop = NULL;
	unlink(fifo);
	EXPECT(mkfifo(fifo, 0600) == 0);
	char fifo_path[700], loop_path[700], dir_path[700];
	snprintf(fifo_path, sizeof fifo_path, "%s", fifo);
	loop = tmp_path("loop");
	snprintf(loop_path, sizeof loop_path, "%s", loop);
	unlink(loop_path);
	EXPECT(symlink(loop_path, loop_path) == 0);
	snprintf(dir_path, sizeof dir_path, "%s", tmpdir);
	const char *bad[][2] = {
		{ fifo_path, "is not a regular file (it is a FIFO)" },
		{ loop_path, ": Too many levels of symbolic links (a loop of symbolic links)" },
		{ "/dev/zero", "is not a regular file (it is a character device)" },
		{ dir_path, "is not a regular file (it is a directory)" },
	};
	for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
		for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
			char text[2048], words[1024];
			bool secret = strcmp(keys[k][1], "password_file") == 0;
			snprintf(text, sizeof text, "%s:\n  %s: %s\n%s", keys[k][0], keys[k][1], bad[b][0], keys[k][2]);
			snprintf(words, sizeof words, "%s%s%s %s", secret ? "" : keys[k][0], secret ? "" : ".", keys[k][1],
				 bad[b][0]);
			FAILS(text, 2, 5 + (int)strlen(keys[k][1]), words, bad[b][1]);
		}
	/* directories, the audit log, the control socket, the configuration itself */
	char text[2048], words[1024];
	snprintf(text, sizeof text, "spool:\n  dir: %s\n", fifo_path);
	snprintf(words, sizeof words, "spool.dir %s is not a directory (it is a FIFO)", fifo_path);
	FAILS(text, 2, 8, words);
	snprintf(text, sizeof text, "gateway:\n  crash_dir: /dev/zero\n");
	FAILS(text, 2, 14, "gateway.crash_dir /dev/zero is not a directory (it is a character device)");
	snprintf(text, sizeof text, "security:\n  audit_log: %s\n", fifo_path);
	snprintf(words, sizeof words, "security.audit_log %s is not a regular file (it is a FIFO)", fifo_path);
	FAILS(text, 2, 14, words);
	snprintf(text, sizeof text, "gateway:\n  control_socket: %s\n", write_text("not-a-socket", "x"));
	FAILS(text, 2, 19, "exists and is not a socket (it is a regular file): ucgwd would have to remove it to "
			   "listen there");
	char err[1024];
	struct config *c = NULL;
	for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
		EXPECT(config_load(bad[b][0], &c, err, sizeof err) == -1 && c == NULL);
		if (!strstr(err, bad[b][1]))
			printf("    %s: got '%s'\n", bad[b][0], err);
		EXPECT(strstr(err, bad[b][1]) != NULL);
	}
	/* a file named in the file that is not there yet: a warning, it loads */
	WARNS("sftp:\n  key_file: /nonexistent/id\n  host: h\n  username: u\n", 2, 13,
	      "cannot read sftp.key_file /nonexistent/id: No such file or directory; the sftp worker refuses to start "
	      "without it");
	/* the listener: loopback only, unless metrics.allow_remote (the error names it) */
	FAILS("metrics:\n  listen: 0.0.0.0:9630\n", 2, 11,
	      "metrics.listen '0.0.0.0:9630' is not a loopback address: the metrics and the dashboard are served on "
	      "127.0.0.0/8 or ::1 unless metrics.allow_remote is true");
	FAILS("metrics:\n  listen: myhost:9630\n  allow_remote: true\n", 2, 11,
	      "metrics.listen 'myhost:9630': 'myhost' is not an IP address");
	c = load_text("metrics:\n  listen: 0.0.0.0:9630\n  allow_remote: true\n");
	EXPECT(c != NULL);
	config_free(c);
	c = load_text("metrics:\n  listen: '[::]:9630'\n  allow_remote: true\n");
	EXPECT(c != NULL);
	config_free(c);
	FAILS("metrics:\n  listen: '[::]:9630'\n", 2, 11, "is not a loopback address");
	FAILS("metrics:\n  listen: 127.0.0.1:96x\n", 2, 11, "expected HOST:PORT on loopback");
	c = load_text("metrics:\n  listen: '[::1]:9630'\n");
	EXPECT(c != NULL);
	config_free(c);
	unlink(fifo_path);
	unlink(loop_path);
}

/* libyaml's scanner is quadratic in the depth of flow collections: 100,000
 * nested '[' took 19 s. Refused at the nesting limit, at once. */
static void errors_deep_nesting(void)
{
	size_t depth = 100000;
	char *text = malloc(3 + 2 * depth + 2);
	memcpy(text, "x: ", 3);
	memset(text + 3, '[', depth);
	memset(text + 3 + depth, ']', depth);
	strcpy(text + 3 + 2 * depth, "\n");
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	FAILS(text, 1, 35, "nested deeper than 32 levels, expected sections of keys (a configuration needs 4)");
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	printf("    %zu-deep flow collection refused in %.1f ms\n", depth, ms);
	EXPECT(ms < 2000); /* generous: the target is 100 ms, the machine is shared */
	memset(text + 3, '{', depth);
	memset(text + 3 + depth, '}', depth);
	FAILS(text, 1, 35, "nested deeper than 32 levels");
	free(text);
	/* the depth a configuration needs still loads */
	struct config *c = load_text("fallback:\n  chains: {sftp: [rsync], rsync: [sftp]}\n");
	EXPECT(c != NULL);
	config_free(c);
}

static void find_fixtures(void)
{
	/* next to this source file when built by CMake (absolute __FILE__), else the
	 * working directory ctest uses */
	const char *slash = strrchr(__FILE__, '/');
	if (__FILE__[0] == '/' && slash)
		snprintf(fixtures, sizeof fixtures, "%.*s/configs", (int)(slash - __FILE__), __FILE__);
	if (!fixtures[0] || access(fixtures, R_OK) != 0)
		snprintf(fixtures, sizeof fixtures, "configs");
}

int main(void)
{
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	find_fixtures();
	RUN(seed_file_loads_as_written);
	RUN(defaults_fill_every_key);
	RUN(empty_values_keep_defaults);
	RUN(server_lists);
	RUN(full_fixture_every_type);
	RUN(errors_frame_limit);
	RUN(errors_unknown_names);
	RUN(errors_wrong_types);
	RUN(warnings_rsync_options);
	RUN(errors_fallback_chains);
	RUN(errors_required_and_duplicates);
	RUN(errors_file_level);
	RUN(errors_stay_one_line_and_short);
	RUN(secret_files);
	RUN(secrets_never_in_messages);
	RUN(pack_unpack_round_trip);
	RUN(pack_equality_decides_restarts);
	RUN(unpack_refuses_bad_bytes);
	RUN(accessors_panic_on_misuse);
	RUN(schema_is_consistent);
	RUN(reference_covers_the_schema);
	RUN(errors_named_files);
	RUN(errors_deep_nesting);
	char cmd[700];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		printf("could not remove %s\n", tmpdir);
	printf("%d cases, %d failed\n", cases_run, cases_failed);
	return cases_failed ? 1 : 0;
}
