#include "supervisor/proctab.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "ipc/channel.h"
#include "supervisor/budget.h"
#include "supervisor/crashlog.h"
#include "supervisor/router.h"
#include "supervisor/servers.h"
#include "supervisor/sup.h"
#include "supervisor/workersec.h"

static struct proc *procs;
static uv_signal_t sigchld;
static void (*all_stopped_cb)(void);
static uv_timer_t kill_timer;

static void proc_start(struct proc *p);
static void proc_exited(struct proc *p, int wstatus);

const char *proc_state_str(enum proc_state s)
{
	static const char *const names[] = { "starting", "ready", "backoff", "failed", "stopped" };
	return (unsigned)s < 5 ? names[s] : "unknown";
}

struct proc *proctab_find(const char *name)
{
	for (struct proc *p = procs; p; p = p->next)
		if (strcmp(p->name, name) == 0)
			return p;
	return NULL;
}

struct proc *proctab_first(void) { return procs; }

static int64_t gw_int(const char *key) { return config_int(sup.cfg, "gateway", key); }

static struct restart_policy policy(void)
{
	return (struct restart_policy){
		.backoff_min_ms = (uint64_t)gw_int("restart_backoff_min_ms"),
		.backoff_max_ms = (uint64_t)gw_int("restart_backoff_max_ms"),
		.reset_after_ms = (uint64_t)gw_int("restart_reset_after_s") * 1000,
		.window_ms = (uint64_t)gw_int("restart_window_s") * 1000,
		.max_deaths = (unsigned)gw_int("restart_max_deaths"),
	};
}

/* ---- stderr capture: forward each line to our stderr and keep the last ones ---- */

static void keep_line(struct proc *p, const char *s, size_t n)
{
	unsigned slot = (p->line_head + p->nlines) % STDERR_LINES;
	if (p->nlines == STDERR_LINES) {
		free(p->lines[p->line_head]);
		p->line_head = (p->line_head + 1) % STDERR_LINES;
		slot = (p->line_head + STDERR_LINES - 1) % STDERR_LINES;
	} else {
		p->nlines++;
	}
	p->lines[slot] = xstrndup(s, n);
	/* Worker lines carry their own "<N>ucgw-x:" prefix: unchanged, or with the time on a terminal. */
	log_relay(s, n);
}

static void split_lines(struct proc *p, bool flush_partial)
{
	size_t start = 0;
	for (size_t i = 0; i < p->errlen; i++)
		if (p->errbuf[i] == '\n') {
			keep_line(p, p->errbuf + start, i - start);
			start = i + 1;
		}
	if (flush_partial && start < p->errlen) {
		keep_line(p, p->errbuf + start, p->errlen - start);
		start = p->errlen;
	}
	/* A line longer than 8 KiB is cut rather than buffered without bound. */
	if (p->errlen - start > 8192) {
		keep_line(p, p->errbuf + start, p->errlen - start);
		start = p->errlen;
	}
	memmove(p->errbuf, p->errbuf + start, p->errlen - start);
	p->errlen -= start;
}

static void close_stderr(struct proc *p)
{
	if (p->errfd < 0)
		return;
	uv_poll_stop(p->errpoll);
	uv_close((uv_handle_t *)p->errpoll, (uv_close_cb)free);
	p->errpoll = NULL;
	close(p->errfd);
	p->errfd = -1;
}

