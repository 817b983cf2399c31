/* Logging to stderr with syslog priority prefixes ("<3>") that journald reads,
 * and allocation wrappers that never return NULL. */
#ifndef UCGW_LOG_H
#define UCGW_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum log_level { LOG_LVL_ERR = 3, LOG_LVL_WARN = 4, LOG_LVL_INFO = 6, LOG_LVL_DEBUG = 7 };

void log_init(const char *procname, int level);
void log_set_level(int level);
int log_level_parse(const char *s); /* -1 when unknown */

#define PRINTF(a, b) __attribute__((format(printf, a, b)))
void log_msg(int level, const char *fmt, ...) PRINTF(2, 3);
void log_warn(const char *fmt, ...) PRINTF(1, 2);  /* appends ": strerror(errno)" */
void log_warnx(const char *fmt, ...) PRINTF(1, 2);
void log_info(const char *fmt, ...) PRINTF(1, 2);
void log_debug(const char *fmt, ...) PRINTF(1, 2);
/* Pass on a line another process formatted ("<N>name: text"); on a terminal as ours are. */
void log_relay(const char *line, size_t n);
void fatal(const char *fmt, ...) PRINTF(1, 2) __attribute__((noreturn));
void fatalx(const char *fmt, ...) PRINTF(1, 2) __attribute__((noreturn));
#define panic(...) fatalx("panic: " __VA_ARGS__)

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) PRINTF(1, 2);

#endif
