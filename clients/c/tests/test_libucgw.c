/* test_libucgw: libucgw against running ucgwd's with the test worker. Run by
 * tests/integration/test_client_c.py, which starts the daemons:
 *
 *   test_libucgw -s SOCK -f FILE [-S SLOW_SOCK] [-A AUTH_SOCK -k KEY [-j JWT]] [-R]
 *
 * SOCK: a gateway whose testworker records deliveries; SLOW_SOCK: one whose
 * testworker answers after 600 ms; AUTH_SOCK: one with security.require_auth
 * and the API key KEY (and a valid JWT); -R: halfway, print "RESTART" and wait for a line on
 * stdin (meanwhile the harness restarts SOCK's daemon and kills and restarts
 * SLOW_SOCK's). Prints "ok"/"FAIL" per check, "file ID SIZE" per file sent,
 * "expect N" (deliveries SOCK's record should show) and exits non-zero on any
 * failure. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ucgw.h"

static int failures, expect_main;
#define CHECK(c, ...)                                   \
	do {                                            \
		if (c) {                                \
			printf("ok   ");                \
		} else {                                \
			printf("FAIL ");                \
			failures++;                     \
		}                                       \
		printf(__VA_ARGS__);                    \
		printf("\n");                           \
		fflush(stdout);                         \
	} while (0)

static const struct ucgw_send_opts WAIT = { .protocol = "testworker", .wait = true };
static const struct ucgw_send_opts NOWAIT = { .protocol = "testworker" };

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int send_str(ucgw_t *gw, const char *s, const struct ucgw_send_opts *o, struct ucgw_outcome *out)
{
	return ucgw_send(gw, s, strlen(s), o, out);
}

static bool all_unique(char (*ids)[32], int n)
{
	for (int i = 0; i < n; i++) {
		if (strlen(ids[i]) != 26)
			return false;
		for (int j = 0; j < i; j++)
			if (strcmp(ids[i], ids[j]) == 0)
				return false;
	}
	return true;
}

/* ---- errors without a daemon ---- */

static void test_not_running(void)
{
	int err = -1;
	ucgw_t *gw = ucgw_open("/nonexistent-dir/control.sock", NULL, &err);
	CHECK(!gw && err == UCGW_E_NOT_RUNNING && strstr(ucgw_last_error(), "not running"),
	      "no socket: UCGW_E_NOT_RUNNING, \"%s\"", ucgw_last_error());
	/* a stale socket: the file is there, nobody listens */
	char dir[] = "/tmp/ucgw-stale-XXXXXX";
	if (mkdtemp(dir)) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		snprintf(sa.sun_path, sizeof sa.sun_path, "%s/s.sock", dir);
		int fd = socket(AF_UNIX, SOCK_STREAM, 0);
		bind(fd, (struct sockaddr *)&sa, sizeof sa);
		close(fd);
		gw = ucgw_open(sa.sun_path, NULL, &err);
		CHECK(!gw && err == UCGW_E_NOT_RUNNING && strstr(ucgw_last_error(), "nobody listening"),
		      "stale socket: UCGW_E_NOT_RUNNING, \"%s\"", ucgw_last_error());
		unlink(sa.sun_path);
		rmdir(dir);
	}
	bool distinct = true;
	for (int a = 0; a < UCGW_E_COUNT; a++)
		for (int b = 0; b < a; b++)
			distinct &= strcmp(ucgw_strerror(a), ucgw_strerror(b)) != 0 && ucgw_strerror(a)[0];
	CHECK(distinct && strcmp(ucgw_strerror(UCGW_E_NOT_RUNNING), "ucgwd is not running") == 0 &&
		      strcmp(ucgw_strerror(999), "unknown error") == 0,
	      "ucgw_strerror: a distinct text per code");
	struct ucgw_outcome out;
	CHECK(ucgw_send(NULL, "{}", 2, NULL, &out) == UCGW_E_ARG && strcmp(out.error, "no handle") == 0,
	      "NULL handle: UCGW_E_ARG");
	CHECK(ucgw_version()[0] != '\0', "version %s", ucgw_version());
}

/* ---- blocking ---- */