/* Read whatever the worker wrote; at EOF keep the partial last line. */
static void drain_stderr(struct proc *p)
{
	while (p->errfd >= 0) {
		p->errbuf = xrealloc(p->errbuf, p->errlen + 4096 + 1);
		ssize_t n = read(p->errfd, p->errbuf + p->errlen, 4096);
		if (n > 0) {
			p->errlen += (size_t)n;
			split_lines(p, false);
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		split_lines(p, true);
		close_stderr(p);
	}
}

static void on_stderr(uv_poll_t *h, int status, int events) { drain_stderr(h->data); }

/* ---- messages from a worker ---- */

static void handle_hello(struct proc *p, const struct msg *m)
{
	char why[200];
	if (strcmp(m->name, p->name) != 0) {
		snprintf(why, sizeof why, "handshake: the worker says it is '%.40s', expected '%s' (a wrong executable?)",
			 m->name, p->name);
		proc_kill(p, why);
		return;
	}
	if (m->version != UCGW_PROTO_VERSION) {
		snprintf(why, sizeof why,
			 "handshake: the worker speaks protocol version %llu, this ucgwd speaks %d "
			 "(worker and ucgwd from different ucgw versions?)",
			 (unsigned long long)m->version, UCGW_PROTO_VERSION);
		proc_kill(p, why);
		return;
	}
	struct msg c = { .type = MSG_CONFIG, .version = UCGW_PROTO_VERSION,
			 .device_id = config_str(sup.cfg, "gateway", "device_id"),
			 .section = p->section->packed, .section_len = p->section->packed_len,
			 .max_frame = (uint64_t)gw_int("max_frame_bytes"),
			 .log_level = (uint64_t)log_level_parse(config_str(sup.cfg, "gateway", "log_level")),
			 .body_raw = p->body, .body_raw_len = p->body_len };
	channel_send(p->ch, &c, -1);
}

static void ping_tick(uv_timer_t *t)
{
	struct proc *p = t->data;
	if (!p->ch)
		return; /* its socket is gone: the exit is on its way */
	uint64_t now = now_ms(), timeout = (uint64_t)gw_int("ping_timeout_ms");
	if (now - p->last_pong_ms > timeout) {
		char why[128];
		snprintf(why, sizeof why, "did not answer pings for %llu ms", (unsigned long long)(now - p->last_pong_ms));
		proc_kill(p, why);
		return;
	}
	struct msg m = { .type = MSG_PING, .seq = ++p->ping_seq };
	channel_send(p->ch, &m, -1);
}

static void handle_ready(struct proc *p)
{
	p->state = PROC_READY;
	p->ready_ms = now_ms();
	p->last_pong_ms = p->ready_ms;
	log_info("worker %s ready (pid %d, generation %u, %llu ms after start)", p->name, (int)p->pid, p->gen,
		 (unsigned long long)(p->ready_ms - p->start_ms));
	uint64_t iv = (uint64_t)gw_int("ping_interval_ms");
	uv_timer_start(&p->timer, ping_tick, iv, iv);
	router_worker_ready(p);
}

/* worker -> supervisor: anything unexpected gets the worker restarted. */
static void supervisor_from_worker(struct channel *ch, const char *buf, size_t len, void *arg)
{
	struct proc *p = arg;
	static msgpack_zone zone;
	static bool zinit;
	char err[256], why[320];
	struct msg m;
	if (!zinit) {
		msgpack_zone_init(&zone, 4096);
		zinit = true;
	}
	msgpack_zone_clear(&zone);
	if (msg_decode(buf, len, &m, &zone, err, sizeof err) < 0) {
		snprintf(why, sizeof why, "malformed frame: %s", err);
		proc_kill(p, why);
		return;
	}
	bool handshaking = p->state == PROC_STARTING;
	switch (m.type) {
	case MSG_HELLO:
		if (handshaking && !p->hello_seen) {
			p->hello_seen = true;
			return handle_hello(p, &m);
		}
		break;
	case MSG_READY:
		if (handshaking && p->hello_seen)
			return handle_ready(p);
		break;
	case MSG_PONG:
		if (!handshaking) {
			p->last_pong_ms = now_ms();
			return;
		}
		break;
	case MSG_RESULT:
		if (!handshaking)
			return router_worker_result(p, &m);
		break;
	case MSG_PROGRESS:
		if (!handshaking)
			return router_worker_progress(p, &m);
		break;
	case MSG_HEALTH:
		if (MSG_HAS(&m, FLD_WIRE)) /* budget.c: bytes on the wire; the rest repeats the last report */
			return budget_wire(p->name, m.wire_bytes);
		p->connected = m.connected;
		snprintf(p->health, sizeof p->health, "%s", m.detail ? m.detail : "");
		if (m.rtt_us)
			p->rtt_us = m.rtt_us;
		if (m.body)
			servers_update(p, m.body);
		if (!handshaking)
			router_worker_health(p, m.rtt_us != 0);
		return;
	default:
		break;
	}
	snprintf(why, sizeof why, "unexpected %s message while %s", msg_type_str(m.type), proc_state_str(p->state));
	proc_kill(p, why);
}

/* A worker alive this long after its socket closed closed it itself and hung. */
static void socket_grace_over(uv_timer_t *t)
{
	struct proc *p = t->data;
	char why[160];
	snprintf(why, sizeof why, "its socket closed (%s) and it did not exit within %lld ms", p->channel_error,
		 (long long)gw_int("ping_timeout_ms"));
	proc_kill(p, why);
}

/* The worker's end of the socket closed, or the socket failed. A worker that
 * dies closes it (the kernel does, at its exit), and its exit follows: its
 * status then says whose fault that was (a SIGKILL from someone else is not
 * its jobs' fault; a crash is). So it is not killed at once, which made every
 * death look like a SIGKILL from outside, but given ping_timeout_ms to exit;
 * one still there closed its socket and hung, and is killed for cause: that
 * counts against the jobs it held, as a crash with them does (unless its exit
 * was asked for: then it only must not hang for ever).
 * No result can come back over a closed socket, though: the jobs it held go
 * on now (to its fallbacks, or back to its queue), not when it exits; its
 * exit still decides whether that loss counts against them. */
static void on_channel_error(struct channel *ch, const char *why, void *arg)
{
	struct proc *p = arg;
	p->ch = NULL;
	if (p->pid <= 0)
		return;
	snprintf(p->channel_error, sizeof p->channel_error, "%s", why);
	router_worker_orphaned(p);
	if (p->kill_reason[0]) { /* killed already (a bad frame, a hang): its exit is on the way */
		proc_kill(p, why);
		return;
	}
	log_debug("worker %s (pid %d): socket closed (%s); waiting for its exit", p->name, (int)p->pid, why);
	uv_timer_start(&p->timer, socket_grace_over, (uint64_t)gw_int("ping_timeout_ms"), 0);
}

/* A frame no decoder may read (longer than the limit, empty): the worker's fault. */
static void on_bad_frame(struct channel *ch, const char *why, void *arg)
{
	char reason[200];
	snprintf(reason, sizeof reason, "malformed frame: %s", why);
	proc_kill(arg, reason);
}

static void on_channel_drain(struct channel *ch, void *arg) { router_worker_drain(arg); }

/* ---- starting and stopping ---- */

static void handshake_timeout(uv_timer_t *t)
{
	proc_kill(t->data, "no ready within handshake_timeout_ms");
}

static void child_exec(struct proc *p, int sock, int errw, const char *path, const struct worker_creds *creds)
{
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int s = 1; s < NSIG; s++)
		signal(s, SIG_DFL);
	int devnull = open("/dev/null", O_RDWR);
	if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0 || dup2(errw, 2) < 0 || dup2(sock, 3) < 0)
		_exit(127);
	close_range(4, ~0u, 0);
	worker_creds_apply(creds, p->name);
	char *argv[] = { (char *)path, NULL };
	execv(path, argv);
	fprintf(stderr, "<3>ucgwd: cannot run worker %s: %s\n", path, strerror(errno));
	_exit(UCGW_EXIT_CONFIG);
}

