/* ucgwd: the supervisor. Reads the configuration, starts one worker per enabled
 * protocol, owns the control socket, the router and the spool. */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "supervisor/budget.h"
#include "supervisor/commands.h"
#include "supervisor/clock.h"
#include "supervisor/control.h"
#include "supervisor/fdbudget.h"
#include "supervisor/http.h"
#include "supervisor/memtrim.h"
#include "supervisor/monitor.h"
#include "supervisor/spool.h"
#include "supervisor/proctab.h"
#include "supervisor/router.h"
#include "supervisor/sup.h"
#include "workers/protocols.h"

struct sup sup;

static uv_signal_t sig_term, sig_int, sig_hup;
static uv_timer_t ready_timer, watchdog_timer, drain_timer;
static bool notified_ready;
static uint64_t drain_deadline;

static void usage(FILE *out)
{
	char names[200];
	protocol_names(PROTO_META | PROTO_FILES, ", ", names, sizeof names);
	fprintf(out,
		"usage: ucgwd [-c FILE] [-n] [-d]\n"
		"       ucgwd --config-reference\n"
		"\n"
		"The ucgw supervisor: delivers an LPR camera's metadata and image files to its\n"
		"server over %s, one worker process per protocol.\n"
		"Runs in the foreground, logs to stderr (journald priorities), tells systemd when\n"
		"it is ready (Type=notify). SIGHUP reloads the configuration; SIGTERM stops.\n"
		"\n"
		"  -c, --config FILE      configuration file (default /etc/ucgw/ucgw.yaml)\n"
		"  -n, --check            check the configuration and the files it names (as the user\n"
		"                         running it) and exit: 0 valid, 1 not\n"
		"  -d, --debug            log at debug level whatever the file says\n"
		"      --config-reference print every configuration key as Markdown and exit\n"
		"  -V, --version          print the version (and the protocols') and exit\n"
		"  -h, --help             this text\n",
		names);
}

static char *find_worker_dir(void)
{
	const char *v = config_str(sup.cfg, "gateway", "worker_dir");
	if (v)
		return xstrdup(v);
	if ((v = getenv("UCGW_WORKER_DIR")))
		return xstrdup(v);
	/* Run from a build tree: the workers sit beside ucgwd. */
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n > 0) {
		self[n] = '\0';
		char *dir = dirname(self);
		const char *exe = protocol_at(0)->exe; /* any worker tells where they are */
		char *probe = xasprintf("%s/%s", dir, exe);
		bool here = access(probe, X_OK) == 0 && strstr(dir, "/sbin") == NULL;
		free(probe);
		if (here)
			return xstrdup(dir);
		/* Installed under another prefix than the one compiled in: PREFIX/sbin -> PREFIX/libexec/ucgw. */
		char *rel = xasprintf("%s/../libexec/ucgw", dir);
		probe = xasprintf("%s/%s", rel, exe);
		here = access(probe, X_OK) == 0;
		free(probe);
		if (here) {
			char *abs = realpath(rel, NULL);
			free(rel);
			return abs ? abs : xstrdup(UCGW_LIBEXECDIR);
		}
		free(rel);
	}
	return xstrdup(UCGW_LIBEXECDIR);
}

static int force_debug;

void sup_apply_log_level(void)
{
	int lvl = log_level_parse(config_str(sup.cfg, "gateway", "log_level"));
	log_set_level(force_debug ? LOG_LVL_DEBUG : lvl);
}

static void all_workers_stopped(void)
{
	log_info("all workers stopped; exiting");
	http_stop();
	control_close_all();
	uv_stop(sup.loop);
}

static void drain_tick(uv_timer_t *t)
{
	unsigned left = router_inflight();
	if (left > 0 && now_ms() < drain_deadline)
		return;
	uv_timer_stop(t);
	if (left)
		log_warnx("shutdown: %u jobs still in flight after shutdown_timeout_ms; they stay in the spool", left);
	proctab_stop_all(5000, all_workers_stopped);
}

void sup_shutdown(const char *why)
{
	if (sup.stopping)
		return;
	sup.stopping = true;
	log_info("shutting down (%s)", why);
	sd_notify(0, "STOPPING=1");
	probe_stop();
	control_stop_accepting();
	drain_deadline = now_ms() + (uint64_t)config_int(sup.cfg, "gateway", "shutdown_timeout_ms");
	uv_timer_start(&drain_timer, drain_tick, 0, 50);
}

