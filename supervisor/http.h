/* The loopback HTTP listener of metrics.listen: /metrics (Prometheus text), the
 * dashboard page (/, its script and style, built into the binary), its data
 * (/api/dashboard, JSON; /api/events, the same as Server-Sent Events once a
 * second and on every change) and its buttons (POST /api/actions/...). */
#ifndef UCGW_HTTP_H
#define UCGW_HTTP_H

#include <stddef.h>

#define HTTP_MAX_SSE 16         /* event streams open at once; more get 503 */
#define HTTP_MAX_CONNS 128      /* connections at once; more wait unaccepted (docs/operations.md) */
#define SPOOL_NEAR_LIMIT 0.8    /* the dashboard marks the spool from this fill on */

/* 0, or -1 with err (a non-loopback address is refused). Empty listen: off. */
int http_start(char *err, size_t errlen);
/* Close the listener and every connection, event streams included. */
void http_stop(void);

/* metrics.c: the documents, appended to a growing buffer. */
struct strbuf {
	char *p;
	size_t len, cap;
};
void http_sb_printf(struct strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void http_sb_json_str(struct strbuf *b, const char *s);
void metrics_prometheus(struct strbuf *b);
/* The dashboard's data with the newest history_samples seconds of history. */
void metrics_dashboard_json(struct strbuf *b, unsigned history_samples);

#endif
