/* The loopback HTTP listener (metrics.listen), written on libuv directly: the
 * Prometheus metrics, the dashboard page and its data, a Server-Sent Events
 * stream of that data, and the dashboard's buttons. One request per connection
 * (no keep-alive, no TLS); an event stream stays open until the page goes away
 * or the daemon stops.
 *
 * Only loopback addresses are served, unless metrics.allow_remote says otherwise
 * (then /metrics and the read-only pages answer a Host that is an IP address;
 * actions still need a loopback peer and Host). Beyond that, the dashboard's routes look at
 * Host (a loopback name: a web page whose own name was made to resolve to
 * 127.0.0.1 is refused, so DNS rebinding reads nothing), and a button's POST must
 * be same-origin JSON (Origin, when sent, is http://<Host>; Content-Type is
 * application/json, which no plain form of another site can send), must be
 * allowed by metrics.dashboard_actions, and then goes through the control
 * socket's own checks (control_local: security.require_auth with the credential
 * from "Authorization: Bearer", allowed_users/groups with the uid that owns the
 * peer's socket, the audit log). */
#include "supervisor/http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "common/log.h"
#include "common/util.h"
#include "supervisor/control.h"
#include "supervisor/dashboard/assets.h"
#include "supervisor/history.h"
#include "supervisor/jsoncheck.h"
#include "supervisor/proctab.h"
#include "supervisor/errors.h"
#include "supervisor/ratelog.h"
#include "supervisor/router.h"
#include "supervisor/sup.h"

#define MAX_REQUEST 16384
#define MAX_BODY 4096
#define SSE_BACKLOG (1u << 20) /* bytes waiting for a slow event-stream reader: drop it */
#define HTTP_TICK_MS 250            /* look for changes this often; push at least every second */
#define HTTP_PUSH_MS 1000
/* Bounds against a client that opens connections and sends little or nothing
 * (slowloris): docs/operations.md, "Limits". */
#define HTTP_REQUEST_MS 10000    /* from accept to a complete request */
#define HTTP_ANSWER_MS 30000     /* from accept to the answer taken (event streams: no limit) */
#define HTTP_LIMIT_LOG_MS 10000

static const char SECURITY_HEADERS[] =
	"Content-Security-Policy: default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
	"frame-ancestors 'none'; object-src 'none'\r\n"
	"X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nX-Frame-Options: DENY\r\n";

struct conn {
	uv_tcp_t tcp;
	char req[MAX_REQUEST];
	size_t len;
	bool sse;            /* an event stream: stays open */
	bool closing;
	bool answered;       /* the response is queued */
	uint64_t start_ms;
	uint64_t hist_end;   /* newest history second this stream has seen (0: none yet) */
	struct conn *prev, *next;
};

struct wreq {
	uv_write_t w;
	struct conn *c;
	bool close_after;
	char data[];
};

/* A parsed request: pointers into conn->req (NUL-terminated pieces). */
struct request {
	char method[8];
	char path[256];
	char query[256];
	const char *host, *origin, *ctype, *auth, *fetch_site;
	long content_length;
	const char *body;
	size_t body_len;
};

static uv_tcp_t server;
static uv_timer_t tick;
static bool listening;
static struct conn *conns;
static unsigned nconns;
static bool accept_held;     /* at HTTP_MAX_CONNS: a connection waits in libuv, unaccepted */
static struct ratelog cap_log, emfile_log, timeout_log;
static unsigned nsse;
static uint64_t last_push_ms, last_sig;
static char listen_addr[96];

void http_sb_printf(struct strbuf *b, const char *fmt, ...)
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

