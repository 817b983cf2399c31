/* libucgw: a client of ucgwd's control socket (docs/control-protocol.md), on
 * the daemon's own codec (proto/).
 *
 * One connection per handle, non-blocking underneath. Requests are frames
 * appended to a write queue (a descriptor for send-file rides on its frame's
 * first byte) and written as far as the socket takes them; replies are matched
 * to outstanding requests by seq through a small hash table. Three kinds of
 * request:
 *   SYNC      a blocking call's: its thread waits for it;
 *   TICKET    ucgw_send_async without a callback: collected by ucgw_wait;
 *   CALLBACK  ucgw_send_async with one: when the answer comes it is moved to the
 *             due list, and ucgw_process (signalled through ucgw_fd) runs it.
 * Waiting threads take turns: one of them (the poller) sleeps in poll() on the
 * socket without the mutex, the others on the condition variable; whoever reads
 * a reply marks its request done and wakes them all. A thread that does socket
 * work while the poller sleeps kicks it through an eventfd. ucgw_fd is an epoll
 * descriptor over the socket (and its writability while bytes are queued) and a
 * second eventfd for due callbacks, so it stays the same across reconnects. */
#include "ucgw.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "proto/proto.h"
#include "ucgw_int.h"

/* common/util.c, linked in: the ids ucgwd makes, and their check (util.h
 * itself is not included: its now_ms() is another than this file's). */
#define UCGW_ID_LEN 26
void id_new(char out[UCGW_ID_LEN + 1]);
bool id_valid(const char *s);

#define MAX_IN_FRAME (256u << 20)          /* a reply larger than this is nonsense */
/* The most this client puts in one request. ucgwd's own limit is gateway.max_frame_bytes
 * (16 MiB by default); a larger frame gets its error reply, read even while writing. */
#define MAX_OUT_FRAME ((64u << 20) - 4096)
#define NBUCKETS 256

enum rkind { RK_SYNC, RK_TICKET, RK_CALLBACK };

struct req {
	ucgw_req_t seq;
	char id[UCGW_ID_LEN + 1]; /* the message's id, for a send; in its outcome even without an answer */
	enum rkind kind;
	bool done, waited;
	int err;        /* ended without a reply: why */
	int ctl_code;   /* and ucgwd's code for it, when it said (a reply with seq 0) */
	char *errtext;
	char *frame;    /* the reply's msgpack object */
	size_t flen;
	ucgw_callback cb;
	void *arg;
	ucgw_progress_fn progress;
	void *progress_arg;
	uint64_t pdone, psize;
	unsigned pgen;
	struct req *hnext;
};

/* Due in ucgw_process: a finished CALLBACK request, or a progress report for one. */
struct notice {
	struct req *req;
	ucgw_progress_fn progress;
	void *arg;
	ucgw_req_t seq;
	uint64_t done, size;
	struct notice *next;
};

struct mark {
	size_t at; /* offset in the write queue of the frame that carries it */
	int fd;
};

struct ucgw {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	char *path, *auth;
	int timeout_ms;
	int sock;          /* -1: not connected */
	int stale;         /* a lost socket the poller still polls: closed when it returns */
	int polled;        /* the socket in poll(), while polling */
	bool polling, pollout, lost_unreported;
	int epfd, notify_fd, wake_fd;
	uint64_t seq;
	struct req *table[NBUCKETS];
	size_t npending;
	msgpack_sbuffer wq;
	size_t woff;
	struct mark *marks;
	size_t nmarks, capmarks;
	char *rbuf;
	size_t rlen, rcap;
	msgpack_zone zone;
	struct notice *due, **due_tail;
	int lost_code; /* ucgwd's code for why it hung up (its reply with seq 0), while conn_lost runs */
};

/* ---- errors ---- */

static _Thread_local char last_err[512];
/* The code of ucgwd's refusal: reply_code from the reply just read, handed to
 * last_code by the failure that reports it (fail, or before a callback). */
static _Thread_local int last_code, reply_code;

/* The numbers are proto/ctl.h's, which ucgwd sends. */
_Static_assert((int)UCGW_CODE_BAD_REQUEST == (int)CTL_E_BAD_REQUEST && (int)UCGW_CODE_UNAUTHORIZED == (int)CTL_E_UNAUTHORIZED &&
		       (int)UCGW_CODE_FORBIDDEN == (int)CTL_E_FORBIDDEN && (int)UCGW_CODE_NOT_FOUND == (int)CTL_E_NOT_FOUND &&
		       (int)UCGW_CODE_CONFLICT == (int)CTL_E_CONFLICT && (int)UCGW_CODE_TOO_LARGE == (int)CTL_E_TOO_LARGE &&
		       (int)UCGW_CODE_CONFIG == (int)CTL_E_CONFIG && (int)UCGW_CODE_BUSY == (int)CTL_E_BUSY &&
		       (int)UCGW_CODE_INTERNAL == (int)CTL_E_INTERNAL && (int)UCGW_CODE_UNAVAILABLE == (int)CTL_E_UNAVAILABLE &&
		       (int)UCGW_CODE_VERSION == (int)CTL_E_VERSION && (int)UCGW_CODE_SPOOL_FULL == (int)CTL_E_SPOOL_FULL,
	       "enum ucgw_code is proto/ctl.h's enum ctl_code");

static const char *const error_text[UCGW_E_COUNT] = {
	[UCGW_OK] = "ok",
	[UCGW_E_ARG] = "bad argument",
	[UCGW_E_NOMEM] = "out of memory",
	[UCGW_E_NOT_RUNNING] = "ucgwd is not running",
	[UCGW_E_CONNECT] = "cannot connect to ucgwd",
	[UCGW_E_IO] = "connection to ucgwd lost",
	[UCGW_E_PROTOCOL] = "unreadable answer from ucgwd",
	[UCGW_E_REFUSED] = "refused by ucgwd",
	[UCGW_E_UNAUTHORIZED] = "unauthorized: ucgwd wants a valid API key or JWT",
	[UCGW_E_FAILED] = "not delivered",
	[UCGW_E_TIMEOUT] = "no answer from ucgwd in time",
	[UCGW_E_FILE] = "cannot read the file",
	[UCGW_E_NOREQ] = "no such request",
};