static void backoff_done(uv_timer_t *t);

#define START_RETRY_MIN_MS 500
#define START_RETRY_MAX_MS 30000

/* A start that failed for want of a resource (descriptors, processes, memory)
 * is no reason to stop the daemon: the worker waits, doubling the wait up to
 * START_RETRY_MAX_MS, and its health says why (`ucgwctl status`). */
static void start_failed(struct proc *p, const char *what, int err)
{
	unsigned n = p->start_failures < 6 ? p->start_failures : 6;
	uint64_t delay = (uint64_t)START_RETRY_MIN_MS << n;
	if (delay > START_RETRY_MAX_MS)
		delay = START_RETRY_MAX_MS;
	p->start_failures++;
	p->state = PROC_BACKOFF;
	snprintf(p->health, sizeof p->health, "cannot start: %s%s%s%s; trying again in %llu ms", what, err ? ": " : "",
		 err ? strerror(err) : "", err == EMFILE || err == ENFILE ? " (out of descriptors: see LimitNOFILE in docs/operations.md)" : "",
		 (unsigned long long)delay);
	log_warnx("worker %s %s", p->name, p->health);
	uv_timer_start(&p->timer, backoff_done, delay, 0);
}

static void close_pair(int fds[2])
{
	close(fds[0]);
	close(fds[1]);
}