void http_sb_json_str(struct strbuf *b, const char *s)
{
	http_sb_printf(b, "\"");
	for (; s && *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			http_sb_printf(b, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			http_sb_printf(b, "\\u%04x", c);
		else
			http_sb_printf(b, "%c", c);
	}
	http_sb_printf(b, "\"");
}

/* ---- connections ---- */

static void closed(uv_handle_t *h) { free(h->data); }
static void accept_one(void);

static void conn_close(struct conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	if (c->sse)
		nsse--;
	if (c->prev)
		c->prev->next = c->next;
	else
		conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	uv_close((uv_handle_t *)&c->tcp, closed);
	nconns--;
	if (accept_held && listening) { /* the one waiting takes this one's place */
		accept_held = false;
		accept_one();
	}
}

/* Pending writes of a closed stream are called back (UV_ECANCELED) before its
 * close callback frees it, so c is still there to look at. */
static void written(uv_write_t *w, int status)
{
	struct wreq *r = (struct wreq *)w;
	if (status < 0 || r->close_after)
		conn_close(r->c);
	free(r);
}

static void conn_write(struct conn *c, const char *data, size_t len, bool close_after)
{
	if (c->closing)
		return;
	struct wreq *r = xmalloc(sizeof *r + len);
	memcpy(r->data, data, len);
	r->c = c;
	r->close_after = close_after;
	uv_buf_t buf = uv_buf_init(r->data, (unsigned)len);
	int rc = uv_write(&r->w, (uv_stream_t *)&c->tcp, &buf, 1, written);
	if (rc < 0) {
		free(r);
		conn_close(c);
	}
}

static const char *reason_of(int code)
{
	switch (code) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 409: return "Conflict";
	case 415: return "Unsupported Media Type";
	case 422: return "Unprocessable Content";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	case 507: return "Insufficient Storage";
	}
	return "";
}

static void respond_raw(struct conn *c, int code, const char *ctype, const char *cache, const char *extra,
			const void *body, size_t len)
{
	struct strbuf out = { 0 };
	http_sb_printf(&out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n"
			"Cache-Control: %s\r\n%s%s\r\n", code, reason_of(code), ctype, len, cache, SECURITY_HEADERS,
		  extra ? extra : "");
	http_sb_printf(&out, "%.*s", (int)len, len ? (const char *)body : "");
	uv_read_stop((uv_stream_t *)&c->tcp);
	c->answered = true;
	conn_write(c, out.p, out.len, true);
	free(out.p);
}

static void respond(struct conn *c, int code, const char *ctype, const struct strbuf *body)
{
	respond_raw(c, code, ctype, "no-store", NULL, body->p, body->len);
}

