/* ucgw-rest: skeleton until its protocol lands; completes the handshake. */
#include "workers/worker.h"

static int rest_init(uv_loop_t *loop, const struct cfg_section *cfg, char *err, size_t errlen)
{
	return 0;
}

static void rest_submit(struct job *job)
{
	worker_result(job, JOB_PERMFAIL, 0, "the rest worker cannot deliver yet");
}

static const struct worker_ops rest_ops = {
	.name = "rest",
	.init = rest_init,
	.submit = rest_submit,
};

WORKER_MAIN(rest_ops)