static void test_blocking(ucgw_t *gw, const char *file)
{
	struct ucgw_outcome out;
	int rc = send_str(gw, "{\"plate\":\"ABC123\",\"confidence\":0.97}", &WAIT, &out);
	CHECK(rc == UCGW_OK && strcmp(out.status, "ok") == 0 && strlen(out.id) == 26 &&
		      strcmp(out.protocol, "testworker") == 0 && out.attempts == 1 && out.error[0] == '\0' &&
		      out.request > 0,
	      "send with wait: delivered (id %s, %s, %u attempt(s), %llu ms)", out.id, out.protocol, out.attempts,
	      (unsigned long long)out.latency_ms);
	expect_main += rc == UCGW_OK;

	rc = send_str(gw, "{\"plate\":\"NOWAIT1\"}", &NOWAIT, &out);
	CHECK(rc == UCGW_OK && strcmp(out.status, "accepted") == 0 && strlen(out.id) == 26,
	      "send without wait: accepted (id %s)", out.id);
	expect_main += rc == UCGW_OK;

	rc = send_str(gw, "{\"cmd\":\"permfail\"}", &WAIT, &out);
	CHECK(rc == UCGW_E_FAILED && strcmp(out.status, "failed") == 0 && strlen(out.id) == 26 &&
		      strstr(out.error, "permfail") && strstr(ucgw_last_error(), "permfail"),
	      "permfail: UCGW_E_FAILED with the reason: \"%s\"", out.error);

	struct ucgw_send_opts bad = { .protocol = "pigeon", .wait = true };
	rc = send_str(gw, "{}", &bad, &out);
	CHECK(rc == UCGW_E_REFUSED && strstr(out.error, "unknown metadata protocol 'pigeon'") &&
		      strstr(ucgw_last_error(), "unknown metadata protocol 'pigeon'") && out.status[0] == '\0',
	      "bad protocol: UCGW_E_REFUSED with the daemon's words: \"%s\"", ucgw_last_error());
	CHECK(ucgw_last_code() == UCGW_CODE_NOT_FOUND, "bad protocol: code %d", ucgw_last_code());

	struct ucgw_send_opts prio = { .protocol = "testworker", .priority = "urgent" };
	rc = send_str(gw, "{}", &prio, &out);
	CHECK(rc == UCGW_E_REFUSED && strstr(out.error, "unknown priority 'urgent'"), "bad priority: \"%s\"",
	      out.error);
	CHECK(ucgw_last_code() == UCGW_CODE_BAD_REQUEST, "bad priority: code %d", ucgw_last_code());

	rc = send_str(gw, "{not json", &WAIT, &out);
	CHECK(rc == UCGW_E_REFUSED && strstr(out.error, "not valid JSON"), "not JSON: \"%s\"", out.error);
	struct ucgw_send_opts raw = { .protocol = "testworker", .format = "raw", .wait = true };
	rc = send_str(gw, "plate=RAW1 not json", &raw, &out);
	CHECK(rc == UCGW_OK && strcmp(out.status, "ok") == 0, "raw format: delivered");
	expect_main += rc == UCGW_OK;

	CHECK(ucgw_send(gw, "", 0, &WAIT, &out) == UCGW_E_ARG && strstr(out.error, "empty"), "empty: UCGW_E_ARG");
	CHECK(ucgw_last_code() == UCGW_CODE_NONE, "refused here, not by ucgwd: no code (%d)", ucgw_last_code());
	struct ucgw_send_opts rn = { .remote_name = "x.jpg" };
	CHECK(send_str(gw, "{}", &rn, &out) == UCGW_E_ARG && strstr(out.error, "remote_name"),
	      "remote_name on metadata: UCGW_E_ARG");
	struct ucgw_send_opts ttl = { .protocol = "testworker", .ttl_s = -5 };
	CHECK(send_str(gw, "{}", &ttl, &out) == UCGW_E_ARG, "ttl_s -5: UCGW_E_ARG");
	struct ucgw_send_opts never = { .protocol = "testworker", .ttl_s = UCGW_TTL_NEVER, .wait = true };
	rc = send_str(gw, "{\"ttl\":\"never\"}", &never, &out);
	CHECK(rc == UCGW_OK, "ttl_s UCGW_TTL_NEVER: delivered");
	expect_main += rc == UCGW_OK;

	/* larger than gateway.max_message_bytes (1 MiB): many writes, then the daemon's refusal */
	size_t big = 2u << 20;
	char *b = malloc(big);
	memset(b, 'x', big);
	struct ucgw_send_opts rawnw = { .protocol = "testworker", .format = "raw" };
	rc = ucgw_send(gw, b, big, &rawnw, &out);
	CHECK(rc == UCGW_E_REFUSED && strstr(out.error, "larger than gateway.max_message_bytes"),
	      "2 MiB message: \"%s\"", out.error);
	CHECK(ucgw_last_code() == UCGW_CODE_TOO_LARGE, "2 MiB message: code %d", ucgw_last_code());
	free(b);
	/* larger than gateway.max_frame_bytes (16 MiB): ucgwd answers and hangs up while we write */
	big = 20u << 20;
	b = malloc(big);
	memset(b, 'x', big);
	rc = ucgw_send(gw, b, big, &rawnw, &out);
	CHECK(rc == UCGW_E_PROTOCOL && strstr(out.error, "larger than the limit of 16777216 bytes"),
	      "20 MiB message: \"%s\"", out.error);
	CHECK(ucgw_last_code() == UCGW_CODE_TOO_LARGE, "20 MiB message: code %d", ucgw_last_code());
	free(b);

	rc = ucgw_send_file(gw, file, &WAIT, &out);
	struct stat st;
	stat(file, &st);
	CHECK(rc == UCGW_OK && strcmp(out.status, "ok") == 0 && strlen(out.id) == 26, "send_file: delivered (%s)",
	      out.id);
	if (rc == UCGW_OK)
		printf("file %s %lld\n", out.id, (long long)st.st_size);
	expect_main += rc == UCGW_OK;

	rc = ucgw_send_file(gw, "/nonexistent/x.jpg", &WAIT, &out);
	CHECK(rc == UCGW_E_FILE && strstr(out.error, "cannot open /nonexistent/x.jpg"), "missing file: \"%s\"",
	      out.error);
	rc = ucgw_send_file(gw, "/tmp", &WAIT, &out);
	CHECK(rc == UCGW_E_FILE && strstr(out.error, "not a regular file"), "a directory: \"%s\"", out.error);
	struct ucgw_send_opts topic = { .topic = "lpr/x" };
	CHECK(ucgw_send_file(gw, file, &topic, &out) == UCGW_E_ARG, "topic on a file: UCGW_E_ARG");

	int ffd = open(file, O_RDONLY | O_CLOEXEC);
	struct ucgw_send_opts mo = { .protocol = "testworker", .remote_name = "plate-by-fd.jpg", .wait = true };
	rc = ucgw_send_fd(gw, ffd, &mo, &out);
	CHECK(rc == UCGW_OK && strcmp(out.status, "ok") == 0, "send_fd (an open file): %s",
	      rc ? out.error : "delivered");
	if (rc == UCGW_OK)
		printf("file %s %lld\n", out.id, (long long)st.st_size);
	expect_main += rc == UCGW_OK;
	close(ffd);

	/* A memfd: the daemon copies it into its spool (no link is possible). */
	int mfd = memfd_create("plate.jpg", MFD_CLOEXEC);
	char img[12345];
	memset(img, 7, sizeof img);
	if (write(mfd, img, sizeof img) != (ssize_t)sizeof img)
		perror("write");
	rc = ucgw_send_fd(gw, mfd, &mo, &out);
	if (rc == UCGW_E_REFUSED && strstr(out.error, "cross-device")) {
		/* ucgwd's spool copies with copy_file_range only, which cannot cross file systems */
		printf("skip send_fd (a memfd): ucgwd refused it: \"%s\"\n", out.error);
	} else {
		CHECK(rc == UCGW_OK && strcmp(out.status, "ok") == 0, "send_fd (a memfd): %s",
		      rc ? out.error : "delivered");
		if (rc == UCGW_OK)
			printf("file %s %zu\n", out.id, sizeof img);
		expect_main += rc == UCGW_OK;
	}
	close(mfd);
	CHECK(ucgw_send_fd(gw, -1, &mo, &out) == UCGW_E_FILE, "send_fd(-1): UCGW_E_FILE");
}