static void respond_text(struct conn *c, int code, const char *extra, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void respond_text(struct conn *c, int code, const char *extra, const char *fmt, ...)
{
	char text[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	size_t n = strlen(text);
	if (n < sizeof text - 1)
		text[n++] = '\n';
	respond_raw(c, code, "text/plain; charset=utf-8", "no-store", extra, text, n);
}

/* {"ok":false,"error":...} with a status code, for the page's buttons. */
static void respond_json_error(struct conn *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void respond_json_error(struct conn *c, int code, const char *fmt, ...)
{
	char text[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	struct strbuf b = { 0 };
	http_sb_printf(&b, "{\"ok\":false,\"code\":%d,\"error\":", code); /* the page acts on code */
	http_sb_json_str(&b, text);
	http_sb_printf(&b, "}\n");
	respond(c, code, "application/json", &b);
	free(b.p);
}

/* ---- request parsing ---- */

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
		s[--n] = '\0';
	return s;
}

/* Content-Length, read without touching the buffer: -1 none, -2 malformed. */
static long content_length_of(const char *req, size_t hlen)
{
	static const char name[] = "content-length:";
	long v = -1;
	for (const char *p = req, *end = req + hlen; p < end;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if (!nl)
			break;
		if ((size_t)(nl - p) > sizeof name - 1 && strncasecmp(p, name, sizeof name - 1) == 0) {
			const char *q = p + sizeof name - 1;
			while (*q == ' ' || *q == '\t')
				q++;
			char *e;
			v = strtol(q, &e, 10);
			while (*e == ' ' || *e == '\t' || *e == '\r')
				e++;
			if (e == q || *e != '\n' || v < 0)
				return -2;
		}
		p = nl + 1;
	}
	return v;
}

/* 1 parsed, 0 need more bytes, -1 malformed (err set). */
static int parse(struct conn *c, struct request *r, char *err, size_t errlen)
{
	char *end = strstr(c->req, "\r\n\r\n");
	size_t hlen;
	if (end) {
		hlen = (size_t)(end - c->req) + 4;
	} else if ((end = strstr(c->req, "\n\n"))) {
		hlen = (size_t)(end - c->req) + 2;
	} else {
		return 0;
	}
	/* A body may come in later reads: wait for all of it before the headers are
	 * cut up in place (a second look must find them as they came). */
	long cl = content_length_of(c->req, hlen);
	if (cl > 0 && cl <= MAX_BODY && c->len < hlen + (size_t)cl)
		return 0;
	memset(r, 0, sizeof *r);
	r->content_length = -1;
	char target[512] = "";
	if (sscanf(c->req, "%7s %511s", r->method, target) != 2) {
		snprintf(err, errlen, "bad request line");
		return -1;
	}
	char *line = strchr(c->req, '\n');
	for (char *p = line ? line + 1 : NULL; p && p < c->req + hlen;) {
		char *nl = memchr(p, '\n', (size_t)(c->req + hlen - p));
		if (!nl)
			break;
		*nl = '\0';
		char *colon = strchr(p, ':');
		if (colon) {
			*colon = '\0';
			char *name = trim(p), *value = trim(colon + 1);
			if (strcasecmp(name, "host") == 0)
				r->host = value;
			else if (strcasecmp(name, "origin") == 0)
				r->origin = value;
			else if (strcasecmp(name, "content-type") == 0)
				r->ctype = value;
			else if (strcasecmp(name, "authorization") == 0)
				r->auth = value;
			else if (strcasecmp(name, "sec-fetch-site") == 0)
				r->fetch_site = value;
			else if (strcasecmp(name, "content-length") == 0) {
				char *e;
				long v = strtol(value, &e, 10);
				r->content_length = *value && !*e && v >= 0 ? v : -2;
			}
		}
		p = nl + 1;
	}
	if (r->content_length == -2) {
		snprintf(err, errlen, "bad Content-Length");
		return -1;
	}
	char *q = strchr(target, '?');
	if (q)
		*q++ = '\0';
	snprintf(r->path, sizeof r->path, "%s", target);
	snprintf(r->query, sizeof r->query, "%s", q ? q : "");
	size_t want = r->content_length > 0 ? (size_t)r->content_length : 0;
	if (want > MAX_BODY)
		return 1; /* refused by the caller, unread */
	if (c->len < hlen + want)
		return 0;
	r->body = c->req + hlen;
	r->body_len = want;
	return 1;
}

/* "127.0.0.1:9630", "localhost:8080", "[::1]:9630", with or without the port. */
static bool loopback_host(const char *host)
{
	char h[128];
	if (!host || strlen(host) >= sizeof h)
		return false;
	snprintf(h, sizeof h, "%s", host);
	char *port;
	if (h[0] == '[') {
		char *close = strchr(h, ']');
		if (!close)
			return false;
		*close = '\0';
		port = close[1] == ':' ? close + 2 : (close[1] ? (char *)"x" : NULL);
		if (strcmp(h + 1, "::1") != 0)
			return false;
	} else {
		port = strchr(h, ':');
		if (port)
			*port++ = '\0';
		struct in_addr a;
		if (strcasecmp(h, "localhost") != 0 &&
		    !(inet_pton(AF_INET, h, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127))
			return false;
	}
	if (port) {
		if (!*port || strlen(port) > 5)
			return false;
		for (const char *p = port; *p; p++)
			if (!isdigit((unsigned char)*p))
				return false;
	}
	return true;
}

/* With metrics.allow_remote, a page may also be asked for by an IP address
 * (http://192.0.2.7:9630/): no DNS rebinding goes through an address. */
static bool ip_host(const char *host)
{
	char h[128];
	if (!host || strlen(host) >= sizeof h)
		return false;
	snprintf(h, sizeof h, "%s", host);
	unsigned char a[16];
	if (h[0] == '[') {
		char *close = strchr(h, ']');
		if (!close || (close[1] && close[1] != ':'))
			return false;
		*close = '\0';
		return inet_pton(AF_INET6, h + 1, a) == 1;
	}
	char *port = strchr(h, ':');
	if (port)
		*port = '\0';
	return inet_pton(AF_INET, h, a) == 1;
}

static bool page_host(const char *host)
{
	return loopback_host(host) || (config_bool(sup.cfg, "metrics", "allow_remote") && ip_host(host));
}

/* The peer is on this machine (an action's user is found by its socket). */
static bool peer_loopback(const uv_tcp_t *t)
{
	struct sockaddr_storage sa;
	int len = sizeof sa;
	if (uv_tcp_getpeername(t, (struct sockaddr *)&sa, &len) < 0)
		return false;
	if (sa.ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)&sa)->sin_addr.s_addr) >> 24) == 127;
	const struct in6_addr *a6 = &((const struct sockaddr_in6 *)&sa)->sin6_addr;
	return sa.ss_family == AF_INET6 &&
	       (IN6_IS_ADDR_LOOPBACK(a6) || (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127));
}

static unsigned query_uint(const char *query, const char *key, unsigned dflt)
{
	size_t kl = strlen(key);
	for (const char *p = query; p && *p;) {
		if (strncmp(p, key, kl) == 0 && p[kl] == '=')
			return (unsigned)strtoul(p + kl + 1, NULL, 10);
		p = strchr(p, '&');
		if (p)
			p++;
	}
	return dflt;
}

/* ---- the event stream ---- */

static void sse_send(struct conn *c, const char *json, size_t len)
{
	if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > SSE_BACKLOG) {
		log_warnx("dashboard event stream: the reader is %u bytes behind; closing it", SSE_BACKLOG);
		conn_close(c);
		return;
	}
	struct strbuf ev = { 0 };
	while (len && json[len - 1] == '\n')
		len--;
	http_sb_printf(&ev, "event: dashboard\ndata: %.*s\n\n", (int)len, json);
	conn_write(c, ev.p, ev.len, false);
	free(ev.p);
}

