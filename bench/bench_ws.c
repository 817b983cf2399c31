/* bench_ws: a libwebsockets client used directly, as the baseline of the
 * WebSocket path: N envelopes {"id":"b<seq>","data":PAYLOAD} over one
 * connection, at most WINDOW unacked, done when every {"ack":"b<seq>"} is in.
 *
 *   bench_ws ws://HOST:PORT/PATH N [--window W] [--rate R] [--size BYTES]
 *
 * Without --rate: as fast as the server acks. With --rate: message i is due
 * at i/R seconds (open loop); its latency runs from then to its ack.
 * Prints one line of JSON: messages, failed, seconds, rate, p50_ms, p99_ms, max_ms. */
#include <getopt.h>
#include <libwebsockets.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static struct {
	long n, window, sent, acked, failed;
	double rate, t0;
	size_t size;
	char *payload;
	double *lat, *sent_at;           /* per message: its latency, when it went out */
	bool done, broken;
	struct lws *wsi;
	struct lws_context *ctx;
	lws_sorted_usec_list_t tick;
} B;

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

/* The payload the gateway benchmark sends too (ucgw-load -z SIZE). */
static char *make_payload(size_t size)
{
	char *p = malloc(size + 1);
	int n = snprintf(p, size + 1, "{\"seq\":0,\"plate\":\"ABC123\",\"pad\":\"");
	memset(p + n, 'x', size - (size_t)n - 2);
	memcpy(p + size - 2, "\"}", 3);
	return p;
}

static double due(long seq) { return B.rate > 0 ? B.t0 + (double)seq / B.rate : 0; }

/* From when it was due at a fixed rate, else from when it went out. */
static double latency(long seq) { return now_s() - (B.rate > 0 ? due(seq) : B.sent_at[seq]); }

static bool may_send(void)
{
	return B.sent < B.n && B.sent - B.acked < B.window && (B.rate <= 0 || now_s() >= due(B.sent));
}

static int write_some(struct lws *wsi)
{
	size_t cap = LWS_PRE + B.size + 64;
	unsigned char *buf = malloc(cap);
	while (may_send() && !lws_send_pipe_choked(wsi)) {
		int n = snprintf((char *)buf + LWS_PRE, cap - LWS_PRE, "{\"id\":\"b%ld\",\"data\":%s}", B.sent, B.payload);
		if (lws_write(wsi, buf + LWS_PRE, (size_t)n, LWS_WRITE_TEXT) < n) {
			free(buf);
			return -1;
		}
		B.sent_at[B.sent++] = now_s();
	}
	free(buf);
	if (may_send())
		lws_callback_on_writable(wsi);
	return 0;
}

/* At a fixed rate nothing but the clock says when the next message is due. */
static void on_tick(lws_sorted_usec_list_t *s)
{
	if (B.wsi && may_send())
		lws_callback_on_writable(B.wsi);
	if (B.sent < B.n)
		lws_sul_schedule(B.ctx, 0, &B.tick, on_tick, 200);
}

/* {"ack":"b123"} or {"nack":"b123",...}: the seq says whose latency it is. */
static void on_answer(const char *in, size_t len)
{
	char msg[256];
	snprintf(msg, sizeof msg, "%.*s", (int)(len < sizeof msg ? len : sizeof msg - 1), in);
	const char *p = strstr(msg, "ack\":\"b");
	if (!p)
		return;
	long seq = atol(p + 7);
	if (seq < 0 || seq >= B.n)
		return;
	B.failed += strncmp(msg, "{\"nack\"", 7) == 0;
	B.lat[B.acked++] = latency(seq);
	if (B.acked == B.n)
		B.done = true;
	else if (may_send())
		lws_callback_on_writable(B.wsi);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	switch (reason) {
	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		B.wsi = wsi;
		B.t0 = now_s();
		lws_callback_on_writable(wsi);
		if (B.rate > 0)
			lws_sul_schedule(B.ctx, 0, &B.tick, on_tick, 200);
		break;
	case LWS_CALLBACK_CLIENT_WRITEABLE:
		return write_some(wsi);
	case LWS_CALLBACK_CLIENT_RECEIVE:
		on_answer(in, len);
		break;
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
		fprintf(stderr, "bench_ws: %.*s\n", in ? (int)len : 17, in ? (const char *)in : "connection failed");
		B.broken = B.done = true;
		break;
	case LWS_CALLBACK_CLIENT_CLOSED:
		B.broken = !B.done;
		B.done = true;
		B.wsi = NULL;
		break;
	default:
		break;
	}
	return 0;
}

