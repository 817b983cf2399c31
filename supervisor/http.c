/* The metrics listener, written on libuv directly: it serves two read-only GET
 * routes on loopback, one short response per connection, and needs nothing of
 * an HTTP library but what fits in this file (no TLS, no keep-alive, no body). */
#include "supervisor/http.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "common/log.h"
#include "supervisor/sup.h"

#define MAX_REQUEST 8192

struct conn {
	uv_tcp_t tcp;
	char req[MAX_REQUEST];
	size_t len;
	uv_write_t w;
	char *resp;
};

static uv_tcp_t server;
static bool listening;

void sb_printf(struct strbuf *b, const char *fmt, ...)
{
	va_list ap;
	for (;;) {
		va_start(ap, fmt);
		int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (b->p && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		b->cap = (b->cap + (size_t)n + 1) * 2;
		b->p = xrealloc(b->p, b->cap);
	}
}

void sb_json_str(struct strbuf *b, const char *s)
{
	sb_printf(b, "\"");
	for (; s && *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			sb_printf(b, "\\%c", c);
		else if (c < 0x20)
			sb_printf(b, "\\u%04x", c);
		else
			sb_printf(b, "%c", c);
	}
	sb_printf(b, "\"");
}

static void closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	free(c->resp);
	free(c);
}

static void written(uv_write_t *w, int status) { uv_close((uv_handle_t *)w->data, closed); }

static void respond(struct conn *c, int code, const char *ctype, const struct strbuf *body)
{
	static const char *const reasons[] = { [200] = "OK", [400] = "Bad Request", [404] = "Not Found",
					       [405] = "Method Not Allowed" };
	struct strbuf out = { 0 };
	sb_printf(&out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n"
			"Cache-Control: no-store\r\n\r\n", code, reasons[code] ? reasons[code] : "", ctype, body->len);
	sb_printf(&out, "%.*s", (int)body->len, body->p ? body->p : "");
	c->resp = out.p;
	uv_buf_t buf = uv_buf_init(out.p, (unsigned)out.len);
	c->w.data = c;
	uv_read_stop((uv_stream_t *)&c->tcp);
	uv_write(&c->w, (uv_stream_t *)&c->tcp, &buf, 1, written);
}

static void route(struct conn *c)
{
	struct strbuf body = { 0 };
	char method[8] = "", path[256] = "";
	if (sscanf(c->req, "%7s %255s", method, path) != 2) {
		sb_printf(&body, "bad request\n");
		respond(c, 400, "text/plain", &body);
	} else if (strcmp(method, "GET") != 0) {
		sb_printf(&body, "only GET is served here\n");
		respond(c, 405, "text/plain", &body);
	} else if (strcmp(path, "/metrics") == 0) {
		metrics_prometheus(&body);
		respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", &body);
	} else if (strcmp(path, "/api/dashboard") == 0) {
		metrics_dashboard_json(&body);
		respond(c, 200, "application/json", &body);
	} else {
		sb_printf(&body, "not found: try /metrics or /api/dashboard\n");
		respond(c, 404, "text/plain", &body);
	}
	free(body.p);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct conn *c = h->data;
	buf->base = c->req + c->len;
	buf->len = MAX_REQUEST - 1 - c->len;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct conn *c = s->data;
	if (n < 0 || (n == 0 && c->len == MAX_REQUEST - 1)) {
		uv_close((uv_handle_t *)s, closed);
		return;
	}
	c->len += (size_t)n;
	c->req[c->len] = '\0';
	if (strstr(c->req, "\r\n\r\n") || strstr(c->req, "\n\n"))
		route(c);
	else if (c->len == MAX_REQUEST - 1)
		uv_close((uv_handle_t *)s, closed);
}

static void on_connection(uv_stream_t *srv, int status)
{
	if (status < 0)
		return;
	struct conn *c = xcalloc(1, sizeof *c);
	uv_tcp_init(sup.loop, &c->tcp);
	c->tcp.data = c;
	if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0) {
		uv_close((uv_handle_t *)&c->tcp, closed);
		return;
	}
	uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int http_start(char *err, size_t errlen)
{
	const char *listen = config_str(sup.cfg, "metrics", "listen");
	if (!listen || !*listen)
		return 0;
	char host[64];
	int port;
	const char *colon = strrchr(listen, ':');
	if (!colon || colon == listen || (size_t)(colon - listen) >= sizeof host || (port = atoi(colon + 1)) <= 0 ||
	    port > 65535) {
		snprintf(err, errlen, "metrics.listen '%s': expected HOST:PORT on loopback, e.g. 127.0.0.1:9630", listen);
		return -1;
	}
	snprintf(host, sizeof host, "%.*s", (int)(colon - listen), listen);
	if (host[0] == '[') { /* [::1] */
		memmove(host, host + 1, strlen(host));
		host[strcspn(host, "]")] = '\0';
	}
	struct sockaddr_storage sa;
	struct in_addr a4;
	if (inet_pton(AF_INET, host, &a4) == 1) {
		if ((ntohl(a4.s_addr) >> 24) != 127) {
			snprintf(err, errlen, "metrics.listen '%s' is not a loopback address: the metrics and the dashboard "
					      "are served on 127.0.0.0/8 or ::1 only", listen);
			return -1;
		}
		uv_ip4_addr(host, port, (struct sockaddr_in *)&sa);
	} else if (strcmp(host, "::1") == 0) {
		uv_ip6_addr(host, port, (struct sockaddr_in6 *)&sa);
	} else {
		snprintf(err, errlen, "metrics.listen '%s' is not a loopback address: the metrics and the dashboard are "
				      "served on 127.0.0.0/8 or ::1 only", listen);
		return -1;
	}
	uv_tcp_init(sup.loop, &server);
	int rc = uv_tcp_bind(&server, (struct sockaddr *)&sa, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&server, 64, on_connection);
	if (rc < 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", listen, uv_strerror(rc));
		uv_close((uv_handle_t *)&server, NULL);
		return -1;
	}
	listening = true;
	log_info("metrics on http://%s/metrics and /api/dashboard", listen);
	return 0;
}

void http_stop(void)
{
	if (listening)
		uv_close((uv_handle_t *)&server, NULL);
	listening = false;
}