/* Each stream gets the history it has not seen yet (all of it at first). */
static void sse_push_all(void)
{
	uint64_t end = history_end_s();
	struct strbuf b = { 0 };
	unsigned built_for = ~0u;
	for (struct conn *c = conns, *next; c; c = next) {
		next = c->next;
		if (!c->sse)
			continue;
		unsigned n = c->hist_end == 0 || end < c->hist_end || end - c->hist_end > HISTORY_SECONDS
				     ? HISTORY_SECONDS : (unsigned)(end - c->hist_end);
		if (n != built_for) {
			b.len = 0;
			metrics_dashboard_json(&b, n);
			built_for = n;
		}
		c->hist_end = end;
		sse_send(c, b.p, b.len);
	}
	free(b.p);
	last_push_ms = now_ms();
}

/* What a glance at the page would notice: a worker's state, pid, link or
 * restarts, a pause, a new error, a dead letter. */
static uint64_t signature(void)
{
	uint64_t h = 1469598103934665603ull;
#define MIX(v) (h = (h ^ (uint64_t)(v)) * 1099511628211ull)
	for (struct proc *p = proctab_first(); p; p = p->next) {
		MIX(p->state);
		MIX(p->pid);
		MIX(p->connected);
		MIX(p->restarts);
	}
	for (int i = 0; i < router_nprotos(); i++) {
		struct router_proto rp;
		router_proto(i, &rp);
		MIX(rp.paused);
	}
	struct router_counts rc;
	router_counts(&rc);
	MIX(rc.dead);
	const struct recent_error *e = errors_get(0);
	MIX(e ? e->wall_ms : 0);
#undef MIX
	return h;
}

/* A connection that has not sent its request within HTTP_REQUEST_MS, or not
 * taken its answer within HTTP_ANSWER_MS, is closed: a slow or silent client
 * holds a slot and a descriptor for that long at most. */
static void close_overdue(void)
{
	uint64_t now = now_ms();
	unsigned closed_now = 0, held;
	for (struct conn *c = conns, *next; c; c = next) {
		next = c->next;
		if (c->sse || now - c->start_ms < (c->answered ? HTTP_ANSWER_MS : HTTP_REQUEST_MS))
			continue;
		conn_close(c);
		closed_now++;
	}
	if (closed_now && ratelog_ok(&timeout_log, HTTP_LIMIT_LOG_MS, &held))
		log_warnx("dashboard: closed %u connection(s) that sent no complete request within %d s or did not "
			  "read the answer within %d s (%u more such closings not logged)", closed_now,
			  HTTP_REQUEST_MS / 1000, HTTP_ANSWER_MS / 1000, held);
}

static void on_tick(uv_timer_t *t)
{
	close_overdue();
	history_tick();
	if (!nsse)
		return;
	uint64_t sig = signature();
	if (sig != last_sig || now_ms() - last_push_ms >= HTTP_PUSH_MS - HTTP_TICK_MS / 2) {
		last_sig = sig;
		sse_push_all();
	}
}

