/* Active probes of the network monitor: a TCP connect to each configured server
 * on an interval, timed; a refused or timed-out connect counts as a loss. */
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "common/log.h"
#include "common/util.h"
#include "supervisor/monitor.h"
#include "supervisor/slot.h"
#include "supervisor/sup.h"

struct target {
	int slot;
	char host[256];
	char port[8];
};

struct attempt {
	uv_getaddrinfo_t gai;
	uv_connect_t conn;
	uv_tcp_t tcp;
	uv_timer_t timer;
	struct target t;
	uint64_t start_us;
	int refs; /* the timer, the resolver while it runs, the socket once opened */
	bool done;
};

static uv_timer_t tick;

/* Split "scheme://host:port/path", "host:port" or "host" into host and port. */
static void split_url(const char *url, const char *defport, struct target *t)
{
	const char *p = strstr(url, "://");
	const char *h = p ? p + 3 : url;
	const char *at = strchr(h, '@');
	if (at && (!strchr(h, '/') || at < strchr(h, '/')))
		h = at + 1;
	size_t n = strcspn(h, "/?#");
	char hostport[300];
	snprintf(hostport, sizeof hostport, "%.*s", (int)n, h);
	char *colon = hostport[0] == '[' ? strstr(hostport, "]:") : strrchr(hostport, ':');
	if (colon && hostport[0] == '[')
		colon++;
	if (colon) {
		*colon = '\0';
		snprintf(t->port, sizeof t->port, "%s", colon + 1);
	} else {
		snprintf(t->port, sizeof t->port, "%s", defport);
	}
	char *host = hostport;
	if (host[0] == '[') {
		host++;
		host[strcspn(host, "]")] = '\0';
	}
	snprintf(t->host, sizeof t->host, "%s", host);
}

/* Each enabled protocol's server, where its descriptor says it is (server.key,
 * with a port in the URL, in server.port_key, or the default). */
static int targets(struct target *out, int max)
{
	int n = 0;
	const struct config *c = sup.cfg;
	for (int i = 0; i < slot_count() && n < max; i++) {
		const struct protocol *p = slot_at(i)->proto;
		const struct protocol_server *sv = &p->server;
		if (!sv->key || !config_protocol_enabled(c, p->name))
			continue;
		const char *u = protocol_server_is_list(p) ? config_first_server(c, p->name, sv->key)
						   : config_str(c, p->name, sv->key);
		const char *colon = u ? strchr(u, ':') : NULL;
		if (sv->port_key && protocol_server_is_list(p) && (u[0] == '[' || (colon && !strchr(colon + 1, ':')))) {
			char port[16]; /* a host list's item may carry its own port: "host:port", "[v6]:port" */
			snprintf(port, sizeof port, "%lld", (long long)config_int(c, p->name, sv->port_key));
			split_url(u, port, &out[n]);
		} else if (sv->port_key) {
			snprintf(out[n].host, sizeof out[n].host, "%s", u);
			snprintf(out[n].port, sizeof out[n].port, "%lld", (long long)config_int(c, p->name, sv->port_key));
		} else {
			bool tls = sv->tls_scheme && strncmp(u, sv->tls_scheme, strlen(sv->tls_scheme)) == 0;
			split_url(u, tls ? sv->tls_port : sv->port, &out[n]);
		}
		out[n++].slot = i;
	}
	return n;
}

bool probe_target(int slot, char *buf, size_t len)
{
	struct target t[PROTO_MAX];
	int n = targets(t, PROTO_MAX);
	for (int i = 0; i < n; i++)
		if (t[i].slot == slot) {
			snprintf(buf, len, strchr(t[i].host, ':') ? "[%s]:%s" : "%s:%s", t[i].host, t[i].port);
			return true;
		}
	return false;
}

static void unref(struct attempt *a)
{
	if (--a->refs == 0)
		free(a);
}

static void attempt_closed(uv_handle_t *h) { unref(h->data); }

static void finish(struct attempt *a, bool ok)
{
	if (a->done)
		return;
	a->done = true;
	uint64_t us = uv_hrtime() / 1000 - a->start_us;
	monitor_sample(a->t.slot, ok ? us : 0, !ok);
	uv_timer_stop(&a->timer);
	uv_close((uv_handle_t *)&a->timer, attempt_closed);
	if (a->tcp.type == UV_TCP)
		uv_close((uv_handle_t *)&a->tcp, attempt_closed);
}

static void on_connect(uv_connect_t *req, int status) { finish(req->data, status == 0); }

static void on_timeout(uv_timer_t *t)
{
	struct attempt *a = t->data;
	finish(a, false);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct attempt *a = req->data;
	if (a->done || status < 0 || !res) {
		uv_freeaddrinfo(res);
		finish(a, false);
		unref(a);
		return;
	}
	a->refs++; /* the socket */
	uv_tcp_init(sup.loop, &a->tcp);
	a->tcp.data = a;
	a->conn.data = a;
	a->start_us = uv_hrtime() / 1000;
	if (uv_tcp_connect(&a->conn, &a->tcp, res->ai_addr, on_connect) < 0)
		finish(a, false);
	uv_freeaddrinfo(res);
	unref(a); /* the resolver is done */
}

static void probe_one(const struct target *t)
{
	struct attempt *a = xcalloc(1, sizeof *a);
	a->t = *t;
	a->tcp.type = UV_UNKNOWN_HANDLE;
	a->refs = 2; /* the timer and the resolver */
	a->gai.data = a;
	uv_timer_init(sup.loop, &a->timer);
	a->timer.data = a;
	uv_timer_start(&a->timer, on_timeout, (uint64_t)config_int(sup.cfg, "network_monitor", "timeout_ms"), 0);
	a->start_us = uv_hrtime() / 1000;
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	if (uv_getaddrinfo(sup.loop, &a->gai, on_resolved, a->t.host, a->t.port, &hints) < 0) {
		finish(a, false);
		unref(a);
	}
}

static void on_tick(uv_timer_t *t)
{
	struct target ts[PROTO_MAX];
	int n = targets(ts, PROTO_MAX);
	for (int i = 0; i < n; i++)
		probe_one(&ts[i]);
	uint64_t iv = (uint64_t)config_int(sup.cfg, "network_monitor", "interval_ms");
	uv_timer_start(&tick, on_tick, iv, 0); /* re-read: a reload may change it */
}

void probe_start(void)
{
	uv_timer_init(sup.loop, &tick);
	uv_timer_start(&tick, on_tick, 50, 0);
}

void probe_stop(void) { uv_timer_stop(&tick); }
