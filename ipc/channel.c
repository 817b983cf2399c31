#include "ipc/channel.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"

#define MAX_FDS_QUEUED 256

struct fdmark {
	size_t at; /* offset in the write buffer of the frame that carries it */
	int fd;
};

struct channel {
	uv_poll_t poll;
	int fd;
	size_t max_frame;
	size_t refused_len; /* the length prefix of a frame refused unread */
	const struct channel_ops *ops;
	void *arg;
	bool closed, congested, in_callback;
	int events; /* what the poll handle watches now (0: not started) */
	size_t read_limit; /* 0: none; see channel_set_read_limit */
	bool read_held;    /* over read_limit: neither reading nor delivering frames */
	bool resume;       /* released: deliver the frames read before the hold */
	uint64_t written;  /* bytes the socket has taken, ever */

	char *rbuf;
	size_t rlen, rcap;
	int rfds[MAX_FDS_QUEUED];
	size_t rfd_head, rfd_count;

	char *wbuf;
	size_t woff, wlen, wcap;
	struct fdmark *marks;
	size_t nmarks, capmarks;
	msgpack_sbuffer scratch;
	bool dirty;             /* on the list of channels to write at the end of this phase */
	struct channel *dnext;
};

/* Frames are not written one by one: each channel with frames queued goes on a
 * list, and the list is written at the end of the loop's phase, all of a turn's
 * frames to a peer in one system call: after the callbacks of the I/O just
 * read (a check handle) and after the timers, before the loop blocks (a
 * prepare handle; also channel_flush_pending(), for a prepare callback that
 * writes). Only what the socket does not take then waits for a writable
 * report. Waiting for that report for every write, as before, cost two
 * epoll_ctl and a pass of the loop per channel and turn. One loop per process. */
static struct {
	uv_loop_t *loop;
	uv_check_t check;
	uv_prepare_t prep;
	struct channel *dirty;
} F;

static void channel_update_poll(struct channel *ch);

static void on_closed(uv_handle_t *h)
{
	struct channel *ch = h->data;
	for (size_t i = 0; i < ch->rfd_count; i++)
		close(ch->rfds[(ch->rfd_head + i) % MAX_FDS_QUEUED]);
	for (size_t i = 0; i < ch->nmarks; i++)
		close(ch->marks[i].fd);
	free(ch->rbuf);
	free(ch->wbuf);
	free(ch->marks);
	msgpack_sbuffer_destroy(&ch->scratch);
	free(ch);
}

static void do_write(struct channel *ch);
static void parse_frames(struct channel *ch);

static void undirty(struct channel *ch)
{
	for (struct channel **pp = &F.dirty; *pp; pp = &(*pp)->dnext)
		if (*pp == ch) {
			*pp = ch->dnext;
			break;
		}
	ch->dirty = false;
}

/* After a write: a hold released delivers the frames it kept back. */
static void after_write(struct channel *ch)
{
	if (!ch->closed && ch->resume) {
		ch->resume = false;
		parse_frames(ch);
	}
	if (!ch->closed)
		channel_update_poll(ch);
}

void channel_flush_pending(void)
{
	struct channel *ch;
	while ((ch = F.dirty)) {
		F.dirty = ch->dnext;
		ch->dirty = false;
		if (ch->closed)
			continue;
		do_write(ch);
		after_write(ch); /* a rest the socket did not take: wait for writable */
	}
}

static void on_check(uv_check_t *h) { channel_flush_pending(); }
static void on_prepare(uv_prepare_t *h) { channel_flush_pending(); }

static void flusher_init(uv_loop_t *loop)
{
	if (F.loop) {
		if (F.loop != loop)
			fatalx("channel: one event loop per process");
		return;
	}
	F.loop = loop;
	uv_check_init(loop, &F.check);
	uv_check_start(&F.check, on_check);
	uv_unref((uv_handle_t *)&F.check);
	uv_prepare_init(loop, &F.prep);
	uv_prepare_start(&F.prep, on_prepare);
	uv_unref((uv_handle_t *)&F.prep);
}

