#include "workers/worker.h"

#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/jwt.h"
#include "ipc/channel.h"
#include "workers/sandbox.h"

#define SUPERVISOR_FD 3
/* Until the config message says gateway.max_frame_bytes: the largest value that
 * key may have (the config message itself carries the files a worker reads). */
#define MAX_FRAME_BEFORE_CONFIG (1u << 30)

static struct {
	const struct worker_ops *ops;
	uv_loop_t *loop;
	struct channel *ch;
	msgpack_zone zone;
	struct cfg_section cfg;
	char *device_id;
	bool configured, stopping, connected, health_sent;
	uint64_t rtt_us;
	char health_detail[512];
	struct job *head, *tail;
	uv_signal_t sigterm, sigint, sigusr2;
	uv_timer_t wire_timer;
	bool sandbox;
	struct wfile {
		char *key, *data, *why; /* data (NUL-terminated) or why it could not be read */
		size_t len;
	} *files;
	size_t nfiles;
} w;

uv_loop_t *worker_loop(void) { return w.loop; }
const char *worker_device_id(void) { return w.device_id ? w.device_id : "ucgw-edge"; }
struct job *worker_jobs(void) { return w.head; }
bool worker_connected(void) { return w.connected; }

/* Print a backtrace to stderr (the supervisor keeps it in the crash log) and die
 * of the same signal. backtrace() is called once at start so that it does not
 * need to allocate here. */
static void crash_handler(int sig)
{
	void *frames[64];
	char line[96];
	int n = snprintf(line, sizeof line, "<2>%s: fatal signal %d (SIG%s), backtrace:\n",
			 w.ops ? w.ops->name : "worker", sig, sigabbrev_np(sig) ? sigabbrev_np(sig) : "?");
	if (n > 0 && write(2, line, (size_t)n) < 0) {
	}
	int depth = backtrace(frames, 64);
	backtrace_symbols_fd(frames, depth, 2);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void install_crash_handlers(void)
{
	static char altstack[64 * 1024];
	stack_t ss = { .ss_sp = altstack, .ss_size = sizeof altstack };
	sigaltstack(&ss, NULL);
	void *warm[1];
	backtrace(warm, 1);
	struct sigaction sa = { .sa_handler = crash_handler, .sa_flags = SA_ONSTACK | SA_RESETHAND };
	sigemptyset(&sa.sa_mask);
	int sigs[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS };
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		sigaction(sigs[i], &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static void send_msg(const struct msg *m)
{
	if (w.ch)
		channel_send(w.ch, m, -1);
}

static void job_unlink(struct job *j)
{
	if (j->prev)
		j->prev->next = j->next;
	else
		w.head = j->next;
	if (j->next)
		j->next->prev = j->prev;
	else
		w.tail = j->prev;
	j->prev = j->next = NULL;
}

static void job_free(struct job *j)
{
	if (j->fd >= 0)
		close(j->fd);
	free(j->payload);
	free(j->topic);
	free(j->endpoint);
	free(j->remote_name);
	free(j);
}

void worker_result(struct job *job, enum job_status st, uint64_t retry_after_ms, const char *fmt, ...)
{
	char err[512] = "";
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, sizeof err, fmt, ap);
		va_end(ap);
	}
	struct msg m = { .type = MSG_RESULT, .seq = job->seq, .id = job->id, .status = st,
			 .retry_after_ms = retry_after_ms, .error = err[0] ? err : NULL,
			 .rtt_us = (now_ms() - job->start_ms) * 1000 };
	send_msg(&m);
	job_unlink(job);
	job_free(job);
}

void worker_health(bool connected, uint64_t rtt_us, const char *fmt, ...)
{
	char detail[512] = "";
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(detail, sizeof detail, fmt, ap);
		va_end(ap);
	}
	bool changed = !w.health_sent || connected != w.connected || strcmp(detail, w.health_detail) != 0;
	w.connected = connected;
	w.rtt_us = rtt_us;
	if (!changed && rtt_us == 0)
		return;
	w.health_sent = true;
	snprintf(w.health_detail, sizeof w.health_detail, "%s", detail);
	struct msg m = { .type = MSG_HEALTH, .connected = connected, .rtt_us = rtt_us,
			 .detail = detail[0] ? detail : NULL };
	send_msg(&m);
}

/* The bytes on the wire since the last report (workers/wire.c), in a health
 * frame that repeats the last state: the supervisor takes it for the count
 * alone (supervisor/budget.c). */
