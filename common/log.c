#include "common/log.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static const char *log_proc = "ucgw";
static int log_lvl = LOG_LVL_INFO;
/* stderr is a terminal, not journald (JOURNAL_STREAM) or a pipe to the
 * supervisor: a person reads it, so each line starts with the time. Asked once,
 * here, before a worker's sandbox, which may not allow the ioctl. */
static bool log_tty;

void log_init(const char *procname, int level)
{
	log_proc = procname;
	log_lvl = level;
	log_tty = isatty(2) && !getenv("JOURNAL_STREAM");
}

/* "2026-12-07T15:30:01.123Z"; UTC, as gmtime_r needs no time zone file,
 * which a sandboxed worker could not open. */
static void tty_time(char out[32])
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, 32 - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

static const char *level_word(int level)
{
	static const char *const words[] = { "emerg", "alert", "crit", "error", "warning", "notice", "info", "debug" };
	return words[level >= 0 && level <= 7 ? level : 6];
}

/* "2026-12-07T15:30:01.123Z ucgwd: warning: " */
static int tty_prefix(char *line, size_t len, int level)
{
	char when[32];
	tty_time(when);
	return snprintf(line, len, "%s %s: %s: ", when, log_proc, level_word(level));
}

void log_set_level(int level) { log_lvl = level; }

int log_level_parse(const char *s)
{
	static const struct { const char *name; int lvl; } names[] = {
		{ "error", LOG_LVL_ERR }, { "warning", LOG_LVL_WARN }, { "warn", LOG_LVL_WARN },
		{ "info", LOG_LVL_INFO }, { "debug", LOG_LVL_DEBUG },
	};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (strcasecmp(s, names[i].name) == 0)
			return names[i].lvl;
	return -1;
}

static void vlog(int level, const char *suffix, const char *fmt, va_list ap)
{
	if (level > log_lvl)
		return;
	/* One write per line so lines from several processes sharing stderr do not interleave. */
	char line[2048];
	int n = log_tty ? tty_prefix(line, sizeof line, level) : snprintf(line, sizeof line, "<%d>%s: ", level, log_proc);
	if (n < 0 || (size_t)n >= sizeof line)
		n = 0;
	int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
	if (m > 0)
		n += m;
	if ((size_t)n >= sizeof line - 2)
		n = (int)sizeof line - 2;
	if (suffix)
		n += snprintf(line + n, sizeof line - (size_t)n, ": %s", suffix);
	if ((size_t)n >= sizeof line - 1)
		n = (int)sizeof line - 2;
	line[n++] = '\n';
	fwrite(line, 1, (size_t)n, stderr);
}

/* A line another process wrote as "<N>name: text" (a worker's stderr),
 * passed on; on a terminal in this process's terminal form. */
void log_relay(const char *s, size_t n)
{
	const char *colon = n > 3 ? memchr(s, ':', n) : NULL;
	if (log_tty && s[0] == '<' && s[1] >= '0' && s[1] <= '7' && s[2] == '>' && colon && colon + 1 < s + n &&
	    colon[1] == ' ') {
		char when[32];
		tty_time(when);
		fprintf(stderr, "%s %.*s: %s: %.*s\n", when, (int)(colon - s - 3), s + 3, level_word(s[1] - '0'),
			(int)(n - (size_t)(colon + 2 - s)), colon + 2);
		return;
	}
	fprintf(stderr, "%.*s\n", (int)n, s);
}

#define DEFINE_LOG(fn, level) \
	void fn(const char *fmt, ...) { va_list ap; va_start(ap, fmt); vlog(level, NULL, fmt, ap); va_end(ap); }
DEFINE_LOG(log_warnx, LOG_LVL_WARN)
DEFINE_LOG(log_info, LOG_LVL_INFO)
DEFINE_LOG(log_debug, LOG_LVL_DEBUG)

void log_msg(int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(level, NULL, fmt, ap);
	va_end(ap);
}

void log_warn(const char *fmt, ...)
{
	const char *e = strerror(errno);
	va_list ap;
	va_start(ap, fmt);
	vlog(LOG_LVL_WARN, e, fmt, ap);
	va_end(ap);
}

void fatal(const char *fmt, ...)
{
	const char *e = strerror(errno);
	va_list ap;
	va_start(ap, fmt);
	vlog(LOG_LVL_ERR, e, fmt, ap);
	va_end(ap);
	exit(1);
}

void fatalx(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(LOG_LVL_ERR, NULL, fmt, ap);
	va_end(ap);
	exit(1);
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		fatal("malloc %zu", n);
	return p;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		fatal("calloc %zu", n * size);
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		fatal("realloc %zu", n);
	return q;
}

char *xstrdup(const char *s)
{
	char *p = strdup(s);
	if (!p)
		fatal("strdup");
	return p;
}

char *xstrndup(const char *s, size_t n)
{
	char *p = strndup(s, n);
	if (!p)
		fatal("strndup");
	return p;
}

char *xasprintf(const char *fmt, ...)
{
	char *p;
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&p, fmt, ap);
	va_end(ap);
	if (n < 0)
		fatal("asprintf");
	return p;
}