/* ---- tickets: send now, wait later ---- */

static void test_tickets(ucgw_t *gw)
{
	enum { N = 20 };
	ucgw_req_t req[N];
	char ids[N][32];
	int sent = 0, ok = 0;
	for (int i = 0; i < N; i++) {
		char body[64];
		snprintf(body, sizeof body, "{\"ticket\":%d}", i);
		sent += ucgw_send_async(gw, body, strlen(body), &WAIT, NULL, NULL, &req[i]) == UCGW_OK;
	}
	CHECK(sent == N && ucgw_pending(gw) == N, "%d sends queued without a callback (%zu pending)", sent,
	      ucgw_pending(gw));
	for (int i = N - 1; i >= 0; i--) { /* any order */
		struct ucgw_outcome out;
		int rc = ucgw_wait(gw, req[i], 10000, &out);
		ok += rc == UCGW_OK && out.request == req[i] && strcmp(out.status, "ok") == 0;
		snprintf(ids[i], sizeof ids[i], "%s", out.id);
	}
	expect_main += ok;
	CHECK(ok == N && all_unique(ids, N) && ucgw_pending(gw) == 0, "ucgw_wait collects each outcome");
	struct ucgw_outcome out;
	CHECK(ucgw_wait(gw, req[0], 0, &out) == UCGW_E_NOREQ && strstr(out.error, "no outstanding request"),
	      "waiting twice: UCGW_E_NOREQ");
	CHECK(ucgw_wait(gw, 987654321, 0, NULL) == UCGW_E_NOREQ, "an unknown request: UCGW_E_NOREQ");

	ucgw_req_t r;
	ucgw_send_async(gw, "{\"cancelled\":1}", 15, &WAIT, NULL, NULL, &r);
	CHECK(ucgw_cancel(gw, r) == UCGW_OK && ucgw_pending(gw) == 0 && ucgw_cancel(gw, r) == UCGW_E_NOREQ,
	      "ucgw_cancel forgets a request (the message is still delivered)");
	expect_main++;
	CHECK(send_str(gw, "{\"after\":\"cancel\"}", &WAIT, &out) == UCGW_OK, "the handle works after a cancel");
	expect_main++;
}

