/* ucgw-load: drive a running ucgwd through its control socket, as a camera
 * application would, with many `send` requests in flight, and report the rate
 * and the latency of the replies. With --wait each reply is the delivery outcome
 * (end-to-end latency); without, it is `accepted` (durable in the spool).
 *
 *   ucgw-load -s SOCK [-n N] [-w WINDOW] [-p PROTOCOL] [-z BYTES] [--wait] [--rate R]
 *
 * Prints one line of JSON. */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "proto/proto.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

struct load {
	int fd;
	long n, window, sent, done, failed;
	const char *protocol;
	size_t size;
	bool wait;
	double rate;
	double *start, *lat;
	char *payload;
	msgpack_sbuffer out, args;
	char *in;
	size_t inlen, incap;
	msgpack_zone zone;
	char first_error[256];
};

static void queue_request(struct load *L)
{
	L->args.size = 0;
	msgpack_packer pk;
	msgpack_packer_init(&pk, &L->args, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 5);
	pk_kv_str(&pk, "protocol", L->protocol);
	pk_kv_str(&pk, "format", "json");
	pk_kv_bool(&pk, "wait", L->wait);
	pk_kv_str(&pk, "priority", "normal");
	pk_key(&pk, "data");
	int n = snprintf(L->payload, L->size + 1, "{\"seq\":%ld,\"plate\":\"ABC123\",\"pad\":\"", L->sent);
	memset(L->payload + n, 'x', L->size - (size_t)n - 2);
	memcpy(L->payload + L->size - 2, "\"}", 2);
	msgpack_pack_bin(&pk, L->size);
	msgpack_pack_bin_body(&pk, L->payload, L->size);
	struct msg m = { .type = MSG_REQUEST, .version = UCGW_CTL_VERSION, .seq = (uint64_t)L->sent + 1, .name = "send",
			 .body_raw = L->args.data, .body_raw_len = L->args.size };
	msg_encode(&m, &L->out);
	L->start[L->sent++] = now_s();
}

static void read_some(struct load *L, int timeout_ms);

/* Send what is queued, reading replies while the socket is full: ucgwd stops
 * reading a client that does not read its replies (backpressure), so a client
 * that only waits to write would wait for ever. */
static void flush_out(struct load *L)
{
	size_t off = 0;
	while (off < L->out.size) {
		ssize_t w = send(L->fd, L->out.data + off, L->out.size - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
			struct pollfd p = { L->fd, POLLOUT | POLLIN, 0 };
			if (poll(&p, 1, 100) > 0 && (p.revents & POLLIN))
				read_some(L, 0);
			continue;
		}
		if (w <= 0) {
			perror("send");
			exit(1);
		}
		off += (size_t)w;
	}
	L->out.size = 0;
}

static void take_replies(struct load *L)
{
	size_t off = 0;
	while (L->inlen - off >= FRAME_HDR) {
		const unsigned char *h = (const unsigned char *)L->in + off;
		size_t len = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
		if (L->inlen - off - FRAME_HDR < len)
			break;
		struct msg m;
		char err[256];
		msgpack_zone_clear(&L->zone);
		if (msg_decode(L->in + off + FRAME_HDR, len, &m, &L->zone, err, sizeof err) == 0 && m.type == MSG_REPLY &&
		    m.seq >= 1 && m.seq <= (uint64_t)L->n) {
			char status[16] = "";
			obj_get_str(m.body, "status", status, sizeof status);
			bool ok = m.ok && (!L->wait || strcmp(status, "ok") == 0);
			if (!ok && !L->first_error[0])
				snprintf(L->first_error, sizeof L->first_error, "%s", m.error ? m.error : status);
			L->failed += !ok;
			L->lat[L->done++] = now_s() - L->start[m.seq - 1];
		}
		off += FRAME_HDR + len;
	}
	memmove(L->in, L->in + off, L->inlen - off);
	L->inlen -= off;
}