static void start_events(struct conn *c)
{
	if (nsse >= HTTP_MAX_SSE) {
		respond_text(c, 503, "Retry-After: 5\r\n", "too many dashboard event streams open (%d); try again later",
			     HTTP_MAX_SSE);
		return;
	}
	c->sse = true;
	nsse++;
	c->len = 0;
	struct strbuf h = { 0 };
	http_sb_printf(&h, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
		      "Connection: keep-alive\r\nX-Accel-Buffering: no\r\n%s\r\nretry: 2000\n\n", SECURITY_HEADERS);
	conn_write(c, h.p, h.len, false);
	free(h.p);
	struct strbuf b = { 0 };
	metrics_dashboard_json(&b, HISTORY_SECONDS);
	c->hist_end = history_end_s();
	sse_send(c, b.p, b.len);
	free(b.p);
}

/* ---- the buttons ---- */

/* The uid owning the peer's end of this loopback connection, from the kernel's
 * socket table (what SO_PEERCRED gives on the control socket). */
static bool peer_uid(const uv_tcp_t *t, uid_t *uid)
{
	struct sockaddr_storage peer, self;
	int pl = sizeof peer, sl = sizeof self;
	if (uv_tcp_getpeername(t, (struct sockaddr *)&peer, &pl) < 0 ||
	    uv_tcp_getsockname(t, (struct sockaddr *)&self, &sl) < 0 || peer.ss_family != self.ss_family)
		return false;
	char want_local[64], want_rem[64];
	const char *file;
	if (peer.ss_family == AF_INET) {
		const struct sockaddr_in *p = (const struct sockaddr_in *)&peer, *s = (const struct sockaddr_in *)&self;
		snprintf(want_local, sizeof want_local, "%08X:%04X", (unsigned)p->sin_addr.s_addr, ntohs(p->sin_port));
		snprintf(want_rem, sizeof want_rem, "%08X:%04X", (unsigned)s->sin_addr.s_addr, ntohs(s->sin_port));
		file = "/proc/net/tcp";
	} else if (peer.ss_family == AF_INET6) {
		const struct sockaddr_in6 *p = (const struct sockaddr_in6 *)&peer, *s = (const struct sockaddr_in6 *)&self;
		uint32_t pa[4], sa[4];
		memcpy(pa, &p->sin6_addr, 16);
		memcpy(sa, &s->sin6_addr, 16);
		snprintf(want_local, sizeof want_local, "%08X%08X%08X%08X:%04X", pa[0], pa[1], pa[2], pa[3],
			 ntohs(p->sin6_port));
		snprintf(want_rem, sizeof want_rem, "%08X%08X%08X%08X:%04X", sa[0], sa[1], sa[2], sa[3], ntohs(s->sin6_port));
		file = "/proc/net/tcp6";
	} else {
		return false;
	}
	FILE *f = fopen(file, "re");
	if (!f)
		return false;
	char line[512];
	bool found = false;
	while (!found && fgets(line, sizeof line, f)) {
		char local[64], rem[64];
		unsigned u;
		if (sscanf(line, " %*d: %63s %63s %*s %*s %*s %*s %u", local, rem, &u) == 3 &&
		    strcasecmp(local, want_local) == 0 && strcasecmp(rem, want_rem) == 0) {
			*uid = (uid_t)u;
			found = true;
		}
	}
	fclose(f);
	return found;
}

/* The "name" string of a small JSON object: a worker or protocol name. */
static bool json_name(const char *body, size_t len, char *out, size_t outlen)
{
	const char *end = body + len;
	for (const char *p = body; p + 6 <= end; p++) {
		if (memcmp(p, "\"name\"", 6) != 0)
			continue;
		p += 6;
		while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
			p++;
		if (p >= end || *p++ != ':')
			return false;
		while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
			p++;
		if (p >= end || *p++ != '"')
			return false;
		size_t n = 0;
		while (p < end && *p != '"' && n + 1 < outlen) {
			if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-')
				return false;
			out[n++] = *p++;
		}
		out[n] = '\0';
		return p < end && *p == '"' && n > 0;
	}
	return false;
}

