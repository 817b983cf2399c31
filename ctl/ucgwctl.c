/* ucgwctl: the operator's command line for ucgwd. A table of commands; each
 * builds its request, and prints the reply for people or, with --json, as JSON. */
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/crypto.h"
#include "common/log.h"
#include "common/util.h"
#include "ctl/conn.h"
#include "ctl/json.h"
#include "workers/protocols.h"

#define EXIT_FAIL 1   /* the command failed */
#define EXIT_USAGE 2  /* bad command line */
#define EXIT_DOWN 3   /* ucgwd is not running */
#define EXIT_DENIED 4 /* this user may not use the control socket */

static struct {
	const char *socket;
	bool json;
	int timeout_ms;
	struct conn conn;
} ctl = { .timeout_ms = 30000 };

/* A command: its synopsis and one-line summary for `ucgwctl --help`; the longer
 * text, its own options (beside --json and --help, which every command that
 * talks to ucgwd takes) and their help for `ucgwctl COMMAND --help`. */
struct command {
	const char *name, *args, *summary;
	const char *about;            /* what it does, for COMMAND --help */
	const struct option *opts;    /* its own options, or NULL */
	const char *shorts;           /* their short forms for getopt */
	const char *opts_help;        /* one line each, as printed */
	int (*opt)(int ch, const char *arg); /* takes one of them; 0, or the exit status */
	int min_args, max_args;       /* positional arguments; max -1: any */
	bool local;                   /* runs here, without ucgwd: no --json */
	bool hidden;                  /* not in --help (for tests) */
	int (*run)(int argc, char **argv);
};

static const struct command commands[];

/* A help text with its lists of protocols put in from the descriptor table
 * (workers/protocols.h): {protocols} every one, {meta} those that carry
 * metadata, {files} those that carry files. */
static void put_help(FILE *out, const char *text)
{
	static const struct { const char *token; unsigned carries; } lists[] = {
		{ "{protocols}", PROTO_META | PROTO_FILES }, { "{meta}", PROTO_META }, { "{files}", PROTO_FILES },
	};
	for (const char *s = text; *s; s++) {
		size_t k = 0;
		while (k < sizeof lists / sizeof lists[0] && strncmp(s, lists[k].token, strlen(lists[k].token)) != 0)
			k++;
		if (k == sizeof lists / sizeof lists[0]) {
			fputc(*s, out);
			continue;
		}
		char names[200];
		protocol_names(lists[k].carries, ", ", names, sizeof names);
		fputs(names, out);
		s += strlen(lists[k].token) - 1;
	}
}

static void usage(FILE *out)
{
	fprintf(out, "usage: ucgwctl [GLOBAL OPTIONS] COMMAND [OPTIONS] [ARGS]\n\n"
		     "Talks to ucgwd over its control socket (default $UCGW_SOCKET or /run/ucgw/control.sock).\n\n"
		     "commands:\n");
	for (const struct command *c = commands; c->name; c++) {
		if (c->hidden)
			continue;
		char head[128];
		snprintf(head, sizeof head, "%s%s%s", c->name, c->args[0] ? " " : "", c->args);
		if (strlen(head) <= 30)
			fprintf(out, "  %-30s ", head);
		else
			fprintf(out, "  %s\n  %-30s ", head, "");
		put_help(out, c->summary);
		fputc('\n', out);
	}
	fprintf(out, "\nucgwctl COMMAND --help prints a command's arguments and options. Every command\n"
		     "that talks to ucgwd also takes -j/--json after its name.\n"
		     "\nglobal options (before the command):\n"
		     "  -s, --socket PATH    control socket of the daemon\n"
		     "  -j, --json           print the daemon's answer as JSON\n"
		     "  -t, --timeout MS     how long to wait for an answer (default 30000; send and\n"
		     "                       send-file with --wait wait for the outcome however long)\n"
		     "  --api-key-file FILE  send the API key in FILE (mode 0600) with every request\n"
		     "  -h, --help           this text\n"
		     "\nenvironment: UCGW_SOCKET; UCGW_JWT or UCGW_API_KEY, the credential sent when\n"
		     "security.require_auth is on; UCGW_KEY_FILE, the key decrypt uses by default\n"
		     "  --version            ucgwctl's version\n"
		     "\nexit status: 0 done, 1 the command failed, 2 bad usage, 3 ucgwd not running,\n"
		     "4 permission denied on the control socket (the user is not in its group)\n");
}

/* ucgwctl COMMAND --help */
static void command_usage(const struct command *c)
{
	printf("usage: ucgwctl %s%s%s\n\n", c->name, c->args[0] ? " " : "", c->args);
	put_help(stdout, c->about);
	printf("\n\noptions:\n");
	put_help(stdout, c->opts_help ? c->opts_help : "");
	if (!c->local)
		printf("  -j, --json              print the daemon's answer as JSON\n");
	printf("  -h, --help              this text\n");
	if (!c->local)
		printf("\nThe global options (-s SOCKET, -t MS, --api-key-file FILE) go before the command:\n"
		       "ucgwctl --help.\n");
}

/* A whole number in [0, max], or -1. */
static int parse_uint(const char *s, uint64_t max, uint64_t *out)
{
	if (!s || !*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 19)
		return -1;
	uint64_t v = strtoull(s, NULL, 10);
	if (v > max)
		return -1;
	*out = v;
	return 0;
}

/* Send one request and wait for its reply. Returns the exit status; on success
 * *out points at the reply's body (valid until the next read). */
static int call(const char *name, const msgpack_sbuffer *args, const msgpack_object **out)
{
	char err[512];
	int oc;
	if (ctl.conn.fd <= 0 && (oc = conn_open(&ctl.conn, ctl.socket, err, sizeof err)) < 0) {
		fprintf(stderr, "ucgwctl: %s\n", err);
		return oc == CONN_DENIED ? EXIT_DENIED : EXIT_DOWN;
	}
	uint64_t seq = conn_request(&ctl.conn, name, args);
	static struct msg m;
	for (;;) {
		if (conn_read(&ctl.conn, &m, ctl.timeout_ms, err, sizeof err) < 0) {
			fprintf(stderr, "ucgwctl: %s: %s\n", name, err);
			return EXIT_FAIL;
		}
		if (m.type == MSG_REPLY && (m.seq == seq || m.seq == 0))
			break;
	}
	if (!m.ok) {
		fprintf(stderr, "ucgwctl: %s\n", m.error ? m.error : "the command failed");
		return EXIT_FAIL;
	}
	*out = m.body;
	return 0;
}

static void print_json(const msgpack_object *o)
{
	if (o)
		json_print(stdout, o);
	else
		fputs("{\"ok\":true}", stdout);
	fputc('\n', stdout);
}

