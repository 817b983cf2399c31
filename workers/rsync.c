/* ucgw-rsync: skeleton until its protocol lands; completes the handshake. */
#include "workers/worker.h"

static int rsync_init(uv_loop_t *loop, const struct cfg_section *cfg, char *err, size_t errlen)
{
	return 0;
}

static void rsync_submit(struct job *job)
{
	worker_result(job, JOB_PERMFAIL, 0, "the rsync worker cannot deliver yet");
}

static const struct worker_ops rsync_ops = {
	.name = "rsync",
	.init = rsync_init,
	.submit = rsync_submit,
};

WORKER_MAIN(rsync_ops)
