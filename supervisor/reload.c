/* A reload reads and checks the file in libuv's thread pool, then swaps the
 * configuration in on the loop: a large or slow file must not keep the loop
 * from answering (a `status` during the reload of an 80 KB file took 2.5 s).
 * Requests that come while one runs wait for the next read, which starts when
 * the running one is done: the file may have changed since it was read. */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "supervisor/control.h"
#include "supervisor/proctab.h"
#include "supervisor/sup.h"

struct waiter {
	reload_done_fn done;
	void *arg;
	struct waiter *next;
};

static struct {
	uv_work_t work;
	bool running;
	struct config *next;
	char err[1024];
	struct waiter *now, *later; /* answered by the running read, by the next one */
} RL;

static void read_config(uv_work_t *w)
{
	(void)w;
	if (config_load(sup.config_path, &RL.next, RL.err, sizeof RL.err) < 0)
		RL.next = NULL;
}

static void swap_in(struct config *next)
{
	struct config *old = sup.cfg;
	if (strcmp(config_str(old, "gateway", "control_socket"), config_str(next, "gateway", "control_socket")) != 0)
		log_warnx("reload: gateway.control_socket changed; it takes effect at the next start");
	for (size_t i = 0; i < next->nwarnings; i++)
		log_warnx("reload: %s", next->warnings[i]);
	sup.cfg = next;
	sup.reloads++;
	sup_apply_log_level();
	proctab_apply_config(old, next);
	control_config_changed();
	config_free(old);
	log_info("configuration reloaded from %s", sup.config_path);
}

static void start(void);

static void read_done(uv_work_t *w, int status)
{
	(void)w;
	RL.running = false;
	const char *err = NULL;
	if (status < 0 || sup.stopping) {
		config_free(RL.next);
		err = sup.stopping ? "ucgwd is shutting down" : "the reload was cancelled";
	} else if (!RL.next) {
		err = RL.err;
		log_warnx("reload: keeping the old configuration: %s", err);
	} else {
		swap_in(RL.next);
	}
	RL.next = NULL;
	for (struct waiter *x = RL.now, *nx; x; x = nx) {
		nx = x->next;
		if (x->done)
			x->done(err, x->arg);
		free(x);
	}
	RL.now = NULL;
	if (RL.later && !sup.stopping)
		start();
}

static void start(void)
{
	RL.now = RL.later;
	RL.later = NULL;
	RL.running = true;
	uv_queue_work(sup.loop, &RL.work, read_config, read_done);
}

void sup_reload(reload_done_fn done, void *arg)
{
	struct waiter *x = xcalloc(1, sizeof *x);
	x->done = done;
	x->arg = arg;
	x->next = RL.later;
	RL.later = x;
	if (!RL.running)
		start();
}

