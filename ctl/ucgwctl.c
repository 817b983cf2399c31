/* ucgwctl: the operator's command line for ucgwd. A table of commands; each
 * builds its request, and prints the reply for people or, with --json, as JSON. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/crypto.h"
#include "common/log.h"
#include "ctl/conn.h"
#include "ctl/json.h"

#define EXIT_FAIL 1   /* the command failed */
#define EXIT_USAGE 2  /* bad command line */
#define EXIT_DOWN 3   /* ucgwd is not running */

static struct {
	const char *socket;
	bool json;
	int timeout_ms;
	struct conn conn;
} ctl = { .timeout_ms = 30000 };

struct command {
	const char *name, *args, *help;
	int min_args, max_args;
	int (*run)(int argc, char **argv);
};

static const struct command commands[];

static void usage(FILE *out)
{
	fprintf(out, "usage: ucgwctl [-s SOCKET] [--json] [-t MS] COMMAND [ARGS]\n\n"
		     "Talks to ucgwd over its control socket (default $UCGW_SOCKET or /run/ucgw/control.sock).\n\n"
		     "commands:\n");
	for (const struct command *c = commands; c->name; c++) {
		if (!c->help) /* hidden: for tests */
			continue;
		char head[64];
		snprintf(head, sizeof head, "%s %s", c->name, c->args);
		fprintf(out, "  %-28s %s\n", head, c->help);
	}
	fprintf(out, "\noptions:\n"
		     "  -s, --socket PATH   control socket of the daemon\n"
		     "  -j, --json          print the daemon's answer as JSON\n"
		     "  -t, --timeout MS    how long to wait for an answer (default 30000)\n"
		     "  --api-key-file FILE send the API key in FILE (mode 0600) with every request\n"
		     "  -h, --help          this text\n"
		     "\nenvironment: UCGW_SOCKET; UCGW_JWT or UCGW_API_KEY, the credential sent when\n"
		     "security.require_auth is on; UCGW_KEY_FILE, the key decrypt uses by default\n"
		     "\nexit status: 0 done, 1 the command failed, 2 bad usage, 3 ucgwd not running\n");
}

/* Send one request and wait for its reply. Returns the exit status; on success
 * *out points at the reply's body (valid until the next read). */