/* ---- non-blocking: callbacks from ucgw_process ---- */

enum { NB = 100 };
static struct {
	pthread_t thread;
	int expected, done, ok, refused, wrong_thread, chained;
	char ids[NB + 8][32];
	ucgw_req_t first;
} nb;

static void nb_reply(ucgw_t *gw, ucgw_req_t req, int err, const struct ucgw_outcome *out, void *arg)
{
	nb.done++;
	if (!pthread_equal(pthread_self(), nb.thread))
		nb.wrong_thread++;
	if (arg) { /* the oversized one */
		nb.refused += err == UCGW_E_REFUSED && strstr(out->error, "max_message_bytes") != NULL &&
			      ucgw_last_code() == UCGW_CODE_TOO_LARGE;
		return;
	}
	if (err == UCGW_OK && out->request == req && strlen(out->id) == 26 && nb.ok < NB + 8)
		snprintf(nb.ids[nb.ok++], 32, "%s", out->id);
	if (!nb.chained) { /* a callback may use the handle */
		nb.chained = 1;
		if (ucgw_send_async(gw, "{\"chained\":1}", 13, &NOWAIT, nb_reply, NULL, NULL) == UCGW_OK)
			nb.expected++;
	}
}

static void test_nonblocking(const char *sock, const char *file)
{
	int err;
	ucgw_t *gw = ucgw_open(sock, NULL, &err);
	CHECK(gw != NULL, "open a second handle for non-blocking use");
	if (!gw)
		return;
	nb.thread = pthread_self();
	int fd = ucgw_fd(gw);
	double t0 = now_s();
	for (int i = 0; i < NB; i++) {
		char body[64];
		snprintf(body, sizeof body, "{\"nb\":%d}", i);
		if (ucgw_send_async(gw, body, strlen(body), i % 2 ? &WAIT : &NOWAIT, nb_reply, NULL,
				    i ? NULL : &nb.first) == UCGW_OK)
			nb.expected++;
	}
	for (int i = 0; i < 2; i++)
		if (ucgw_send_file_async(gw, file, &WAIT, nb_reply, NULL, NULL) == UCGW_OK)
			nb.expected++;
	size_t big = 3u << 20; /* more than the socket takes at once: the rest goes out from ucgw_process */
	char *b = malloc(big);
	memset(b, 'y', big);
	struct ucgw_send_opts raw = { .protocol = "testworker", .format = "raw" };
	if (ucgw_send_async(gw, b, big, &raw, nb_reply, b, NULL) == UCGW_OK)
		nb.expected++;
	double queued = now_s() - t0;
	CHECK(nb.expected == NB + 3 && nb.done == 0 && nb.first > 0,
	      "%d requests queued in %.1f ms, no callback yet", nb.expected, queued * 1000);
	CHECK(ucgw_fd(gw) == fd && fd >= 0, "ucgw_fd is a descriptor to poll");
	int rounds = 0;
	while (nb.done < nb.expected && now_s() - t0 < 30) {
		struct pollfd p = { fd, POLLIN, 0 };
		if (poll(&p, 1, 1000) > 0) {
			rounds++;
			if (ucgw_process(gw) != UCGW_OK)
				break;
		}
	}
	free(b);
	int want_ok = nb.expected - 1;
	CHECK(nb.done == nb.expected && nb.ok == want_ok && nb.refused == 1 && nb.wrong_thread == 0 &&
		      all_unique(nb.ids, nb.ok),
	      "poll(ucgw_fd) + ucgw_process: %d callbacks in %d rounds, %d delivered or accepted, the oversized one "
	      "refused, all in this thread, one chained from a callback", nb.done, rounds, nb.ok);
	expect_main += nb.ok;
	CHECK(ucgw_pending(gw) == 0 && ucgw_process(gw) == UCGW_OK, "nothing pending afterwards");
	ucgw_close(gw);
}