static void proc_start(struct proc *p)
{
	const char *exe = p->slot->proto->exe;
	int sv[2], ep[2];
	/* Read at every start, so that a rotated key or certificate takes effect. */
	free(p->body);
	char hung[1024];
	p->body = worker_config_body(p->section, config_bool(sup.cfg, "security", "sandbox"), &p->body_len, hung,
				     sizeof hung);
	if (hung[0]) { /* a hung file system: wait for it, not a configuration error */
		start_failed(p, hung, 0);
		return;
	}
	struct worker_creds creds;
	worker_creds_resolve(sup.cfg, &creds);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		start_failed(p, "socketpair", errno);
		return;
	}
	if (pipe2(ep, O_CLOEXEC) < 0) {
		int err = errno;
		close_pair(sv);
		start_failed(p, "pipe", err);
		return;
	}
	char *path = xasprintf("%s/%s", sup.worker_dir, exe);
	pid_t pid = fork();
	if (pid < 0) {
		int err = errno;
		free(path);
		close_pair(sv);
		close_pair(ep);
		start_failed(p, "fork", err);
		return;
	}
	if (pid == 0)
		child_exec(p, sv[1], ep[1], path, &creds);
	free(path);
	p->start_failures = 0;
	close(sv[1]);
	close(ep[1]);
	p->pid = pid;
	p->gen++;
	p->state = PROC_STARTING;
	p->start_ms = now_ms();
	p->start_wall_ms = wall_ms();
	p->last_pong_ms = 0;
	p->ping_seq = 0;
	p->hello_seen = false;
	p->kill_reason[0] = '\0';
	p->killed_for_cause = false;
	p->stop_requested = p->restart_requested = false;
	p->connected = false;
	p->health[0] = '\0';
	servers_forget(p);
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	fcntl(ep[0], F_SETFL, O_NONBLOCK);
	static const struct channel_ops ops = { .on_frame = supervisor_from_worker, .on_error = on_channel_error,
						.on_bad_frame = on_bad_frame, .on_drain = on_channel_drain };
	p->ch = channel_new(sup.loop, sv[0], (size_t)gw_int("max_frame_bytes"), &ops, p);
	p->errfd = ep[0];
	p->errpoll = xcalloc(1, sizeof *p->errpoll);
	uv_poll_init(sup.loop, p->errpoll, p->errfd);
	p->errpoll->data = p;
	uv_poll_start(p->errpoll, UV_READABLE | UV_DISCONNECT, on_stderr);
	uv_timer_start(&p->timer, handshake_timeout, (uint64_t)gw_int("handshake_timeout_ms"), 0);
	log_info("worker %s started (pid %d, generation %u)", p->name, (int)pid, p->gen);
}

static void backoff_done(uv_timer_t *t) { proc_start(t->data); }

void proc_kill(struct proc *p, const char *reason)
{
	if (p->pid <= 0)
		return;
	if (!p->kill_reason[0]) {
		p->killed_for_cause = true;
		snprintf(p->kill_reason, sizeof p->kill_reason, "%s", reason);
		log_warnx("worker %s (pid %d): %s; killing it", p->name, (int)p->pid, reason);
	}
	kill(p->pid, SIGKILL);
}

static void free_proc(uv_handle_t *h) { free(h->data); }

static void proc_free(struct proc *p)
{
	struct proc **pp = &procs;
	while (*pp != p)
		pp = &(*pp)->next;
	*pp = p->next;
	if (p->slot->proc == p)
		p->slot->proc = NULL;
	for (unsigned i = 0; i < p->nlines; i++)
		free(p->lines[(p->line_head + i) % STDERR_LINES]);
	free(p->errbuf);
	free(p->body);
	servers_forget(p);
	uv_close((uv_handle_t *)&p->timer, free_proc);
}

