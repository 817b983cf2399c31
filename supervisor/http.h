/* The loopback HTTP listener of metrics.listen: /metrics (Prometheus text),
 * /api/dashboard (the reference design's CommunicationDashboard data, JSON). */
#ifndef UCGW_HTTP_H
#define UCGW_HTTP_H

#include <stddef.h>

/* 0, or -1 with err (a non-loopback address is refused). Empty listen: off. */
int http_start(char *err, size_t errlen);
void http_stop(void);

/* metrics.c: the two documents, appended to a growing buffer. */
struct strbuf {
	char *p;
	size_t len, cap;
};
void sb_printf(struct strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_json_str(struct strbuf *b, const char *s);
void metrics_prometheus(struct strbuf *b);
void metrics_dashboard_json(struct strbuf *b);

#endif