/* A flat msgpack map of the reply (e.g. {"requeued":3}) as JSON members. */
static void reply_members(struct strbuf *b, const struct local_reply *rep)
{
	if (!rep->body)
		return;
	msgpack_zone z;
	msgpack_zone_init(&z, 1024);
	msgpack_object o;
	if (msgpack_unpack(rep->body, rep->body_len, NULL, &z, &o) == MSGPACK_UNPACK_SUCCESS &&
	    o.type == MSGPACK_OBJECT_MAP)
		for (uint32_t i = 0; i < o.via.map.size; i++) {
			const msgpack_object_kv *kv = &o.via.map.ptr[i];
			if (kv->key.type != MSGPACK_OBJECT_STR || kv->val.type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
			    kv->key.via.str.size > 64)
				continue;
			char key[80];
			snprintf(key, sizeof key, "%.*s", (int)kv->key.via.str.size, kv->key.via.str.ptr);
			http_sb_printf(b, ",");
			http_sb_json_str(b, key);
			http_sb_printf(b, ":%llu", (unsigned long long)kv->val.via.u64);
		}
	msgpack_zone_destroy(&z);
}

static const struct action {
	const char *path;    /* under /api/actions/ */
	const char *command; /* the control command */
	const char *queue_action, *queue_id; /* for queue: its arguments */
	bool needs_name;
} actions[] = {
	{ "restart", "restart", NULL, NULL, true },
	{ "pause", "pause", NULL, NULL, true },
	{ "resume", "resume", NULL, NULL, true },
	{ "retry-dead", "queue", "requeue", "all", false },
	{ "retry-waiting", "queue", "retry", "all", false },
};

static void refused(struct conn *c, int code, const char *why)
{
	char peer[64] = "?";
	struct sockaddr_storage sa;
	int len = sizeof sa;
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &len) == 0)
		uv_ip_name((struct sockaddr *)&sa, peer, sizeof peer);
	log_warnx("dashboard action refused (peer %s): %s", peer, why);
	respond_json_error(c, code, "%s", why);
}

static void do_action(struct conn *c, const struct request *r, const char *what)
{
	const struct action *a = NULL;
	for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++)
		if (strcmp(actions[i].path, what) == 0)
			a = &actions[i];
	if (!a) {
		respond_json_error(c, 404, "no action '%s' (restart, pause, resume, retry-dead, retry-waiting)", what);
		return;
	}
	/* cross-site first: another site's page learns nothing, not even whether actions are on */
	if (!r->host || !loopback_host(r->host)) {
		refused(c, 403, "refused: the Host header must name this loopback listener");
		return;
	}
	if (!peer_loopback(&c->tcp)) { /* metrics.allow_remote serves pages to the network, never actions */
		refused(c, 403, "refused: actions are taken from this machine only (a loopback peer)");
		return;
	}
	if (r->origin) {
		char own[160];
		snprintf(own, sizeof own, "http://%s", r->host);
		if (strcasecmp(r->origin, own) != 0) {
			refused(c, 403, "refused: a request from another origin (cross-site)");
			return;
		}
	}
	if (r->fetch_site && strcmp(r->fetch_site, "same-origin") != 0 && strcmp(r->fetch_site, "none") != 0) {
		refused(c, 403, "refused: a request from another site (Sec-Fetch-Site)");
		return;
	}
	if (!r->ctype || strncasecmp(r->ctype, "application/json", 16) != 0 ||
	    (r->ctype[16] && r->ctype[16] != ';' && r->ctype[16] != ' ')) {
		refused(c, 415, "refused: an action is a POST with Content-Type: application/json");
		return;
	}
	if (!config_bool(sup.cfg, "metrics", "dashboard_actions")) {
		refused(c, 403, "refused: the dashboard is read-only (metrics.dashboard_actions is false)");
		return;
	}
	char err[256];
	if (r->body_len && !json_check(r->body, r->body_len, err, sizeof err)) {
		respond_json_error(c, 400, "the body is not JSON: %s", err);
		return;
	}
	char name[32] = "";
	if (a->needs_name && !json_name(r->body ? r->body : "", r->body_len, name, sizeof name)) {
		respond_json_error(c, 400, "%s: which one? send {\"name\": \"<worker>\"}", a->path);
		return;
	}
	char cred[2048] = "";
	if (r->auth) {
		if (strncasecmp(r->auth, "Bearer ", 7) != 0) {
			refused(c, 401, "unauthorized: the Authorization header must be 'Bearer <API key or JWT>'");
			return;
		}
		snprintf(cred, sizeof cred, "%s", trim((char *)r->auth + 7));
	}
	uid_t uid = (uid_t)-1;
	gid_t gid = (gid_t)-1;
	if (peer_uid(&c->tcp, &uid)) {
		struct passwd pw, *res = NULL;
		char pwbuf[1024];
		if (getpwuid_r(uid, &pw, pwbuf, sizeof pwbuf, &res) == 0 && res)
			gid = pw.pw_gid;
	}
	/* the request as ucgwctl would send it */
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	msgpack_packer pk;
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	if (a->needs_name) {
		msgpack_pack_map(&pk, 1);
		pk_kv_str(&pk, "name", name);
	} else {
		msgpack_pack_map(&pk, 2);
		pk_kv_str(&pk, "action", a->queue_action);
		pk_kv_str(&pk, "id", a->queue_id);
	}
	msgpack_zone z;
	msgpack_zone_init(&z, 1024);
	msgpack_object body;
	msgpack_unpack(sb.data, sb.size, NULL, &z, &body);
	struct msg req = { .type = MSG_REQUEST, .version = UCGW_CTL_VERSION, .name = a->command,
			   .auth = cred[0] ? cred : NULL, .body = &body };
	struct local_reply rep;
	control_local(uid, gid, 0, &req, &rep);
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb);
	if (cred[0])
		memset(cred, 0, sizeof cred);
	if (!rep.ok) {
		/* the control code is an HTTP status of the same meaning (proto/ctl.h) */
		int code = ctl_code_name(rep.code) ? rep.code : 500;
		if (code == CTL_E_UNAUTHORIZED)
			log_warnx("dashboard action %s refused: %s", a->path, rep.error);
		respond_json_error(c, code, "%s", rep.error);
	} else {
		log_info("dashboard action: %s%s%s (uid %d)", a->path, name[0] ? " " : "", name, (int)uid);
		struct strbuf b = { 0 };
		http_sb_printf(&b, "{\"ok\":true,\"action\":\"%s\"", a->path);
		if (name[0])
			http_sb_printf(&b, ",\"name\":\"%s\"", name);
		reply_members(&b, &rep);
		http_sb_printf(&b, "}\n");
		respond(c, 200, "application/json", &b);
		free(b.p);
	}
	free(rep.body);
	if (nsse) /* show what the button did at once */
		sse_push_all();
}

