/* bench-direct: the protocol libraries used directly, as the baseline the
 * gateway is compared with in the same run.
 *
 *   bench-direct mqtt HOST PORT USER PASS N WINDOW   QoS 1 publishes until every PUBACK
 *   bench-direct rest URL N CONNECTIONS              POSTs over a keep-alive pool
 *   bench-direct ws HOST PORT N WINDOW               envelopes until every ack (libwebsockets)
 *
 * Prints one line of JSON: {"messages": N, "seconds": S, "rate": R}. */
#include <curl/curl.h>
#include <libwebsockets.h>
#include <mosquitto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static volatile long acked;

static void on_publish(struct mosquitto *m, void *o, int mid) { __atomic_add_fetch(&acked, 1, __ATOMIC_SEQ_CST); }

static int bench_mqtt(char **a)
{
	long n = atol(a[4]), window = atol(a[5]);
	mosquitto_lib_init();
	struct mosquitto *m = mosquitto_new("bench-direct", true, NULL);
	mosquitto_username_pw_set(m, a[2], a[3]);
	mosquitto_max_inflight_messages_set(m, (unsigned)window);
	mosquitto_publish_callback_set(m, on_publish);
	if (mosquitto_connect(m, a[0], atoi(a[1]), 60) != MOSQ_ERR_SUCCESS) {
		fprintf(stderr, "connect failed\n");
		return 1;
	}
	mosquitto_loop_start(m);
	char payload[200];
	memset(payload, 'x', sizeof payload);
	double t0 = now_s();
	for (long i = 0; i < n; i++) {
		while (i - __atomic_load_n(&acked, __ATOMIC_SEQ_CST) >= window)
			usleep(50);
		mosquitto_publish(m, NULL, "bench/direct", sizeof payload, payload, 1, false);
	}
	while (__atomic_load_n(&acked, __ATOMIC_SEQ_CST) < n)
		usleep(100);
	double dt = now_s() - t0;
	printf("{\"messages\": %ld, \"seconds\": %.3f, \"rate\": %.0f}\n", n, dt, (double)n / dt);
	mosquitto_disconnect(m);
	mosquitto_loop_stop(m, false);
	return 0;
}

static size_t discard(char *p, size_t s, size_t n, void *u) { return s * n; }

static int bench_rest(char **a)
{
	long n = atol(a[1]), conns = atol(a[2]), started = 0, done = 0;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	CURLM *multi = curl_multi_init();
	curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, conns);
	struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
	h = curl_slist_append(h, "Expect:");
	char body[200];
	memset(body, 'x', sizeof body);
	body[0] = '"';
	body[sizeof body - 1] = '"';
	CURL **easy = calloc((size_t)conns * 4, sizeof *easy);
	double t0 = now_s();
	long inflight = 0;
	while (done < n) {
		while (started < n && inflight < conns * 4) {
			CURL *e = curl_easy_init();
			curl_easy_setopt(e, CURLOPT_URL, a[0]);
			curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
			curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)sizeof body);
			curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
			curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
			curl_multi_add_handle(multi, e);
			started++;
			inflight++;
		}
		int running;
		curl_multi_perform(multi, &running);
		curl_multi_poll(multi, NULL, 0, 100, NULL);
		CURLMsg *msg;
		int left;
		while ((msg = curl_multi_info_read(multi, &left)))
			if (msg->msg == CURLMSG_DONE) {
				curl_multi_remove_handle(multi, msg->easy_handle);
				curl_easy_cleanup(msg->easy_handle);
				done++;
				inflight--;
			}
	}
	double dt = now_s() - t0;
	printf("{\"messages\": %ld, \"seconds\": %.3f, \"rate\": %.0f}\n", n, dt, (double)n / dt);
	free(easy);
	return 0;
}

static struct {
	long n, window, sent, acked;
	bool done, failed;
} WS;

static int ws_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	switch (reason) {
	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		lws_callback_on_writable(wsi);
		break;
	case LWS_CALLBACK_CLIENT_WRITEABLE:
		while (WS.sent < WS.n && WS.sent - WS.acked < WS.window && !lws_send_pipe_choked(wsi)) {
			unsigned char buf[LWS_PRE + 300];
			int n = snprintf((char *)buf + LWS_PRE, 300, "{\"id\":\"m%ld\",\"data\":{\"pad\":\"%0200d\"}}", WS.sent, 0);
			if (lws_write(wsi, buf + LWS_PRE, (size_t)n, LWS_WRITE_TEXT) < n)
				return -1;
			WS.sent++;
		}
		break;
	case LWS_CALLBACK_CLIENT_RECEIVE:
		if (++WS.acked == WS.n)
			WS.done = true;
		else if (WS.sent < WS.n)
			lws_callback_on_writable(wsi);
		break;
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
		fprintf(stderr, "bench-direct: %s\n", in ? (const char *)in : "connection failed");
		WS.failed = WS.done = true;
		break;
	case LWS_CALLBACK_CLIENT_CLOSED:
		WS.failed = WS.done = !WS.done || WS.failed;
		break;
	default:
		break;
	}
	return 0;
}

static int bench_ws(char **a)
{
	static const struct lws_protocols protos[] = { { "bench", ws_cb, 0, 65536, 0, NULL, 0 }, { NULL, NULL, 0, 0, 0, NULL, 0 } };
	WS.n = atol(a[2]);
	WS.window = atol(a[3]);
	lws_set_log_level(LLL_ERR, NULL);
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof info);
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protos;
	struct lws_context *ctx = lws_create_context(&info);
	struct lws_client_connect_info ci;
	memset(&ci, 0, sizeof ci);
	ci.context = ctx;
	ci.address = a[0];
	ci.port = atoi(a[1]);
	ci.path = "/lpr";
	ci.host = a[0];
	ci.origin = a[0];
	ci.local_protocol_name = "bench";
	double t0 = now_s();
	lws_client_connect_via_info(&ci);
	while (!WS.done && lws_service(ctx, 0) >= 0) {
	}
	double dt = now_s() - t0;
	lws_context_destroy(ctx);
	if (WS.failed)
		return 1;
	printf("{\"messages\": %ld, \"seconds\": %.3f, \"rate\": %.0f}\n", WS.n, dt, (double)WS.n / dt);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 6 && strcmp(argv[1], "ws") == 0)
		return bench_ws(argv + 2);
	if (argc == 8 && strcmp(argv[1], "mqtt") == 0)
		return bench_mqtt(argv + 2);
	if (argc == 5 && strcmp(argv[1], "rest") == 0)
		return bench_rest(argv + 2);
	fprintf(stderr, "usage: bench-direct mqtt HOST PORT USER PASS N WINDOW | rest URL N CONNECTIONS | ws HOST PORT N WINDOW\n");
	return 2;
}