/* ---- send without waiting, flush, exit ---- */

static void test_fire_and_forget(const char *sock)
{
	int err;
	ucgw_t *gw = ucgw_open(sock, NULL, &err);
	if (!gw) {
		CHECK(0, "open for fire-and-forget");
		return;
	}
	enum { N = 40, SIZE = 100000 };
	char *b = malloc(SIZE);
	memset(b, 'f', SIZE);
	struct ucgw_send_opts raw = { .protocol = "testworker", .format = "raw" };
	int sent = 0;
	for (int i = 0; i < N; i++) {
		ucgw_req_t r;
		if (ucgw_send_async(gw, b, SIZE, &raw, NULL, NULL, &r) == UCGW_OK && ucgw_cancel(gw, r) == UCGW_OK)
			sent++;
	}
	free(b);
	int rc = ucgw_flush(gw, 10000);
	CHECK(sent == N && rc == UCGW_OK && ucgw_pending(gw) == 0,
	      "%d x %d bytes sent without waiting, answers cancelled: ucgw_flush wrote them all", sent, SIZE);
	ucgw_close(gw); /* right away: the daemon has them all */
	expect_main += N;
}

/* ---- threads on one handle ---- */

enum { THREADS = 4, PER_THREAD = 200 };
static char thread_ids[THREADS][PER_THREAD][32];
static int thread_ok[THREADS];

struct targ {
	ucgw_t *gw;
	int t;
};

static void *sender(void *p)
{
	struct targ *a = p;
	for (int i = 0; i < PER_THREAD; i++) {
		char body[64];
		int n = snprintf(body, sizeof body, "{\"t\":%d,\"i\":%d}", a->t, i);
		struct ucgw_outcome out;
		if (ucgw_send(a->gw, body, (size_t)n, (a->t + i) % 2 ? &WAIT : &NOWAIT, &out) == UCGW_OK) {
			snprintf(thread_ids[a->t][i], 32, "%s", out.id);
			thread_ok[a->t]++;
		}
	}
	return NULL;
}

static void test_threads(ucgw_t *gw)
{
	pthread_t th[THREADS];
	struct targ args[THREADS];
	double t0 = now_s();
	for (int t = 0; t < THREADS; t++) {
		args[t] = (struct targ){ gw, t };
		pthread_create(&th[t], NULL, sender, &args[t]);
	}
	for (int t = 0; t < THREADS; t++)
		pthread_join(th[t], NULL);
	int ok = 0;
	for (int t = 0; t < THREADS; t++)
		ok += thread_ok[t];
	CHECK(ok == THREADS * PER_THREAD && all_unique(thread_ids[0], THREADS * PER_THREAD) &&
		      ucgw_pending(gw) == 0,
	      "%d threads x %d sends on one handle in %.2f s: all answered, ids unique", THREADS, PER_THREAD,
	      now_s() - t0);
	expect_main += ok;
}

/* ---- everything at once on one handle: blocking threads, a thread with
 * tickets, and an event loop running callbacks through ucgw_process ---- */

enum { MIX = 150 };
static struct {
	int done, ok;
	pthread_t loop;
	int wrong_thread;
} mix;

static void mix_reply(ucgw_t *gw, ucgw_req_t req, int err, const struct ucgw_outcome *out, void *arg)
{
	mix.done++;
	mix.ok += err == UCGW_OK && strlen(out->id) == 26;
	mix.wrong_thread += !pthread_equal(pthread_self(), mix.loop);
}

static void *mix_loop(void *p)
{
	ucgw_t *gw = p;
	int sent = 0;
	double t0 = now_s();
	mix.loop = pthread_self();
	while ((mix.done < MIX || sent < MIX) && now_s() - t0 < 60) {
		if (sent < MIX && ucgw_send_async(gw, "{\"mix\":\"cb\"}", 12, sent % 3 ? &NOWAIT : &WAIT, mix_reply,
						  NULL, NULL) == UCGW_OK)
			sent++;
		struct pollfd pf = { ucgw_fd(gw), POLLIN, 0 };
		if (poll(&pf, 1, sent < MIX ? 0 : 100) > 0)
			ucgw_process(gw);
	}
	return NULL;
}