/* ---- routes ---- */

static void route(struct conn *c, const struct request *r)
{
	bool get = strcmp(r->method, "GET") == 0, post = strcmp(r->method, "POST") == 0;
	if (strcmp(r->path, "/metrics") == 0) { /* scrapers: any Host */
		if (!get) {
			respond_text(c, 405, "Allow: GET\r\n", "only GET is served here");
			return;
		}
		struct strbuf body = { 0 };
		metrics_prometheus(&body);
		respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", &body);
		free(body.p);
		return;
	}
	if (r->host && !page_host(r->host)) {
		respond_text(c, 403, NULL, "Host '%s' is not a loopback name%s: open http://%s/ (or a tunnel to it)", r->host,
			     config_bool(sup.cfg, "metrics", "allow_remote") ? " nor an IP address" : "", listen_addr);
		return;
	}
	if (strncmp(r->path, "/api/actions/", 13) == 0) {
		if (!post) {
			respond_text(c, 405, "Allow: POST\r\n", "an action is a POST");
			return;
		}
		if (r->content_length > MAX_BODY) {
			respond_json_error(c, 413, "body over %d bytes", MAX_BODY);
			return;
		}
		do_action(c, r, r->path + 13);
		return;
	}
	if (!get) {
		respond_text(c, 405, "Allow: GET\r\n", "only GET is served here (POST: /api/actions/...)");
		return;
	}
	if (strcmp(r->path, "/api/dashboard") == 0) {
		struct strbuf body = { 0 };
		unsigned n = query_uint(r->query, "history", HISTORY_SECONDS);
		metrics_dashboard_json(&body, n);
		respond(c, 200, "application/json", &body);
		free(body.p);
		return;
	}
	if (strcmp(r->path, "/api/events") == 0) {
		start_events(c);
		return;
	}
	const char *path = strcmp(r->path, "/") == 0 ? "/index.html" : r->path;
	for (size_t i = 0; i < dashboard_assets_len; i++)
		if (strcmp(dashboard_assets[i].path, path) == 0) {
			respond_raw(c, 200, dashboard_assets[i].type, "no-cache", NULL, dashboard_assets[i].data,
				    dashboard_assets[i].len);
			return;
		}
	respond_text(c, 404, NULL, "not found: try / (the dashboard), /metrics, /api/dashboard or /api/events");
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct conn *c = h->data;
	if (c->sse) /* whatever a stream's reader sends is read and dropped */
		c->len = 0;
	buf->base = c->req + c->len;
	buf->len = MAX_REQUEST - 1 - c->len;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct conn *c = s->data;
	if (n < 0) {
		conn_close(c);
		return;
	}
	if (c->sse)
		return;
	c->len += (size_t)n;
	c->req[c->len] = '\0';
	struct request r;
	char err[128];
	int rc = parse(c, &r, err, sizeof err);
	if (rc < 0) {
		respond_text(c, 400, NULL, "%s", err);
	} else if (rc > 0) {
		route(c, &r);
	} else if (c->len == MAX_REQUEST - 1) {
		respond_text(c, 400, NULL, "request too large");
	} else if (c->req[0] && memchr(c->req, '\0', c->len)) {
		respond_text(c, 400, NULL, "a NUL byte in the request");
	}
}