const char *ucgw_strerror(int e) { return e >= 0 && e < UCGW_E_COUNT ? error_text[e] : "unknown error"; }
const char *ucgw_last_error(void) { return last_err; }
int ucgw_last_code(void) { return last_code; }
const char *ucgw_version(void) { return UCGW_VERSION; }

__attribute__((format(printf, 2, 3))) static int fail(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(last_err, sizeof last_err, fmt, ap);
	va_end(ap);
	last_code = reply_code;
	reply_code = 0;
	return code;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void kick(int efd)
{
	uint64_t one = 1;
	if (write(efd, &one, sizeof one) < 0) {
		/* the counter is already non-zero: readable anyway */
	}
}

static void drain(int efd)
{
	uint64_t v;
	if (read(efd, &v, sizeof v) < 0) {
		/* EAGAIN: nothing was signalled */
	}
}

/* ---- the request table ---- */

static struct req **bucket(ucgw_t *gw, ucgw_req_t seq) { return &gw->table[seq % NBUCKETS]; }

static struct req *lookup(ucgw_t *gw, ucgw_req_t seq)
{
	for (struct req *r = *bucket(gw, seq); r; r = r->hnext)
		if (r->seq == seq)
			return r;
	return NULL;
}

static void unhash(ucgw_t *gw, struct req *r)
{
	for (struct req **pp = bucket(gw, r->seq); *pp; pp = &(*pp)->hnext)
		if (*pp == r) {
			*pp = r->hnext;
			r->hnext = NULL;
			return;
		}
}

static void req_free(struct req *r)
{
	if (!r)
		return;
	free(r->frame);
	free(r->errtext);
	free(r);
}

static void push_notice(ucgw_t *gw, struct notice *n)
{
	n->next = NULL;
	*gw->due_tail = n;
	gw->due_tail = &n->next;
	kick(gw->notify_fd);
}

/* An answer (or the end of hope for one) for r. */
static void complete(ucgw_t *gw, struct req *r)
{
	if (r->kind == RK_CALLBACK) {
		struct notice *n = calloc(1, sizeof *n);
		unhash(gw, r);
		if (!n) { /* the callback cannot be scheduled: it is dropped */
			gw->npending--;
			req_free(r);
			return;
		}
		n->req = r;
		n->seq = r->seq;
		push_notice(gw, n);
		return;
	}
	r->done = true;
	pthread_cond_broadcast(&gw->cond);
	if (gw->polling)
		kick(gw->wake_fd);
}

static void end_without_reply(ucgw_t *gw, struct req *r, int code, const char *why)
{
	r->err = code;
	r->ctl_code = gw->lost_code;
	r->errtext = strdup(why);
	complete(gw, r);
}

/* ---- the connection ---- */

static void set_pollout(ucgw_t *gw)
{
	bool want = gw->woff < gw->wq.size;
	if (gw->sock < 0 || want == gw->pollout)
		return;
	struct epoll_event ev = { .events = EPOLLIN | (want ? EPOLLOUT : 0) };
	ev.data.fd = gw->sock;
	epoll_ctl(gw->epfd, EPOLL_CTL_MOD, gw->sock, &ev);
	gw->pollout = want;
}

static void drop_queue(ucgw_t *gw)
{
	for (size_t i = 0; i < gw->nmarks; i++)
		close(gw->marks[i].fd);
	gw->nmarks = 0;
	gw->woff = 0;
	gw->wq.size = 0;
}

/* Everything outstanding on this connection ends with code; the next request reconnects. */
static void conn_lost(ucgw_t *gw, int code, const char *why)
{
	if (gw->sock < 0)
		return;
	epoll_ctl(gw->epfd, EPOLL_CTL_DEL, gw->sock, NULL);
	if (gw->polling && gw->polled == gw->sock) {
		gw->stale = gw->sock; /* poll() has it: closing it now could hand its number to another open */
		kick(gw->wake_fd);
	} else {
		close(gw->sock);
	}
	gw->sock = -1;
	gw->rlen = 0;
	gw->pollout = false;
	gw->lost_unreported = true;
	drop_queue(gw);
	for (int b = 0; b < NBUCKETS; b++) {
		struct req *r = gw->table[b], *next;
		for (; r; r = next) {
			next = r->hnext;
			if (!r->done)
				end_without_reply(gw, r, code, why);
		}
	}
	pthread_cond_broadcast(&gw->cond);
}

static int connect_sock(ucgw_t *gw)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(gw->path) >= sizeof sa.sun_path)
		return fail(UCGW_E_CONNECT, "cannot connect to ucgwd: socket path too long: %s", gw->path);
	strcpy(sa.sun_path, gw->path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fail(UCGW_E_CONNECT, "cannot connect to ucgwd: socket: %s", strerror(errno));
	int r;
	do
		r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
	while (r < 0 && errno == EINTR);
	if (r < 0 && errno != EISCONN) {
		int e = errno;
		close(fd);
		if (e == ENOENT || e == ENOTDIR)
			return fail(UCGW_E_NOT_RUNNING, "ucgwd is not running (no socket at %s)", gw->path);
		if (e == ECONNREFUSED)
			return fail(UCGW_E_NOT_RUNNING, "ucgwd is not running (nobody listening on %s)", gw->path);
		if (e == EACCES || e == EPERM)
			return fail(UCGW_E_CONNECT,
				    "cannot connect to ucgwd at %s: %s (gateway.control_socket_mode decides who may)",
				    gw->path, strerror(e));
		return fail(UCGW_E_CONNECT, "cannot connect to ucgwd at %s: %s", gw->path, strerror(e));
	}
	int fl = fcntl(fd, F_GETFL);
	struct epoll_event ev = { .events = EPOLLIN };
	ev.data.fd = fd;
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || epoll_ctl(gw->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int e = errno;
		close(fd);
		return fail(UCGW_E_CONNECT, "cannot connect to ucgwd: %s", strerror(e));
	}
	gw->sock = fd;
	gw->rlen = 0;
	gw->pollout = false;
	return UCGW_OK;
}

static ssize_t send_frag(int sock, const char *p, size_t n, int fd)
{
	struct iovec iov = { (void *)p, n };
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} cbuf;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (fd >= 0) {
		memset(&cbuf, 0, sizeof cbuf);
		mh.msg_control = cbuf.b;
		mh.msg_controllen = sizeof cbuf.b;
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof fd);
	}
	return sendmsg(sock, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
}

