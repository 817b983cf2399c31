/* The supervisor's shared state: the loop, the configuration in force, and the
 * life cycle (running, reloading, stopping). */
#ifndef UCGW_SUP_H
#define UCGW_SUP_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"

struct sup {
	uv_loop_t *loop;
	struct config *cfg;
	char *config_path;
	char *worker_dir;
	bool stopping;
	uint64_t start_ms, start_wall_ms;
	uint64_t reloads;
};

extern struct sup sup;

/* Re-read the configuration; on failure keep the old one and write why to err. */
int sup_reload(char *err, size_t errlen);
/* Begin the orderly shutdown (SIGTERM, `ucgwctl shutdown`). */
void sup_shutdown(const char *why);

#endif
