#include "ctl/conn.h"

#include <errno.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "ipc/sendall.h"

static const char *user_name(void)
{
	const struct passwd *pw = getpwuid(getuid());
	return pw ? pw->pw_name : "USER";
}

int conn_open(struct conn *c, const char *path, char *err, size_t errlen)
{
	memset(c, 0, sizeof *c);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof sa.sun_path) {
		snprintf(err, errlen, "socket path too long: %s", path);
		return -1;
	}
	strcpy(sa.sun_path, path);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		int e = errno;
		if (c->fd >= 0)
			close(c->fd);
		c->fd = -1;
		if (e == EACCES || e == EPERM) {
			snprintf(err, errlen, "permission denied on ucgwd's control socket %s: add this user to the socket's "
				 "group (the package's 'ucgw': adduser %s ucgw, then log in again), or widen "
				 "gateway.control_socket_mode", path, user_name());
			return CONN_DENIED;
		}
		snprintf(err, errlen, "ucgwd is not running (cannot connect to %s: %s)", path, strerror(e));
		return CONN_DOWN;
	}
	msgpack_zone_init(&c->zone, 4096);
	return 0;
}

void conn_close(struct conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	free(c->buf);
	msgpack_zone_destroy(&c->zone);
	c->fd = -1;
}

uint64_t conn_request(struct conn *c, const char *name, const msgpack_sbuffer *args)
{
	return conn_request_fd(c, name, args, -1);
}

/* The credential every request carries, from the environment (ucgwctl's
 * --api-key-file sets UCGW_API_KEY): a JWT is preferred, being short-lived. */
static const char *request_auth(void)
{
	const char *jwt = getenv("UCGW_JWT"), *key = getenv("UCGW_API_KEY");
	if (jwt && *jwt)
		return jwt;
	return key && *key ? key : NULL;
}

uint64_t conn_request_fd(struct conn *c, const char *name, const msgpack_sbuffer *args, int fd)
{
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	struct msg m = { .type = MSG_REQUEST, .version = UCGW_CTL_VERSION, .seq = ++c->seq, .name = name,
			 .auth = request_auth() };
	if (args && args->size) {
		m.body_raw = args->data;
		m.body_raw_len = args->size;
	}
	msg_encode(&m, &sb);
	send_all_fd(c->fd, sb.data, sb.size, fd); /* a failure shows as no reply */
	msgpack_sbuffer_destroy(&sb);
	return c->seq;
}

static size_t frame_len(const struct conn *c)
{
	const unsigned char *h = (const unsigned char *)c->buf;
	return (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
}

int conn_read(struct conn *c, struct msg *m, int timeout_ms, char *err, size_t errlen)
{
	/* The frame returned last time stays in buf until now: decoded fields point into it. */
	if (c->pending) {
		memmove(c->buf, c->buf + c->pending, c->len - c->pending);
		c->len -= c->pending;
		c->pending = 0;
	}
	for (;;) {
		if (c->len >= FRAME_HDR && c->len >= FRAME_HDR + frame_len(c)) {
			size_t flen = frame_len(c);
			c->pending = FRAME_HDR + flen;
			msgpack_zone_clear(&c->zone);
			return msg_decode(c->buf + FRAME_HDR, flen, m, &c->zone, err, errlen);
		}
		struct pollfd p = { c->fd, POLLIN, 0 };
		int r = poll(&p, 1, timeout_ms);
		if (r == 0) {
			snprintf(err, errlen, "no answer from ucgwd within %d ms", timeout_ms);
			return -1;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (c->cap - c->len < 65536) {
			c->cap = c->cap ? c->cap * 2 : 131072;
			c->buf = xrealloc(c->buf, c->cap);
		}
		ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
		if (n <= 0) {
			snprintf(err, errlen, "ucgwd closed the connection%s%s", n < 0 ? ": " : "",
				 n < 0 ? strerror(errno) : "");
			return -1;
		}
		c->len += (size_t)n;
	}
}
