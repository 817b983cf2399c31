#include "supervisor/control.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "ipc/channel.h"
#include "supervisor/ratelog.h"
#include "supervisor/sup.h"

/* Bounds on what local clients can hold (docs/operations.md, "Limits"). */
#define MAX_CLIENTS CONTROL_MAX_CLIENTS
#define MAX_CLIENTS_PER_UID 32   /* one user's; a new one closes that user's longest idle */
#define RESERVED_CLIENTS 32      /* of MAX_CLIENTS, only for root and ucgwd's own user */
#define CLIENT_REPLY_LIMIT (1u << 20) /* replies waiting beyond this: the client's requests wait */
/* gateway.control_stall_timeout_s: replies waiting and none taken for this
 * long, disconnected; gateway.control_idle_timeout_s: no request in flight and
 * none sent for this long, disconnected. */
#define SWEEP_MS 1000
#define ACCEPT_RETRY_MS 250      /* accept paused for want of descriptors: tried again after this */
#define SPARE_ACCEPTS 64         /* out of descriptors: clients taken through the spare per wake-up at most */
#define LIMIT_LOG_MS 10000       /* a refusal or an accept failure logged at most this often */

static int listen_fd = -1;
/* A descriptor kept open on /dev/null for the day ucgwd has no other: closed,
 * it lets one waiting client be accepted, so that root and ucgwd's user still
 * get in (and others are told why they do not), then it is taken back. */
static int spare_fd = -1;
static uv_poll_t listen_poll;
static bool accepting;           /* listen_poll started */
static uv_timer_t sweep_timer, accept_timer;
static bool timers_on;
static struct ratelog refusal_log, accept_log;
static char *sock_path;
static struct client *clients;
static unsigned nclients;
static uint64_t next_cid = 1;
static msgpack_zone zone;

void control_body_init(struct body *b)
{
	msgpack_sbuffer_init(&b->sb);
	msgpack_packer_init(&b->pk, &b->sb, pk_write);
}

void control_body_free(struct body *b) { msgpack_sbuffer_destroy(&b->sb); }

struct client *control_client(uint64_t cid)
{
	for (struct client *c = clients; c; c = c->next)
		if (c->cid == cid)
			return c;
	return NULL;
}

/* The reply as the client's version has it: from version 2 an error carries
 * its code; a version 1 client gets neither the code nor a `v` it does not
 * speak. A client that has sent no request ucgwd could read gets the current
 * version's form. */
static void reply_send(uint64_t cid, uint64_t seq, int code, const char *error, const struct body *b)
{
	struct client *c = control_client(cid);
	bool ok = code == CTL_OK;
	if (c && c->capture && !c->capture->answered) {
		struct local_reply *r = c->capture;
		r->answered = true;
		r->ok = ok;
		r->code = code;
		snprintf(r->error, sizeof r->error, "%s", error ? error : "");
		if (b && b->sb.size) {
			r->body = xmalloc(b->sb.size);
			memcpy(r->body, b->sb.data, b->sb.size);
			r->body_len = b->sb.size;
		}
		return;
	}
	if (!c || !c->ch)
		return;
	if (c->waiting)
		c->waiting--;
	c->active_ms = now_ms();
	bool v1 = c->version == 1;
	struct msg m = { .type = MSG_REPLY, .version = v1 ? 1 : UCGW_CTL_VERSION, .seq = seq, .ok = ok,
			 .error = error, .code = v1 ? 0 : (uint64_t)code };
	if (b && b->sb.size) {
		m.body_raw = b->sb.data;
		m.body_raw_len = b->sb.size;
	}
	channel_send(c->ch, &m, -1);
}

void control_reply(uint64_t cid, uint64_t seq, bool ok, const char *error, const struct body *b)
{
	reply_send(cid, seq, ok ? CTL_OK : CTL_E_INTERNAL, ok ? NULL : error, b);
}

void control_event(uint64_t cid, uint64_t seq, const char *name, const struct body *b)
{
	struct client *c = control_client(cid);
	if (!c || !c->ch)
		return;
	struct msg m = { .type = MSG_EVENT, .seq = seq, .name = name };
	if (b && b->sb.size) {
		m.body_raw = b->sb.data;
		m.body_raw_len = b->sb.size;
	}
	channel_send(c->ch, &m, -1);
}