static const char *s_of(const msgpack_object *map, const char *key, char *buf, size_t len)
{
	if (!obj_get_str(map, key, buf, len))
		snprintf(buf, len, "-");
	return buf;
}

static uint64_t u_of(const msgpack_object *map, const char *key)
{
	uint64_t v = 0;
	obj_get_u64(map, key, &v);
	return v;
}

static void fmt_ms(uint64_t ms, char *buf, size_t len)
{
	if (ms < 1000)
		snprintf(buf, len, "%" PRIu64 "ms", ms);
	else if (ms < 120000)
		snprintf(buf, len, "%.1fs", (double)ms / 1000);
	else if (ms < 7200000)
		snprintf(buf, len, "%" PRIu64 "m", ms / 60000);
	else
		snprintf(buf, len, "%" PRIu64 "h", ms / 3600000);
}

/* A worker with a list of servers (rest.base_url, mqtt.broker_url): a line
 * for each, with its state, round trip and counters. */
static void print_servers(const msgpack_object *w)
{
	const msgpack_object *list = obj_get(w, "servers");
	if (!list || list->type != MSGPACK_OBJECT_ARRAY || list->via.array.size < 2)
		return;
	for (uint32_t i = 0; i < list->via.array.size; i++) {
		const msgpack_object *s = &list->via.array.ptr[i];
		char url[256], detail[200];
		bool up = false, active = false, tried = true;
		obj_get_bool(s, "tried", &tried);
		obj_get_bool(s, "up", &up);
		obj_get_bool(s, "active", &active);
		obj_get_str(s, "detail", detail, sizeof detail);
		printf("%-10s   server %u %s: %s%s, rtt %.1fms, delivered %" PRIu64 ", failed %" PRIu64 ", down %" PRIu64
		       " times%s%s\n",
		       "", i + 1, s_of(s, "url", url, sizeof url), !tried ? "not tried yet" : up ? "up" : "down",
		       active ? " (in use)" : "",
		       (double)u_of(s, "rtt_us") / 1000, u_of(s, "delivered"), u_of(s, "failed"), u_of(s, "downs"),
		       up || !tried ? "" : ": ", up || !tried ? "" : detail);
	}
}

static void print_workers_table(const msgpack_object *arr)
{
	printf("%-10s %-9s %8s %4s %8s %9s %-9s %s\n", "WORKER", "STATE", "PID", "GEN", "RESTARTS", "UPTIME",
	       "SERVER", "LAST EXIT");
	for (uint32_t i = 0; arr && arr->type == MSGPACK_OBJECT_ARRAY && i < arr->via.array.size; i++) {
		const msgpack_object *w = &arr->via.array.ptr[i];
		char name[32], state[16], last[128], up[16];
		bool conn = false;
		obj_get_bool(w, "connected", &conn);
		fmt_ms(u_of(w, "uptime_ms"), up, sizeof up);
		uint64_t pid = u_of(w, "pid");
		char pids[16];
		snprintf(pids, sizeof pids, pid ? "%" PRIu64 : "-", pid);
		obj_get_str(w, "last_exit", last, sizeof last);
		printf("%-10s %-9s %8s %4" PRIu64 " %8" PRIu64 " %9s %-9s %s\n", s_of(w, "name", name, sizeof name),
		       s_of(w, "state", state, sizeof state), pids, u_of(w, "generation"), u_of(w, "restarts"),
		       pid ? up : "-", conn ? "up" : "down", last[0] ? last : "-");
		/* Why a server is down is what an operator looks for next: the worker's own words;
		 * and under one that is up, what the server limits it to (mqtt: "limited by the broker"). */
		char health[512];
		if (pid && obj_get_str(w, "health", health, sizeof health) && health[0] &&
		    (!conn || strstr(health, "limited by")))
			printf("%-10s   %s\n", "", health);
		if (pid)
			print_servers(w);
	}
}

static int cmd_simple(const char *name, const msgpack_sbuffer *args, const char *done)
{
	const msgpack_object *body;
	int rc = call(name, args, &body);
	if (rc)
		return rc;
	if (ctl.json)
		print_json(body);
	else if (done)
		printf("%s\n", done);
	return 0;
}

/* link: used of the budget, the forecast for the period's end, what the budget holds */
static void print_link(const msgpack_object *l)
{
	if (!l)
		return; /* an older ucgwd */
	static const char *const periods[] = { "day", "month" };
	for (int i = 0; i < 2; i++) {
		const msgpack_object *p = obj_get(l, periods[i]);
		uint64_t budget = u_of(p, "budget_bytes");
		printf("%s%-6s %" PRIu64 " bytes", i ? "          " : "link:     ", periods[i], u_of(p, "used_bytes"));
		if (budget) {
			const msgpack_object *pct = obj_get(p, "used_percent");
			printf(" of %" PRIu64 " (%.1f%%)", budget, pct && pct->type == MSGPACK_OBJECT_FLOAT64 ? pct->via.f64 : 0.0);
		}
		printf(", %" PRIu64 " at the period's end at the current rate%s\n", u_of(p, "projected_bytes"),
		       budget && u_of(p, "projected_bytes") > budget ? " (over the budget)" : "");
	}
	char pol[32], holding[16];
	uint64_t cap = u_of(l, "max_bytes_per_s");
	const msgpack_object *rate = obj_get(l, "rate_bytes_per_s");
	printf("          policy %s, ", s_of(l, "policy", pol, sizeof pol));
	if (obj_get_str(l, "holding", holding, sizeof holding))
		printf("the %s budget holds %" PRIu64 " messages (%" PRIu64 " bytes)", holding, u_of(l, "held"), u_of(l, "held_bytes"));
	else
		printf("holding nothing");
	printf("; %.0f bytes/s in the last minute", rate && rate->type == MSGPACK_OBJECT_FLOAT64 ? rate->via.f64 : 0.0);
	if (cap)
		printf(", cap %" PRIu64 " bytes/s", cap);
	printf("\n");
}