static void accept_one(void)
{
	struct conn *c = xcalloc(1, sizeof *c);
	uv_tcp_init(sup.loop, &c->tcp);
	c->tcp.data = c;
	c->start_ms = now_ms();
	c->next = conns;
	if (conns)
		conns->prev = c;
	conns = c;
	nconns++;
	if (uv_accept((uv_stream_t *)&server, (uv_stream_t *)&c->tcp) != 0) {
		conn_close(c);
		return;
	}
	uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* At HTTP_MAX_CONNS the new connection is left unaccepted: libuv then stops
 * watching the listener until conn_close accepts it, and the others wait in
 * the kernel's backlog. Out of descriptors, libuv closes what it cannot accept
 * (its reserve descriptor) and says so here. */
static void on_connection(uv_stream_t *srv, int status)
{
	unsigned held;
	if (status < 0) {
		if (ratelog_ok(&emfile_log, HTTP_LIMIT_LOG_MS, &held))
			log_warnx("dashboard: cannot accept a connection: %s (%u more not logged; see LimitNOFILE in "
				  "docs/operations.md)", uv_strerror(status), held);
		return;
	}
	if (nconns >= HTTP_MAX_CONNS) {
		accept_held = true;
		if (ratelog_ok(&cap_log, HTTP_LIMIT_LOG_MS, &held))
			log_warnx("dashboard: %d connections open, the most served at once; new ones wait until one "
				  "closes (%u such waits not logged)", HTTP_MAX_CONNS, held);
		return;
	}
	accept_one();
}

int http_start(char *err, size_t errlen)
{
	const char *listen = config_str(sup.cfg, "metrics", "listen");
	if (!listen || !*listen)
		return 0;
	struct sockaddr_storage sa;
	bool remote = config_bool(sup.cfg, "metrics", "allow_remote");
	if (cfg_parse_listen(listen, remote, &sa, err, errlen) < 0)
		return -1;
	uv_tcp_init(sup.loop, &server);
	int rc = uv_tcp_bind(&server, (struct sockaddr *)&sa, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&server, 64, on_connection);
	if (rc < 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", listen, uv_strerror(rc));
		uv_close((uv_handle_t *)&server, NULL);
		return -1;
	}
	snprintf(listen_addr, sizeof listen_addr, "%s", listen);
	uv_timer_init(sup.loop, &tick);
	uv_timer_start(&tick, on_tick, HTTP_TICK_MS, HTTP_TICK_MS);
	history_tick();
	listening = true;
	log_info("dashboard on http://%s/ (metrics on /metrics)", listen);
	bool lo = sa.ss_family == AF_INET ? (ntohl(((struct sockaddr_in *)&sa)->sin_addr.s_addr) >> 24) == 127
					  : IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&sa)->sin6_addr);
	if (!lo)
		log_warnx("metrics.listen %s is not loopback (metrics.allow_remote): /metrics and the read-only dashboard "
			  "answer anyone who can reach it; actions stay loopback only", listen);
	return 0;
}

/* Shutdown: the listener, the timer and every connection (event streams too,
 * which a browser would otherwise keep open). */
void http_stop(void)
{
	if (!listening)
		return;
	listening = false;
	uv_close((uv_handle_t *)&server, NULL);
	uv_timer_stop(&tick);
	uv_close((uv_handle_t *)&tick, NULL);
	while (conns)
		conn_close(conns);
}