static int mix_tickets_ok;

static void *mix_tickets(void *p)
{
	ucgw_t *gw = p;
	for (int i = 0; i < MIX / 10; i++) {
		ucgw_req_t r[10];
		for (int k = 0; k < 10; k++)
			ucgw_send_async(gw, "{\"mix\":\"ticket\"}", 16, &WAIT, NULL, NULL, &r[k]);
		for (int k = 0; k < 10; k++) {
			struct ucgw_outcome out;
			mix_tickets_ok += ucgw_wait(gw, r[k], 20000, &out) == UCGW_OK;
		}
	}
	return NULL;
}

static void *mix_blocking(void *p)
{
	struct targ *a = p;
	for (int i = 0; i < MIX; i++) {
		struct ucgw_outcome out;
		thread_ok[a->t] += send_str(a->gw, "{\"mix\":\"blocking\"}", i % 2 ? &WAIT : &NOWAIT, &out) == UCGW_OK;
	}
	return NULL;
}

static void test_mixed(const char *sock)
{
	int err;
	ucgw_t *gw = ucgw_open(sock, NULL, &err);
	if (!gw) {
		CHECK(0, "open for the mixed test");
		return;
	}
	memset(thread_ok, 0, sizeof thread_ok);
	pthread_t th[4];
	struct targ args[2] = { { gw, 0 }, { gw, 1 } };
	double t0 = now_s();
	pthread_create(&th[0], NULL, mix_loop, gw);
	pthread_create(&th[1], NULL, mix_tickets, gw);
	pthread_create(&th[2], NULL, mix_blocking, &args[0]);
	pthread_create(&th[3], NULL, mix_blocking, &args[1]);
	for (int t = 0; t < 4; t++)
		pthread_join(th[t], NULL);
	int ok = mix.ok + mix_tickets_ok + thread_ok[0] + thread_ok[1];
	CHECK(mix.done == MIX && mix.ok == MIX && mix.wrong_thread == 0 && mix_tickets_ok == MIX &&
		      thread_ok[0] == MIX && thread_ok[1] == MIX && ucgw_pending(gw) == 0,
	      "one handle, at once: an event loop (%d callbacks), a thread of tickets (%d), two blocking threads "
	      "(%d, %d): %d answers in %.2f s", mix.done, mix_tickets_ok, thread_ok[0], thread_ok[1], ok, now_s() - t0);
	expect_main += ok;
	ucgw_close(gw);
}

/* ---- stats ---- */

static void test_stats(ucgw_t *gw)
{
	char *json = NULL;
	int rc = ucgw_stats_json(gw, &json);
	CHECK(rc == UCGW_OK && json && json[0] == '{' && strstr(json, "\"testworker\":{") &&
		      strstr(json, "\"success_rate\":"),
	      "stats as JSON (%zu bytes)", json ? strlen(json) : 0);
	free(json);
	struct ucgw_stats *list = NULL;
	size_t n = 0;
	rc = ucgw_stats(gw, &list, &n);
	const struct ucgw_stats *tw = NULL;
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i].protocol, "testworker") == 0)
			tw = &list[i];
	CHECK(rc == UCGW_OK && tw && tw->enabled && tw->success >= 1400 && tw->failure >= 1 && tw->success_rate > 0.9 &&
		      tw->max_ms >= tw->p50_ms,
	      "stats as structs: %zu protocols; testworker %llu ok, %llu failed, p50 %.2f ms", n,
	      tw ? (unsigned long long)tw->success : 0, tw ? (unsigned long long)tw->failure : 0, tw ? tw->p50_ms : 0);
	free(list);
	rc = ucgw_status_json(gw, &json);
	CHECK(rc == UCGW_OK && json && strstr(json, "\"pid\":") && strstr(json, "\"spool\":"), "status as JSON");
	free(json);
	CHECK(ucgw_stats(gw, NULL, &n) == UCGW_E_ARG, "stats without a place for them: UCGW_E_ARG");
}

/* ---- a slow worker: timeouts, concurrency ---- */

static int slow_ok[8];

static void *slow_sender(void *p)
{
	struct targ *a = p;
	struct ucgw_outcome out;
	slow_ok[a->t] = send_str(a->gw, "{\"slow\":1}", &WAIT, &out) == UCGW_OK;
	return NULL;
}

