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

static void forget_newest(const char *worker);

char *crashlog_write(const struct proc *p, int wstatus, const char *reason)
{
	forget_newest(p->name);
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
	fprintf(f, "jobs_in_flight: %u\n", router_jobs_held(p));
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

/* ---- the newest crash log of each worker, for the dashboard ---- */

#define SUMMARY_CACHE 16

static struct cached {
	char worker[32];
	char root[256];
	bool have;
	struct crash_summary s;
} cache[SUMMARY_CACHE];
static unsigned ncached;

static void forget_newest(const char *worker)
{
	for (unsigned i = 0; i < ncached; i++)
		if (strcmp(cache[i].worker, worker) == 0) {
			cache[i] = cache[--ncached];
			return;
		}
}

static void append(char *dst, size_t cap, const char *sep, const char *what)
{
	size_t n = strlen(dst);
	if (*what && n < cap)
		snprintf(dst + n, cap - n, "%s%s", n ? sep : "", what);
}

/* One line from the file: "exit; reason; N jobs in flight; last stderr: ...". */
static void summarize(const char *path, struct crash_summary *s)
{
	FILE *f = fopen(path, "re");
	if (!f) {
		snprintf(s->summary, sizeof s->summary, "cannot read %s: %s", path, strerror(errno));
		return;
	}
	char line[512], exit_[128] = "", reason[200] = "", jobs[64] = "", last[200] = "";
	bool in_stderr = false;
	while (fgets(line, sizeof line, f)) {
		line[strcspn(line, "\n")] = '\0';
		if (in_stderr) {
			if (strcmp(line, "--- end ---") == 0)
				break;
			const char *l = line;
			if (l[0] == '<' && l[1] >= '0' && l[1] <= '7' && l[2] == '>') /* a syslog priority */
				l += 3;
			if (l[0])
				snprintf(last, sizeof last, "%s", l);
		} else if (strncmp(line, "--- last ", 9) == 0) {
			in_stderr = true;
		} else if (strncmp(line, "exit: ", 6) == 0) {
			snprintf(exit_, sizeof exit_, "%s", line + 6);
		} else if (strncmp(line, "reason: ", 8) == 0) {
			snprintf(reason, sizeof reason, "%s", line + 8);
		} else if (strncmp(line, "time: ", 6) == 0) {
			snprintf(s->time, sizeof s->time, "%s", line + 6);
		} else if (strncmp(line, "jobs_in_flight: ", 16) == 0) {
			snprintf(jobs, sizeof jobs, "%s jobs in flight", line + 16);
		}
	}
	fclose(f);
	append(s->summary, sizeof s->summary, "; ", exit_);
	append(s->summary, sizeof s->summary, "; ", reason);
	append(s->summary, sizeof s->summary, "; ", jobs);
	if (last[0]) {
		char l[220];
		snprintf(l, sizeof l, "last stderr: %s", last);
		append(s->summary, sizeof s->summary, "; ", l);
	}
}

bool crashlog_newest(const char *worker, struct crash_summary *out)
{
	const char *root = config_str(sup.cfg, "gateway", "crash_dir");
	for (unsigned i = 0; i < ncached; i++)
		if (strcmp(cache[i].worker, worker) == 0) {
			if (strcmp(cache[i].root, root) != 0) {
				cache[i] = cache[--ncached];
				break;
			}
			*out = cache[i].s;
			return cache[i].have;
		}
	struct cached c = { .have = false };
	snprintf(c.worker, sizeof c.worker, "%s", worker);
	snprintf(c.root, sizeof c.root, "%s", root);
	char *dir = xasprintf("%s/%s", root, worker);
	DIR *d = opendir(dir);
	char newest[256] = "";
	struct dirent *e;
	while (d && (e = readdir(d))) {
		size_t l = strlen(e->d_name);
		if (l >= 5 && l < sizeof newest && strcmp(e->d_name + l - 4, ".log") == 0 && strcmp(e->d_name, newest) > 0)
			snprintf(newest, sizeof newest, "%s", e->d_name);
	}
	if (d)
		closedir(d);
	if (newest[0]) {
		char *path = xasprintf("%s/%s", dir, newest);
		snprintf(c.s.file, sizeof c.s.file, "%s", newest);
		summarize(path, &c.s);
		free(path);
		c.have = true;
	}
	free(dir);
	if (ncached == SUMMARY_CACHE)
		ncached--; /* forget one; it is read again when asked */
	cache[ncached++] = c;
	*out = c.s;
	return c.have;
}
