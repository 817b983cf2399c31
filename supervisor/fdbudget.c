#include "supervisor/fdbudget.h"

#include <sys/resource.h>

#include "common/log.h"
#include "supervisor/control.h"
#include "supervisor/http.h"

/* Each worker: its socket and its stderr pipe, and one descriptor per file job
 * queued for it (up to gateway.window) until the socket takes it. */
unsigned fdbudget(const struct config *cfg)
{
	unsigned workers = 0;
	for (size_t i = 0; i < cfg_schema_len; i++)
		workers += cfg_schema[i].worker && config_protocol_enabled(cfg, cfg_schema[i].name);
	unsigned window = (unsigned)config_int(cfg, "gateway", "window");
	return CONTROL_MAX_CLIENTS + HTTP_MAX_CONNS + workers * (window + 2) + FD_MARGIN;
}

void fdbudget_apply(const struct config *cfg)
{
	struct rlimit rl;
	unsigned need = fdbudget(cfg);
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < need && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max < need ? rl.rlim_max : need;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < need)
		log_warnx("open-file limit %llu is below what this configuration may hold at once (%u descriptors); "
			  "the control socket and the dashboard refuse or delay connections rather than fail, but "
			  "raise LimitNOFILE (docs/operations.md, \"Limits\")", (unsigned long long)rl.rlim_cur, need);
}