static int run_status(int argc, char **argv)
{
	const msgpack_object *b;
	int rc = call("status", NULL, &b);
	if (rc)
		return rc;
	if (ctl.json) {
		print_json(b);
		return 0;
	}
	char ver[32], dev[128], cfg[512], state[16], up[16];
	fmt_ms(u_of(b, "uptime_ms"), up, sizeof up);
	printf("ucgwd %s, pid %" PRIu64 ", %s for %s\n", s_of(b, "version", ver, sizeof ver), u_of(b, "pid"),
	       s_of(b, "state", state, sizeof state), up);
	printf("device:   %s\nconfig:   %s (reloaded %" PRIu64 " times)\n", s_of(b, "device_id", dev, sizeof dev),
	       s_of(b, "config", cfg, sizeof cfg), u_of(b, "reloads"));
	printf("in flight: %" PRIu64 " jobs\n", u_of(b, "inflight"));
	const msgpack_object *sp = obj_get(b, "spool");
	char age[16];
	fmt_ms(u_of(sp, "oldest_age_ms"), age, sizeof age);
	printf("spool:    %" PRIu64 " messages, %" PRIu64 " bytes, oldest %s, %" PRIu64 " waiting, %" PRIu64
	       " dead; %" PRIu64 " dropped, %" PRIu64 " expired, %" PRIu64 " refused (full)\n",
	       u_of(sp, "depth"), u_of(sp, "bytes"), u_of(sp, "depth") ? age : "-", u_of(sp, "waiting"), u_of(sp, "dead"),
	       u_of(sp, "dropped"), u_of(sp, "expired"), u_of(sp, "rejected_full"));
	const msgpack_object *net = obj_get(b, "network");
	for (uint32_t i = 0; net && net->type == MSGPACK_OBJECT_MAP && i < net->via.map.size; i++) {
		const msgpack_object *k = &net->via.map.ptr[i].key, *v = &net->via.map.ptr[i].val;
		char q[16], cool[160];
		const msgpack_object *rtt = obj_get(v, "rtt_ms"), *loss = obj_get(v, "loss");
		printf("%s%-10.*s %-9s rtt %7.2f ms  loss %3.0f%%%s%s\n", i ? "          " : "network:  ", (int)k->via.str.size,
		       k->via.str.ptr, s_of(v, "quality", q, sizeof q), rtt ? rtt->via.f64 : 0.0,
		       loss ? loss->via.f64 * 100 : 0.0, obj_get_str(v, "cooling", cool, sizeof cool) ? "  cooling down: " : "",
		       obj_get_str(v, "cooling", cool, sizeof cool) ? cool : "");
	}
	print_link(obj_get(b, "link"));
	printf("\n");
	print_workers_table(obj_get(b, "workers"));
	return 0;
}

static int run_workers(int argc, char **argv)
{
	const msgpack_object *b;
	int rc = call("workers", NULL, &b);
	if (rc)
		return rc;
	if (ctl.json)
		print_json(b);
	else
		print_workers_table(b);
	return 0;
}

static int named(const char *cmd, const char *name, const char *done)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1);
	pk_kv_str(&pk, "name", name);
	int rc = cmd_simple(cmd, &sb, done);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

static int run_restart(int argc, char **argv)
{
	char done[128];
	snprintf(done, sizeof done, "worker %s is restarting", argv[0]);
	return named("restart", argv[0], done);
}

static int run_pause(int argc, char **argv) { return named("pause", argv[0], "paused"); }
static int run_resume(int argc, char **argv) { return named("resume", argv[0], "resumed"); }

static int run_reload(int argc, char **argv) { return cmd_simple("reload", NULL, "configuration reloaded"); }
static int run_shutdown(int argc, char **argv) { return cmd_simple("shutdown", NULL, "ucgwd is shutting down"); }

/* ---- send / send-file ---- */

struct send_opts {
	const char *protocol, *priority, *topic, *endpoint, *remote_name, *format;
	bool wait, encrypt;
	long ttl;
};

static struct send_opts so = { .protocol = "auto", .priority = "normal", .format = "json", .ttl = -1 };

#define TTL_MAX 3153600000u /* a hundred years, in seconds */

/* The options of send and send-file; each command lists only its own. */
static int send_opt(int ch, const char *arg)
{
	uint64_t v;
	switch (ch) {
	case 'p': so.protocol = arg; break;
	case 'P': so.priority = arg; break;
	case 'T': so.topic = arg; break;
	case 'e': so.endpoint = arg; break;
	case 'r': so.remote_name = arg; break;
	case 'w': so.wait = true; break;
	case 'R': so.format = "raw"; break;
	case 'E': so.encrypt = true; break;
	case 'L':
		if (parse_uint(arg, TTL_MAX, &v) < 0) {
			fprintf(stderr, "ucgwctl: --ttl wants a number of seconds (0: never expires), not '%s'\n", arg);
			return EXIT_USAGE;
		}
		so.ttl = (long)v;
		break;
	}
	return 0;
}

static const struct option send_lo[] = {
	{ "protocol", required_argument, NULL, 'p' }, { "priority", required_argument, NULL, 'P' },
	{ "topic", required_argument, NULL, 'T' },    { "endpoint", required_argument, NULL, 'e' },
	{ "raw", no_argument, NULL, 'R' },            { "ttl", required_argument, NULL, 'L' },
	{ "encrypt", no_argument, NULL, 'E' },        { "wait", no_argument, NULL, 'w' },
	{ NULL, 0, NULL, 0 },
};

static const struct option send_file_lo[] = {
	{ "protocol", required_argument, NULL, 'p' }, { "priority", required_argument, NULL, 'P' },
	{ "remote-name", required_argument, NULL, 'r' }, { "ttl", required_argument, NULL, 'L' },
	{ "wait", no_argument, NULL, 'w' },           { "encrypt", no_argument, NULL, 'E' },
	{ NULL, 0, NULL, 0 },
};

static int send_file_opt(int ch, const char *arg)
{
	if (ch == 'E') {
		fprintf(stderr, "ucgwctl: send-file: --encrypt is for metadata (send); files are sent as they are\n");
		return EXIT_USAGE;
	}
	return send_opt(ch, arg);
}

static void pack_send_opts(msgpack_packer *pk, const struct send_opts *o, int extra)
{
	int n = 4 + extra + !!o->topic + !!o->endpoint + !!o->remote_name + (o->ttl >= 0);
	msgpack_pack_map(pk, (size_t)n);
	pk_kv_str(pk, "protocol", o->protocol);
	pk_kv_str(pk, "priority", o->priority);
	pk_kv_bool(pk, "wait", o->wait);
	pk_kv_bool(pk, "encrypt", o->encrypt);
	if (o->topic)
		pk_kv_str(pk, "topic", o->topic);
	if (o->endpoint)
		pk_kv_str(pk, "endpoint", o->endpoint);
	if (o->remote_name)
		pk_kv_str(pk, "remote_name", o->remote_name);
	if (o->ttl >= 0)
		pk_kv_u64(pk, "ttl_s", (uint64_t)o->ttl);
}