void control_fail(uint64_t cid, uint64_t seq, enum ctl_code code, const char *fmt, ...)
{
	char err[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, sizeof err, fmt, ap);
	va_end(ap);
	if (!ctl_code_name((int)code))
		panic("control_fail: code %d is not one of proto/ctl.h's", (int)code);
	reply_send(cid, seq, (int)code, err, NULL);
}

static void accept_resume(void);
static void on_accept_timer(uv_timer_t *t);

static void spare_take(void)
{
	if (spare_fd < 0 && listen_fd >= 0)
		spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void client_drop(struct client *c)
{
	struct client **pp = &clients;
	while (*pp && *pp != c)
		pp = &(*pp)->next;
	if (*pp)
		*pp = c->next;
	if (c->ch)
		channel_close(c->ch);
	nclients--;
	free(c);
	spare_take(); /* a descriptor came back: the spare first */
	accept_resume();
}

/* The checks every request passes, then its command. */
static void handle(struct client *c, const struct msg *m)
{
	char err[256] = "";
	if (!c->capture)
		c->waiting++; /* until its reply, whatever it is: control_reply counts it down */
	if (auth_check(c, m, err, sizeof err) < 0) {
		control_fail(c->cid, m->seq, CTL_E_UNAUTHORIZED, "%s", err);
		return;
	}
	if (sup.stopping && strcmp(m->name, "status") != 0 && strcmp(m->name, "workers") != 0) {
		control_fail(c->cid, m->seq, CTL_E_UNAVAILABLE, "ucgwd is shutting down");
		return;
	}
	commands_dispatch(c, m);
}

void control_local(uid_t uid, gid_t gid, pid_t pid, const struct msg *req, struct local_reply *out)
{
	memset(out, 0, sizeof *out);
	struct client c = { .cid = next_cid++, .uid = uid, .gid = gid, .pid = pid, .capture = out,
			    .version = (unsigned)req->version };
	c.next = clients; /* findable by control_reply while the command runs */
	clients = &c;
	handle(&c, req);
	for (struct client **pp = &clients; *pp; pp = &(*pp)->next)
		if (*pp == &c) {
			*pp = c.next;
			break;
		}
	if (!out->answered) {
		out->answered = true;
		out->code = CTL_E_INTERNAL;
		snprintf(out->error, sizeof out->error, "%s: no answer at once", req->name);
	}
}

/* A frame that is no request: the error reply (seq 0), sent before the client
 * is dropped. */
static void refuse_frame(struct client *c, const char *why)
{
	log_warnx("control client pid %d uid %d: %s; dropping it", (int)c->pid, (int)c->uid, why);
	control_fail(c->cid, 0, CTL_E_BAD_REQUEST, "malformed request: %s", why);
	channel_flush(c->ch, 100);
}

/* client -> supervisor: a malformed frame gets an error reply and the client dropped. */
static void supervisor_from_client(struct channel *ch, const char *buf, size_t len, void *arg)
{
	struct client *c = arg;
	char err[256] = "";
	struct msg m;
	msgpack_zone_clear(&zone);
	if (msg_decode(buf, len, &m, &zone, err, sizeof err) < 0 || m.type != MSG_REQUEST) {
		if (m.type != MSG_REQUEST && !err[0])
			snprintf(err, sizeof err, "expected a request, got %s", msg_type_str(m.type));
		refuse_frame(c, err);
		client_drop(c);
		return;
	}
	if (m.version < UCGW_CTL_VERSION_MIN || m.version > UCGW_CTL_VERSION) {
		c->waiting++; /* counted down by the reply */
		control_fail(c->cid, m.seq, CTL_E_VERSION,
			     "control protocol version %llu not supported (this ucgwd speaks %d to %d)",
			     (unsigned long long)m.version, UCGW_CTL_VERSION_MIN, UCGW_CTL_VERSION);
		return;
	}
	c->version = (unsigned)m.version; /* its replies are in this version's form */
	c->active_ms = now_ms();
	handle(c, &m);
}

/* A frame the channel refuses unread (length 0, or over gateway.max_frame_bytes):
 * the same error reply as a malformed request, before the channel closes and
 * on_client_error drops the client. */
static void on_client_bad_frame(struct channel *ch, const char *why, void *arg)
{
	struct client *c = arg;
	size_t len = channel_refused_len(ch);
	if (!len) {
		refuse_frame(c, why);
		return;
	}
	/* Too large: say which limit, and what to change, as a send over
	 * max_message_bytes hears (the loader keeps max_frame_bytes above it). */
	log_warnx("control client pid %d uid %d: %s; dropping it", (int)c->pid, (int)c->uid, why);
	control_fail(c->cid, 0, CTL_E_TOO_LARGE,
		     "frame of %zu bytes is larger than the limit of %zu bytes (gateway.max_frame_bytes): a message may "
		     "have at most gateway.max_message_bytes (%lld) bytes; send less, send a file with send-file, or "
		     "raise both in the configuration",
		     len, (size_t)config_int(sup.cfg, "gateway", "max_frame_bytes"),
		     (long long)config_int(sup.cfg, "gateway", "max_message_bytes"));
	channel_flush(c->ch, 100);
}

static void on_client_error(struct channel *ch, const char *why, void *arg)
{
	struct client *c = arg;
	c->ch = NULL;
	client_drop(c);
}

/* The control socket carries frames up to gateway.max_frame_bytes, like the
 * workers' sockets; the loader makes sure that a message of max_message_bytes fits. */
static size_t control_max_frame(void) { return (size_t)config_int(sup.cfg, "gateway", "max_frame_bytes"); }

void control_config_changed(void)
{
	for (struct client *c = clients; c; c = c->next)
		if (c->ch)
			channel_set_max_frame(c->ch, control_max_frame());
}

static bool privileged(uid_t uid) { return uid == 0 || uid == geteuid(); }

static unsigned clients_of(uid_t uid)
{
	unsigned n = 0;
	for (struct client *c = clients; c; c = c->next)
		n += c->uid == uid;
	return n;
}

/* The connection idle longest (no request in flight, no reply waiting), of
 * this uid only or of anyone; NULL when all are busy. */
static struct client *longest_idle(uid_t uid, bool anyone)
{
	struct client *best = NULL;
	for (struct client *c = clients; c; c = c->next)
		if ((anyone || c->uid == uid) && c->ch && !c->waiting && !channel_queued(c->ch) &&
		    (!best || c->active_ms < best->active_ms))
			best = c;
	return best;
}

static void log_refusal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_refusal(const char *fmt, ...)
{
	unsigned held;
	if (!ratelog_ok(&refusal_log, LIMIT_LOG_MS, &held))
		return;
	char line[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (held)
		log_warnx("control socket: %s (and %u more like it in the last %d s)", line, held, LIMIT_LOG_MS / 1000);
	else
		log_warnx("control socket: %s", line);
}

/* Room for one more client of uid: at its per-user cap, its own longest idle
 * connection makes way; root and ucgwd's user also have the reserved slots
 * and, when every slot is taken, anyone's longest idle connection. A user
 * cannot lock out another, nor anyone root. */
static bool make_room(const struct ucred *cr)
{
	bool priv = privileged(cr->uid);
	struct client *victim = NULL;
	/* The per-user cap keeps one user from taking every slot; root and
	 * ucgwd's user are not capped (their clients are the operator's). */
	if (!priv && clients_of(cr->uid) >= MAX_CLIENTS_PER_UID)
		victim = longest_idle(cr->uid, false);
	else if (nclients < (priv ? MAX_CLIENTS : MAX_CLIENTS - RESERVED_CLIENTS))
		return true;
	else if (priv)
		victim = longest_idle(0, true);
	if (!victim) {
		log_refusal("refusing a client of uid %d pid %d: %s", (int)cr->uid, (int)cr->pid,
			    clients_of(cr->uid) >= MAX_CLIENTS_PER_UID ? "its user has every connection of its own busy"
								       : "every connection is taken");
		return false;
	}
	log_refusal("closing the longest idle connection (uid %d pid %d) for a new client of uid %d pid %d "
		    "(%d connections per user, %d in all)", (int)victim->uid, (int)victim->pid, (int)cr->uid,
		    (int)cr->pid, MAX_CLIENTS_PER_UID, MAX_CLIENTS);
	client_drop(victim);
	return true;
}

static void client_add(int fd, const struct ucred *cr)
{
	struct client *c = xcalloc(1, sizeof *c);
	c->cid = next_cid++;
	c->uid = cr->uid;
	c->gid = cr->gid;
	c->pid = cr->pid;
	c->active_ms = c->progress_ms = now_ms();
	static const struct channel_ops ops = { .on_frame = supervisor_from_client, .on_error = on_client_error,
						.on_bad_frame = on_client_bad_frame };
	c->ch = channel_new(sup.loop, fd, control_max_frame(), &ops, c);
	channel_set_read_limit(c->ch, CLIENT_REPLY_LIMIT);
	c->next = clients;
	clients = c;
	nclients++;
}

/* Out of descriptors: the listening socket stays readable, so polling it would
 * spin. Accepting waits until a client leaves or ACCEPT_RETRY_MS have passed. */
static void log_accept_failure(int err)
{
	unsigned held;
	if (ratelog_ok(&accept_log, LIMIT_LOG_MS, &held))
		log_warnx("control socket: cannot accept a client: %s; accepting again when a descriptor is free, root "
			  "and ucgwd's user through a spare one (%u such failures held back; raise LimitNOFILE, see "
			  "docs/operations.md)", strerror(err), held);
}

static void accept_pause(int err)
{
	log_accept_failure(err);
	uv_poll_stop(&listen_poll);
	accepting = false;
	uv_timer_start(&accept_timer, on_accept_timer, ACCEPT_RETRY_MS, 0);
}

/* A client refused a slot is told why (one reply frame, seq 0, written
 * without waiting: the socket's buffer is empty), not just closed. */
static void refuse_connection(int fd, const struct ucred *cr, const char *reason)
{
	char why[200];
	snprintf(why, sizeof why, "refused: %s; try again later",
		 reason ? reason
		 : !privileged(cr->uid) && clients_of(cr->uid) >= MAX_CLIENTS_PER_UID
			 ? "this user has every connection to ucgwd it may open busy"
			 : "ucgwd has every control connection busy");
	struct msg m = { .type = MSG_REPLY, .version = UCGW_CTL_VERSION, .seq = 0, .ok = false, .error = why,
			 .code = CTL_E_BUSY };
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	msg_encode(&m, &sb);
	if (write(fd, sb.data, sb.size) < 0) {
		/* nothing more to do: it is closed below either way */
	}
	msgpack_sbuffer_destroy(&sb);
	close(fd);
}

/* Out of descriptors: one waiting client through the spare. Root and ucgwd's
 * user are kept (anyone's longest idle connection makes way, when there is
 * one); anyone else is told why and closed. False: nobody was waiting, or
 * the spare could not be had back. */
static bool accept_with_spare(void)
{
	close(spare_fd);
	spare_fd = -1;
	int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		spare_take();
		return false;
	}
	struct ucred cr = { .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
	socklen_t crlen = sizeof cr;
	bool known = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) == 0;
	if (!known || !privileged(cr.uid)) {
		if (known)
			log_refusal("out of descriptors: refusing a client of uid %d pid %d (the spare descriptor is "
				    "kept for root and ucgwd's user)", (int)cr.uid, (int)cr.pid);
		refuse_connection(fd, &cr, "ucgwd is out of descriptors");
	} else {
		struct client *victim = longest_idle(0, true);
		if (victim) {
			log_refusal("out of descriptors: closing the longest idle connection (uid %d pid %d) for a "
				    "client of uid %d pid %d", (int)victim->uid, (int)victim->pid, (int)cr.uid, (int)cr.pid);
			client_drop(victim);
		}
		client_add(fd, &cr);
	}
	spare_take();
	return spare_fd >= 0;
}

static void on_accept(uv_poll_t *h, int status, int events)
{
	unsigned spared = 0;
	for (;;) {
		int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if ((errno == EMFILE || errno == ENFILE) && spare_fd >= 0 && spared++ < SPARE_ACCEPTS) {
				log_accept_failure(errno);
				if (accept_with_spare())
					continue;
			}
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				accept_pause(errno);
			else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_warn("accept on control socket");
			return;
		}
		struct ucred cr;
		socklen_t crlen = sizeof cr;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) < 0) {
			log_refusal("refusing a client: no peer credentials");
			close(fd);
			continue;
		}
		if (!make_room(&cr)) {
			refuse_connection(fd, &cr, NULL);
			continue;
		}
		client_add(fd, &cr);
	}
}