void channel_close(struct channel *ch)
{
	if (!ch || ch->closed)
		return;
	if (ch->dirty)
		undirty(ch);
	ch->closed = true;
	uv_poll_stop(&ch->poll);
	close(ch->fd);
	uv_close((uv_handle_t *)&ch->poll, on_closed);
}

static void channel_fail(struct channel *ch, const char *why)
{
	if (ch->closed)
		return;
	channel_close(ch);
	if (ch->ops->on_error)
		ch->ops->on_error(ch, why, ch->arg);
}

static void stash_fds(struct channel *ch, struct msghdr *mh)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		int *fds = (int *)CMSG_DATA(c);
		for (size_t i = 0; i < n; i++) {
			if (ch->rfd_count == MAX_FDS_QUEUED) {
				close(fds[i]); /* a peer flooding us with descriptors */
				continue;
			}
			ch->rfds[(ch->rfd_head + ch->rfd_count++) % MAX_FDS_QUEUED] = fds[i];
		}
	}
}

int channel_take_fd(struct channel *ch)
{
	if (ch->rfd_count == 0)
		return -1;
	int fd = ch->rfds[ch->rfd_head];
	ch->rfd_head = (ch->rfd_head + 1) % MAX_FDS_QUEUED;
	ch->rfd_count--;
	return fd;
}

/* Over the read limit: the peer's requests wait (in its socket, then in its own
 * writes) until it has read what it was sent. */
static bool read_held(struct channel *ch)
{
	if (ch->read_limit && channel_queued(ch) > ch->read_limit)
		ch->read_held = true;
	return ch->read_held;
}

/* Deliver every complete frame in the read buffer (none while the reading is
 * held); keep the rest. */
static void parse_frames(struct channel *ch)
{
	size_t off = 0;
	ch->in_callback = true;
	while (!ch->closed && !read_held(ch) && ch->rlen - off >= FRAME_HDR) {
		const unsigned char *h = (const unsigned char *)ch->rbuf + off;
		size_t len = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
		if (len > ch->max_frame || len == 0) {
			char why[128];
			ch->refused_len = len;
			if (len)
				snprintf(why, sizeof why, "frame of %zu bytes is larger than the limit of %zu bytes", len,
					 ch->max_frame);
			else
				snprintf(why, sizeof why, "empty frame (its length prefix is 0)");
			ch->in_callback = false;
			if (ch->ops->on_bad_frame)
				ch->ops->on_bad_frame(ch, why, ch->arg);
			channel_fail(ch, why);
			return;
		}
		if (ch->rlen - off - FRAME_HDR < len) {
			size_t need = FRAME_HDR + len;
			if (need > ch->rcap) { /* grow only as far as this frame needs */
				memmove(ch->rbuf, ch->rbuf + off, ch->rlen - off);
				ch->rlen -= off;
				off = 0;
				ch->rcap = need;
				ch->rbuf = xrealloc(ch->rbuf, ch->rcap);
			}
			break;
		}
		ch->ops->on_frame(ch, ch->rbuf + off + FRAME_HDR, len, ch->arg);
		off += FRAME_HDR + len;
	}
	ch->in_callback = false;
	if (ch->closed)
		return;
	if (off) {
		memmove(ch->rbuf, ch->rbuf + off, ch->rlen - off);
		ch->rlen -= off;
	}
}

/* One recvmsg into the read buffer (grown when nearly full), descriptors
 * stashed: the bytes read, 0 at the end, -1 with errno. *room: what it could
 * have taken (fewer read: the socket is drained). */
static ssize_t recv_some(struct channel *ch, size_t *room)
{
	if (ch->rcap - ch->rlen < 4096) {
		ch->rcap *= 2;
		ch->rbuf = xrealloc(ch->rbuf, ch->rcap);
	}
	struct iovec iov = { ch->rbuf + ch->rlen, ch->rcap - ch->rlen };
	union {
		char buf[CMSG_SPACE(sizeof(int) * 16)];
		struct cmsghdr align;
	} cbuf;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
			     .msg_controllen = sizeof cbuf.buf };
	*room = iov.iov_len;
	ssize_t n = recvmsg(ch->fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n >= 0 && mh.msg_controllen)
		stash_fds(ch, &mh);
	if (n > 0)
		ch->rlen += (size_t)n;
	return n;
}