static void wire_report(void)
{
	worker_wire_sample();
	uint64_t n = wire_take();
	if (!n || !w.ch)
		return;
	struct msg m = { .type = MSG_HEALTH, .connected = w.connected, .wire_bytes = n,
			 .detail = w.health_detail[0] ? w.health_detail : NULL };
	send_msg(&m);
}

static void on_wire_timer(uv_timer_t *t) { wire_report(); }

void worker_health_body(const void *body, size_t len)
{
	struct msg m = { .type = MSG_HEALTH, .connected = w.connected, .detail = w.health_detail[0] ? w.health_detail : NULL,
			 .body_raw = body, .body_raw_len = len };
	send_msg(&m);
}

void worker_progress(struct job *job, uint64_t done)
{
	struct msg m = { .type = MSG_PROGRESS, .seq = job->seq, .id = job->id, .done = done, .size = job->size };
	send_msg(&m);
}

#define JWT_TTL_S 300

const char *worker_bearer(const char *secret)
{
	static char *bearer;
	static uint64_t until_ms;
	if (!secret)
		return NULL;
	if (!bearer || now_ms() >= until_ms) {
		char *tok = jwt_mint(secret, worker_device_id(), JWT_TTL_S);
		if (!tok)
			return NULL;
		free(bearer);
		bearer = xasprintf("Bearer %s", tok);
		free(tok);
		until_ms = now_ms() + (JWT_TTL_S / 2) * 1000; /* well before it expires */
	}
	return bearer;
}

char *worker_expand(const char *tmpl)
{
	const char *key = "{device_id}";
	const char *p = strstr(tmpl, key);
	if (!p)
		return xstrdup(tmpl);
	char *rest = worker_expand(p + strlen(key));
	char *out = xasprintf("%.*s%s%s", (int)(p - tmpl), tmpl, worker_device_id(), rest);
	free(rest);
	return out;
}

static char *dup_opt(const char *s) { return s ? xstrdup(s) : NULL; }

const char *worker_file(const char *key, size_t *len, const char **why)
{
	for (size_t i = 0; i < w.nfiles; i++)
		if (strcmp(w.files[i].key, key) == 0) {
			if (len)
				*len = w.files[i].len;
			if (why)
				*why = w.files[i].why;
			return w.files[i].data;
		}
	if (len)
		*len = 0;
	if (why)
		*why = NULL;
	return NULL;
}

bool worker_sandboxed(void) { return w.sandbox; }

static char *obj_dup(const msgpack_object *o, size_t *len)
{
	const char *p = o->type == MSGPACK_OBJECT_BIN ? o->via.bin.ptr : o->via.str.ptr;
	size_t n = o->type == MSGPACK_OBJECT_BIN ? o->via.bin.size : o->via.str.size;
	char *s = xmalloc(n + 1);
	if (n)
		memcpy(s, p, n);
	s[n] = '\0';
	if (len)
		*len = n;
	return s;
}

/* The config's body: {"sandbox": bool, "files": {key: bin | str why}}. */
static void take_body(const msgpack_object *body)
{
	w.sandbox = false;
	if (!body || body->type != MSGPACK_OBJECT_MAP)
		return;
	const msgpack_object *sb = obj_get(body, "sandbox");
	w.sandbox = sb && sb->type == MSGPACK_OBJECT_BOOLEAN && sb->via.boolean;
	const msgpack_object *files = obj_get(body, "files");
	if (!files || files->type != MSGPACK_OBJECT_MAP)
		return;
	w.files = xcalloc(files->via.map.size + 1, sizeof *w.files);
	for (uint32_t i = 0; i < files->via.map.size; i++) {
		const msgpack_object_kv *kv = &files->via.map.ptr[i];
		if (kv->key.type != MSGPACK_OBJECT_STR ||
		    (kv->val.type != MSGPACK_OBJECT_BIN && kv->val.type != MSGPACK_OBJECT_STR))
			continue;
		struct wfile *f = &w.files[w.nfiles++];
		f->key = obj_dup(&kv->key, NULL);
		if (kv->val.type == MSGPACK_OBJECT_BIN)
			f->data = obj_dup(&kv->val, &f->len);
		else
			f->why = obj_dup(&kv->val, NULL);
	}
}