static void read_in(ucgw_t *gw);

/* Write what the socket takes; a descriptor goes with the first byte of its frame. */
static void flush(ucgw_t *gw)
{
	while (gw->sock >= 0 && gw->woff < gw->wq.size) {
		size_t end = gw->wq.size;
		int fd = -1;
		if (gw->nmarks) {
			if (gw->marks[0].at == gw->woff) {
				fd = gw->marks[0].fd;
				if (gw->nmarks > 1)
					end = gw->marks[1].at;
			} else {
				end = gw->marks[0].at;
			}
		}
		ssize_t n = send_frag(gw->sock, gw->wq.data + gw->woff, end - gw->woff, fd);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			int e = errno;
			if (e == EPIPE || e == ECONNRESET) {
				read_in(gw); /* why ucgwd hung up: its error reply to a frame it refused */
				if (gw->sock < 0)
					return;
			}
			char why[160];
			snprintf(why, sizeof why, "connection to ucgwd lost: %s", strerror(e));
			conn_lost(gw, UCGW_E_IO, why);
			return;
		}
		if (fd >= 0) {
			close(fd);
			memmove(gw->marks, gw->marks + 1, --gw->nmarks * sizeof *gw->marks);
		}
		gw->woff += (size_t)n;
	}
	if (gw->woff == gw->wq.size) {
		gw->woff = gw->wq.size = 0;
		if (gw->wq.alloc > (4u << 20)) { /* one big message: do not keep its buffer */
			msgpack_sbuffer_destroy(&gw->wq);
			msgpack_sbuffer_init(&gw->wq);
		}
	} else if (gw->woff > (1u << 20) && gw->woff > gw->wq.size / 2) {
		memmove(gw->wq.data, gw->wq.data + gw->woff, gw->wq.size - gw->woff);
		for (size_t i = 0; i < gw->nmarks; i++)
			gw->marks[i].at -= gw->woff;
		gw->wq.size -= gw->woff;
		gw->woff = 0;
	}
}

static void on_frame(ucgw_t *gw, const char *buf, size_t len)
{
	struct msg m;
	char err[256], why[400];
	msgpack_zone_clear(&gw->zone);
	if (msg_decode(buf, len, &m, &gw->zone, err, sizeof err) < 0) {
		snprintf(why, sizeof why, "unreadable answer from ucgwd: %s", err);
		conn_lost(gw, UCGW_E_PROTOCOL, why);
		return;
	}
	if (m.type == MSG_REPLY && m.seq == 0) { /* our request was malformed; ucgwd hangs up */
		snprintf(why, sizeof why, "%s", m.error ? m.error : "ucgwd found a request malformed");
		gw->lost_code = (int)m.code;
		conn_lost(gw, UCGW_E_PROTOCOL, why);
		gw->lost_code = 0;
		return;
	}
	if (m.type != MSG_REPLY && m.type != MSG_EVENT) {
		snprintf(why, sizeof why, "unexpected %s frame from ucgwd", msg_type_str(m.type));
		conn_lost(gw, UCGW_E_PROTOCOL, why);
		return;
	}
	struct req *r = lookup(gw, m.seq);
	if (!r || r->done)
		return; /* cancelled, or its caller gave up waiting */
	if (m.type == MSG_EVENT) {
		if (!r->progress || strcmp(m.name, "progress") != 0)
			return;
		obj_get_u64(m.body, "done", &r->pdone);
		obj_get_u64(m.body, "size", &r->psize);
		r->pgen++;
		if (r->kind == RK_CALLBACK) {
			struct notice *n = calloc(1, sizeof *n);
			if (n) {
				*n = (struct notice){ .progress = r->progress, .arg = r->progress_arg, .seq = r->seq,
						      .done = r->pdone, .size = r->psize };
				push_notice(gw, n);
			}
		} else {
			pthread_cond_broadcast(&gw->cond);
			if (gw->polling)
				kick(gw->wake_fd);
		}
		return;
	}
	if ((r->frame = malloc(len))) {
		memcpy(r->frame, buf, len);
		r->flen = len;
	} else {
		r->err = UCGW_E_NOMEM;
	}
	complete(gw, r);
}

static void read_in(ucgw_t *gw)
{
	while (gw->sock >= 0) {
		size_t need = gw->rlen + 65536;
		if (gw->rlen >= FRAME_HDR) {
			const unsigned char *h = (const unsigned char *)gw->rbuf;
			size_t flen = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
			if (FRAME_HDR + flen > need)
				need = FRAME_HDR + flen;
		}
		if (need > gw->rcap) {
			size_t cap = gw->rcap ? gw->rcap : 131072;
			while (cap < need)
				cap *= 2;
			char *b = realloc(gw->rbuf, cap);
			if (!b) {
				conn_lost(gw, UCGW_E_NOMEM, "out of memory reading ucgwd's answer");
				return;
			}
			gw->rbuf = b;
			gw->rcap = cap;
		}
		size_t room = gw->rcap - gw->rlen;
		ssize_t n = recv(gw->sock, gw->rbuf + gw->rlen, room, MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			char why[160];
			snprintf(why, sizeof why, "connection to ucgwd lost: %s", strerror(errno));
			conn_lost(gw, UCGW_E_IO, why);
			return;
		}
		if (n == 0) {
			conn_lost(gw, UCGW_E_IO, "connection to ucgwd lost: ucgwd closed it (stopped or restarted)");
			return;
		}
		gw->rlen += (size_t)n;
		size_t off = 0;
		while (gw->rlen - off >= FRAME_HDR) {
			const unsigned char *h = (const unsigned char *)gw->rbuf + off;
			size_t flen = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
			if (flen == 0 || flen > MAX_IN_FRAME) {
				conn_lost(gw, UCGW_E_PROTOCOL, "unreadable answer from ucgwd: bad frame length");
				return;
			}
			if (gw->rlen - off - FRAME_HDR < flen)
				break;
			on_frame(gw, gw->rbuf + off + FRAME_HDR, flen);
			if (gw->sock < 0)
				return;
			off += FRAME_HDR + flen;
		}
		if (off) {
			memmove(gw->rbuf, gw->rbuf + off, gw->rlen - off);
			gw->rlen -= off;
		}
		if ((size_t)n < room)
			return; /* drained */
	}
}