static void do_read(struct channel *ch)
{
	for (int rounds = 0; rounds < 16 && !ch->closed && !read_held(ch); rounds++) {
		size_t room;
		ssize_t n = recv_some(ch, &room);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			channel_fail(ch, strerror(errno));
			return;
		}
		if (n == 0) {
			channel_fail(ch, "peer closed the connection");
			return;
		}
		parse_frames(ch);
		if ((size_t)n < room)
			return; /* drained the socket */
	}
}

/* The peer is gone (a write found it so, or the poll reported an error), but
 * what it wrote before it went may still wait in the socket: a client that
 * sends without waiting for answers and closes. Read and handle all of it,
 * then fail the channel. */
static void read_to_end(struct channel *ch, const char *why)
{
	ch->read_held = false;
	while (!ch->closed) {
		ch->woff = ch->wlen = 0; /* nobody to write to: replies go nowhere */
		size_t room;
		ssize_t n = recv_some(ch, &room);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		parse_frames(ch);
	}
	channel_fail(ch, why);
}

static ssize_t send_with_fd(struct channel *ch, const char *p, size_t n, int fd)
{
	struct iovec iov = { (void *)p, n };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} cbuf;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (fd >= 0) {
		memset(&cbuf, 0, sizeof cbuf);
		mh.msg_control = cbuf.buf;
		mh.msg_controllen = sizeof cbuf.buf;
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof fd);
	}
	return sendmsg(ch->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* Write as much of the queue as the socket takes. A descriptor goes with the
 * first byte of its frame, so the write stops at each mark. */
static void do_write(struct channel *ch)
{
	while (!ch->closed && ch->woff < ch->wlen) {
		size_t end = ch->wlen;
		int fd = -1;
		if (ch->nmarks) {
			if (ch->marks[0].at == ch->woff)
				fd = ch->marks[0].fd;
			if (ch->nmarks > (fd >= 0 ? 1u : 0u))
				end = ch->marks[fd >= 0 ? 1 : 0].at;
		}
		ssize_t n = send_with_fd(ch, ch->wbuf + ch->woff, end - ch->woff, fd);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			if (errno == EPIPE || errno == ECONNRESET)
				read_to_end(ch, strerror(errno));
			else
				channel_fail(ch, strerror(errno));
			return;
		}
		if (fd >= 0) {
			close(fd);
			memmove(ch->marks, ch->marks + 1, --ch->nmarks * sizeof *ch->marks);
		}
		ch->woff += (size_t)n;
		ch->written += (uint64_t)n;
	}
	if (ch->woff == ch->wlen) {
		ch->woff = ch->wlen = 0;
		if (ch->wcap > CHANNEL_LOW_WATER) { /* a burst's buffer is given back, not kept */
			free(ch->wbuf);
			ch->wbuf = NULL;
			ch->wcap = 0;
		}
	} else if (ch->woff > ch->wcap / 2) {
		memmove(ch->wbuf, ch->wbuf + ch->woff, ch->wlen - ch->woff);
		for (size_t i = 0; i < ch->nmarks; i++)
			ch->marks[i].at -= ch->woff;
		ch->wlen -= ch->woff;
		ch->woff = 0;
	}
	if (ch->read_held && channel_queued(ch) <= ch->read_limit / 2) {
		ch->read_held = false;
		ch->resume = true;
	}
	if (ch->congested && channel_queued(ch) < CHANNEL_LOW_WATER) {
		ch->congested = false;
		if (ch->ops->on_drain)
			ch->ops->on_drain(ch, ch->arg);
	}
}

static void on_poll(uv_poll_t *h, int status, int events)
{
	struct channel *ch = h->data;
	if (status < 0) {
		read_to_end(ch, uv_strerror(status));
		return;
	}
	if (events & UV_READABLE)
		do_read(ch);
	if (!ch->closed && (events & UV_WRITABLE))
		do_write(ch);
	after_write(ch);
}

/* Only when the events change: libuv's uv_poll_start takes the descriptor out
 * of epoll and puts it back (two epoll_ctl) even when nothing changed. */