static int call(const char *name, const msgpack_sbuffer *args, const msgpack_object **out)
{
	char err[512];
	if (ctl.conn.fd <= 0 && conn_open(&ctl.conn, ctl.socket, err, sizeof err) < 0) {
		fprintf(stderr, "ucgwctl: %s\n", err);
		return EXIT_DOWN;
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

static int parse_send_opts(int *argc, char ***argv, struct send_opts *o, bool files)
{
	static const struct option lo[] = {
		{ "protocol", required_argument, NULL, 'p' }, { "priority", required_argument, NULL, 'P' },
		{ "topic", required_argument, NULL, 'T' },    { "endpoint", required_argument, NULL, 'e' },
		{ "remote-name", required_argument, NULL, 'r' }, { "wait", no_argument, NULL, 'w' },
		{ "raw", no_argument, NULL, 'R' },            { "ttl", required_argument, NULL, 'L' },
		{ "encrypt", no_argument, NULL, 'E' },        { NULL, 0, NULL, 0 },
	};
	memset(o, 0, sizeof *o);
	o->protocol = "auto";
	o->priority = "normal";
	o->format = "json";
	o->ttl = -1;
	int ch;
	optind = 0;
	while ((ch = getopt_long(*argc, *argv, "+p:P:T:e:r:wRL:E", lo, NULL)) != -1) {
		switch (ch) {
		case 'p': o->protocol = optarg; break;
		case 'P': o->priority = optarg; break;
		case 'T': o->topic = optarg; break;
		case 'e': o->endpoint = optarg; break;
		case 'r': o->remote_name = optarg; break;
		case 'w': o->wait = true; break;
		case 'R': o->format = "raw"; break;
		case 'L': o->ttl = atol(optarg); break;
		case 'E': o->encrypt = true; break;
		default: return -1;
		}
	}
	if ((files && (o->topic || o->endpoint)) || (!files && o->remote_name)) {
		fprintf(stderr, "ucgwctl: %s does not take that option\n", files ? "send-file" : "send");
		return -1;
	}
	*argc -= optind;
	*argv += optind;
	return 0;
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

static void show_progress(const msgpack_object *b, double t0)
{
	uint64_t done = u_of(b, "done"), size = u_of(b, "size");
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	double dt = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 - t0;
	int width = 30, fill = size ? (int)((double)done * width / (double)size) : 0;
	fprintf(stderr, "\r[%.*s%*s] %6.1f/%.1f MB %6.1f MB/s", fill, "##############################", width - fill, "",
		(double)done / 1e6, (double)size / 1e6, dt > 0 ? (double)done / 1e6 / dt : 0.0);
}

/* Send a request; with --wait follow progress events until the outcome. */
static int send_and_report(const char *name, msgpack_sbuffer *args, int fd, bool wait)
{
	char err[512];
	if (conn_open(&ctl.conn, ctl.socket, err, sizeof err) < 0) {
		fprintf(stderr, "ucgwctl: %s\n", err);
		return EXIT_DOWN;
	}
	uint64_t seq = conn_request_fd(&ctl.conn, name, args, fd);
	bool tty = isatty(2);
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	double t0 = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	static struct msg m;
	for (;;) {
		if (conn_read(&ctl.conn, &m, wait ? -1 : ctl.timeout_ms, err, sizeof err) < 0) {
			fprintf(stderr, "ucgwctl: %s: %s\n", name, err);
			return EXIT_FAIL;
		}
		if (m.type == MSG_EVENT && m.seq == seq && tty && !ctl.json) {
			show_progress(m.body, t0);
			continue;
		}
		if (m.type == MSG_REPLY && (m.seq == seq || m.seq == 0))
			break;
	}
	if (tty && wait && !ctl.json)
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
	struct send_opts o;
	argc++, argv--; /* getopt wants argv[0] */
	if (parse_send_opts(&argc, &argv, &o, false) < 0 || argc != 1) {
		fprintf(stderr, "ucgwctl: usage: ucgwctl send [--protocol P] [--priority P] [--topic T] [--endpoint PATH] "
				"[--raw] [--ttl S] [--wait] DATA|@FILE|-\n");
		return EXIT_USAGE;
	}
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
	struct send_opts o;
	argc++, argv--;
	if (parse_send_opts(&argc, &argv, &o, true) < 0 || argc != 1) {
		fprintf(stderr, "ucgwctl: usage: ucgwctl send-file [--protocol auto|sftp|rsync] [--priority P] "
				"[--remote-name NAME] [--wait] PATH\n");
		return EXIT_USAGE;
	}
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

static void print_queue(const msgpack_object *arr)
{
	printf("%-26s %-4s %-8s %-10s %-6s %4s %8s %8s  %s\n", "ID", "KIND", "STATE", "PROTOCOL", "PRIO", "TRY",
	       "AGE", "NEXT", "LAST ERROR");
	for (uint32_t i = 0; arr && arr->type == MSGPACK_OBJECT_ARRAY && i < arr->via.array.size; i++) {
		const msgpack_object *m = &arr->via.array.ptr[i];
		char id[40], kind[8], state[12], proto[16], prio[8], err[200], age[16], next[16];
		fmt_ms(u_of(m, "age_ms"), age, sizeof age);
		fmt_ms(u_of(m, "next_try_ms"), next, sizeof next);
		printf("%-26s %-4s %-8s %-10s %-6s %4" PRIu64 " %8s %8s  %s\n", s_of(m, "id", id, sizeof id),
		       s_of(m, "kind", kind, sizeof kind), s_of(m, "state", state, sizeof state),
		       s_of(m, "protocol", proto, sizeof proto), s_of(m, "priority", prio, sizeof prio),
		       u_of(m, "attempts"), age, u_of(m, "next_try_ms") ? next : "-", s_of(m, "last_error", err, sizeof err));
	}
	if (!arr || arr->via.array.size == 0)
		printf("(the spool is empty)\n");
}

static int run_queue(int argc, char **argv)
{
	const char *action = argc ? argv[0] : "list";
	const msgpack_object *b;
	bool needs_id = strcmp(action, "retry") == 0 || strcmp(action, "purge") == 0 || strcmp(action, "requeue") == 0;
	if ((needs_id && argc != 2) || (!needs_id && argc > 1)) {
		fprintf(stderr, "ucgwctl: usage: ucgwctl queue [list | dead | retry ID|all | purge ID | requeue ID|all]\n");
		return EXIT_USAGE;
	}
	const char *kv[] = { "action", action, "id", needs_id ? argv[1] : "" };
	int rc = args_call("queue", 2, kv, &b);
	if (rc)
		return rc;
	if (ctl.json)
		print_json(b);
	else if (!needs_id)
		print_queue(b);
	else
		printf("queue %s %s: done\n", action, argv[1]);
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
	printf("%-10s %9s %8s %8s %6s %6s %10s %8s %8s %8s %8s %5s %5s\n", "PROTOCOL", "SUCCESS", "FAILURE", "RETRIES",
	       "FB-OUT", "FB-IN", "BYTES", "P50ms", "P90ms", "P99ms", "MAXms", "DEAD", "QUEUE");
	for (uint32_t i = 0; b && b->type == MSGPACK_OBJECT_MAP && i < b->via.map.size; i++) {
		const msgpack_object *k = &b->via.map.ptr[i].key, *v = &b->via.map.ptr[i].val;
		bool en = false;
		obj_get_bool(v, "enabled", &en);
		if (!en)
			continue;
		const msgpack_object *p50 = obj_get(v, "p50_ms"), *p90 = obj_get(v, "p90_ms"), *p99 = obj_get(v, "p99_ms"),
				     *mx = obj_get(v, "max_ms");
		printf("%-10.*s %9" PRIu64 " %8" PRIu64 " %8" PRIu64 " %6" PRIu64 " %6" PRIu64 " %10" PRIu64
		       " %8.2f %8.2f %8.2f %8.2f %5" PRIu64 " %5" PRIu64 "\n",
		       (int)k->via.str.size, k->via.str.ptr, u_of(v, "success"), u_of(v, "failure"), u_of(v, "retries"),
		       u_of(v, "fallback_out"), u_of(v, "fallback_in"), u_of(v, "bytes"), p50 ? p50->via.f64 : 0,
		       p90 ? p90->via.f64 : 0, p99 ? p99->via.f64 : 0, mx ? mx->via.f64 : 0, u_of(v, "dead"),
		       u_of(v, "queued"));
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
	char id[40], state[16], req[16], err[200];
	printf("%s: %s, asked for %s, %" PRIu64 " bytes\n", s_of(m, "id", id, sizeof id), s_of(m, "state", state, sizeof state),
	       s_of(b, "requested", req, sizeof req), u_of(m, "size"));
	for (uint32_t i = 0; route && i < route->via.array.size; i++) {
		const msgpack_object *h = &route->via.array.ptr[i];
		char proto[16], res[16];
		printf("  %u. %-10s %-9s %6" PRIu64 " ms  %s\n", i + 1, s_of(h, "protocol", proto, sizeof proto),
		       s_of(h, "result", res, sizeof res), u_of(h, "ms"), s_of(h, "error", err, sizeof err));
	}
	return 0;
}

/* ---- decrypt / encrypt: local, no daemon needed ---- */

/* --key-file F (default $UCGW_KEY_FILE) and one argument: the text, or "-" for stdin. */
static int crypt_args(int argc, char **argv, const char *cmd, unsigned char key[CRYPTO_KEY_LEN], char **data,
		      size_t *len)
{
	static const struct option lo[] = { { "key-file", required_argument, NULL, 'k' }, { NULL, 0, NULL, 0 } };
	const char *key_file = getenv("UCGW_KEY_FILE");
	int ch;
	optind = 0;
	argc++, argv--; /* getopt wants argv[0] */
	while ((ch = getopt_long(argc, argv, "+k:", lo, NULL)) != -1) {
		if (ch != 'k')
			return EXIT_USAGE;
		key_file = optarg;
	}
	if (argc - optind != 1) {
		fprintf(stderr, "ucgwctl: usage: ucgwctl %s [--key-file FILE] %s|-\n", cmd,
			strcmp(cmd, "decrypt") == 0 ? "PAYLOAD" : "DATA");
		return EXIT_USAGE;
	}
	if (!key_file) {
		fprintf(stderr, "ucgwctl: %s: which key? give --key-file FILE (or set UCGW_KEY_FILE)\n", cmd);
		return EXIT_USAGE;
	}
	char err[512];
	if (crypto_key_load(key_file, key, err, sizeof err) < 0) {
		fprintf(stderr, "ucgwctl: %s: %s\n", cmd, err);
		return EXIT_FAIL;
	}
	const char *arg = argv[optind];
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
	{ "status", "", "the daemon, its workers and queues", 0, 0, run_status },
	{ "workers", "", "the process table", 0, 0, run_workers },
	{ "restart", "NAME", "restart a worker (also one marked failed)", 1, 1, run_restart },
	{ "pause", "PROTOCOL", "stop handing jobs to a protocol (they go elsewhere or wait)", 1, 1, run_pause },
	{ "resume", "PROTOCOL", "hand jobs to a paused protocol again", 1, 1, run_resume },
	{ "reload", "", "re-read the configuration (like SIGHUP)", 0, 0, run_reload },
	{ "shutdown", "", "stop the daemon after the work in flight", 0, 0, run_shutdown },
	{ "send", "[OPTIONS] DATA|@FILE|-", "send metadata (JSON); prints its id, or the outcome with --wait", 1, -1, run_send },
	{ "send-file", "[OPTIONS] PATH", "send a file (sftp, rsync); --wait shows progress", 1, -1, run_send_file },
	{ "queue", "[dead|retry ID|all|purge ID|requeue ID|all]", "the messages waiting in the spool", 0, 2, run_queue },
	{ "stats", "", "per-protocol counters and latency", 0, 0, run_stats },
	{ "trace", "ID", "the route a message has taken", 1, 1, run_trace },
	{ "decrypt", "[--key-file F] PAYLOAD|-", "print the plaintext of an encrypted payload (AES-256-GCM)", 1, -1,
	  run_decrypt },
	{ "encrypt", "[--key-file F] DATA|-", NULL, 1, -1, run_encrypt },
	{ NULL, NULL, NULL, 0, 0, NULL },
};

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' }, { "json", no_argument, NULL, 'j' },
		{ "timeout", required_argument, NULL, 't' }, { "help", no_argument, NULL, 'h' },
		{ "api-key-file", required_argument, NULL, 'K' }, { NULL, 0, NULL, 0 },
	};
	log_init("ucgwctl", LOG_LVL_WARN);
	ctl.socket = getenv("UCGW_SOCKET") ? getenv("UCGW_SOCKET") : "/run/ucgw/control.sock";
	int ch;
	/* "+": stop at the command, so its own options are left to it */
	while ((ch = getopt_long(argc, argv, "+s:jt:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 's': ctl.socket = optarg; break;
		case 'j': ctl.json = true; break;
		case 't': ctl.timeout_ms = atoi(optarg); break;
		case 'h': usage(stdout); return 0;
		case 'K':
			if (use_api_key_file(optarg) < 0)
				return EXIT_USAGE;
			break;
		default: usage(stderr); return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *name = argv[optind];
	for (const struct command *c = commands; c->name; c++) {
		if (strcmp(c->name, name) != 0)
			continue;
		int nargs = argc - optind - 1;
		if (nargs < c->min_args || (c->max_args >= 0 && nargs > c->max_args)) {
			fprintf(stderr, "ucgwctl: usage: ucgwctl %s %s\n", c->name, c->args);
			return EXIT_USAGE;
		}
		int rc = c->run(nargs, argv + optind + 1);
		if (ctl.conn.fd > 0)
			conn_close(&ctl.conn);
		return rc;
	}
	fprintf(stderr, "ucgwctl: unknown command '%s' (try ucgwctl --help)\n", name);
	return EXIT_USAGE;
}