static const struct lws_protocols protocols[] = {
	{ "bench", callback, 0, 65536, 0, NULL, 0 },
	{ NULL, NULL, 0, 0, 0, NULL, 0 },
};

static int connect_to(char *url)
{
	const char *prot, *addr, *path;
	int port;
	if (lws_parse_uri(url, &prot, &addr, &port, &path) || strcmp(prot, "ws") != 0)
		return -1;
	static char p[512];
	snprintf(p, sizeof p, "/%s", path);
	struct lws_client_connect_info ci;
	memset(&ci, 0, sizeof ci);
	ci.context = B.ctx;
	ci.address = addr;
	ci.port = port;
	ci.path = p;
	ci.host = addr;
	ci.origin = addr;
	ci.local_protocol_name = "bench";
	return lws_client_connect_via_info(&ci) ? 0 : -1;
}

static void report(double dt)
{
	qsort(B.lat, (size_t)B.n, sizeof *B.lat, cmp_double);
	printf("{\"messages\": %ld, \"failed\": %ld, \"seconds\": %.3f, \"rate\": %.0f, \"p50_ms\": %.3f, "
	       "\"p99_ms\": %.3f, \"max_ms\": %.3f}\n",
	       B.n, B.failed, dt, (double)B.n / dt, B.lat[B.n / 2] * 1000, B.lat[(long)((double)B.n * 0.99)] * 1000,
	       B.lat[B.n - 1] * 1000);
}

static int parse_args(int argc, char **argv)
{
	static const struct option lo[] = { { "window", required_argument, NULL, 'w' },
					    { "rate", required_argument, NULL, 'r' },
					    { "size", required_argument, NULL, 'z' }, { NULL, 0, NULL, 0 } };
	B.window = 256;
	B.size = 200;
	for (int ch; (ch = getopt_long(argc, argv, "w:r:z:", lo, NULL)) != -1;) {
		if (ch == 'w')
			B.window = atol(optarg);
		else if (ch == 'r')
			B.rate = atof(optarg);
		else if (ch == 'z')
			B.size = (size_t)atol(optarg);
		else
			return -1;
	}
	if (argc - optind != 2 || atol(argv[optind + 1]) < 1 || B.window < 1)
		return -1;
	B.n = atol(argv[optind + 1]);
	if (B.size < 64)
		B.size = 64;
	return optind;
}

int main(int argc, char **argv)
{
	int at = parse_args(argc, argv);
	if (at < 0) {
		fprintf(stderr, "usage: bench_ws ws://HOST:PORT/PATH N [--window W] [--rate R] [--size BYTES]\n");
		return 2;
	}
	B.payload = make_payload(B.size);
	B.lat = calloc((size_t)B.n, sizeof *B.lat);
	B.sent_at = calloc((size_t)B.n, sizeof *B.sent_at);
	lws_set_log_level(LLL_ERR, NULL);
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof info);
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protocols;
	B.ctx = lws_create_context(&info);
	if (!B.ctx || connect_to(argv[at]) < 0) {
		fprintf(stderr, "bench_ws: cannot connect to %s\n", argv[at]);
		return 1;
	}
	while (!B.done && lws_service(B.ctx, 0) >= 0) {
	}
	double dt = now_s() - B.t0;
	lws_sul_cancel(&B.tick);
	lws_context_destroy(B.ctx);
	if (B.broken) {
		fprintf(stderr, "bench_ws: connection lost after %ld acks\n", B.acked);
		return 1;
	}
	report(dt);
	return B.failed ? 1 : 0;
}