static char *read_all(int fd, size_t *len)
{
	size_t cap = 65536, n = 0;
	char *buf = xmalloc(cap);
	for (;;) {
		if (n == cap)
			buf = xrealloc(buf, cap *= 2);
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	*len = n;
	return buf;
}

/* Print the outcome of a waited send: a line for people, the object with --json. */
static int print_outcome(const msgpack_object *b)
{
	char status[16], id[40], proto[16], err[512];
	s_of(b, "status", status, sizeof status);
	if (ctl.json) {
		print_json(b);
	} else if (strcmp(status, "ok") == 0) {
		printf("%s delivered by %s after %" PRIu64 " attempt(s) in %" PRIu64 " ms\n", s_of(b, "id", id, sizeof id),
		       s_of(b, "protocol", proto, sizeof proto), u_of(b, "attempts"), u_of(b, "latency_ms"));
	} else {
		printf("%s failed: %s\n", s_of(b, "id", id, sizeof id), s_of(b, "error", err, sizeof err));
	}
	return strcmp(status, "ok") == 0 ? 0 : EXIT_FAIL;
}

static void show_progress(const msgpack_object *b, uint64_t t0_us)
{
	uint64_t done = u_of(b, "done"), size = u_of(b, "size");
	double dt = (double)(now_us() - t0_us) / 1e6;
	int width = 30, fill = size ? (int)((double)done * width / (double)size) : 0;
	fprintf(stderr, "\r[%.*s%*s] %6.1f/%.1f MB %6.1f MB/s", fill, "##############################", width - fill, "",
		(double)done / 1e6, (double)size / 1e6, dt > 0 ? (double)done / 1e6 / dt : 0.0);
}

/* Send a request; with --wait follow progress events until the outcome. */
static int send_and_report(const char *name, msgpack_sbuffer *args, int fd, bool wait)
{
	char err[512];
	int oc = conn_open(&ctl.conn, ctl.socket, err, sizeof err);
	if (oc < 0) {
		fprintf(stderr, "ucgwctl: %s\n", err);
		return oc == CONN_DENIED ? EXIT_DENIED : EXIT_DOWN;
	}
	uint64_t seq = conn_request_fd(&ctl.conn, name, args, fd);
	bool tty = isatty(2), drew = false;
	uint64_t t0_us = now_us();
	static struct msg m;
	for (;;) {
		if (conn_read(&ctl.conn, &m, wait ? -1 : ctl.timeout_ms, err, sizeof err) < 0) {
			fprintf(stderr, "ucgwctl: %s: %s\n", name, err);
			return EXIT_FAIL;
		}
		if (m.type == MSG_EVENT && m.seq == seq && tty && !ctl.json) {
			show_progress(m.body, t0_us);
			drew = true;
			continue;
		}
		if (m.type == MSG_REPLY && (m.seq == seq || m.seq == 0))
			break;
	}
	if (drew) /* end the progress bar's line; nothing when none was drawn */
		fputc('\n', stderr);
	if (!m.ok) {
		fprintf(stderr, "ucgwctl: %s\n", m.error ? m.error : "the command failed");
		return EXIT_FAIL;
	}
	if (wait)
		return print_outcome(m.body);
	char id[40];
	if (ctl.json)
		print_json(m.body);
	else
		printf("%s\n", s_of(m.body, "id", id, sizeof id));
	return 0;
}

static int run_send(int argc, char **argv)
{
	const struct send_opts o = so;
	const char *arg = argv[0];
	char *data;
	size_t len;
	if (strcmp(arg, "-") == 0 || arg[0] == '@') {
		int fd = strcmp(arg, "-") == 0 ? 0 : open(arg + 1, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "ucgwctl: cannot open %s: %s\n", arg + 1, strerror(errno));
			return EXIT_FAIL;
		}
		data = read_all(fd, &len);
		if (fd)
			close(fd);
	} else {
		data = xstrdup(arg);
		len = strlen(arg);
	}
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	pack_send_opts(&pk, &o, 2);
	pk_kv_str(&pk, "format", o.format);
	pk_key(&pk, "data");
	msgpack_pack_bin(&pk, len);
	msgpack_pack_bin_body(&pk, data, len);
	free(data);
	int rc = send_and_report("send", &sb, -1, o.wait);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

static int run_send_file(int argc, char **argv)
{
	const struct send_opts o = so;
	/* Open it here, with the caller's own rights, and pass the descriptor. */
	int fd = open(argv[0], O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	struct stat st;
	if (fd < 0) {
		fprintf(stderr, "ucgwctl: cannot open %s: %s\n", argv[0], strerror(errno));
		return EXIT_FAIL;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		fprintf(stderr, "ucgwctl: %s is not a regular file\n", argv[0]);
		close(fd);
		return EXIT_FAIL;
	}
	char *abs = realpath(argv[0], NULL);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	pack_send_opts(&pk, &o, 2);
	pk_kv_str(&pk, "path", abs ? abs : argv[0]);
	pk_kv_bool(&pk, "fd", true);
	free(abs);
	int rc = send_and_report("send-file", &sb, fd, o.wait);
	close(fd);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

/* ---- queue, stats, trace ---- */

static int args_call(const char *name, int nkv, const char *const *kv, const msgpack_object **out)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, (size_t)nkv);
	for (int i = 0; i < nkv; i++)
		pk_kv_str(&pk, kv[2 * i], kv[2 * i + 1]);
	int rc = call(name, &sb, out);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

static void print_queue(const msgpack_object *arr, bool dead)
{
	if (!arr || arr->type != MSGPACK_OBJECT_ARRAY || arr->via.array.size == 0) {
		printf("%s\n", dead ? "(no dead letters)" : "(the spool is empty)");
		return;
	}
	printf("%-26s %-4s %-8s %-10s %-6s %4s %8s %8s  %s\n", "ID", "KIND", "STATE", "PROTOCOL", "PRIO", "TRY",
	       "AGE", "NEXT", "LAST ERROR");
	for (uint32_t i = 0; i < arr->via.array.size; i++) {
		const msgpack_object *m = &arr->via.array.ptr[i];
		char id[40], kind[8], state[12], proto[16], prio[8], err[200], age[16], next[16];
		fmt_ms(u_of(m, "age_ms"), age, sizeof age);
		fmt_ms(u_of(m, "next_try_ms"), next, sizeof next);
		printf("%-26s %-4s %-8s %-10s %-6s %4" PRIu64 " %8s %8s  %s\n", s_of(m, "id", id, sizeof id),
		       s_of(m, "kind", kind, sizeof kind), s_of(m, "state", state, sizeof state),
		       s_of(m, "protocol", proto, sizeof proto), s_of(m, "priority", prio, sizeof prio),
		       u_of(m, "attempts"), age, u_of(m, "next_try_ms") ? next : "-", s_of(m, "last_error", err, sizeof err));
	}
}

static uint64_t queue_limit = QUEUE_LIMIT_DEFAULT;
static bool queue_limit_given;

static int queue_opt(int ch, const char *arg)
{
	if (strcmp(arg, "all") == 0) {
		queue_limit = UINT64_MAX;
	} else if (parse_uint(arg, UINT64_MAX, &queue_limit) < 0 || queue_limit == 0) {
		fprintf(stderr, "ucgwctl: queue: --limit wants a number of messages (1 or more) or all, not '%s'\n", arg);
		return EXIT_USAGE;
	}
	queue_limit_given = true;
	return 0;
}

static const struct option queue_lo[] = { { "limit", required_argument, NULL, 'n' }, { NULL, 0, NULL, 0 } };

static int run_queue(int argc, char **argv)
{
	const char *action = argc ? argv[0] : "list";
	bool dead = strcmp(action, "dead") == 0, listing = dead || strcmp(action, "list") == 0;
	bool takes_all = strcmp(action, "retry") == 0 || strcmp(action, "requeue") == 0;
	if (!listing && !takes_all && strcmp(action, "purge") != 0) {
		fprintf(stderr, "ucgwctl: queue: unknown action '%s' (valid: " QUEUE_ACTIONS ")\n", action);
		return EXIT_USAGE;
	}
	if (listing && argc > 1) {
		fprintf(stderr, "ucgwctl: queue %s takes no id (to see one message: ucgwctl trace ID)\n", action);
		return EXIT_USAGE;
	}
	if (!listing && argc != 2) {
		fprintf(stderr, "ucgwctl: queue %s: which message? give its id%s\n", action, takes_all ? ", or all" : "");
		return EXIT_USAGE;
	}
	if (!listing && queue_limit_given) {
		fprintf(stderr, "ucgwctl: queue %s: --limit is for list and dead\n", action);
		return EXIT_USAGE;
	}
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	pk_kv_str(&pk, "action", action);
	if (listing)
		pk_kv_u64(&pk, "limit", queue_limit);
	else
		pk_kv_str(&pk, "id", argv[1]);
	const msgpack_object *b;
	int rc = call("queue", &sb, &b);
	msgpack_sbuffer_destroy(&sb);
	if (rc)
		return rc;
	if (!listing) {
		const msgpack_object *n = obj_get(b, strcmp(action, "retry") == 0 ? "retried" : "requeued");
		if (ctl.json)
			print_json(b);
		else if (n && n->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
			printf("queue %s %s: %" PRIu64 " message%s %s\n", action, argv[1], n->via.u64,
			       n->via.u64 == 1 ? "" : "s", strcmp(action, "retry") == 0 ? "retried" : "requeued");
		else
			printf("queue %s %s: done\n", action, argv[1]);
		return 0;
	}
	uint64_t shown = b && b->type == MSGPACK_OBJECT_ARRAY ? b->via.array.size : 0;
	if (ctl.json)
		print_json(b);
	else
		print_queue(b, dead);
	if (shown < queue_limit)
		return 0;
	/* Stopped at the limit: say how many more there are (the reply is only the list). */
	if (call("status", NULL, &b) != 0)
		return EXIT_FAIL;
	uint64_t total = u_of(obj_get(b, "spool"), dead ? "dead" : "depth");
	if (total <= shown)
		return 0;
	if (ctl.json)
		fprintf(stderr, "ucgwctl: queue: %" PRIu64 " of %" PRIu64 " messages listed (ucgwctl queue%s --limit %" PRIu64
				")\n", shown, total, dead ? " dead" : "", total);
	else
		printf("... and %" PRIu64 " more (ucgwctl queue%s --limit %" PRIu64 ")\n", total - shown,
		       dead ? " dead" : "", total);
	return 0;
}

static int run_stats(int argc, char **argv)
{
	const msgpack_object *b;
	int rc = call("stats", NULL, &b);
	if (rc)
		return rc;
	if (ctl.json) {
		print_json(b);
		return 0;
	}
	printf("%-10s %9s %8s %8s %6s %6s %10s %8s %8s %8s %8s %7s %7s %5s %5s %7s %7s %6s\n", "PROTOCOL", "SUCCESS",
	       "FAILURE", "RETRIES", "FB-OUT", "FB-IN", "BYTES", "P50ms", "P90ms", "P99ms", "MAXms", "DROPPED", "EXPIRED",
	       "DEAD", "QUEUE", "TOOK", "RATE/s", "WINDOW");
	for (uint32_t i = 0; b && b->type == MSGPACK_OBJECT_MAP && i < b->via.map.size; i++) {
		const msgpack_object *k = &b->via.map.ptr[i].key, *v = &b->via.map.ptr[i].val;
		bool en = false;
		obj_get_bool(v, "enabled", &en);
		if (!en)
			continue;
		/* No latency measured yet: '-', not a 0.00 that reads as instant. Older daemons
		 * have no samples count: then one success means there is a sample. */
		bool sampled = obj_get(v, "samples") ? u_of(v, "samples") > 0 : u_of(v, "success") > 0;
		char lat[4][16];
		const char *keys[4] = { "p50_ms", "p90_ms", "p99_ms", "max_ms" };
		for (int j = 0; j < 4; j++) {
			const msgpack_object *q = obj_get(v, keys[j]);
			if (sampled && q && q->type == MSGPACK_OBJECT_FLOAT64)
				snprintf(lat[j], sizeof lat[j], "%.2f", q->via.f64);
			else
				strcpy(lat[j], "-");
		}
		printf("%-10.*s %9" PRIu64 " %8" PRIu64 " %8" PRIu64 " %6" PRIu64 " %6" PRIu64 " %10" PRIu64
		       " %8s %8s %8s %8s %7" PRIu64 " %7" PRIu64 " %5" PRIu64 " %5" PRIu64 " %7" PRIu64 " %7.1f %6" PRIu64 "\n",
		       (int)k->via.str.size, k->via.str.ptr, u_of(v, "success"), u_of(v, "failure"), u_of(v, "retries"),
		       u_of(v, "fallback_out"), u_of(v, "fallback_in"), u_of(v, "bytes"), lat[0], lat[1], lat[2], lat[3],
		       u_of(v, "dropped"), u_of(v, "expired"), u_of(v, "dead"), u_of(v, "queued"), u_of(v, "stolen"),
		       obj_get(v, "rate") ? obj_get(v, "rate")->via.f64 : 0, u_of(v, "window"));
		print_servers(v);
	}
	return 0;
}

static int run_trace(int argc, char **argv)
{
	const msgpack_object *b;
	const char *kv[] = { "id", argv[0] };
	int rc = args_call("trace", 1, kv, &b);
	if (rc)
		return rc;
	if (ctl.json) {
		print_json(b);
		return 0;
	}
	const msgpack_object *m = obj_get(b, "message"), *route = obj_get(b, "route");
	char id[40], state[16], req[16], err[200], order[16];
	bool corrected = false, rebased = false;
	obj_get_bool(m, "clock_corrected", &corrected);
	obj_get_bool(m, "expiry_rebased", &rebased);
	printf("%s: %s, asked for %s, %" PRIu64 " bytes", s_of(m, "id", id, sizeof id), s_of(m, "state", state, sizeof state),
	       s_of(b, "requested", req, sizeof req), u_of(m, "size"));
	if (obj_get(m, "order")) /* an older ucgwd says neither */
		printf(", %s%s%s", s_of(m, "order", order, sizeof order), corrected ? ", time corrected after the clock was set" : "",
		       rebased ? ", stamped before the clock was set in an earlier boot: expiry counted from its read-back" : "");
	printf("\n");
	for (uint32_t i = 0; route && i < route->via.array.size; i++) {
		const msgpack_object *h = &route->via.array.ptr[i];
		char proto[16], res[16];
		printf("  %u. %-10s %-9s %6" PRIu64 " ms  %s\n", i + 1, s_of(h, "protocol", proto, sizeof proto),
		       s_of(h, "result", res, sizeof res), u_of(h, "ms"), s_of(h, "error", err, sizeof err));
	}
	if (strcmp(state, "waiting") == 0 && obj_get_str(m, "last_error", err, sizeof err))
		printf("  waits: %s\n", err); /* why: a backoff, or held for the link's byte budget */
	return 0;
}

/* ---- decrypt / encrypt: local, no daemon needed ---- */

/* --key-file F (default $UCGW_KEY_FILE) and one argument: the text, or "-" for stdin. */
static const char *key_file;

static int key_file_opt(int ch, const char *arg)
{
	key_file = arg;
	return 0;
}

static const struct option crypt_lo[] = { { "key-file", required_argument, NULL, 'k' }, { NULL, 0, NULL, 0 } };

static int crypt_args(int argc, char **argv, const char *cmd, unsigned char key[CRYPTO_KEY_LEN], char **data,
		      size_t *len)
{
	const char *file = key_file ? key_file : getenv("UCGW_KEY_FILE");
	if (!file) {
		fprintf(stderr, "ucgwctl: %s: which key? give --key-file FILE (or set UCGW_KEY_FILE)\n", cmd);
		return EXIT_USAGE;
	}
	char err[512];
	if (crypto_key_load(file, key, err, sizeof err) < 0) {
		fprintf(stderr, "ucgwctl: %s: %s\n", cmd, err);
		return EXIT_FAIL;
	}
	const char *arg = argv[0];
	if (strcmp(arg, "-") == 0) {
		*data = read_all(0, len);
	} else {
		*data = xstrdup(arg);
		*len = strlen(arg);
	}
	return 0;
}

static int run_decrypt(int argc, char **argv)
{
	unsigned char key[CRYPTO_KEY_LEN];
	char *text, err[512];
	size_t len, n;
	int rc = crypt_args(argc, argv, "decrypt", key, &text, &len);
	if (rc)
		return rc;
	while (len && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
		len--; /* as pasted or piped */
	unsigned char *pt = crypto_decrypt_b64(key, text, len, &n, err, sizeof err);
	crypto_wipe(key, sizeof key);
	free(text);
	if (!pt) {
		fprintf(stderr, "ucgwctl: decrypt: %s\n", err);
		return EXIT_FAIL;
	}
	fwrite(pt, 1, n, stdout);
	if (isatty(1) && (n == 0 || pt[n - 1] != '\n'))
		fputc('\n', stdout);
	crypto_wipe(pt, n);
	free(pt);
	return 0;
}

/* Hidden: the gateway's own encryption, for the interoperability tests. */
static int run_encrypt(int argc, char **argv)
{
	unsigned char key[CRYPTO_KEY_LEN];
	char *data, err[512];
	size_t len;
	int rc = crypt_args(argc, argv, "encrypt", key, &data, &len);
	if (rc)
		return rc;
	char *out = crypto_encrypt_b64(key, data, len, err, sizeof err);
	crypto_wipe(key, sizeof key);
	free(data);
	if (!out) {
		fprintf(stderr, "ucgwctl: encrypt: %s\n", err);
		return EXIT_FAIL;
	}
	printf("%s\n", out);
	free(out);
	return 0;
}

/* --api-key-file: the key goes out through UCGW_API_KEY, which conn.c reads for
 * every request; the file must be private, as the daemon's own secret files. */
static int use_api_key_file(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		fprintf(stderr, "ucgwctl: cannot read API key file %s: %s\n", path,
			fd < 0 ? strerror(errno) : "not a regular file");
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (st.st_mode & 077) {
		fprintf(stderr, "ucgwctl: API key file %s is readable or writable by group or others (mode %04o); "
				"chmod 600 it\n", path, (unsigned)(st.st_mode & 07777));
		close(fd);
		return -1;
	}
	char buf[4097];
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
		n--;
	int rc = 0;
	if (n <= 0 || n == (ssize_t)sizeof buf - 1 || memchr(buf, '\0', (size_t)n) || memchr(buf, '\n', (size_t)n)) {
		fprintf(stderr, "ucgwctl: API key file %s must hold one key on one line\n", path);
		rc = -1;
	} else {
		buf[n] = '\0';
		setenv("UCGW_API_KEY", buf, 1);
		unsetenv("UCGW_JWT"); /* the command line wins over the environment */
	}
	crypto_wipe(buf, sizeof buf);
	return rc;
}

static const struct command commands[] = {
	{ .name = "status", .args = "", .summary = "the daemon, the spool, the network and the workers",
	  .about = "The daemon (version, pid, uptime, configuration file, reloads), the jobs in flight, the spool\n"
		   "(messages, bytes, oldest, waiting, dead; dropped, expired and refused since the start), each\n"
		   "server's network quality, round trip, loss and cool-down, and the workers as `workers` shows them.",
	  .run = run_status },
	{ .name = "workers", .args = "", .summary = "the process table",
	  .about = "One line per worker: name, state (starting, ready, backoff, failed, stopped), pid, generation,\n"
		   "restarts, uptime, whether its server is reachable, and how it last exited; under a worker\n"
		   "whose server is down, the worker's health: why; under one that is up, what the server limits\n"
		   "it to, when that is what binds (mqtt: the broker's Receive Maximum).",
	  .run = run_workers },
	{ .name = "restart", .args = "NAME", .summary = "restart a worker (also one marked failed)",
	  .about = "Restart worker NAME ({protocols}), also one marked failed after too\n"
		   "many deaths. The jobs it holds are tried again.",
	  .min_args = 1, .max_args = 1, .run = run_restart },
	{ .name = "pause", .args = "PROTOCOL", .summary = "stop handing jobs to a protocol (they go elsewhere or wait)",
	  .about = "Stop handing jobs to PROTOCOL: the messages queued for it move on along their fallback chain,\n"
		   "or wait. `ucgwctl resume PROTOCOL` undoes it.",
	  .min_args = 1, .max_args = 1, .run = run_pause },
	{ .name = "resume", .args = "PROTOCOL", .summary = "hand jobs to a paused protocol again",
	  .about = "Hand jobs to a paused PROTOCOL again; the messages waiting for it go out now.",
	  .min_args = 1, .max_args = 1, .run = run_resume },
	{ .name = "reload", .args = "", .summary = "re-read the configuration (like SIGHUP)",
	  .about = "Re-read the configuration file, like SIGHUP. Only the workers whose section changed restart.\n"
		   "A file that does not load is refused, the old configuration stays, and this says why.",
	  .run = run_reload },
	{ .name = "shutdown", .args = "", .summary = "stop the daemon after the work in flight",
	  .about = "Stop ucgwd as SIGTERM does: it lets the jobs in flight finish (up to\n"
		   "gateway.shutdown_timeout_ms) and exits; what was not delivered stays in the spool.",
	  .run = run_shutdown },
	{ .name = "send", .args = "[OPTIONS] DATA|@FILE|-", .summary = "send metadata (JSON); prints its id, or the outcome with --wait",
	  .about = "Send one metadata message: DATA as given, @FILE the contents of FILE, - standard input.\n"
		   "Prints the message's id once ucgwd has it in the spool, or with --wait the outcome.\n"
		   "A DATA that starts with '-' goes after --.",
	  .opts = send_lo, .shorts = "p:P:T:e:RL:Ew",
	  .opts_help = "  -p, --protocol NAME     auto (default: chosen by protocol_selection), {meta};\n"
		       "                          if it fails, the next protocols of its fallback chain are tried\n"
		       "  -P, --priority PRIO     high, normal (default) or low\n"
		       "  -T, --topic TOPIC       MQTT topic for this message (default mqtt.topic; {device_id} is\n"
		       "                          replaced; no wildcards)\n"
		       "  -e, --endpoint PATH     REST path for this message, after rest.base_url (default rest.endpoint)\n"
		       "  -R, --raw               do not check DATA as JSON (REST and MQTT carry it as it is; the\n"
		       "                          WebSocket envelope puts it in its JSON as it is)\n"
		       "  -L, --ttl SECONDS       give it up when not delivered within this long (0: never;\n"
		       "                          default spool.ttl_s)\n"
		       "  -E, --encrypt           encrypt the payload (AES-256-GCM with security.encryption_key_file)\n"
		       "  -w, --wait              wait until it is delivered or given up (dead letter, expired, purged)\n"
		       "                          and print the outcome; exit status 1 if it was not delivered\n",
	  .opt = send_opt, .min_args = 1, .max_args = 1, .run = run_send },
	{ .name = "send-file", .args = "[OPTIONS] PATH", .summary = "send a file ({files}); --wait shows progress",
	  .about = "Send the file PATH. ucgwctl opens it with your rights and hands ucgwd the open file; once its\n"
		   "id is printed the file is in the spool, and PATH may be deleted. Files are sent as they are\n"
		   "(--encrypt is for send only).",
	  .opts = send_file_lo, .shorts = "p:P:r:L:w",
	  .opts_help = "  -p, --protocol NAME     auto (default: chosen by protocol_selection), {files};\n"
		       "                          if it fails, the next protocols of its fallback chain are tried\n"
		       "  -P, --priority PRIO     high, normal (default) or low\n"
		       "  -r, --remote-name NAME  its name on the server (default: PATH's file name)\n"
		       "  -L, --ttl SECONDS       give it up when not delivered within this long (0: never;\n"
		       "                          default spool.ttl_s)\n"
		       "  -w, --wait              wait until it is delivered or given up and print the outcome (on a\n"
		       "                          terminal, a progress bar); exit status 1 if it was not delivered\n",
	  .opt = send_file_opt, .min_args = 1, .max_args = 1, .run = run_send_file },
	{ .name = "queue", .args = "[OPTIONS] [list | dead | retry ID|all | purge ID | requeue ID|all]",
	  .summary = "the messages waiting in the spool, and what to do with them",
	  .about = "  list (the default)  every message in the spool: id, kind, state, protocol, priority,\n"
		   "                      attempts, age, time to its next try, last error\n"
		   "  dead                the dead letters only\n"
		   "  retry ID|all        a waiting message (or every one) goes out now, not when its backoff ends\n"
		   "  purge ID            drop a message that is not in flight (logged)\n"
		   "  requeue ID|all      a dead letter (or every one) back on its way, from a fresh backoff",
	  .opts = queue_lo, .shorts = "n:",
	  .opts_help = "  -n, --limit N|all       list at most N messages (default 1000); a last line says how many\n"
		       "                          more there are\n",
	  .opt = queue_opt, .max_args = 2, .run = run_queue },
	{ .name = "stats", .args = "", .summary = "per-protocol counters and latency",
	  .about = "Per enabled protocol, since ucgwd started: deliveries (SUCCESS), permanent failures (FAILURE),\n"
		   "failures to try again (RETRIES), messages passed on to the next protocol of their chain (FB-OUT)\n"
		   "or taken over from another (FB-IN), bytes delivered, latency from hand-over to the server's\n"
		   "acknowledgement (P50, P90, P99, MAX), messages dropped from a full spool (DROPPED), given up\n"
		   "when their time to live passed (EXPIRED) and dead-lettered (DEAD), each counted against the\n"
		   "protocol it last tried or waited for, the messages queued for it now (QUEUE), the queued\n"
		   "messages it took over from busier protocols of their chain (TOOK: how much of a backlog it\n"
		   "drained) and its deliveries per second (RATE/s, a moving average).",
	  .run = run_stats },
	{ .name = "trace", .args = "ID", .summary = "the route a message has taken",
	  .about = "The message ID (in the spool, or among the last 256 finished) and its route: the protocol,\n"
		   "result, duration and error of each attempt (--json: also its latest changes of state).",
	  .min_args = 1, .max_args = 1, .run = run_trace },
	{ .name = "decrypt", .args = "[--key-file FILE] PAYLOAD|-", .summary = "print the plaintext of an encrypted payload (AES-256-GCM)",
	  .about = "Print the plaintext of a payload that ucgw encrypted (base64 of nonce, tag and ciphertext),\n"
		   "given as PAYLOAD or on standard input (-). Runs here: needs no daemon.",
	  .opts = crypt_lo, .shorts = "k:",
	  .opts_help = "  -k, --key-file FILE     the key (32 bytes raw, hex or base64; mode 0600), as in\n"
		       "                          security.encryption_key_file (default $UCGW_KEY_FILE)\n",
	  .opt = key_file_opt, .min_args = 1, .max_args = 1, .local = true, .run = run_decrypt },
	{ .name = "encrypt", .args = "[--key-file FILE] DATA|-", .summary = "encrypt as ucgw does (for tests)",
	  .about = "Encrypt DATA (or standard input) as ucgw encrypts payloads; prints base64. For tests.",
	  .opts = crypt_lo, .shorts = "k:",
	  .opts_help = "  -k, --key-file FILE     the key (default $UCGW_KEY_FILE)\n",
	  .opt = key_file_opt, .min_args = 1, .max_args = 1, .local = true, .hidden = true, .run = run_encrypt },
	{ .name = NULL },
};

/* The command's own options, and --json and --help, anywhere among its
 * arguments (until --); the arguments left are moved to the end of argv.
 * Returns -1 to go on with argv[*first..argc-1], else the exit status. */
static int parse_command(const struct command *c, int argc, char **argv, int *first)
{
	struct option lo[16];
	int n = 0;
	for (const struct option *o = c->opts; o && o->name && n < 13; o++)
		lo[n++] = *o;
	lo[n++] = (struct option){ "json", no_argument, NULL, 'j' };
	lo[n++] = (struct option){ "help", no_argument, NULL, 'h' };
	lo[n] = (struct option){ NULL, 0, NULL, 0 };
	char shorts[64];
	snprintf(shorts, sizeof shorts, ":%sjh", c->shorts ? c->shorts : "");
	optind = 0; /* start afresh: argv[0] is the command's name */
	opterr = 0;
	int ch;
	while ((ch = getopt_long(argc, argv, shorts, lo, NULL)) != -1) {
		const char *bad = argv[optind - 1];
		switch (ch) {
		case 'h':
			command_usage(c);
			return 0;
		case 'j':
			if (c->local) {
				fprintf(stderr, "ucgwctl: %s runs without ucgwd and has no --json output\n", c->name);
				return EXIT_USAGE;
			}
			ctl.json = true;
			break;
		case ':':
			for (const struct option *o = lo; o->name; o++)
				if (o->val == optopt) {
					fprintf(stderr, "ucgwctl: %s: --%s needs a value (ucgwctl %s --help)\n", c->name, o->name,
						c->name);
					return EXIT_USAGE;
				}
			fprintf(stderr, "ucgwctl: %s: '%s' needs a value (ucgwctl %s --help)\n", c->name, bad, c->name);
			return EXIT_USAGE;
		case '?':
			if (optopt && strncmp(bad, "--", 2) == 0 && strchr(bad, '='))
				fprintf(stderr, "ucgwctl: %s: %.*s takes no value (ucgwctl %s --help)\n", c->name,
					(int)(strchr(bad, '=') - bad), bad, c->name);
			else if (optopt)
				fprintf(stderr, "ucgwctl: %s: unknown option '-%c' (ucgwctl %s --help)\n", c->name, optopt,
					c->name);
			else
				fprintf(stderr, "ucgwctl: %s: unknown option '%s' (ucgwctl %s --help)\n", c->name, bad,
					c->name);
			return EXIT_USAGE;
		default: {
			int rc = c->opt ? c->opt(ch, optarg) : EXIT_USAGE;
			if (rc)
				return rc;
		}
		}
	}
	*first = optind;
	return -1;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' }, { "json", no_argument, NULL, 'j' },
		{ "timeout", required_argument, NULL, 't' }, { "help", no_argument, NULL, 'h' },
		{ "api-key-file", required_argument, NULL, 'K' }, { "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	log_init("ucgwctl", LOG_LVL_WARN);
	ctl.socket = getenv("UCGW_SOCKET") ? getenv("UCGW_SOCKET") : "/run/ucgw/control.sock";
	int ch;
	uint64_t v;
	opterr = 0;
	/* "+": stop at the command, so its own options are left to it */
	while ((ch = getopt_long(argc, argv, "+:s:jt:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 's': ctl.socket = optarg; break;
		case 'j': ctl.json = true; break;
		case 't':
			if (parse_uint(optarg, INT_MAX, &v) < 0 || v == 0) {
				fprintf(stderr, "ucgwctl: --timeout wants a number of milliseconds (1 or more), not '%s'\n",
					optarg);
				return EXIT_USAGE;
			}
			ctl.timeout_ms = (int)v;
			break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("ucgwctl %s (control protocol %d)\n", UCGW_VERSION, UCGW_CTL_VERSION); return 0;
		case 'K':
			if (use_api_key_file(optarg) < 0)
				return EXIT_USAGE;
			break;
		case ':':
			fprintf(stderr, "ucgwctl: %s needs a value (try ucgwctl --help)\n", argv[optind - 1]);
			return EXIT_USAGE;
		default:
			if (optopt)
				fprintf(stderr, "ucgwctl: unknown option '-%c' (try ucgwctl --help)\n", optopt);
			else
				fprintf(stderr, "ucgwctl: unknown option '%s' (try ucgwctl --help)\n", argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "ucgwctl: which command? (try ucgwctl --help)\n");
		return EXIT_USAGE;
	}
	int at = optind; /* the command's name; getopt's optind is the command's own from here on */
	const char *name = argv[at];
	for (const struct command *c = commands; c->name; c++) {
		if (strcmp(c->name, name) != 0)
			continue;
		int first, rc = parse_command(c, argc - at, argv + at, &first);
		if (rc >= 0)
			return rc;
		if (c->local && ctl.json) {
			fprintf(stderr, "ucgwctl: %s runs without ucgwd and has no --json output\n", c->name);
			return EXIT_USAGE;
		}
		char **args = argv + at + first;
		int nargs = argc - at - first;
		if (nargs < c->min_args || (c->max_args >= 0 && nargs > c->max_args)) {
			if (nargs < c->min_args)
				fprintf(stderr, "ucgwctl: %s: missing argument (usage: ucgwctl %s %s)\n", c->name, c->name,
					c->args);
			else
				fprintf(stderr, "ucgwctl: %s: unexpected argument '%s' (usage: ucgwctl %s%s%s)\n", c->name,
					args[c->max_args], c->name, c->args[0] ? " " : "", c->args);
			return EXIT_USAGE;
		}
		rc = c->run(nargs, args);
		if (ctl.conn.fd > 0)
			conn_close(&ctl.conn);
		return rc;
	}
	fprintf(stderr, "ucgwctl: unknown command '%s' (try ucgwctl --help)\n", name);
	return EXIT_USAGE;
}
