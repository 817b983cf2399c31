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
#include "supervisor/sup.h"

#define MAX_CLIENTS 256

static int listen_fd = -1;
static uv_poll_t listen_poll;
static char *sock_path;
static struct client *clients;
static unsigned nclients;
static uint64_t next_cid = 1;
static msgpack_zone zone;

void body_init(struct body *b)
{
	msgpack_sbuffer_init(&b->sb);
	msgpack_packer_init(&b->pk, &b->sb, pk_write);
}

void body_free(struct body *b) { msgpack_sbuffer_destroy(&b->sb); }

struct client *control_client(uint64_t cid)
{
	for (struct client *c = clients; c; c = c->next)
		if (c->cid == cid)
			return c;
	return NULL;
}

void control_reply(uint64_t cid, uint64_t seq, bool ok, const char *error, const struct body *b)
{
	struct client *c = control_client(cid);
	if (c && c->capture && !c->capture->answered) {
		struct local_reply *r = c->capture;
		r->answered = true;
		r->ok = ok;
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
	struct msg m = { .type = MSG_REPLY, .version = UCGW_PROTO_VERSION, .seq = seq, .ok = ok, .error = error };
	if (b && b->sb.size) {
		m.body_raw = b->sb.data;
		m.body_raw_len = b->sb.size;
	}
	channel_send(c->ch, &m, -1);
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

void control_fail(uint64_t cid, uint64_t seq, const char *fmt, ...)
{
	char err[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, sizeof err, fmt, ap);
	va_end(ap);
	control_reply(cid, seq, false, err, NULL);
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
}

/* The checks every request passes, then its command. */
static void handle(struct client *c, const struct msg *m)
{
	char err[256] = "";
	if (auth_check(c, m, err, sizeof err) < 0) {
		control_fail(c->cid, m->seq, "%s", err);
		return;
	}
	if (sup.stopping && strcmp(m->name, "status") != 0 && strcmp(m->name, "workers") != 0) {
		control_fail(c->cid, m->seq, "ucgwd is shutting down");
		return;
	}
	commands_dispatch(c, m);
}

void control_local(uid_t uid, gid_t gid, pid_t pid, const struct msg *req, struct local_reply *out)
{
	memset(out, 0, sizeof *out);
	struct client c = { .cid = next_cid++, .uid = uid, .gid = gid, .pid = pid, .capture = out };
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
		snprintf(out->error, sizeof out->error, "%s: no answer at once", req->name);
	}
}

/* A frame that is no request: the error reply (seq 0), sent before the client
 * is dropped. */
static void refuse_frame(struct client *c, const char *why)
{
	log_warnx("control client pid %d uid %d: %s; dropping it", (int)c->pid, (int)c->uid, why);
	control_fail(c->cid, 0, "malformed request: %s", why);
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
	if (m.version != UCGW_PROTO_VERSION) {
		control_fail(c->cid, m.seq, "protocol version %llu not supported (this ucgwd speaks %d)",
			     (unsigned long long)m.version, UCGW_PROTO_VERSION);
		return;
	}
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
	control_fail(c->cid, 0,
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

static void on_accept(uv_poll_t *h, int status, int events)
{
	for (;;) {
		int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR)
				log_warn("accept on control socket");
			return;
		}
		struct ucred cr;
		socklen_t crlen = sizeof cr;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) < 0 || nclients >= MAX_CLIENTS) {
			log_warnx("control socket: refusing a client (%s)",
				  nclients >= MAX_CLIENTS ? "too many clients" : "no peer credentials");
			close(fd);
			continue;
		}
		struct client *c = xcalloc(1, sizeof *c);
		c->cid = next_cid++;
		c->uid = cr.uid;
		c->gid = cr.gid;
		c->pid = cr.pid;
		static const struct channel_ops ops = { .on_frame = supervisor_from_client, .on_error = on_client_error,
							.on_bad_frame = on_client_bad_frame };
		c->ch = channel_new(sup.loop, fd, control_max_frame(), &ops, c);
		c->next = clients;
		clients = c;
		nclients++;
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
		snprintf(err, errlen, "control_socket path too long: %s", path);
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
	unlink(path); /* stale */
	listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
	    chmod(path, mode) < 0 || listen(listen_fd, 128) < 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(errno));
		return -1;
	}
	sock_path = xstrdup(path);
	msgpack_zone_init(&zone, 4096);
	uv_poll_init(sup.loop, &listen_poll, listen_fd);
	uv_poll_start(&listen_poll, UV_READABLE, on_accept);
	log_info("control socket listening on %s (mode %04o)", path, mode);
	return 0;
}

void control_stop_accepting(void)
{
	if (listen_fd < 0)
		return;
	uv_poll_stop(&listen_poll);
	uv_close((uv_handle_t *)&listen_poll, NULL);
	close(listen_fd);
	listen_fd = -1;
	unlink(sock_path);
}

void control_close_all(void)
{
	control_stop_accepting();
	while (clients) {
		channel_flush(clients->ch, 200);
		client_drop(clients);
	}
	free(sock_path);
	sock_path = NULL;
}