static void channel_update_poll(struct channel *ch)
{
	int ev = (ch->read_held ? 0 : UV_READABLE) |
		 (ch->wlen > ch->woff && !ch->dirty ? UV_WRITABLE : 0); /* dirty: written soon */
	if (ev == ch->events)
		return;
	ch->events = ev;
	if (ev)
		uv_poll_start(&ch->poll, ev, on_poll);
	else
		uv_poll_stop(&ch->poll);
}

struct channel *channel_new(uv_loop_t *loop, int fd, size_t max_frame, const struct channel_ops *ops, void *arg)
{
	struct channel *ch = xcalloc(1, sizeof *ch);
	ch->fd = fd;
	ch->max_frame = max_frame;
	ch->ops = ops;
	ch->arg = arg;
	ch->rcap = 64 * 1024;
	ch->rbuf = xmalloc(ch->rcap);
	msgpack_sbuffer_init(&ch->scratch);
	flusher_init(loop);
	if (uv_poll_init(loop, &ch->poll, fd) != 0)
		fatalx("uv_poll_init on fd %d failed", fd);
	ch->poll.data = ch;
	channel_update_poll(ch);
	return ch;
}

int channel_write(struct channel *ch, const void *frame, size_t len, int fd)
{
	if (!ch || ch->closed)
		return -1;
	if (fd >= 0) {
		int dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
		if (dupfd < 0)
			return -1;
		if (ch->nmarks == ch->capmarks) {
			ch->capmarks = ch->capmarks ? ch->capmarks * 2 : 8;
			ch->marks = xrealloc(ch->marks, ch->capmarks * sizeof *ch->marks);
		}
		ch->marks[ch->nmarks++] = (struct fdmark){ ch->wlen, dupfd };
	}
	bool was_idle = ch->wlen == ch->woff;
	if (ch->wlen + len > ch->wcap) {
		ch->wcap = ch->wcap ? ch->wcap : 64 * 1024;
		while (ch->wlen + len > ch->wcap)
			ch->wcap *= 2;
		ch->wbuf = xrealloc(ch->wbuf, ch->wcap);
	}
	memcpy(ch->wbuf + ch->wlen, frame, len);
	ch->wlen += len;
	if (channel_queued(ch) > CHANNEL_HIGH_WATER)
		ch->congested = true;
	/* Written at the end of this phase of the loop (see F), unless a write
	 * already waits for the socket to be writable. */
	if (was_idle && !ch->dirty && !(ch->events & UV_WRITABLE)) {
		ch->dirty = true;
		ch->dnext = F.dirty;
		F.dirty = ch;
	}
	return 0;
}

int channel_send(struct channel *ch, const struct msg *m, int fd)
{
	if (!ch || ch->closed)
		return -1;
	ch->scratch.size = 0;
	msg_encode(m, &ch->scratch);
	return channel_write(ch, ch->scratch.data, ch->scratch.size, fd);
}

size_t channel_queued(const struct channel *ch) { return ch->wlen - ch->woff; }
bool channel_congested(const struct channel *ch) { return ch->congested; }
void *channel_arg(const struct channel *ch) { return ch->arg; }
void channel_set_arg(struct channel *ch, void *arg) { ch->arg = arg; }
void channel_set_max_frame(struct channel *ch, size_t max_frame) { ch->max_frame = max_frame; }
void channel_set_read_limit(struct channel *ch, size_t bytes) { ch->read_limit = bytes; }
uint64_t channel_bytes_written(const struct channel *ch) { return ch->written; }

size_t channel_refused_len(const struct channel *ch) { return ch->refused_len; }

void channel_flush(struct channel *ch, int timeout_ms)
{
	uint64_t deadline = uv_hrtime() / 1000000 + (uint64_t)timeout_ms;
	while (!ch->closed && channel_queued(ch) > 0) {
		struct pollfd p = { ch->fd, POLLOUT, 0 };
		int left = (int)(deadline - uv_hrtime() / 1000000);
		if (left <= 0 || poll(&p, 1, left) <= 0)
			return;
		do_write(ch);
	}
}