static void on_signal(uv_signal_t *h, int sig)
{
	if (sig == SIGHUP) {
		log_info("SIGHUP: reloading %s", sup.config_path);
		sup_reload(NULL, NULL);
		return;
	}
	sup_shutdown(sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* READY=1 once every worker has finished its handshake one way or the other. */
static void ready_check(uv_timer_t *t)
{
	if (notified_ready || (!proctab_all_settled() && now_ms() - sup.start_ms < 10000))
		return;
	notified_ready = true;
	uv_timer_stop(t);
	sd_notifyf(0, "READY=1\nSTATUS=running, %u workers", proctab_running());
	log_info("ready in %llu ms", (unsigned long long)(now_ms() - sup.start_ms));
}

static void watchdog_tick(uv_timer_t *t) { sd_notify(0, "WATCHDOG=1"); }

static void start_signals(void)
{
	signal(SIGPIPE, SIG_IGN);
	uv_signal_init(sup.loop, &sig_term);
	uv_signal_start(&sig_term, on_signal, SIGTERM);
	uv_signal_init(sup.loop, &sig_int);
	uv_signal_start(&sig_int, on_signal, SIGINT);
	uv_signal_init(sup.loop, &sig_hup);
	uv_signal_start(&sig_hup, on_signal, SIGHUP);
}

static void start_timers(void)
{
	uv_timer_init(sup.loop, &drain_timer);
	uv_timer_init(sup.loop, &ready_timer);
	uv_timer_start(&ready_timer, ready_check, 0, 5);
	uint64_t usec;
	uv_timer_init(sup.loop, &watchdog_timer);
	if (sd_watchdog_enabled(0, &usec) > 0)
		uv_timer_start(&watchdog_timer, watchdog_tick, usec / 2000, usec / 2000);
}

/* A start-up step failed: say why, undo the steps before it (the control
 * socket's file, the listener), and exit 1. */
static int start_failed(const char *err)
{
	log_msg(LOG_LVL_ERR, "%s; ucgwd is not starting", err);
	http_stop();
	control_close_all();
	uv_run(sup.loop, UV_RUN_NOWAIT); /* the closed handles' callbacks */
	config_free(sup.cfg);
	free(sup.config_path);
	free(sup.worker_dir);
	return 1;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' }, { "check", no_argument, NULL, 'n' },
		{ "debug", no_argument, NULL, 'd' },        { "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },         { "config-reference", no_argument, NULL, 'R' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = "/etc/ucgw/ucgw.yaml";
	bool check = false;
	int debug = 0, ch;
	log_init("ucgwd", LOG_LVL_INFO);
	char terr[200];
	if (protocol_table_error(terr, sizeof terr))
		fatalx("the protocol descriptor table (workers/protocols.c) is broken: %s", terr);
	while ((ch = getopt_long(argc, argv, "c:ndVh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c': path = optarg; break;
		case 'n': check = true; break;
		case 'd': debug = 1; break;
		case 'V': printf("ucgwd %s (control protocol %d, answers %d too; worker protocol %d)\n", UCGW_VERSION,
				  UCGW_CTL_VERSION, UCGW_CTL_VERSION_MIN, UCGW_PROTO_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		case 'R': config_write_reference(stdout); return 0;
		default: usage(stderr); return 1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ucgwd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 1;
	}
	char err[1024];
	sup.start_ms = now_ms();
	sup.start_wall_ms = wall_ms();
	if (config_load(path, &sup.cfg, err, sizeof err) < 0) {
		fprintf(stderr, "ucgwd: %s%s\n", err, check ? "" : "; ucgwd is not starting");
		return 1;
	}
	for (size_t i = 0; i < sup.cfg->nwarnings; i++)
		fprintf(stderr, "ucgwd: warning: %s\n", sup.cfg->warnings[i]);
	if (check) {
		char who[96];
		euid_str(who, sizeof who);
		printf("%s: configuration is valid%s; the files it names were opened as %s\n", path,
		       sup.cfg->nwarnings ? " (with the warnings above)" : "", who);
		config_free(sup.cfg);
		return 0;
	}
	char *abs = realpath(path, NULL);
	sup.config_path = abs ? abs : xstrdup(path);
	force_debug = debug;
	sup_apply_log_level();
	sup.loop = uv_default_loop();
	sup.worker_dir = find_worker_dir();
	start_signals();
	fdbudget_apply(sup.cfg);
	if (control_listen(err, sizeof err) < 0 || http_start(err, sizeof err) < 0)
		return start_failed(err);
	log_info("ucgwd %s starting (pid %d, config %s, workers from %s)", UCGW_VERSION, (int)getpid(),
		 sup.config_path, sup.worker_dir);
	router_init();
	budget_init();
	if (spool_open(err, sizeof err, router_recover) < 0)
		return start_failed(err);
	clock_init(); /* corrects what was read back, if the clock is set */
	proctab_init();
	start_timers();
	memtrim_start();
	probe_start();
	proctab_apply_config(NULL, sup.cfg);
	router_workers_started(); /* replay and selection wait for the workers (router.c) */
	uv_run(sup.loop, UV_RUN_DEFAULT);
	budget_close();
	spool_close();
	config_free(sup.cfg);
	free(sup.config_path);
	free(sup.worker_dir);
	return 0;
}
