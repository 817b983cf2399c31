/* ucgw-mqtt: skeleton until its protocol lands; completes the handshake. */
#include "workers/worker.h"

static int mqtt_init(uv_loop_t *loop, const struct cfg_section *cfg, char *err, size_t errlen)
{
	return 0;
}

static void mqtt_submit(struct job *job)
{
	worker_result(job, JOB_PERMFAIL, 0, "the mqtt worker cannot deliver yet");
}

static const struct worker_ops mqtt_ops = {
	.name = "mqtt",
	.init = mqtt_init,
	.submit = mqtt_submit,
};

WORKER_MAIN(mqtt_ops)