static void test_slow(const char *sock)
{
	int err;
	ucgw_t *gw = ucgw_open(sock, NULL, &err);
	CHECK(gw != NULL, "open the slow gateway");
	if (!gw)
		return;
	struct ucgw_outcome out;
	struct ucgw_send_opts quick = { .protocol = "testworker", .wait = true, .timeout_ms = 100 };
	double t0 = now_s();
	int rc = send_str(gw, "{\"late\":1}", &quick, &out);
	double dt = now_s() - t0;
	CHECK(rc == UCGW_E_TIMEOUT && dt < 0.5 && strstr(out.error, "within 100 ms") &&
		      strstr(out.error, "still delivers"),
	      "timeout_ms 100: UCGW_E_TIMEOUT after %.0f ms: \"%s\"", dt * 1000, out.error);
	rc = send_str(gw, "{\"after\":\"late\"}", &WAIT, &out);
	CHECK(rc == UCGW_OK && strcmp(out.status, "ok") == 0, "the next send gets its own answer (the late one is dropped)");

	ucgw_set_timeout(gw, 50);
	CHECK(send_str(gw, "{\"x\":1}", &WAIT, &out) == UCGW_E_TIMEOUT, "ucgw_set_timeout(50): UCGW_E_TIMEOUT");
	ucgw_set_timeout(gw, 0);

	ucgw_req_t r;
	ucgw_send_async(gw, "{\"ticket\":\"slow\"}", 17, &WAIT, NULL, NULL, &r);
	CHECK(ucgw_wait(gw, r, 0, &out) == UCGW_E_TIMEOUT && ucgw_pending(gw) == 1, "ucgw_wait(0): not yet");
	CHECK(ucgw_wait(gw, r, -1, &out) == UCGW_OK && strcmp(out.status, "ok") == 0, "ucgw_wait(-1): the outcome");

	/* eight waited sends from eight threads overlap: not one after the other */
	enum { T = 8 };
	pthread_t th[T];
	struct targ args[T];
	int ok = 0;
	t0 = now_s();
	for (int t = 0; t < T; t++) {
		args[t] = (struct targ){ gw, t };
		pthread_create(&th[t], NULL, slow_sender, &args[t]);
	}
	for (int t = 0; t < T; t++)
		pthread_join(th[t], NULL);
	dt = now_s() - t0;
	for (int t = 0; t < T; t++)
		ok += slow_ok[t];
	CHECK(ok == T && dt < 0.6 * T / 2, "%d threads each waiting 600 ms for delivery: %.2f s in all", T, dt);
	ucgw_close(gw);
}

/* ---- authentication ---- */

static void test_auth(const char *sock, const char *key, const char *jwt)
{
	int err;
	ucgw_t *gw = ucgw_open(sock, "", &err); /* "": no credential, whatever the environment says */
	CHECK(gw != NULL, "open the gateway that wants a key");
	if (!gw)
		return;
	char *json = NULL;
	int rc = ucgw_status_json(gw, &json);
	CHECK(rc == UCGW_E_UNAUTHORIZED && strstr(ucgw_last_error(), "unauthorized: missing credentials") &&
		      ucgw_last_code() == UCGW_CODE_UNAUTHORIZED,
	      "no key: UCGW_E_UNAUTHORIZED, code %d, \"%s\"", ucgw_last_code(), ucgw_last_error());
	ucgw_set_auth(gw, "wrong-key");
	struct ucgw_outcome out;
	rc = send_str(gw, "{}", &WAIT, &out);
	CHECK(rc == UCGW_E_UNAUTHORIZED && strstr(out.error, "invalid API key"), "a wrong key: \"%s\"", out.error);
	ucgw_set_auth(gw, key);
	rc = send_str(gw, "{\"authorized\":1}", &WAIT, &out);
	CHECK(rc == UCGW_OK, "ucgw_set_auth(the key): delivered");
	ucgw_close(gw);
	setenv("UCGW_API_KEY", key, 1);
	gw = ucgw_open(sock, NULL, &err);
	rc = gw ? ucgw_status_json(gw, &json) : err;
	CHECK(rc == UCGW_OK, "the key from $UCGW_API_KEY");
	free(json);
	ucgw_close(gw);
	unsetenv("UCGW_API_KEY");
	if (jwt) {
		gw = ucgw_open(sock, jwt, &err);
		rc = gw ? send_str(gw, "{\"jwt\":1}", &WAIT, &out) : err;
		CHECK(rc == UCGW_OK, "a JWT as the credential: %s", rc ? out.error : "delivered");
		ucgw_close(gw);
	}
}

/* ---- ids ---- */