static void accept_resume(void)
{
	spare_take();
	if (listen_fd < 0 || accepting)
		return;
	uv_timer_stop(&accept_timer);
	accepting = true;
	uv_poll_start(&listen_poll, UV_READABLE, on_accept);
}

static void on_accept_timer(uv_timer_t *t) { accept_resume(); }

/* A client that reads none of its replies for the stall timeout, or has
 * nothing in flight for the idle timeout, gives its slot back: false, or true
 * with why. */
static bool client_overstayed(struct client *c, uint64_t now, char *why, size_t whylen)
{
	uint64_t written = channel_bytes_written(c->ch);
	long long stall_s = config_int(sup.cfg, "gateway", "control_stall_timeout_s");
	long long idle_s = config_int(sup.cfg, "gateway", "control_idle_timeout_s");
	if (!channel_queued(c->ch) || written != c->written_mark) {
		c->written_mark = written;
		c->progress_ms = now;
	}
	if (now - c->progress_ms >= (uint64_t)stall_s * 1000) {
		snprintf(why, whylen, "has read none of its replies for %lld s", stall_s);
		return true;
	}
	if (!c->waiting && !channel_queued(c->ch) && now - c->active_ms >= (uint64_t)idle_s * 1000) {
		snprintf(why, whylen, "has sent no request for %lld s", idle_s);
		return true;
	}
	return false;
}

