/* bench_rest: libcurl's multi interface used directly, as the baseline of the
 * REST path: the same POSTs ucgw-rest makes (same headers, an Idempotency-Key
 * each, a keep-alive pool of CONNECTIONS, easy handles reused, one request
 * per connection in libcurl's hands), without the gateway.
 *
 *   bench_rest URL N CONNECTIONS [--rate R] [--size BYTES]
 *
 * Without --rate: as fast as the server answers. With --rate: request i is due
 * at i/R seconds (open loop), and its latency runs from when it was due to its
 * response, so falling behind shows as latency, as it would for a camera.
 * Prints one line of JSON: messages, failed, seconds, rate, p50_ms, p99_ms, max_ms. */
#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct xfer {
	CURL *easy;
	struct curl_slist *headers;
	long seq;
};

static struct {
	const char *url;
	long n, conns, started, done, failed;
	double rate, t0;
	size_t size;
	char *payload;
	double *lat, *sent_at;           /* per message: its latency, when it went out */
	struct xfer *pool;
	struct xfer **idle;
	long nidle;
	CURLM *multi;
	CURLU *curlu;
} B;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t discard(char *p, size_t s, size_t n, void *u) { return s * n; }

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

static void start(struct xfer *x)
{
	char idem[64];
	x->seq = B.started++;
	B.sent_at[x->seq] = now_s();
	snprintf(idem, sizeof idem, "Idempotency-Key: bench-%ld", x->seq);
	curl_slist_free_all(x->headers);
	x->headers = curl_slist_append(NULL, "Content-Type: application/json");
	x->headers = curl_slist_append(x->headers, "Expect:");
	x->headers = curl_slist_append(x->headers, idem);
	curl_easy_setopt(x->easy, CURLOPT_CURLU, B.curlu); /* parsed once, as ucgw-rest does */
	curl_easy_setopt(x->easy, CURLOPT_PROXY, "");      /* as ucgw-rest when no proxy variable is set */
	curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, B.payload);
	curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)B.size);
	curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->headers);
	curl_easy_setopt(x->easy, CURLOPT_USERAGENT, "bench_rest");
	curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(x->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x);
	curl_multi_add_handle(B.multi, x->easy);
}

static double due(long seq) { return B.rate > 0 ? B.t0 + (double)seq / B.rate : 0; }

/* From when it was due at a fixed rate, else from when it went out. */
static double latency(long seq) { return now_s() - (B.rate > 0 ? due(seq) : B.sent_at[seq]); }

/* Hand idle handles new requests: all of them, or those already due. */
static void fill(void)
{
	while (B.nidle && B.started < B.n && (B.rate <= 0 || now_s() >= due(B.started)))
		start(B.idle[--B.nidle]);
}

static void reap(void)
{
	CURLMsg *msg;
	int left;
	while ((msg = curl_multi_info_read(B.multi, &left))) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		struct xfer *x;
		long status = 0;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
		curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
		B.failed += msg->data.result != CURLE_OK || status < 200 || status >= 300;
		B.lat[B.done++] = latency(x->seq);
		curl_multi_remove_handle(B.multi, x->easy);
		B.idle[B.nidle++] = x;
	}
}

static void run(void)
{
	B.t0 = now_s();
	while (B.done < B.n) {
		fill();
		int running, wait_ms = 100;
		curl_multi_perform(B.multi, &running);
		reap();
		if (B.nidle && B.started < B.n) { /* a handle is free: wait only until the next one is due */
			double ms = (due(B.started) - now_s()) * 1000;
			wait_ms = ms < 0 ? 0 : ms > 100 ? 100 : (int)ms;
		}
		if (B.done < B.n)
			curl_multi_poll(B.multi, NULL, 0, wait_ms, NULL);
	}
}

static void setup(void)
{
	long inflight = B.conns; /* as ucgw-rest: one request per connection in libcurl's hands */
	curl_global_init(CURL_GLOBAL_DEFAULT);
	B.multi = curl_multi_init();
	B.curlu = curl_url();
	if (curl_url_set(B.curlu, CURLUPART_URL, B.url, 0) != CURLUE_OK) {
		fprintf(stderr, "bench_rest: bad URL %s\n", B.url);
		exit(2);
	}
	curl_multi_setopt(B.multi, CURLMOPT_MAX_HOST_CONNECTIONS, B.conns);
	curl_multi_setopt(B.multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, B.conns);
	curl_multi_setopt(B.multi, CURLMOPT_MAXCONNECTS, B.conns);
	B.pool = calloc((size_t)inflight, sizeof *B.pool);
	B.idle = calloc((size_t)inflight, sizeof *B.idle);
	for (long i = 0; i < inflight; i++) {
		B.pool[i].easy = curl_easy_init();
		B.idle[B.nidle++] = &B.pool[i];
	}
	B.payload = make_payload(B.size);
	B.lat = calloc((size_t)B.n, sizeof *B.lat);
	B.sent_at = calloc((size_t)B.n, sizeof *B.sent_at);
}

static void report(double dt)
{
	qsort(B.lat, (size_t)B.n, sizeof *B.lat, cmp_double);
	printf("{\"messages\": %ld, \"failed\": %ld, \"seconds\": %.3f, \"rate\": %.0f, \"p50_ms\": %.3f, "
	       "\"p99_ms\": %.3f, \"max_ms\": %.3f}\n",
	       B.n, B.failed, dt, (double)B.n / dt, B.lat[B.n / 2] * 1000, B.lat[(long)((double)B.n * 0.99)] * 1000,
	       B.lat[B.n - 1] * 1000);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = { { "rate", required_argument, NULL, 'r' },
					    { "size", required_argument, NULL, 'z' }, { NULL, 0, NULL, 0 } };
	B.size = 200;
	for (int ch; (ch = getopt_long(argc, argv, "r:z:", lo, NULL)) != -1;) {
		if (ch == 'r')
			B.rate = atof(optarg);
		else if (ch == 'z')
			B.size = (size_t)atol(optarg);
		else
			return 2;
	}
	if (argc - optind != 3 || atol(argv[optind + 1]) < 1 || atol(argv[optind + 2]) < 1) {
		fprintf(stderr, "usage: bench_rest URL N CONNECTIONS [--rate R] [--size BYTES]\n");
		return 2;
	}
	B.url = argv[optind];
	B.n = atol(argv[optind + 1]);
	B.conns = atol(argv[optind + 2]);
	if (B.size < 64)
		B.size = 64;
	setup();
	run();
	report(now_s() - B.t0);
	return B.failed ? 1 : 0;
}
