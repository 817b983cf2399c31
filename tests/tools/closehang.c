/* closehang.so: an LD_PRELOAD stand-in for a worker that closes its socket to
 * the supervisor and then hangs, instead of exiting or crashing. In a worker
 * (a process named ucgw-*), when a frame read from fd 3 (the supervisor's
 * socket: SUPERVISOR_FD, workers/worker.c) holds the bytes of
 * UCGW_CLOSEHANG_MARKER (say in a job's payload), the frames before it are
 * handed over as usual; at the next read, or at once when that frame is the
 * first of the read, fd 3 is closed and the process sleeps for ever (until a
 * SIGKILL). With UCGW_CLOSEHANG_WORKER set (say to ucgw-testworker), only the
 * worker of that name does this, so that a marked job rerouted to another
 * protocol is delivered there. Without the marker variable, in another process
 * or on another descriptor, recvmsg is the real one. The tests use it to show
 * that such a worker counts against the jobs it held like one that crashed with
 * them, and that those jobs go on as soon as its socket closes. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_NEXT, memmem, program_invocation_short_name */
#endif
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SUPERVISOR_FD 3

typedef ssize_t (*recvmsg_fn)(int, struct msghdr *, int);

/* Where the stream of frames is (u32 big-endian length, then the body): the
 * header bytes seen of the frame that begins next, or the body bytes left. */
static unsigned char hdr[4];
static size_t hdr_have;
static uint64_t body_left;
static int hang_next;

static void close_and_hang(void)
{
	static const char msg[] = "closehang.so: closing the supervisor's socket and hanging\n";
	if (write(2, msg, sizeof msg - 1) < 0) {
		/* nothing to do about it */
	}
	close(SUPERVISOR_FD);
	sigset_t all;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, NULL); /* not even SIGTERM: only SIGKILL ends it */
	for (;;)
		pause();
}

static int in_worker(void)
{
	const char *only = getenv("UCGW_CLOSEHANG_WORKER");
	if (only && *only)
		return strcmp(program_invocation_short_name, only) == 0;
	return strncmp(program_invocation_short_name, "ucgw-", 5) == 0;
}

/* The bytes of one read, in order: how many of them to hand over (all, or
 * those before the frame holding the marker). */
static size_t scan(const unsigned char *p, size_t n, const char *marker)
{
	size_t mlen = strlen(marker), off = 0;
	while (off < n) {
		size_t start = hdr_have || body_left ? 0 : off; /* where this frame began in this read */
		if (!body_left) {
			while (hdr_have < 4 && off < n)
				hdr[hdr_have++] = p[off++];
			if (hdr_have < 4)
				return n;
			body_left = (uint64_t)hdr[0] << 24 | (uint64_t)hdr[1] << 16 | (uint64_t)hdr[2] << 8 | hdr[3];
			hdr_have = 0;
			if (!body_left)
				continue;
		}
		size_t take = body_left < n - off ? (size_t)body_left : n - off;
		if (memmem(p + off, take, marker, mlen)) {
			hang_next = 1;
			return start;
		}
		off += take;
		body_left -= take;
	}
	return n;
}

ssize_t recvmsg(int fd, struct msghdr *mh, int flags)
{
	recvmsg_fn real = (recvmsg_fn)dlsym(RTLD_NEXT, "recvmsg");
	if (!real) {
		errno = ENOSYS;
		return -1;
	}
	const char *marker = getenv("UCGW_CLOSEHANG_MARKER");
	if (fd != SUPERVISOR_FD || !marker || !*marker || !in_worker())
		return real(fd, mh, flags);
	if (hang_next)
		close_and_hang();
	ssize_t n = real(fd, mh, flags);
	if (n <= 0 || mh->msg_iovlen != 1) /* the channel reads into one buffer */
		return n;
	size_t keep = scan(mh->msg_iov[0].iov_base, (size_t)n, marker);
	if (hang_next && keep == 0)
		close_and_hang();
	return (ssize_t)keep;
}