static void read_some(struct load *L, int timeout_ms)
{
	struct pollfd p = { L->fd, POLLIN, 0 };
	if (poll(&p, 1, timeout_ms) <= 0)
		return;
	if (L->incap - L->inlen < 65536)
		L->in = xrealloc(L->in, L->incap = L->incap * 2 + 65536);
	ssize_t r = recv(L->fd, L->in + L->inlen, L->incap - L->inlen, MSG_DONTWAIT);
	if (r == 0) {
		fprintf(stderr, "ucgw-load: the daemon closed the connection\n");
		exit(1);
	}
	if (r > 0) {
		L->inlen += (size_t)r;
		take_replies(L);
	}
}

int main(int argc, char **argv)
{
	static const struct option lo[] = { { "wait", no_argument, NULL, 'W' }, { "rate", required_argument, NULL, 'r' },
					    { NULL, 0, NULL, 0 } };
	struct load L = { .n = 10000, .window = 1000, .protocol = "auto", .size = 200 };
	const char *sock = "/run/ucgw/control.sock";
	int ch;
	log_init("ucgw-load", LOG_LVL_WARN);
	while ((ch = getopt_long(argc, argv, "s:n:w:p:z:", lo, NULL)) != -1) {
		switch (ch) {
		case 's': sock = optarg; break;
		case 'n': L.n = atol(optarg); break;
		case 'w': L.window = atol(optarg); break;
		case 'p': L.protocol = optarg; break;
		case 'z': L.size = (size_t)atol(optarg); break;
		case 'W': L.wait = true; break;
		case 'r': L.rate = atof(optarg); break;
		default:
			fprintf(stderr, "usage: ucgw-load -s SOCK [-n N] [-w WINDOW] [-p PROTO] [-z BYTES] [--wait] [--rate R]\n");
			return 2;
		}
	}
	if (L.size < 64)
		L.size = 64;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock);
	L.fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (connect(L.fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		fprintf(stderr, "ucgw-load: cannot connect to %s: %s\n", sock, strerror(errno));
		return 3;
	}
	L.start = xcalloc((size_t)L.n, sizeof *L.start);
	L.lat = xcalloc((size_t)L.n, sizeof *L.lat);
	L.payload = xmalloc(L.size + 1);
	msgpack_sbuffer_init(&L.out);
	msgpack_sbuffer_init(&L.args);
	msgpack_zone_init(&L.zone, 4096);
	double t0 = now_s(), progress_at = t0;
	long last_done = 0;
	while (L.done < L.n) {
		if (L.done != last_done) {
			last_done = L.done;
			progress_at = now_s();
		} else if (now_s() - progress_at > 60) { /* say where it stopped, rather than hang */
			fprintf(stderr, "ucgw-load: no reply for 60 s: %ld sent, %ld answered, %ld failed, %zu bytes unsent\n",
				L.sent, L.done, L.failed, L.out.size);
			return 4;
		}
		while (L.sent < L.n && L.sent - L.done < L.window) {
			if (L.rate > 0 && now_s() < t0 + (double)L.sent / L.rate)
				break;
			queue_request(&L);
		}
		flush_out(&L);
		read_some(&L, L.rate > 0 ? 1 : 100);
	}
	double dt = now_s() - t0;
	qsort(L.lat, (size_t)L.n, sizeof *L.lat, cmp_double);
	printf("{\"messages\": %ld, \"failed\": %ld, \"seconds\": %.3f, \"rate\": %.0f, \"p50_ms\": %.3f, "
	       "\"p99_ms\": %.3f, \"max_ms\": %.3f, \"wait\": %s, \"first_error\": \"%s\"}\n",
	       L.n, L.failed, dt, (double)L.n / dt, L.lat[L.n / 2] * 1000, L.lat[(long)((double)L.n * 0.99)] * 1000,
	       L.lat[L.n - 1] * 1000, L.wait ? "true" : "false", L.first_error);
	free(L.start);
	free(L.lat);
	free(L.payload);
	free(L.in);
	msgpack_sbuffer_destroy(&L.out);
	msgpack_sbuffer_destroy(&L.args);
	msgpack_zone_destroy(&L.zone);
	close(L.fd);
	return L.failed ? 1 : 0;
}
