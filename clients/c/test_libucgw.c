/* test_libucgw SOCKET FILE: exercises libucgw against a running ucgwd with the
 * test worker; prints one line per check and exits non-zero on any failure. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ucgw.h"

static int failures;
#define CHECK(c, what) do { if (c) printf("ok   %s\n", what); else { printf("FAIL %s\n", what); failures++; } } while (0)

static const char *sock;
static int async_done, async_ok;
static char thread_ids[4][200][32];

static void on_reply(ucgw_t *gw, uint64_t req, int err, const struct ucgw_outcome *out, void *arg)
{
	async_done++;
	async_ok += err == UCGW_OK && out->id[0];
}

static void *sender(void *arg)
{
	ucgw_t *gw = ((void **)arg)[0];
	int t = (int)(long)((void **)arg)[1];
	struct ucgw_send_opts o = { .protocol = "testworker", .wait = t % 2 == 0 };
	for (int i = 0; i < 200; i++) {
		char body[64];
		int n = snprintf(body, sizeof body, "{\"t\":%d,\"i\":%d}", t, i);
		struct ucgw_outcome out;
		if (ucgw_send(gw, body, (size_t)n, &o, &out) == UCGW_OK)
			snprintf(thread_ids[t][i], 32, "%s", out.id);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	sock = argv[1];
	int err;
	CHECK(!ucgw_open("/nonexistent.sock", NULL, &err) && err == UCGW_E_CONNECT, "not running: UCGW_E_CONNECT");
	CHECK(strcmp(ucgw_strerror(UCGW_E_CONNECT), "ucgwd is not running") == 0, "strerror");
	ucgw_t *gw = ucgw_open(sock, NULL, &err);
	CHECK(gw != NULL, "open");
	if (!gw)
		return 1;
	struct ucgw_outcome out;
	struct ucgw_send_opts o = { .protocol = "testworker", .wait = true };
	CHECK(ucgw_send(gw, "{\"plate\":\"C1\"}", 14, &o, &out) == UCGW_OK && strcmp(out.status, "ok") == 0 &&
		      strlen(out.id) == 26 && strcmp(out.protocol, "testworker") == 0, "blocking send with wait: ok");
	int rc = ucgw_send(gw, "{\"cmd\":\"permfail\"}", 18, &o, &out);
	CHECK(rc == UCGW_E_FAILED && strstr(out.error, "permfail"), "permfail: UCGW_E_FAILED with the reason");
	struct ucgw_send_opts bad = { .protocol = "pigeon" };
	rc = ucgw_send(gw, "{}", 2, &bad, &out);
	CHECK(rc == UCGW_E_REFUSED && strstr(ucgw_last_error(gw), "unknown metadata protocol 'pigeon'"),
	      "bad protocol: UCGW_E_REFUSED with the daemon's words");
	CHECK(ucgw_send_file(gw, argv[2], &o, &out) == UCGW_OK && strcmp(out.status, "ok") == 0, "send_file");
	CHECK(ucgw_send_file(gw, "/nonexistent/x.jpg", &o, &out) == UCGW_E_ARG && strstr(out.error, "cannot open"),
	      "send_file of a missing file");
	for (int i = 0; i < 50; i++)
		ucgw_send_async(gw, "{\"async\":1}", 11, &o, on_reply, NULL, NULL);
	for (int k = 0; k < 1000 && async_done < 50; k++) {
		ucgw_process(gw);
		usleep(5000);
	}
	CHECK(async_done == 50 && async_ok == 50, "50 non-blocking sends answered through ucgw_process");
	pthread_t th[4];
	void *args[4][2];
	for (long t = 0; t < 4; t++) {
		args[t][0] = gw;
		args[t][1] = (void *)t;
		pthread_create(&th[t], NULL, sender, args[t]);
	}
	for (int t = 0; t < 4; t++)
		pthread_join(th[t], NULL);
	int unique = 1, all = 1;
	for (int t = 0; t < 4; t++)
		for (int i = 0; i < 200; i++) {
			all &= thread_ids[t][i][0] != 0;
			for (int u = 0; u <= t && unique; u++)
				for (int j = 0; j < (u == t ? i : 200); j++)
					if (strcmp(thread_ids[t][i], thread_ids[u][j]) == 0) {
						unique = 0;
						break;
					}
		}
	CHECK(all && unique, "4 threads x 200 sends on one handle: all answered, ids unique");
	char *json = NULL;
	CHECK(ucgw_stats_json(gw, &json) == UCGW_OK && json && strstr(json, "\"testworker\""), "stats as JSON");
	free(json);
	ucgw_close(gw);
	printf("%d failures\n", failures);
	return failures ? 1 : 0;
}
