/* ucgw-testworker: a worker for the tests that crashes, hangs or exits on
 * command (config `testworker.mode`, or a job whose payload names an action;
 * a file job is answered retry or permfail when its remote name says so).
 * "fork-segv" is acted on when the job would be answered (after delay_ms):
 * the worker dies of SIGSEGV while a child it forked keeps the supervisor's
 * socket open for 3 s, so that the supervisor sees the exit before the
 * socket's end, with the jobs still in hand (as when a worker's own children
 * inherit fd 3). The test worker's seccomp filter allows no fork: it needs
 * security.sandbox false.
 * With UCGW_TESTWORKER_HELLO_VERSION=N in its environment it first greets the
 * supervisor as protocol version N, before the framework's own hello. */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "workers/worker.h"

static uv_timer_t hang_timer;
static int64_t delay_ms;
static int record_fd = -1;
static char *down_file; /* while it exists, the "server" is down: every job is answered retry */

static void hang_forever(uv_timer_t *t)
{
	log_info("hanging now, as configured");
	for (;;)
		pause();
}

static int test_init(uv_loop_t *loop, const struct cfg_section *cfg, char *err, size_t errlen)
{
	const char *mode = cfg_str(cfg, "mode");
	delay_ms = cfg_int(cfg, "delay_ms");
	/* The test worker's "server": one line per delivered job, "ID SIZE SHA-less-checksum". */
	const char *down = cfg_str(cfg, "down_file");
	down_file = down ? xstrdup(down) : NULL;
	const char *rec = cfg_str(cfg, "record");
	if (rec && (record_fd = open(rec, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) < 0) {
		snprintf(err, errlen, "testworker: cannot open record file %s", rec);
		return UCGW_EXIT_CONFIG;
	}
	if (cfg_int(cfg, "ready_delay_ms") > 0)
		usleep((useconds_t)cfg_int(cfg, "ready_delay_ms") * 1000);
	log_info("test worker starting in mode %s", mode);
	if (strcmp(mode, "crash") == 0) {
		log_warnx("about to crash, as configured");
		abort();
	}
	if (strcmp(mode, "exit2") == 0) {
		snprintf(err, errlen, "testworker: mode exit2 says this configuration is bad");
		return UCGW_EXIT_CONFIG;
	}
	if (strcmp(mode, "hang") == 0) {
		uv_timer_init(loop, &hang_timer);
		uv_timer_start(&hang_timer, hang_forever, 300, 0);
	}
	worker_health(true, 0, "test worker has no server");
	return 0;
}

struct delayed {
	uv_timer_t t;
	struct job *job;
};

/* Append "ID BYTES SUM\n" with one write, so concurrent readers never see half a line. */
static void record(struct job *job)
{
	if (record_fd < 0)
		return;
	uint64_t n = 0, sum = 0;
	if (job->kind == JOB_FILE) {
		char buf[65536];
		ssize_t r;
		off_t off = 0;
		while ((r = pread(job->fd, buf, sizeof buf, off)) > 0) {
			for (ssize_t i = 0; i < r; i++)
				sum = sum * 31 + (unsigned char)buf[i];
			n += (uint64_t)r;
			off += r;
		}
	} else {
		for (size_t i = 0; i < job->payload_len; i++)
			sum = sum * 31 + (unsigned char)job->payload[i];
		n = job->payload_len;
	}
	char line[128];
	int len = snprintf(line, sizeof line, "%s %llu %llu\n", job->id, (unsigned long long)n, (unsigned long long)sum);
	if (write(record_fd, line, (size_t)len) != len)
		log_warn("testworker: record write");
}

/* Is the job told to get this answer: "what" in quotes in its payload, or for
 * a file in its remote name (e.g. "permfail-1.jpg")? */
static bool told(const struct job *job, const char *what)
{
	char quoted[32];
	snprintf(quoted, sizeof quoted, "\"%s\"", what);
	return strstr(job->payload, quoted) ||
	       (job->kind == JOB_FILE && job->remote_name && strstr(job->remote_name, what));
}

static void fork_and_segv(const struct job *job)
{
	log_warnx("job %s says fork-segv", job->id);
	pid_t pid = fork();
	if (pid == 0) { /* fd 3 stays open in here; stdin, stdout and stderr go */
		for (int fd = 0; fd < 3; fd++)
			close(fd);
		struct timespec ts = { 3, 0 };
		while (nanosleep(&ts, &ts) < 0)
			;
		_exit(0);
	}
	if (pid < 0)
		log_warn("fork");
	raise(SIGSEGV);
}

static void answer(struct job *job)
{
	struct stat st;
	if (strstr(job->payload, "\"fork-segv\""))
		fork_and_segv(job);
	if (down_file && stat(down_file, &st) == 0) { /* stat: in every worker's allow-list */
		worker_result(job, JOB_RETRY, 0, "test server is down");
	} else if (told(job, "retry"))
		worker_result(job, JOB_RETRY, 0, "test worker was told to answer retry");
	else if (told(job, "permfail"))
		worker_result(job, JOB_PERMFAIL, 0, "test worker was told to answer permfail");
	else {
		record(job);
		worker_result(job, JOB_OK, 0, NULL);
	}
}

static void delayed_answer(uv_timer_t *t)
{
	struct delayed *d = t->data;
	answer(d->job);
	uv_close((uv_handle_t *)t, (uv_close_cb)free);
}

static void test_submit(struct job *job)
{
	const char *p = job->payload;
	if (strstr(p, "\"segv\"")) {
		log_warnx("job %s says segv", job->id);
		raise(SIGSEGV);
	}
	if (strstr(p, "\"garbage\"")) { /* a malformed frame on the supervisor's socket */
		static const char junk[] = "\0\0\0\4\xc1\xc1\xc1\xc1";
		if (write(3, junk, sizeof junk - 1) < 0)
			log_warn("write");
		return;
	}
	if (strstr(p, "\"abort\""))
		abort();
	if (strstr(p, "\"exit2\""))
		exit(UCGW_EXIT_CONFIG);
	if (strstr(p, "\"hang\""))
		hang_forever(NULL);
	if (delay_ms <= 0) {
		answer(job);
		return;
	}
	struct delayed *d = xcalloc(1, sizeof *d);
	d->job = job;
	uv_timer_init(worker_loop(), &d->t);
	d->t.data = d;
	uv_timer_start(&d->t, delayed_answer, (uint64_t)delay_ms, 0);
}

static const struct worker_ops test_ops = {
	.name = "testworker",
	.init = test_init,
	.submit = test_submit,
};

/* The first hello is the one the supervisor checks: this one, when asked for. */
static void hello_as_version(const char *v)
{
	struct stat st;
	if (fstat(3, &st) < 0 || !S_ISSOCK(st.st_mode))
		return; /* not started by ucgwd: worker_main says so */
	struct msg m = { .type = MSG_HELLO, .version = strtoull(v, NULL, 10), .name = test_ops.name,
			 .pid = (uint64_t)getpid() };
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	msg_encode(&m, &sb);
	if (write(3, sb.data, sb.size) != (ssize_t)sb.size)
		log_warn("testworker: writing the hello of version %s", v);
	msgpack_sbuffer_destroy(&sb);
}

int main(int argc, char **argv)
{
	const char *v = getenv("UCGW_TESTWORKER_HELLO_VERSION");
	if (v && *v)
		hello_as_version(v);
	return worker_main(argc, argv, &test_ops);
}
