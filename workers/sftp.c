/* ucgw-sftp: skeleton until its protocol lands; completes the handshake. */
#include "workers/worker.h"

static int sftp_init(uv_loop_t *loop, const struct cfg_section *cfg, char *err, size_t errlen)
{
	return 0;
}

static void sftp_submit(struct job *job)
{
	worker_result(job, JOB_PERMFAIL, 0, "the sftp worker cannot deliver yet");
}

static const struct worker_ops sftp_ops = {
	.name = "sftp",
	.init = sftp_init,
	.submit = sftp_submit,
};

WORKER_MAIN(sftp_ops)