/* Non-blocking socket work: write, read, route. */
static void io_step(ucgw_t *gw)
{
	flush(gw);
	read_in(gw);
	set_pollout(gw);
}

/* ---- requests ---- */

static int submit(ucgw_t *gw, const char *name, const msgpack_sbuffer *args, int fd, struct req *r)
{
	if (gw->sock >= 0)
		read_in(gw); /* notice a daemon that hung up since the last call before writing to it */
	if (gw->sock < 0) {
		int rc = connect_sock(gw);
		if (rc != UCGW_OK)
			return rc;
	}
	if (fd >= 0) {
		if (gw->nmarks == gw->capmarks) {
			size_t cap = gw->capmarks ? gw->capmarks * 2 : 8;
			struct mark *mk = realloc(gw->marks, cap * sizeof *mk);
			if (!mk)
				return fail(UCGW_E_NOMEM, "out of memory");
			gw->marks = mk;
			gw->capmarks = cap;
		}
		int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
		if (d < 0)
			return fail(UCGW_E_FILE, "cannot pass the file to ucgwd: %s", strerror(errno));
		gw->marks[gw->nmarks++] = (struct mark){ gw->wq.size, d };
	}
	r->seq = ++gw->seq;
	struct msg m = { .type = MSG_REQUEST, .version = UCGW_CTL_VERSION, .seq = r->seq, .name = name,
			 .auth = gw->auth };
	if (args && args->size) {
		m.body_raw = args->data;
		m.body_raw_len = args->size;
	}
	msg_encode(&m, &gw->wq);
	r->hnext = *bucket(gw, r->seq);
	*bucket(gw, r->seq) = r;
	gw->npending++;
	flush(gw); /* a broken connection ends r here, with the reason */
	set_pollout(gw);
	if (gw->polling)
		kick(gw->wake_fd); /* the poller may have to watch for writability now */
	return UCGW_OK;
}

static int clamp_ms(int64_t ms) { return ms > INT_MAX ? INT_MAX : (int)ms; }

/* With the lock held: until r is done (UCGW_OK) or the time is up (UCGW_E_TIMEOUT). */
static int wait_done(ucgw_t *gw, struct req *r, int timeout_ms)
{
	int64_t end = timeout_ms >= 0 ? now_ms() + timeout_ms : -1;
	unsigned seen = 0;
	if (!r->done && !gw->polling && gw->sock >= 0)
		io_step(gw); /* what has arrived already counts, even with no time to wait */
	while (!r->done) {
		if (r->progress && r->pgen != seen) {
			seen = r->pgen;
			uint64_t done = r->pdone, size = r->psize;
			pthread_mutex_unlock(&gw->lock);
			r->progress(gw, r->seq, done, size, r->progress_arg);
			pthread_mutex_lock(&gw->lock);
			continue;
		}
		int left = -1;
		if (end >= 0) {
			int64_t l = end - now_ms();
			if (l <= 0)
				return UCGW_E_TIMEOUT;
			left = clamp_ms(l);
		}
		if (gw->polling) {
			if (end < 0) {
				pthread_cond_wait(&gw->cond, &gw->lock);
			} else {
				struct timespec ts;
				clock_gettime(CLOCK_MONOTONIC, &ts);
				ts.tv_sec += left / 1000;
				ts.tv_nsec += (long)(left % 1000) * 1000000L;
				if (ts.tv_nsec >= 1000000000L) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000L;
				}
				pthread_cond_timedwait(&gw->cond, &gw->lock, &ts);
			}
			continue;
		}
		int fd = gw->sock; /* >= 0: r would be done otherwise */
		gw->polling = true;
		gw->polled = fd;
		struct pollfd pf[2] = { { fd, (short)(POLLIN | (gw->woff < gw->wq.size ? POLLOUT : 0)), 0 },
					{ gw->wake_fd, POLLIN, 0 } };
		pthread_mutex_unlock(&gw->lock);
		poll(pf, 2, left);
		pthread_mutex_lock(&gw->lock);
		gw->polling = false;
		gw->polled = -1;
		if (gw->stale == fd) {
			close(fd);
			gw->stale = -1;
		}
		drain(gw->wake_fd);
		if (gw->sock == fd && fd >= 0)
			io_step(gw);
		pthread_cond_broadcast(&gw->cond); /* someone else may poll now */
	}
	return UCGW_OK;
}

/* The reply in r as an outcome and a result code; *body (optional) gets the
 * reply's body, valid while zone lives. */
static int read_reply(const struct req *r, struct ucgw_outcome *out, msgpack_zone *zone, const msgpack_object **body)
{
	memset(out, 0, sizeof *out);
	out->request = r->seq;
	snprintf(out->id, sizeof out->id, "%s", r->id);
	if (body)
		*body = NULL;
	reply_code = 0;
	if (!r->frame) {
		int code = r->err ? r->err : UCGW_E_PROTOCOL;
		reply_code = r->ctl_code;
		snprintf(out->error, sizeof out->error, "%s", r->errtext ? r->errtext : ucgw_strerror(code));
		return code;
	}
	struct msg m;
	char err[256];
	if (msg_decode(r->frame, r->flen, &m, zone, err, sizeof err) < 0) {
		snprintf(out->error, sizeof out->error, "unreadable answer from ucgwd: %s", err);
		return UCGW_E_PROTOCOL;
	}
	if (!m.ok) { /* what the call returns follows ucgwd's code, never its words */
		snprintf(out->error, sizeof out->error, "%s", m.error ? m.error : "refused by ucgwd");
		reply_code = (int)m.code;
		return m.code == CTL_E_UNAUTHORIZED ? UCGW_E_UNAUTHORIZED : UCGW_E_REFUSED;
	}
	if (body)
		*body = m.body;
	uint64_t u = 0;
	obj_get_str(m.body, "id", out->id, sizeof out->id);
	obj_get_str(m.body, "status", out->status, sizeof out->status);
	obj_get_str(m.body, "protocol", out->protocol, sizeof out->protocol);
	obj_get_str(m.body, "error", out->error, sizeof out->error);
	if (obj_get_u64(m.body, "attempts", &u))
		out->attempts = u > UINT_MAX ? UINT_MAX : (unsigned)u;
	obj_get_u64(m.body, "latency_ms", &out->latency_ms);
	if (strcmp(out->status, "failed") == 0) {
		if (!out->error[0])
			snprintf(out->error, sizeof out->error, "not delivered");
		return UCGW_E_FAILED;
	}
	out->error[0] = '\0';
	return UCGW_OK;
}

