/* ucgw-testworker: a worker for the tests that crashes, hangs or exits on
 * command (config `testworker.mode`, or a job whose payload names an action). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "workers/worker.h"

static uv_timer_t hang_timer;
static int64_t delay_ms;

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

static void answer(struct job *job)
{
	const char *p = job->payload;
	if (strstr(p, "\"retry\""))
		worker_result(job, JOB_RETRY, 0, "test worker was told to answer retry");
	else if (strstr(p, "\"permfail\""))
		worker_result(job, JOB_PERMFAIL, 0, "test worker was told to answer permfail");
	else
		worker_result(job, JOB_OK, 0, NULL);
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

WORKER_MAIN(test_ops)