static void take_job(const struct msg *m)
{
	struct job *j = xcalloc(1, sizeof *j);
	j->seq = m->seq;
	str_copy(j->id, sizeof j->id, m->id);
	j->kind = m->kind == JOB_FILE ? JOB_FILE : JOB_META;
	j->fd = m->has_fd ? channel_take_fd(w.ch) : -1;
	j->payload_len = m->payload ? m->payload_len : 0;
	j->payload = xmalloc(j->payload_len + 1);
	if (j->payload_len)
		memcpy(j->payload, m->payload, j->payload_len);
	j->payload[j->payload_len] = '\0';
	j->topic = dup_opt(m->topic);
	j->endpoint = dup_opt(m->endpoint);
	j->remote_name = dup_opt(m->remote_name);
	j->size = m->size;
	j->priority = m->priority <= PRIO_LOW ? (enum priority)m->priority : PRIO_NORMAL;
	j->attempt = (unsigned)m->attempt;
	j->accepted_ms = m->accepted_ms;
	j->clock_corrected = m->clock_corrected;
	j->start_ms = now_ms();
	j->prev = w.tail;
	if (w.tail)
		w.tail->next = j;
	else
		w.head = j;
	w.tail = j;
	if (m->has_fd && j->fd < 0) {
		worker_result(j, JOB_RETRY, 0, "file descriptor did not arrive with the job");
		return;
	}
	if (w.stopping) {
		worker_result(j, JOB_RETRY, 0, "worker is shutting down");
		return;
	}
	w.ops->submit(j);
}

struct lookup {
	uv_getaddrinfo_t req;
	void (*done)(void *arg, const char *why);
	void *arg;
};

static void looked_up(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct lookup *l = req->data;
	uv_freeaddrinfo(res);
	if (!w.stopping)
		l->done(l->arg, status == 0 ? NULL : uv_strerror(status));
	free(l);
}

void worker_resolve(const char *host, void (*done)(void *arg, const char *why), void *arg)
{
	struct lookup *l = xcalloc(1, sizeof *l);
	l->done = done;
	l->arg = arg;
	l->req.data = l;
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	int rc = uv_getaddrinfo(w.loop, &l->req, looked_up, host, NULL, &hints);
	if (rc < 0) {
		free(l);
		done(arg, uv_strerror(rc));
	}
}

static void worker_stop(int code)
{
	if (!w.stopping) {
		w.stopping = true;
		worker_wire_sample(); /* before the connections close */
		if (w.configured && w.ops->shutdown)
			w.ops->shutdown();
	}
	while (w.head)
		worker_result(w.head, JOB_RETRY, 0, "worker is shutting down");
	if (w.configured)
		wire_report();
	if (w.ch)
		channel_flush(w.ch, 2000);
	fflush(stderr);
	exit(code);
}

static void handle_config(const struct msg *m)
{
	char err[512];
	if (w.configured) {
		log_warnx("config received twice");
		worker_stop(1);
	}
	if (m->version != UCGW_PROTO_VERSION) {
		log_warnx("supervisor speaks protocol version %llu, this worker %d",
			  (unsigned long long)m->version, UCGW_PROTO_VERSION);
		worker_stop(UCGW_EXIT_CONFIG);
	}
	log_set_level((int)m->log_level);
	channel_set_max_frame(w.ch, (size_t)m->max_frame);
	log_debug("frames from the supervisor: up to %llu bytes (gateway.max_frame_bytes)",
		  (unsigned long long)m->max_frame);
	w.device_id = xstrdup(m->device_id);
	if (cfg_section_unpack(w.ops->name, m->section, m->section_len, &w.cfg, err, sizeof err) < 0) {
		log_msg(LOG_LVL_ERR, "bad configuration section: %s", err);
		worker_stop(UCGW_EXIT_CONFIG);
	}
	take_body(MSG_HAS(m, FLD_BODY) ? m->body : NULL);
	w.configured = true;
	int rc = w.ops->init(w.loop, &w.cfg, err, sizeof err);
	if (rc != 0) {
		log_msg(LOG_LVL_ERR, "%s", err[0] ? err : "initialisation failed");
		w.configured = false; /* nothing to shut down */
		worker_stop(rc);
	}
	/* The library is set up and the configuration read: from here on only the
	 * calls this worker needs (workers/sandbox.c). Never run unfiltered when
	 * the sandbox is asked for. */
	if (w.sandbox && sandbox_install(w.ops->name, err, sizeof err) < 0) {
		log_msg(LOG_LVL_ERR, "%s", err);
		worker_stop(UCGW_EXIT_CONFIG);
	}
	struct msg r = { .type = MSG_READY };
	send_msg(&r);
	uv_timer_start(&w.wire_timer, on_wire_timer, WIRE_SAMPLE_MS, WIRE_SAMPLE_MS);
	uv_unref((uv_handle_t *)&w.wire_timer);
}