/* An outcome for the caller; the words also go to ucgw_last_error. */
static int outcome_of(const struct req *r, struct ucgw_outcome *out)
{
	struct ucgw_outcome tmp;
	msgpack_zone zone;
	out = out ? out : &tmp;
	msgpack_zone_init(&zone, 1024);
	int rc = read_reply(r, out, &zone, NULL);
	msgpack_zone_destroy(&zone);
	if (rc != UCGW_OK)
		fail(rc, "%s", out->error);
	return rc;
}

/* A blocking call's timeout: 0 is the handle's (read with the lock held). */
static int timeout_of(const struct ucgw_send_opts *o) { return o ? o->timeout_ms : 0; }

/* Send and wait for the reply; *done gets the finished request (the caller frees it). */
static int sync_call(ucgw_t *gw, const char *name, const msgpack_sbuffer *args, int fd, int timeout_ms,
		     const struct ucgw_send_opts *o, const char *id, struct req **done)
{
	struct req *r = calloc(1, sizeof *r);
	if (!r)
		return fail(UCGW_E_NOMEM, "out of memory");
	r->kind = RK_SYNC;
	snprintf(r->id, sizeof r->id, "%s", id ? id : "");
	if (o) {
		r->progress = o->progress;
		r->progress_arg = o->progress_arg;
	}
	pthread_mutex_lock(&gw->lock);
	if (timeout_ms == 0)
		timeout_ms = gw->timeout_ms;
	if (timeout_ms < 0)
		timeout_ms = -1;
	int rc = submit(gw, name, args, fd, r);
	if (rc != UCGW_OK) {
		pthread_mutex_unlock(&gw->lock);
		free(r);
		return rc;
	}
	rc = wait_done(gw, r, timeout_ms);
	unhash(gw, r);
	gw->npending--;
	pthread_mutex_unlock(&gw->lock);
	if (rc != UCGW_OK) {
		req_free(r); /* the late answer finds no request and is dropped */
		return fail(rc, "no answer from ucgwd within %d ms to '%s'%s", timeout_ms, name,
			    strcmp(name, "send") == 0 || strcmp(name, "send-file") == 0
				    ? " (if ucgwd accepted the message, it still delivers it)"
				    : "");
	}
	*done = r;
	return UCGW_OK;
}

static int async_call(ucgw_t *gw, const char *name, const msgpack_sbuffer *args, int fd,
		      const struct ucgw_send_opts *o, const char *id, ucgw_callback cb, void *arg, ucgw_req_t *req)
{
	struct req *r = calloc(1, sizeof *r);
	if (!r)
		return fail(UCGW_E_NOMEM, "out of memory");
	r->kind = cb ? RK_CALLBACK : RK_TICKET;
	snprintf(r->id, sizeof r->id, "%s", id);
	r->cb = cb;
	r->arg = arg;
	if (o) {
		r->progress = o->progress;
		r->progress_arg = o->progress_arg;
	}
	pthread_mutex_lock(&gw->lock);
	int rc = submit(gw, name, args, fd, r);
	ucgw_req_t seq = r->seq;
	pthread_mutex_unlock(&gw->lock);
	if (rc != UCGW_OK) {
		free(r);
		return rc;
	}
	if (req)
		*req = seq;
	return UCGW_OK;
}

static void out_error(struct ucgw_outcome *out, int rc);

/* A blocking send, sent again unchanged (its id too) over a new connection
 * when the old one broke before the answer, until the call's timeout: ucgwd
 * answers a repeated id with the first message's state, so it takes it once. */
static int send_sync(ucgw_t *gw, const char *name, const msgpack_sbuffer *sb, int fd,
		     const struct ucgw_send_opts *o, const char *id, struct ucgw_outcome *out)
{
	pthread_mutex_lock(&gw->lock);
	int timeout_ms = timeout_of(o) ? timeout_of(o) : gw->timeout_ms;
	pthread_mutex_unlock(&gw->lock);
	int64_t end = timeout_ms >= 0 ? now_ms() + timeout_ms : -1;
	bool lost = false;
	for (int pause_ms = 20;; pause_ms = pause_ms < 500 ? pause_ms * 2 : 500) {
		int64_t left = end < 0 ? -1 : end - now_ms();
		struct req *r = NULL;
		int rc = sync_call(gw, name, sb, fd, end < 0 ? -1 : clamp_ms(left > 0 ? left : 1), o, id, &r);
		if (rc == UCGW_OK) {
			rc = outcome_of(r, out);
			req_free(r);
		} else if (out) {
			out_error(out, rc);
			snprintf(out->id, sizeof out->id, "%s", id);
		}
		bool again = rc == UCGW_E_IO || (lost && rc == UCGW_E_NOT_RUNNING);
		if (!again || (end >= 0 && now_ms() + pause_ms >= end))
			return rc;
		lost = true;
		struct timespec ts = { 0, pause_ms * 1000000L };
		nanosleep(&ts, NULL);
	}
}

/* ---- the request bodies ---- */

static pthread_mutex_t id_lock = PTHREAD_MUTEX_INITIALIZER; /* id_new's random pool is shared */

/* The message's id: the caller's (checked) or a new ULID. */
static int message_id(const struct ucgw_send_opts *o, char id[UCGW_ID_LEN + 1])
{
	if (o->id) {
		if (!id_valid(o->id))
			return fail(UCGW_E_ARG, "id must be a ULID: 26 characters of Crockford base32");
		snprintf(id, UCGW_ID_LEN + 1, "%s", o->id);
		return UCGW_OK;
	}
	return ucgw_id_new(id);
}

