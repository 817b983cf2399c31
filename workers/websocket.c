/* ucgw-websocket: skeleton until its protocol lands; completes the handshake. */
#include "workers/worker.h"

static int websocket_init(uv_loop_t *loop, const struct cfg_section *cfg, char *err, size_t errlen)
{
	return 0;
}

static void websocket_submit(struct job *job)
{
	worker_result(job, JOB_PERMFAIL, 0, "the websocket worker cannot deliver yet");
}

static const struct worker_ops websocket_ops = {
	.name = "websocket",
	.init = websocket_init,
	.submit = websocket_submit,
};

WORKER_MAIN(websocket_ops)