static void sweep(uv_timer_t *t)
{
	uint64_t now = now_ms();
	for (struct client *c = clients, *next; c; c = next) {
		next = c->next;
		char why[80];
		if (!c->ch || !client_overstayed(c, now, why, sizeof why))
			continue;
		log_warnx("control client pid %d uid %d %s (%zu bytes of replies waiting); disconnecting it",
			  (int)c->pid, (int)c->uid, why, channel_queued(c->ch));
		client_drop(c);
	}
}

/* Is another ucgwd answering on path? A refused connection means a stale socket. */
static bool someone_listening(const struct sockaddr_un *sa)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	bool up = connect(fd, (const struct sockaddr *)sa, sizeof *sa) == 0;
	close(fd);
	return up;
}

int control_listen(char *err, size_t errlen)
{
	const char *path = config_str(sup.cfg, "gateway", "control_socket");
	unsigned mode = (unsigned)strtoul(config_str(sup.cfg, "gateway", "control_socket_mode"), NULL, 8);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof sa.sun_path) {
		snprintf(err, errlen, "gateway.control_socket is too long (%zu bytes; a unix socket's path has at "
				      "most %zu): %s", strlen(path), sizeof sa.sun_path - 1, path);
		return -1;
	}
	strcpy(sa.sun_path, path);
	char *dir = xstrdup(path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (mkdir_p(dir, 0755) < 0) {
			snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
			free(dir);
			return -1;
		}
	}
	free(dir);
	if (someone_listening(&sa)) {
		snprintf(err, errlen, "another ucgwd is already running on %s", path);
		return -1;
	}
	struct stat st;
	if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "cannot listen on %s: it exists and is not a socket (gateway.control_socket "
				      "names the socket ucgwd makes; nothing else may be there)", path);
		return -1;
	}
	unlink(path); /* stale */
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	bool bound = fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
	if (!bound || chmod(path, mode) < 0 || listen(fd, 128) < 0) {
		snprintf(err, errlen, "cannot listen on %s: %s%s", path, strerror(errno),
			 errno == EACCES || errno == EPERM ? " (is its directory writable by this user? see "
							     "gateway.control_socket)" : "");
		if (bound)
			unlink(path);
		if (fd >= 0)
			close(fd);
		return -1;
	}
	listen_fd = fd;
	spare_take();
	sock_path = xstrdup(path);
	msgpack_zone_init(&zone, 4096);
	uv_poll_init(sup.loop, &listen_poll, listen_fd);
	uv_timer_init(sup.loop, &sweep_timer);
	uv_timer_init(sup.loop, &accept_timer);
	uv_timer_start(&sweep_timer, sweep, SWEEP_MS, SWEEP_MS);
	uv_unref((uv_handle_t *)&sweep_timer);
	timers_on = true;
	accept_resume();
	log_info("control socket listening on %s (mode %04o)", path, mode);
	return 0;
}

void control_stop_accepting(void)
{
	if (listen_fd < 0)
		return;
	uv_poll_stop(&listen_poll);
	accepting = false;
	uv_close((uv_handle_t *)&listen_poll, NULL);
	uv_close((uv_handle_t *)&accept_timer, NULL);
	close(listen_fd);
	listen_fd = -1;
	if (spare_fd >= 0)
		close(spare_fd);
	spare_fd = -1;
	unlink(sock_path);
}

void control_close_all(void)
{
	control_stop_accepting();
	while (clients) {
		channel_flush(clients->ch, 200);
		client_drop(clients);
	}
	if (timers_on) {
		uv_close((uv_handle_t *)&sweep_timer, NULL);
		timers_on = false;
	}
	free(sock_path);
	sock_path = NULL;
}