static int pack_send(msgpack_sbuffer *sb, const struct ucgw_send_opts *o, bool file, const char *path, bool fd,
		     const void *data, size_t len, char id[UCGW_ID_LEN + 1])
{
	static const struct ucgw_send_opts none;
	o = o ? o : &none;
	int rc = message_id(o, id);
	if (rc != UCGW_OK)
		return rc;
	if (file && (o->topic || o->endpoint))
		return fail(UCGW_E_ARG, "topic and endpoint are for metadata messages, not files");
	if (!file && o->remote_name)
		return fail(UCGW_E_ARG, "remote_name is for files, not metadata messages");
	if (o->ttl_s < 0 && o->ttl_s != UCGW_TTL_NEVER)
		return fail(UCGW_E_ARG, "ttl_s must be > 0, 0 (the daemon's default) or UCGW_TTL_NEVER");
	msgpack_packer pk;
	msgpack_sbuffer_init(sb);
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	size_t n = 5 + !!o->topic + !!o->endpoint + !!o->remote_name + (o->ttl_s != 0) +
		   (file ? (size_t)(!!path + fd) : 2);
	msgpack_pack_map(&pk, n);
	pk_kv_str(&pk, "id", id);
	pk_kv_str(&pk, "protocol", o->protocol ? o->protocol : "auto");
	pk_kv_str(&pk, "priority", o->priority ? o->priority : "normal");
	pk_kv_bool(&pk, "wait", o->wait);
	pk_kv_bool(&pk, "encrypt", o->encrypt);
	if (o->topic)
		pk_kv_str(&pk, "topic", o->topic);
	if (o->endpoint)
		pk_kv_str(&pk, "endpoint", o->endpoint);
	if (o->remote_name)
		pk_kv_str(&pk, "remote_name", o->remote_name);
	if (o->ttl_s != 0)
		pk_kv_u64(&pk, "ttl_s", o->ttl_s > 0 ? (uint64_t)o->ttl_s : 0);
	if (file) {
		if (path)
			pk_kv_str(&pk, "path", path);
		if (fd)
			pk_kv_bool(&pk, "fd", true);
	} else {
		pk_kv_str(&pk, "format", o->format ? o->format : "json");
		pk_key(&pk, "data");
		msgpack_pack_bin(&pk, len);
		msgpack_pack_bin_body(&pk, data, len);
	}
	return UCGW_OK;
}

static int check_data(const ucgw_t *gw, const void *data, size_t len)
{
	if (!gw)
		return fail(UCGW_E_ARG, "no handle");
	if (!data || !len)
		return fail(UCGW_E_ARG, "the message is empty");
	if (len > MAX_OUT_FRAME)
		return fail(UCGW_E_ARG, "a message of %zu bytes is larger than this client sends (64 MiB)", len);
	return UCGW_OK;
}

