/* bench_mqtt: libmosquitto used directly, the MQTT baseline of
 * bench_protocols.py: QoS 1 publishes of 200 bytes with at most WINDOW
 * unacknowledged, until every PUBACK. One thread drives the client with
 * mosquitto_loop(), as an application without libmosquitto's own thread would
 * (polling for acks from a second thread, as this baseline once did, cost the
 * direct path a wake-up every 50 us and understated it).
 *
 *   bench_mqtt HOST PORT USER PASS N WINDOW [--v5] [--size BYTES]
 *
 * --v5: MQTT 5, each message with a "message-id" user property of 26
 * characters, as ucgw-mqtt publishes by default (the broker's work per message
 * is not the same without it). --size: payload bytes (default 200).
 *
 * Prints one line of JSON: {"messages": N, "seconds": S, "rate": R}. */
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long acked;

static void on_publish(struct mosquitto *m, void *o, int mid) { acked++; }

int main(int argc, char **argv)
{
	bool v5 = false;
	long size = 200;
	int i = 7;
	for (; i < argc; i++) {
		if (strcmp(argv[i], "--v5") == 0)
			v5 = true;
		else if (strcmp(argv[i], "--size") == 0 && i + 1 < argc && atol(argv[i + 1]) > 0)
			size = atol(argv[++i]);
		else
			break;
	}
	if (argc < 7 || i < argc) {
		fprintf(stderr, "usage: bench_mqtt HOST PORT USER PASS N WINDOW [--v5] [--size BYTES]\n");
		return 2;
	}
	long n = atol(argv[5]), window = atol(argv[6]);
	mosquitto_lib_init();
	struct mosquitto *m = mosquitto_new("bench_mqtt", true, NULL);
	mosquitto_username_pw_set(m, argv[3], argv[4]);
	mosquitto_max_inflight_messages_set(m, (unsigned)window);
	if (v5)
		mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	mosquitto_publish_callback_set(m, on_publish);
	if (mosquitto_connect(m, argv[1], atoi(argv[2]), 60) != MOSQ_ERR_SUCCESS) {
		fprintf(stderr, "bench_mqtt: cannot connect to %s:%s\n", argv[1], argv[2]);
		return 1;
	}
	char *payload = malloc((size_t)size);
	memset(payload, 'x', (size_t)size);
	double t0 = now_s();
	long sent = 0;
	while (acked < n) {
		while (sent < n && sent - acked < window) {
			mosquitto_property *props = NULL;
			if (v5) {
				char id[32];
				snprintf(id, sizeof id, "01BENCHMQTT%015ld", sent); /* 26 characters, like a ULID */
				mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "message-id", id);
			}
			int rc = mosquitto_publish_v5(m, NULL, "bench/direct", (int)size, payload, 1, false, props);
			mosquitto_property_free_all(&props);
			if (rc != MOSQ_ERR_SUCCESS)
				break; /* the window of libmosquitto is full: read first */
			sent++;
		}
		int rc = mosquitto_loop(m, 1000, 1);
		if (rc != MOSQ_ERR_SUCCESS) {
			fprintf(stderr, "bench_mqtt: %s\n", mosquitto_strerror(rc));
			return 1;
		}
	}
	double dt = now_s() - t0;
	printf("{\"messages\": %ld, \"seconds\": %.3f, \"rate\": %.0f}\n", n, dt, (double)n / dt);
	mosquitto_disconnect(m);
	mosquitto_destroy(m);
	mosquitto_lib_cleanup();
	free(payload);
	return 0;
}