static void test_ids(void)
{
	char a[UCGW_ID_SIZE], b[UCGW_ID_SIZE];
	int rc = ucgw_id_new(a);
	ucgw_id_new(b);
	CHECK(rc == UCGW_OK && strlen(a) == 26 && strspn(a, "0123456789ABCDEFGHJKMNPQRSTVWXYZ") == 26 &&
		      strcmp(a, b) != 0,
	      "ucgw_id_new: ULIDs, distinct (%s %s)", a, b);
}

/* ---- the daemon restarts under a handle ---- */

struct resend {
	ucgw_t *gw;
	int rc;
	struct ucgw_outcome out;
};

/* A blocking send waiting on the slow daemon while it is killed and started again. */
static void *blocking_send(void *p)
{
	struct resend *a = p;
	struct ucgw_send_opts o = WAIT;
	o.timeout_ms = 20000;
	a->rc = send_str(a->gw, "{\"resent\":1}", &o, &a->out);
	return NULL;
}

static void test_restart(ucgw_t *gw, const char *slow_sock)
{
	int fd = ucgw_fd(gw), err;
	ucgw_t *slow = slow_sock ? ucgw_open(slow_sock, NULL, &err) : NULL;
	ucgw_req_t r = 0;
	struct resend rs = { .gw = slow };
	pthread_t t;
	if (slow) {
		ucgw_send_async(slow, "{\"inflight\":1}", 14, &WAIT, NULL, NULL, &r);
		pthread_create(&t, NULL, blocking_send, &rs);
		usleep(150000); /* its request is with ucgwd before the harness kills it */
	}
	printf("RESTART\n");
	fflush(stdout);
	char line[64];
	if (!fgets(line, sizeof line, stdin))
		return;
	struct ucgw_outcome out;
	int rc = send_str(gw, "{\"after\":\"restart\"}", &WAIT, &out);
	CHECK(rc == UCGW_OK && ucgw_fd(gw) == fd, "after ucgwd restarted: the handle reconnects (%s)",
	      rc ? out.error : "delivered");
	expect_main += rc == UCGW_OK;
	if (slow) {
		rc = ucgw_wait(slow, r, 10000, &out);
		CHECK(rc == UCGW_E_IO && strstr(out.error, "lost"), "a request in flight when ucgwd died: UCGW_E_IO, \"%s\"",
		      out.error);
		CHECK(strlen(out.id) == 26, "its outcome names the message's id all the same (%s)", out.id);
		pthread_join(t, NULL);
		CHECK(rs.rc == UCGW_OK && strcmp(rs.out.status, "ok") == 0 && strlen(rs.out.id) == 26,
		      "a blocking send whose connection broke is sent again once ucgwd is back (%s)",
		      rs.rc ? rs.out.error : "delivered");
		rc = send_str(slow, "{\"after\":\"kill\"}", &WAIT, &out);
		CHECK(rc == UCGW_OK, "and the next request reconnects (%s)", rc ? out.error : "delivered");
		ucgw_close(slow);
	}
}

int main(int argc, char **argv)
{
	const char *sock = NULL, *file = NULL, *slow = NULL, *auth = NULL, *key = NULL, *jwt = NULL;
	bool restart = false;
	int c;
	while ((c = getopt(argc, argv, "s:f:S:A:k:j:R")) != -1) {
		switch (c) {
		case 's': sock = optarg; break;
		case 'f': file = optarg; break;
		case 'S': slow = optarg; break;
		case 'A': auth = optarg; break;
		case 'k': key = optarg; break;
		case 'j': jwt = optarg; break;
		case 'R': restart = true; break;
		default: return 2;
		}
	}
	if (!sock || !file || (auth && !key)) {
		fprintf(stderr, "usage: test_libucgw -s SOCK -f FILE [-S SLOW_SOCK] [-A AUTH_SOCK -k KEY [-j JWT]] [-R]\n");
		return 2;
	}
	test_not_running();
	int err;
	ucgw_t *gw = ucgw_open(sock, NULL, &err);
	CHECK(gw != NULL, "open %s", sock);
	if (!gw)
		return 1;
	test_blocking(gw, file);
	test_tickets(gw);
	test_nonblocking(sock, file);
	test_fire_and_forget(sock);
	test_threads(gw);
	test_mixed(sock);
	test_stats(gw);
	if (slow)
		test_slow(slow);
	if (auth)
		test_auth(auth, key, jwt);
	if (restart)
		test_restart(gw, slow);
	test_ids();
	ucgw_close(gw);
	printf("expect %d\n%d failures\n", expect_main, failures);
	return failures ? 1 : 0;
}