/* Open a file to send, with the caller's rights; *abs: its absolute path (malloc'd). */
static int open_file(const char *path, int *fd, char **abs)
{
	*abs = NULL;
	*fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (*fd < 0)
		return fail(UCGW_E_FILE, "cannot open %s: %s", path, strerror(errno));
	struct stat st;
	if (fstat(*fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(*fd);
		*fd = -1;
		return fail(UCGW_E_FILE, "%s is not a regular file", path);
	}
	*abs = realpath(path, NULL);
	return UCGW_OK;
}

static int check_fd(int fd)
{
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return fail(UCGW_E_FILE, "not an open descriptor");
	if (!S_ISREG(st.st_mode))
		return fail(UCGW_E_FILE, "the descriptor is not a regular file");
	return UCGW_OK;
}

static void out_error(struct ucgw_outcome *out, int rc)
{
	if (out && rc != UCGW_OK) {
		memset(out, 0, sizeof *out);
		snprintf(out->error, sizeof out->error, "%s", last_err);
	}
}

/* ---- the API ---- */

ucgw_t *ucgw_open(const char *path, const char *auth, int *error)
{
	int dummy;
	error = error ? error : &dummy;
	last_err[0] = '\0';
	if (!path) {
		const char *env = getenv("UCGW_SOCKET");
		path = env && *env ? env : UCGW_DEFAULT_SOCKET;
	}
	if (!auth) {
		const char *jwt = getenv("UCGW_JWT"), *key = getenv("UCGW_API_KEY");
		auth = jwt && *jwt ? jwt : key && *key ? key : NULL;
	}
	ucgw_t *gw = calloc(1, sizeof *gw);
	if (!gw) {
		*error = fail(UCGW_E_NOMEM, "out of memory");
		return NULL;
	}
	gw->sock = gw->stale = gw->polled = -1;
	gw->timeout_ms = -1;
	gw->due_tail = &gw->due;
	gw->path = strdup(path);
	gw->auth = auth && *auth ? strdup(auth) : NULL;
	gw->epfd = epoll_create1(EPOLL_CLOEXEC);
	gw->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	gw->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	msgpack_sbuffer_init(&gw->wq);
	msgpack_zone_init(&gw->zone, 4096);
	pthread_mutex_init(&gw->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&gw->cond, &ca);
	pthread_condattr_destroy(&ca);
	struct epoll_event ev = { .events = EPOLLIN };
	ev.data.fd = gw->notify_fd;
	if (!gw->path || (auth && *auth && !gw->auth)) {
		*error = fail(UCGW_E_NOMEM, "out of memory");
	} else if (gw->epfd < 0 || gw->notify_fd < 0 || gw->wake_fd < 0 ||
		   epoll_ctl(gw->epfd, EPOLL_CTL_ADD, gw->notify_fd, &ev) < 0) {
		*error = fail(UCGW_E_CONNECT, "cannot set up a connection to ucgwd: %s", strerror(errno));
	} else {
		*error = connect_sock(gw);
	}
	if (*error != UCGW_OK) {
		ucgw_close(gw);
		return NULL;
	}
	return gw;
}

void ucgw_close(ucgw_t *gw)
{
	if (!gw)
		return;
	if (gw->sock >= 0)
		close(gw->sock);
	if (gw->stale >= 0)
		close(gw->stale);
	drop_queue(gw);
	for (int b = 0; b < NBUCKETS; b++)
		while (gw->table[b]) {
			struct req *r = gw->table[b];
			gw->table[b] = r->hnext;
			req_free(r);
		}
	while (gw->due) {
		struct notice *n = gw->due;
		gw->due = n->next;
		req_free(n->req);
		free(n);
	}
	if (gw->epfd >= 0)
		close(gw->epfd);
	if (gw->notify_fd >= 0)
		close(gw->notify_fd);
	if (gw->wake_fd >= 0)
		close(gw->wake_fd);
	free(gw->marks);
	free(gw->rbuf);
	free(gw->path);
	free(gw->auth);
	msgpack_sbuffer_destroy(&gw->wq);
	msgpack_zone_destroy(&gw->zone);
	pthread_cond_destroy(&gw->cond);
	pthread_mutex_destroy(&gw->lock);
	free(gw);
}

int ucgw_set_auth(ucgw_t *gw, const char *auth)
{
	last_err[0] = '\0';
	if (!gw)
		return fail(UCGW_E_ARG, "no handle");
	char *a = NULL;
	if (auth && *auth && !(a = strdup(auth)))
		return fail(UCGW_E_NOMEM, "out of memory");
	pthread_mutex_lock(&gw->lock);
	free(gw->auth);
	gw->auth = a;
	pthread_mutex_unlock(&gw->lock);
	return UCGW_OK;
}

void ucgw_set_timeout(ucgw_t *gw, int timeout_ms)
{
	if (!gw)
		return;
	pthread_mutex_lock(&gw->lock);
	gw->timeout_ms = timeout_ms > 0 ? timeout_ms : -1;
	pthread_mutex_unlock(&gw->lock);
}

int ucgw_id_new(char id[UCGW_ID_SIZE])
{
	pthread_mutex_lock(&id_lock);
	id_new(id); /* ucgwd's own (common/util.c): getrandom, else a seeded generator */
	pthread_mutex_unlock(&id_lock);
	return UCGW_OK;
}

int ucgw_send(ucgw_t *gw, const void *data, size_t len, const struct ucgw_send_opts *o, struct ucgw_outcome *out)
{
	last_err[0] = '\0';
	msgpack_sbuffer sb;
	char id[UCGW_ID_LEN + 1];
	int rc = check_data(gw, data, len);
	if (rc == UCGW_OK && (rc = pack_send(&sb, o, false, NULL, false, data, len, id)) == UCGW_OK) {
		rc = send_sync(gw, "send", &sb, -1, o, id, out);
		msgpack_sbuffer_destroy(&sb);
		return rc;
	}
	out_error(out, rc);
	return rc;
}

static int send_file_common(ucgw_t *gw, int fd, const char *abs, const struct ucgw_send_opts *o,
			    struct ucgw_outcome *out)
{
	msgpack_sbuffer sb;
	char id[UCGW_ID_LEN + 1];
	int rc = pack_send(&sb, o, true, abs, true, NULL, 0, id);
	if (rc == UCGW_OK) {
		rc = send_sync(gw, "send-file", &sb, fd, o, id, out);
		msgpack_sbuffer_destroy(&sb);
		return rc;
	}
	out_error(out, rc);
	return rc;
}

int ucgw_send_file(ucgw_t *gw, const char *path, const struct ucgw_send_opts *o, struct ucgw_outcome *out)
{
	last_err[0] = '\0';
	if (!gw || !path || !*path) {
		int rc = fail(UCGW_E_ARG, gw ? "no file given" : "no handle");
		out_error(out, rc);
		return rc;
	}
	int fd;
	char *abs;
	int rc = open_file(path, &fd, &abs);
	if (rc != UCGW_OK) {
		out_error(out, rc);
		return rc;
	}
	rc = send_file_common(gw, fd, abs ? abs : path, o, out);
	free(abs);
	close(fd);
	return rc;
}

int ucgw_send_fd(ucgw_t *gw, int fd, const struct ucgw_send_opts *o, struct ucgw_outcome *out)
{
	last_err[0] = '\0';
	int rc = gw ? check_fd(fd) : fail(UCGW_E_ARG, "no handle");
	if (rc != UCGW_OK) {
		out_error(out, rc);
		return rc;
	}
	return send_file_common(gw, fd, NULL, o, out);
}

int ucgw_send_async(ucgw_t *gw, const void *data, size_t len, const struct ucgw_send_opts *o, ucgw_callback cb,
		    void *arg, ucgw_req_t *req)
{
	last_err[0] = '\0';
	msgpack_sbuffer sb;
	char id[UCGW_ID_LEN + 1];
	int rc = check_data(gw, data, len);
	if (rc == UCGW_OK && (rc = pack_send(&sb, o, false, NULL, false, data, len, id)) == UCGW_OK) {
		rc = async_call(gw, "send", &sb, -1, o, id, cb, arg, req);
		msgpack_sbuffer_destroy(&sb);
	}
	return rc;
}

int ucgw_send_file_async(ucgw_t *gw, const char *path, const struct ucgw_send_opts *o, ucgw_callback cb, void *arg,
			 ucgw_req_t *req)
{
	last_err[0] = '\0';
	if (!gw || !path || !*path)
		return fail(UCGW_E_ARG, gw ? "no file given" : "no handle");
	int fd;
	char *abs;
	msgpack_sbuffer sb;
	int rc = open_file(path, &fd, &abs);
	if (rc != UCGW_OK)
		return rc;
	char id[UCGW_ID_LEN + 1];
	if ((rc = pack_send(&sb, o, true, abs ? abs : path, true, NULL, 0, id)) == UCGW_OK) {
		rc = async_call(gw, "send-file", &sb, fd, o, id, cb, arg, req); /* the queue holds a dup */
		msgpack_sbuffer_destroy(&sb);
	}
	free(abs);
	close(fd);
	return rc;
}

int ucgw_wait(ucgw_t *gw, ucgw_req_t req, int timeout_ms, struct ucgw_outcome *out)
{
	last_err[0] = '\0';
	if (!gw) {
		int rc = fail(UCGW_E_ARG, "no handle");
		out_error(out, rc);
		return rc;
	}
	pthread_mutex_lock(&gw->lock);
	struct req *r = lookup(gw, req);
	int rc = UCGW_OK;
	if (!r || r->kind != RK_TICKET)
		rc = fail(UCGW_E_NOREQ, "no outstanding request %llu to wait for (already collected, cancelled, "
					"or sent with a callback)", (unsigned long long)req);
	else if (r->waited)
		rc = fail(UCGW_E_ARG, "another thread is waiting for request %llu", (unsigned long long)req);
	if (rc != UCGW_OK) {
		pthread_mutex_unlock(&gw->lock);
		out_error(out, rc);
		return rc;
	}
	r->waited = true;
	rc = wait_done(gw, r, timeout_ms < 0 ? -1 : timeout_ms);
	r->waited = false;
	if (rc == UCGW_OK) {
		unhash(gw, r);
		gw->npending--;
	}
	pthread_mutex_unlock(&gw->lock);
	if (rc != UCGW_OK) {
		rc = fail(rc, "no answer to request %llu yet", (unsigned long long)req);
		out_error(out, rc);
		if (out)
			out->request = req;
		return rc;
	}
	rc = outcome_of(r, out);
	req_free(r);
	return rc;
}

int ucgw_cancel(ucgw_t *gw, ucgw_req_t req)
{
	last_err[0] = '\0';
	if (!gw)
		return fail(UCGW_E_ARG, "no handle");
	pthread_mutex_lock(&gw->lock);
	struct req *r = lookup(gw, req);
	if (!r || r->kind == RK_SYNC || r->waited) {
		pthread_mutex_unlock(&gw->lock);
		return fail(UCGW_E_NOREQ, "no outstanding request %llu to cancel", (unsigned long long)req);
	}
	unhash(gw, r);
	gw->npending--;
	pthread_mutex_unlock(&gw->lock);
	req_free(r);
	return UCGW_OK;
}

int ucgw_fd(const ucgw_t *gw) { return gw ? gw->epfd : -1; }

size_t ucgw_pending(ucgw_t *gw)
{
	if (!gw)
		return 0;
	pthread_mutex_lock(&gw->lock);
	size_t n = gw->npending;
	pthread_mutex_unlock(&gw->lock);
	return n;
}

int ucgw_process(ucgw_t *gw)
{
	last_err[0] = '\0';
	if (!gw)
		return fail(UCGW_E_ARG, "no handle");
	pthread_mutex_lock(&gw->lock);
	drain(gw->notify_fd);
	if (gw->sock >= 0)
		io_step(gw);
	bool lost = gw->lost_unreported;
	gw->lost_unreported = false;
	struct notice *due = gw->due;
	gw->due = NULL;
	gw->due_tail = &gw->due;
	for (struct notice *n = due; n; n = n->next)
		if (n->req)
			gw->npending--;
	pthread_mutex_unlock(&gw->lock);
	while (due) {
		struct notice *n = due;
		due = n->next;
		if (n->req) {
			struct ucgw_outcome out;
			msgpack_zone zone;
			msgpack_zone_init(&zone, 1024);
			int rc = read_reply(n->req, &out, &zone, NULL);
			msgpack_zone_destroy(&zone);
			last_code = rc == UCGW_OK ? 0 : reply_code; /* for ucgw_last_code in the callback */
			reply_code = 0;
			n->req->cb(gw, n->seq, rc, &out, n->req->arg);
			req_free(n->req);
		} else {
			n->progress(gw, n->seq, n->done, n->size, n->arg);
		}
		free(n);
	}
	if (lost)
		return fail(UCGW_E_IO, "connection to ucgwd lost (the next request reconnects)");
	return UCGW_OK;
}

int ucgw_flush(ucgw_t *gw, int timeout_ms)
{
	last_err[0] = '\0';
	if (!gw)
		return fail(UCGW_E_ARG, "no handle");
	int64_t end = timeout_ms >= 0 ? now_ms() + timeout_ms : -1;
	int rc = UCGW_OK;
	pthread_mutex_lock(&gw->lock);
	for (;;) {
		if (gw->sock >= 0)
			io_step(gw);
		if (gw->woff >= gw->wq.size)
			break; /* written; or the connection was lost and the requests ended with UCGW_E_IO */
		int64_t left = end >= 0 ? end - now_ms() : 50;
		if (left <= 0) {
			rc = fail(UCGW_E_TIMEOUT, "%zu bytes still queued for ucgwd after %d ms",
				  gw->wq.size - gw->woff, timeout_ms);
			break;
		}
		/* In short slices with the lock held: the socket cannot be closed
		 * under poll(), and ucgwd reads its socket promptly. */
		struct pollfd pf = { gw->sock, POLLOUT, 0 };
		poll(&pf, 1, left < 50 ? (int)left : 50);
		pthread_mutex_unlock(&gw->lock);
		sched_yield();
		pthread_mutex_lock(&gw->lock);
	}
	pthread_mutex_unlock(&gw->lock);
	return rc;
}

/* ---- stats and status ---- */

static int body_call(ucgw_t *gw, const char *name, char **json, struct ucgw_stats **list, size_t *count)
{
	struct req *r = NULL;
	int rc = sync_call(gw, name, NULL, -1, 0, NULL, NULL, &r);
	if (rc != UCGW_OK)
		return rc;
	struct ucgw_outcome out;
	msgpack_zone zone;
	const msgpack_object *body;
	msgpack_zone_init(&zone, 4096);
	rc = read_reply(r, &out, &zone, &body);
	if (rc != UCGW_OK) {
		fail(rc, "%s", out.error);
	} else if (json) {
		if (uc_json(body, json) < 0)
			rc = fail(UCGW_E_NOMEM, "out of memory");
	} else {
		int p = uc_stats_parse(body, list, count);
		if (p == -1)
			rc = fail(UCGW_E_NOMEM, "out of memory");
		else if (p < 0)
			rc = fail(UCGW_E_PROTOCOL, "unreadable answer from ucgwd: stats is not a map of protocols");
	}
	msgpack_zone_destroy(&zone);
	req_free(r);
	return rc;
}

int ucgw_stats_json(ucgw_t *gw, char **json)
{
	last_err[0] = '\0';
	if (json)
		*json = NULL;
	if (!gw || !json)
		return fail(UCGW_E_ARG, "no handle or no place for the answer");
	return body_call(gw, "stats", json, NULL, NULL);
}

int ucgw_status_json(ucgw_t *gw, char **json)
{
	last_err[0] = '\0';
	if (json)
		*json = NULL;
	if (!gw || !json)
		return fail(UCGW_E_ARG, "no handle or no place for the answer");
	return body_call(gw, "status", json, NULL, NULL);
}

int ucgw_stats(ucgw_t *gw, struct ucgw_stats **list, size_t *count)
{
	last_err[0] = '\0';
	if (list)
		*list = NULL;
	if (count)
		*count = 0;
	if (!gw || !list || !count)
		return fail(UCGW_E_ARG, "no handle or no place for the answer");
	return body_call(gw, "stats", NULL, list, count);
}
