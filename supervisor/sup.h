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

/* Re-read the configuration (in the thread pool, supervisor/reload.c) and
 * swap it in; on failure keep the old one. done (may be NULL) hears NULL or
 * why, on the loop. */
typedef void (*reload_done_fn)(const char *err, void *arg);
void sup_reload(reload_done_fn done, void *arg);
/* gateway.log_level of the configuration in force (or debug with -d). */
void sup_apply_log_level(void);
/* Begin the orderly shutdown (SIGTERM, `ucgwctl shutdown`). */
void sup_shutdown(const char *why);

#endif
