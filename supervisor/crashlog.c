#include "supervisor/crashlog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "supervisor/proctab.h"
#include "supervisor/router.h"
#include "supervisor/sup.h"

static void iso_time(uint64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, len - n, ".%03uZ", (unsigned)(ms % 1000));
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Crash log names start with a sortable UTC time, so the oldest sort first. */
static void prune(const char *dir, unsigned keep)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	char **names = NULL;
	size_t n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name);
		if (l < 5 || strcmp(e->d_name + l - 4, ".log") != 0)
			continue;
		names = xrealloc(names, (n + 1) * sizeof *names);
		names[n++] = xstrdup(e->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof *names, cmp_names);
	for (size_t i = 0; i < n; i++) {
		if (i + keep < n) {
			char *path = xasprintf("%s/%s", dir, names[i]);
			unlink(path);
			free(path);
		}
		free(names[i]);
	}
	free(names);
}

char *crashlog_write(const struct proc *p, int wstatus, const char *reason)
{
	const char *root = config_str(sup.cfg, "gateway", "crash_dir");
	char *dir = xasprintf("%s/%s", root, p->name);
	if (mkdir_p(dir, 0750) < 0) {
		log_warn("cannot create crash log directory %s", dir);
		free(dir);
		return NULL;
	}
	char when[40], started[40], how[96];
	uint64_t now = wall_ms();
	iso_time(now, when, sizeof when);
	iso_time(p->start_wall_ms, started, sizeof started);
	wait_status_str(wstatus, how, sizeof how);
	char *path = xasprintf("%s/%s-pid%d.log", dir, when, (int)p->pid);
	free(dir);
	FILE *f = fopen(path, "wx");
	if (!f) {
		log_warn("cannot write crash log %s", path);
		free(path);
		return NULL;
	}
	fprintf(f, "ucgw crash log\nworker: %s\npid: %d\ngeneration: %u\n", p->name, (int)p->pid, p->gen);
	fprintf(f, "exit: %s\n", how);
	if (WIFEXITED(wstatus))
		fprintf(f, "exit_code: %d\n", WEXITSTATUS(wstatus));
	if (WIFSIGNALED(wstatus))
		fprintf(f, "signal: %d (SIG%s)\ncore_dumped: %s\n", WTERMSIG(wstatus),
			sigabbrev_np(WTERMSIG(wstatus)) ? sigabbrev_np(WTERMSIG(wstatus)) : "?",
			WCOREDUMP(wstatus) ? "yes" : "no");
	fprintf(f, "reason: %s\n", reason && reason[0] ? reason : "unexpected exit");
	fprintf(f, "started: %s\ntime: %s\nuptime_ms: %llu\nrestarts_before: %u\n", started, when,
		(unsigned long long)(now_ms() - p->start_ms), p->restarts);
	fprintf(f, "jobs_in_flight: %u\n", p->inflight);
	router_describe_jobs(p, f);
	fprintf(f, "--- last %u lines of stderr ---\n", p->nlines);
	for (unsigned i = 0; i < p->nlines; i++)
		fprintf(f, "%s\n", p->lines[(p->line_head + i) % STDERR_LINES]);
	fprintf(f, "--- end ---\n");
	fclose(f);
	char *pdir = xasprintf("%s/%s", root, p->name);
	prune(pdir, (unsigned)config_int(sup.cfg, "gateway", "crash_logs_keep"));
	free(pdir);
	return path;
}