/* Tests only: with UCGW_TEST_FORBIDDEN_SYSCALL=1 in the environment, SIGUSR2
 * makes the worker call personality(2), which no allow-list has (a query that
 * changes nothing where it is allowed), to prove that the filter kills. */
static void on_forbidden_test(uv_signal_t *h, int sig)
{
	log_warnx("SIGUSR2 with UCGW_TEST_FORBIDDEN_SYSCALL: calling personality(2), which the sandbox forbids");
	long rc = syscall(SYS_personality, 0xffffffffUL);
	log_warnx("personality(2) returned %ld: the sandbox is off", rc);
}

/* supervisor -> worker */
static void worker_dispatch(struct channel *ch, const char *buf, size_t len, void *arg)
{
	char err[256];
	struct msg m;
	msgpack_zone_clear(&w.zone);
	if (msg_decode(buf, len, &m, &w.zone, err, sizeof err) < 0) {
		log_warnx("malformed frame from the supervisor: %s", err);
		worker_stop(1);
	}
	switch (m.type) {
	case MSG_CONFIG:
		handle_config(&m);
		break;
	case MSG_PING: {
		struct msg r = { .type = MSG_PONG, .seq = m.seq };
		send_msg(&r);
		break;
	}
	case MSG_JOB:
		if (!w.configured) {
			log_warnx("job before config");
			worker_stop(1);
		}
		take_job(&m);
		break;
	case MSG_SHUTDOWN:
		worker_stop(0);
		break;
	default:
		log_warnx("unexpected %s message from the supervisor", msg_type_str(m.type));
		worker_stop(1);
	}
}

static void on_channel_error(struct channel *ch, const char *why, void *arg)
{
	w.ch = NULL;
	log_info("supervisor channel closed (%s); exiting", why);
	worker_stop(0);
}

static void on_signal(uv_signal_t *h, int sig)
{
	log_info("received SIG%s; finishing", sigabbrev_np(sig));
	worker_stop(0);
}

int worker_main(int argc, char **argv, const struct worker_ops *ops)
{
	w.ops = ops;
	char *procname = xasprintf("ucgw-%s", ops->name);
	log_init(procname, LOG_LVL_INFO);
	struct stat st;
	if (argc > 1 || fstat(SUPERVISOR_FD, &st) < 0 || !S_ISSOCK(st.st_mode)) {
		fprintf(stderr, "%s: the %s worker of ucgw; ucgwd starts it with its socket on fd 3.\n"
				"It is not meant to be run by hand.\n", procname, ops->name);
		return UCGW_EXIT_CONFIG;
	}
	/* ucgwd hands the socket over across its exec; nothing we start (rsync, and
	 * rsync's ssh) may hold it: a child that outlives a crash would keep the
	 * supervisor from seeing the socket close, and could write into it. */
	if (fcntl(SUPERVISOR_FD, F_SETFD, FD_CLOEXEC) < 0) {
		fprintf(stderr, "%s: cannot mark fd 3 close-on-exec: %s\n", procname, strerror(errno));
		return UCGW_EXIT_CONFIG;
	}
	/* If the supervisor dies, so do we: a new supervisor redoes our jobs from the spool. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() == 1)
		return 0;
	install_crash_handlers();
	setvbuf(stderr, NULL, _IOLBF, 0);
	w.loop = uv_default_loop();
	msgpack_zone_init(&w.zone, 4096);
	wire_init(ops->name);
	uv_timer_init(w.loop, &w.wire_timer);
	static const struct channel_ops chops = { .on_frame = worker_dispatch, .on_error = on_channel_error };
	w.ch = channel_new(w.loop, SUPERVISOR_FD, MAX_FRAME_BEFORE_CONFIG, &chops, NULL);
	uv_signal_init(w.loop, &w.sigterm);
	uv_signal_start(&w.sigterm, on_signal, SIGTERM);
	uv_signal_init(w.loop, &w.sigint);
	uv_signal_start(&w.sigint, on_signal, SIGINT);
	const char *forbidden = getenv("UCGW_TEST_FORBIDDEN_SYSCALL");
	if (forbidden && strcmp(forbidden, "1") == 0) {
		uv_signal_init(w.loop, &w.sigusr2);
		uv_signal_start(&w.sigusr2, on_forbidden_test, SIGUSR2);
	}
	struct msg hello = { .type = MSG_HELLO, .version = UCGW_PROTO_VERSION, .name = ops->name,
			     .pid = (uint64_t)getpid() };
	send_msg(&hello);
	uv_run(w.loop, UV_RUN_DEFAULT);
	worker_stop(0);
	return 0;
}