static void check_all_stopped(void)
{
	if (all_stopped_cb && proctab_running() == 0) {
		void (*cb)(void) = all_stopped_cb;
		all_stopped_cb = NULL;
		uv_timer_stop(&kill_timer);
		cb();
	}
}

static void schedule_restart(struct proc *p, int wstatus, uint64_t ran)
{
	int code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
	struct restart_policy pol = policy();
	struct restart_decision d = restart_on_exit(&p->rs, &pol, now_ms(), ran, code, rand_u64());
	switch (d.action) {
	case RESTART_BAD_CONFIG:
		p->state = PROC_FAILED;
		log_msg(LOG_LVL_ERR, "worker %s exited with the bad-configuration code; not restarting it "
				     "(fix the [%s] section, then `ucgwctl reload` or `ucgwctl restart %s`)",
			p->name, p->name, p->name);
		break;
	case RESTART_FAILED:
		p->state = PROC_FAILED;
		log_msg(LOG_LVL_ERR, "worker %s died %u times within %llu s; marked failed "
				     "(`ucgwctl restart %s` starts it again)",
			p->name, d.recent, (unsigned long long)(pol.window_ms / 1000), p->name);
		break;
	case RESTART_AFTER:
		p->state = PROC_BACKOFF;
		log_info("worker %s restarts in %llu ms", p->name, (unsigned long long)d.delay_ms);
		uv_timer_start(&p->timer, backoff_done, d.delay_ms, 0);
		break;
	}
}

static void proc_exited(struct proc *p, int wstatus)
{
	char how[128];
	uint64_t ran = now_ms() - p->start_ms;
	wait_status_str(wstatus, how, sizeof how);
	drain_stderr(p);
	close_stderr(p);
	uv_timer_stop(&p->timer);
	if (p->ch) {
		channel_close(p->ch);
		p->ch = NULL;
	}
	snprintf(p->last_exit, sizeof p->last_exit, "%s", how);
	bool expected = p->stop_requested || sup.stopping;
	p->blameless_exit = expected || p->restart_requested ||
			    (WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL && !p->killed_for_cause);
	log_msg(expected ? LOG_LVL_INFO : LOG_LVL_WARN, "worker %s pid %d %s after %llu ms%s%s", p->name,
		(int)p->pid, how, (unsigned long long)ran, p->kill_reason[0] ? ": " : "", p->kill_reason);
	if (!expected) {
		char *path = crashlog_write(p, wstatus, p->kill_reason);
		if (path)
			log_info("crash log of worker %s: %s", p->name, path);
		free(path);
	}
	p->pid = 0;
	router_worker_lost(p);
	if (p->removed || sup.stopping) {
		p->state = PROC_STOPPED;
		if (p->removed)
			proc_free(p);
		check_all_stopped();
		return;
	}
	if (p->restart_requested) {
		restart_reset(&p->rs);
		proc_start(p);
		return;
	}
	if (p->stop_requested) {
		p->state = PROC_STOPPED;
		return;
	}
	p->restarts++;
	schedule_restart(p, wstatus, ran);
}

static void on_sigchld(uv_signal_t *h, int sig)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (struct proc *p = procs; p; p = p->next)
			if (p->pid == pid) {
				proc_exited(p, status);
				break;
			}
	}
}

void proctab_init(void)
{
	uv_signal_init(sup.loop, &sigchld);
	uv_signal_start(&sigchld, on_sigchld, SIGCHLD);
	uv_timer_init(sup.loop, &kill_timer);
}

static struct proc *proc_new(struct slot *slot)
{
	struct proc *p = xcalloc(1, sizeof *p);
	snprintf(p->name, sizeof p->name, "%s", slot->proto->name);
	p->slot = slot;
	slot->proc = p;
	p->errfd = -1;
	p->state = PROC_STOPPED;
	uv_timer_init(sup.loop, &p->timer);
	p->timer.data = p;
	struct proc **pp = &procs;
	while (*pp)
		pp = &(*pp)->next;
	*pp = p;
	return p;
}

/* Stop a running worker gracefully; when it has exited it starts again if
 * restart is set. */
