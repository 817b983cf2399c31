/* Frames per second through ipc/ between two processes, beside the raw
 * socketpair figure measured in the same run. 256-byte frames. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "ipc/channel.h"

#define FRAME 256

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Raw: the writer sends 256-byte records in 64 KiB writes, the reader reads. */
static double raw_rate(long n)
{
	int sv[2];
	socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
	double t0 = now_s();
	pid_t pid = fork();
	if (pid == 0) {
		close(sv[0]);
		char buf[65536];
		long want = n * FRAME, got = 0;
		while (got < want) {
			ssize_t r = read(sv[1], buf, sizeof buf);
			if (r <= 0)
				_exit(1);
			got += r;
		}
		(void)!write(sv[1], "k", 1);
		_exit(0);
	}
	close(sv[1]);
	char buf[65536];
	memset(buf, 'x', sizeof buf);
	long left = n * FRAME;
	while (left > 0) {
		ssize_t w = write(sv[0], buf, left < (long)sizeof buf ? (size_t)left : sizeof buf);
		if (w <= 0)
			exit(1);
		left -= w;
	}
	char k;
	(void)!read(sv[0], &k, 1);
	double dt = now_s() - t0;
	waitpid(pid, NULL, 0);
	close(sv[0]);
	return (double)n / dt;
}

static long received, target;
static uv_loop_t *loop;

static void on_frame(struct channel *ch, const char *buf, size_t len, void *arg)
{
	if (++received == target) {
		channel_write(ch, "\0\0\0\1k", 5, -1);
		channel_flush(ch, 1000);
		uv_stop(loop);
	}
}

static void on_error(struct channel *ch, const char *why, void *arg) { uv_stop(loop); }

struct writer {
	struct channel *ch;
	long sent, n;
	char frame[FRAME];
	uv_idle_t idle;
};

/* Queue frames while the channel is not congested; the loop writes them out. */
static void pump(struct writer *w)
{
	while (w->sent < w->n && !channel_congested(w->ch)) {
		channel_write(w->ch, w->frame, FRAME, -1);
		w->sent++;
	}
	if (w->sent == w->n)
		uv_idle_stop(&w->idle);
}

static void on_idle(uv_idle_t *h) { pump(h->data); }
static void on_drain(struct channel *ch, void *arg) { pump(arg); }
static void on_ack(struct channel *ch, const char *buf, size_t len, void *arg) { uv_stop(loop); }

static double channel_rate(long n)
{
	int sv[2];
	socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv);
	double t0 = now_s();
	pid_t pid = fork();
	if (pid == 0) {
		close(sv[0]);
		loop = uv_loop_new();
		target = n;
		static const struct channel_ops ops = { .on_frame = on_frame, .on_error = on_error };
		channel_new(loop, sv[1], 1 << 20, &ops, NULL);
		uv_run(loop, UV_RUN_DEFAULT);
		_exit(received == n ? 0 : 1);
	}
	close(sv[1]);
	loop = uv_loop_new();
	static struct writer w;
	w.n = n;
	w.sent = 0;
	memset(w.frame, 'x', FRAME);
	uint32_t len = FRAME - FRAME_HDR;
	w.frame[0] = (char)(len >> 24);
	w.frame[1] = (char)(len >> 16);
	w.frame[2] = (char)(len >> 8);
	w.frame[3] = (char)len;
	static const struct channel_ops ops = { .on_frame = on_ack, .on_error = on_error, .on_drain = on_drain };
	w.ch = channel_new(loop, sv[0], 1 << 20, &ops, &w);
	uv_idle_init(loop, &w.idle);
	w.idle.data = &w;
	uv_idle_start(&w.idle, on_idle);
	uv_run(loop, UV_RUN_DEFAULT);
	double dt = now_s() - t0;
	int st;
	waitpid(pid, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fprintf(stderr, "reader failed\n");
	return (double)n / dt;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 5000000;
	log_init("bench_ipc", LOG_LVL_WARN);
	double best_raw = 0, best_ch = 0;
	for (int round = 0; round < 3; round++) {
		double r = raw_rate(n), c = channel_rate(n);
		if (r > best_raw)
			best_raw = r;
		if (c > best_ch)
			best_ch = c;
	}
	printf("ipc channel, %d-byte frames, %ld frames, best of 3:\n", FRAME, n);
	printf("  raw socketpair   %8.2f M frames/s\n", best_raw / 1e6);
	printf("  ipc/ channel     %8.2f M frames/s\n", best_ch / 1e6);
	printf("  ratio            %8.2f   (target >= 0.50)\n", best_ch / best_raw);
	return 0;
}
