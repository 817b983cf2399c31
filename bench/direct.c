/* bench-direct: the protocol libraries used directly, as the baseline the
 * gateway is compared with in the same run.
 *
 *   bench-direct mqtt HOST PORT USER PASS N WINDOW   QoS 1 publishes until every PUBACK
 *   bench-direct rest URL N CONNECTIONS              POSTs over a keep-alive pool
 *
 * Prints one line of JSON: {"messages": N, "seconds": S, "rate": R}. */
#include <curl/curl.h>
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

int main(int argc, char **argv)
{
	if (argc == 8 && strcmp(argv[1], "mqtt") == 0)
		return bench_mqtt(argv + 2);
	if (argc == 5 && strcmp(argv[1], "rest") == 0)
		return bench_rest(argv + 2);
	fprintf(stderr, "usage: bench-direct mqtt HOST PORT USER PASS N WINDOW | rest URL N CONNECTIONS\n");
	return 2;
}