static void proc_stop(struct proc *p, bool restart)
{
	if (p->pid <= 0) {
		uv_timer_stop(&p->timer);
		if (restart) {
			restart_reset(&p->rs);
			proc_start(p);
		} else {
			p->state = PROC_STOPPED;
		}
		return;
	}
	p->stop_requested = true;
	p->restart_requested = restart;
	kill(p->pid, SIGTERM);
}

void proctab_restart(struct proc *p)
{
	log_info("restarting worker %s on request", p->name);
	proc_stop(p, true);
}

/* Did what a worker was started with change, beyond its section: the frame
 * limit, the sandbox settings, or the contents of the files read for it (a
 * rotated key)? Only on a reload: old is never NULL. */
static bool start_changed(const struct config *old, const struct config *cfg, const struct proc *p,
			  const struct cfg_section *sec, const char **why)
{
	if (config_int(old, "gateway", "max_frame_bytes") != config_int(cfg, "gateway", "max_frame_bytes")) {
		*why = "gateway.max_frame_bytes changed";
		return true;
	}
	const char *ou = config_str(old, "security", "worker_user");
	const char *nu = config_str(cfg, "security", "worker_user");
	if (config_bool(old, "security", "sandbox") != config_bool(cfg, "security", "sandbox") ||
	    (ou == NULL) != (nu == NULL) || (ou && strcmp(ou, nu) != 0)) {
		*why = "the sandbox settings changed";
		return true;
	}
	if (!p->body)
		return false;
	size_t len;
	char hung[1024];
	void *body = worker_config_body(sec, config_bool(cfg, "security", "sandbox"), &len, hung, sizeof hung);
	/* a file that cannot be read in time: keep the worker running with what it has */
	bool differ = !hung[0] && (len != p->body_len || memcmp(body, p->body, len) != 0);
	free(body);
	*why = "a file it reads changed";
	return differ;
}

void proctab_apply_config(const struct config *old, const struct config *cfg)
{
	worker_sandbox_announce(cfg);
	for (int i = 0; i < slot_count(); i++) {
		struct slot *slot = slot_at(i);
		const char *name = slot->proto->name;
		struct proc *p = slot->proc;
		bool want = config_protocol_enabled(cfg, name);
		const struct cfg_section *sec = config_section(cfg, name);
		if (!p && want) {
			p = proc_new(slot);
			p->section = sec;
			proc_start(p);
			continue;
		}
		if (!p)
			continue;
		bool changed = !old || !cfg_section_equal(config_section(old, name), sec);
		const char *why = "its section changed";
		if (!changed && want)
			changed = start_changed(old, cfg, p, sec, &why);
		p->section = sec;
		if (!want) {
			log_info("worker %s: protocol disabled; stopping it", p->name);
			p->removed = true;
			if (p->pid > 0)
				proc_stop(p, false);
			else
				proc_free(p);
		} else if (changed) {
			log_info("worker %s: %s; restarting it", p->name, why);
			proc_stop(p, true);
		}
	}
}

int proc_send(struct proc *p, const struct msg *m, int fd)
{
	if (p->state != PROC_READY || !p->ch)
		return -1;
	return channel_send(p->ch, m, fd);
}

unsigned proctab_running(void)
{
	unsigned n = 0;
	for (struct proc *p = procs; p; p = p->next)
		if (p->pid > 0)
			n++;
	return n;
}

bool proctab_all_settled(void)
{
	for (struct proc *p = procs; p; p = p->next)
		if (p->state == PROC_STARTING)
			return false;
	return true;
}

static void kill_stragglers(uv_timer_t *t)
{
	for (struct proc *p = procs; p; p = p->next)
		if (p->pid > 0) {
			log_warnx("worker %s (pid %d) did not exit after SIGTERM; sending SIGKILL", p->name, (int)p->pid);
			kill(p->pid, SIGKILL);
		}
}

void proctab_stop_all(uint64_t kill_after_ms, void (*done)(void))
{
	all_stopped_cb = done;
	for (struct proc *p = procs; p; p = p->next) {
		uv_timer_stop(&p->timer);
		if (p->pid > 0) {
			p->stop_requested = true;
			kill(p->pid, SIGTERM);
		} else {
			p->state = PROC_STOPPED;
		}
	}
	uv_timer_start(&kill_timer, kill_stragglers, kill_after_ms, 0);
	check_all_stopped();
}
