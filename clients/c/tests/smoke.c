/* smoke SOCK FILE: the shortest use of libucgw, built against libucgw.a here
 * and against the installed library (pkg-config) by test_client_c.py. It also
 * defines functions named like the codec's and the logger's inside libucgw:
 * linking proves the library keeps those names to itself. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <ucgw.h>

/* An application's own functions that happen to share names with ucgwd's internals. */
void log_info(const char *what);
void log_info(const char *what) { fprintf(stderr, "app: %s\n", what); }
int msg_encode(int x);
int msg_encode(int x) { return x + 1; }
void fatal(const char *why);
void fatal(const char *why)
{
	fprintf(stderr, "app: fatal: %s\n", why);
	exit(70);
}
void *xmalloc(size_t n);
void *xmalloc(size_t n) { return malloc(n); }

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: smoke SOCK FILE\n");
		return 2;
	}
	int err, failures = 0;
	ucgw_t *gw = ucgw_open(argv[1], NULL, &err);
	if (!gw) {
		printf("FAIL open: %s (%s)\n", ucgw_strerror(err), ucgw_last_error());
		return 1;
	}
	struct ucgw_send_opts o = { .protocol = "testworker", .priority = "high", .wait = true };
	struct ucgw_outcome out;
	const char *json = "{\"plate\":\"SMOKE1\"}";
	int rc = ucgw_send(gw, json, strlen(json), &o, &out);
	printf("%s send: %s %s\n", rc == UCGW_OK ? "ok  " : "FAIL", out.id, rc == UCGW_OK ? out.status : out.error);
	failures += rc != UCGW_OK;
	rc = ucgw_send_file(gw, argv[2], &o, &out);
	struct stat st;
	stat(argv[2], &st);
	printf("%s send_file: %s %s\n", rc == UCGW_OK ? "ok  " : "FAIL", out.id, rc == UCGW_OK ? out.status : out.error);
	if (rc == UCGW_OK)
		printf("file %s %lld\n", out.id, (long long)st.st_size);
	failures += rc != UCGW_OK;
	char *stats = NULL;
	rc = ucgw_stats_json(gw, &stats);
	printf("%s stats: %.60s...\n", rc == UCGW_OK ? "ok  " : "FAIL", stats ? stats : ucgw_last_error());
	failures += rc != UCGW_OK;
	free(stats);
	ucgw_close(gw);
	log_info(msg_encode(1) == 2 ? "own functions intact" : "own functions replaced");
	printf("expect 2\n%d failures\n", failures);
	return failures ? 1 : 0;
}
