/* ucgw-websocket: metadata over one persistent WebSocket (libwebsockets on the
 * framework's libuv loop). Each job goes out as {"id": ID, "data": PAYLOAD}.
 * With `ack: message` (the default) a job is ok when the server answers
 * {"ack": ID}; with `ack: none` it is ok once written — the weak mode, which
 * cannot tell a message the server dropped from one it kept. */
#include <libwebsockets.h>
#include <stdlib.h>
#include <string.h>

#include "workers/worker.h"

struct wjob {                       /* a job's place in the send queue or the unacked list */
	struct job *job;
	uint64_t sent_ms;
	struct wjob *next;
};

static struct {
	struct lws_context *ctx;
	struct lws *wsi;
	bool connected, stopping, ack;
	char host[256], path[512];
	int port;
	bool tls;
	uint64_t ack_timeout_ms, reconnect_ms, backoff_ms;
	unsigned failures, fail_limit;
	struct wjob *queue, *queue_tail;   /* waiting to be written */
	struct wjob *unacked, *unacked_tail; /* written, waiting for their ack, oldest first */
	char *rx;                          /* a message being reassembled */
	size_t rxlen;
	uv_timer_t reconnect, sweep;
	const struct cfg_section *cfg;
	char why[256];
	uint64_t rtt_sum, rtt_n, rtt_reported_ms;
} W;

static void schedule_reconnect(void);

static void fail_all(struct wjob **list, const char *why)
{
	while (*list) {
		struct wjob *w = *list;
		*list = w->next;
		worker_result(w->job, JOB_RETRY, 0, "%s", why);
		free(w);
	}
}

static void went_down(const char *why)
{
	bool was = W.connected;
	W.connected = false;
	W.wsi = NULL;
	snprintf(W.why, sizeof W.why, "%s", why);
	W.queue_tail = W.unacked_tail = NULL;
	fail_all(&W.queue, W.why);
	fail_all(&W.unacked, W.why);
	if (was)
		log_warnx("disconnected from %s:%d: %s", W.host, W.port, W.why);
	if (++W.failures >= W.fail_limit || was)
		worker_health(false, 0, "%s:%d unreachable: %s", W.host, W.port, W.why);
	if (!W.stopping)
		schedule_reconnect();
}

/* ---- acks ---- */

/* Find "key":"value" at the top of a small JSON object; enough for the ack
 * protocol, whose messages the server builds (no library on the list parses
 * JSON without lws's own lejp, which is heavier than this for two fields). */
static bool json_field(const char *msg, const char *key, char *out, size_t len)
{
	char pat[32];
	snprintf(pat, sizeof pat, "\"%s\"", key);
	const char *p = strstr(msg, pat);
	if (!p)
		return false;
	p += strlen(pat);
	while (*p == ' ' || *p == ':')
		p++;
	if (*p == '"') {
		const char *e = strchr(++p, '"');
		if (!e || (size_t)(e - p) >= len)
			return false;
		memcpy(out, p, (size_t)(e - p));
		out[e - p] = '\0';
		return true;
	}
	size_t n = strcspn(p, ",}");
	if (n >= len)
		return false;
	memcpy(out, p, n);
	out[n] = '\0';
	return true;
}

/* Acks come back in order, so the one wanted is nearly always the oldest. */
static struct wjob *take_unacked(const char *id)
{
	struct wjob *prev = NULL;
	for (struct wjob *w = W.unacked; w; prev = w, w = w->next)
		if (strcmp(w->job->id, id) == 0) {
			if (prev)
				prev->next = w->next;
			else
				W.unacked = w->next;
			if (W.unacked_tail == w)
				W.unacked_tail = prev;
			return w;
		}
	return NULL;
}

static void note_rtt(uint64_t ms)
{
	W.rtt_sum += ms * 1000;
	W.rtt_n++;
	if (now_ms() - W.rtt_reported_ms >= 1000) {
		worker_health(true, W.rtt_sum / W.rtt_n, "connected to %s:%d", W.host, W.port);
		W.rtt_sum = W.rtt_n = 0;
		W.rtt_reported_ms = now_ms();
	}
}

static void on_server_message(const char *msg)
{
	char id[64], status[16] = "", err[200] = "";
	bool ack = json_field(msg, "ack", id, sizeof id);
	if (!ack && !json_field(msg, "nack", id, sizeof id))
		return; /* not for us */
	struct wjob *w = take_unacked(id);
	if (!w)
		return; /* already timed out and retried */
	if (ack) {
		note_rtt(now_ms() - w->sent_ms);
		worker_result(w->job, JOB_OK, 0, NULL);
	} else {
		json_field(msg, "status", status, sizeof status);
		json_field(msg, "error", err, sizeof err);
		long code = strtol(status, NULL, 10);
		bool retry = code == 408 || code == 429 || code >= 500 || code == 0;
		worker_result(w->job, retry ? JOB_RETRY : JOB_PERMFAIL, code == 429 ? 1000 : 0, "server refused (%ld): %s",
			      code, err[0] ? err : "no reason given");
	}
	free(w);
}

static void receive(const void *in, size_t len, bool final)
{
	W.rx = xrealloc(W.rx, W.rxlen + len + 1);
	memcpy(W.rx + W.rxlen, in, len);
	W.rxlen += len;
	W.rx[W.rxlen] = '\0';
	if (!final || W.rxlen > 65536)
		return;
	on_server_message(W.rx);
	W.rxlen = 0;
}

/* ---- sending ---- */

static void write_some(struct lws *wsi)
{
	while (W.queue && !lws_send_pipe_choked(wsi)) {
		struct wjob *w = W.queue;
		struct job *j = w->job;
		size_t n = strlen(j->id) + j->payload_len + 24;
		unsigned char *buf = xmalloc(LWS_PRE + n);
		int len = snprintf((char *)buf + LWS_PRE, n, "{\"id\":\"%s\",\"data\":%s}", j->id, j->payload);
		int wrote = lws_write(wsi, buf + LWS_PRE, (size_t)len, LWS_WRITE_TEXT);
		free(buf);
		if (wrote < len) {
			went_down("write failed");
			return;
		}
		W.queue = w->next;
		if (!W.queue)
			W.queue_tail = NULL;
		if (!W.ack) {
			worker_result(j, JOB_OK, 0, NULL);
			free(w);
			continue;
		}
		w->sent_ms = now_ms();
		w->next = NULL;
		if (W.unacked_tail)
			W.unacked_tail->next = w;
		else
			W.unacked = w;
		W.unacked_tail = w;
	}
	if (W.queue)
		lws_callback_on_writable(wsi);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	switch (reason) {
	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		W.connected = true;
		W.failures = 0;
		W.backoff_ms = 0;
		W.why[0] = '\0';
		log_info("connected to %s://%s:%d%s", W.tls ? "wss" : "ws", W.host, W.port, W.path);
		worker_health(true, 0, "connected to %s:%d", W.host, W.port);
		lws_callback_on_writable(wsi);
		break;
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
		if (wsi == W.wsi || !W.wsi)
			went_down(in ? (const char *)in : "connection failed");
		break;
	case LWS_CALLBACK_CLIENT_RECEIVE:
		receive(in, len, lws_is_final_fragment(wsi));
		break;
	case LWS_CALLBACK_CLIENT_WRITEABLE:
		write_some(wsi);
		break;
	case LWS_CALLBACK_CLIENT_CLOSED:
		if (wsi == W.wsi)
			went_down("the server closed the connection");
		break;
	case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
		unsigned char **p = (unsigned char **)in, *end = (*p) + len;
		const struct cfg_value *hv = cfg_get(W.cfg, "headers");
		for (size_t i = 0; i < hv->nitems; i++) {
			char name[128];
			snprintf(name, sizeof name, "%s:", hv->items[i]);
			if (lws_add_http_header_by_name(wsi, (const unsigned char *)name, (const unsigned char *)hv->vals[i],
							(int)strlen(hv->vals[i]), p, end))
				return -1;
		}
		const char *bearer = worker_bearer(cfg_str(W.cfg, "jwt_secret"));
		if (bearer && lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, (const unsigned char *)bearer,
							   (int)strlen(bearer), p, end))
			return -1;
		if (cfg_str(W.cfg, "api_key")) {
			char name[128];
			snprintf(name, sizeof name, "%s:", cfg_str(W.cfg, "api_key_header"));
			const char *v = cfg_str(W.cfg, "api_key");
			if (lws_add_http_header_by_name(wsi, (const unsigned char *)name, (const unsigned char *)v,
							(int)strlen(v), p, end))
				return -1;
		}
		break;
	}
	default:
		break;
	}
	return 0;
}

static const struct lws_protocols protocols[] = {
	{ "ucgw", callback, 0, 65536, 0, NULL, 0 },
	{ NULL, NULL, 0, 0, 0, NULL, 0 },
};

/* ---- connecting ---- */

static void do_connect(uv_timer_t *t)
{
	struct lws_client_connect_info ci;
	memset(&ci, 0, sizeof ci);
	ci.context = W.ctx;
	ci.address = W.host;
	ci.port = W.port;
	ci.path = W.path;
	ci.host = W.host;
	ci.origin = W.host;
	ci.protocol = NULL;
	ci.local_protocol_name = "ucgw";
	ci.pwsi = &W.wsi;
	if (W.tls) {
		ci.ssl_connection = LCCSCF_USE_SSL;
		if (cfg_bool(W.cfg, "insecure"))
			ci.ssl_connection |= LCCSCF_ALLOW_SELFSIGNED | LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK |
					     LCCSCF_ALLOW_INSECURE;
	}
	if (!lws_client_connect_via_info(&ci))
		went_down("cannot start a connection");
}

static void schedule_reconnect(void)
{
	W.backoff_ms = W.backoff_ms ? W.backoff_ms * 2 : W.reconnect_ms / 4 + 100;
	if (W.backoff_ms > W.reconnect_ms * 4 + 1000)
		W.backoff_ms = W.reconnect_ms * 4 + 1000;
	uv_timer_start(&W.reconnect, do_connect, W.backoff_ms, 0);
}

/* Unacked past ack_timeout_ms: retry them (the server may have lost them). */
static void sweep(uv_timer_t *t)
{
	uint64_t now = now_ms();
	W.unacked_tail = NULL;
	for (struct wjob **pp = &W.unacked; *pp;) {
		struct wjob *w = *pp;
		if (now - w->sent_ms < W.ack_timeout_ms) {
			W.unacked_tail = w;
			pp = &w->next;
			continue;
		}
		*pp = w->next;
		worker_result(w->job, JOB_RETRY, 0, "no ack from the server within %llu ms",
			      (unsigned long long)W.ack_timeout_ms);
		free(w);
	}
}

static void ws_submit(struct job *j)
{
	if (!W.connected || !W.wsi) {
		worker_result(j, JOB_RETRY, 0, "%s:%d unreachable: %s", W.host, W.port, W.why[0] ? W.why : "connecting");
		return;
	}
	struct wjob *w = xcalloc(1, sizeof *w);
	w->job = j;
	if (W.queue_tail)
		W.queue_tail->next = w;
	else
		W.queue = w;
	W.queue_tail = w;
	lws_callback_on_writable(W.wsi);
}

static int parse_url(const char *url, char *err, size_t errlen)
{
	const char *prot, *addr, *path;
	char *copy = xstrdup(url);
	int port;
	if (lws_parse_uri(copy, &prot, &addr, &port, &path) || (strcmp(prot, "ws") && strcmp(prot, "wss"))) {
		snprintf(err, errlen, "websocket.server_url '%s': expected ws://host[:port]/path or wss://...", url);
		free(copy);
		return -1;
	}
	W.tls = strcmp(prot, "wss") == 0;
	snprintf(W.host, sizeof W.host, "%s", addr);
	snprintf(W.path, sizeof W.path, "/%s", path);
	W.port = port;
	free(copy);
	return 0;
}

static int ws_init(uv_loop_t *loop, const struct cfg_section *cfg, char *err, size_t errlen)
{
	W.cfg = cfg;
	if (parse_url(cfg_str(cfg, "server_url"), err, errlen) < 0)
		return UCGW_EXIT_CONFIG;
	W.ack = strcmp(cfg_str(cfg, "ack"), "message") == 0;
	W.ack_timeout_ms = (uint64_t)cfg_int(cfg, "ack_timeout_ms");
	W.reconnect_ms = (uint64_t)(cfg_num(cfg, "reconnect_delay") * 1000);
	W.fail_limit = (unsigned)cfg_int(cfg, "reconnect_attempts");
	if (W.fail_limit == 0)
		W.fail_limit = 1;
	lws_set_log_level(LLL_ERR, NULL);
	static lws_retry_bo_t retry;
	retry.secs_since_valid_ping = (uint16_t)cfg_int(cfg, "ping_interval_s");
	retry.secs_since_valid_hangup = (uint16_t)(cfg_int(cfg, "ping_interval_s") * 2 + 10);
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof info);
	void *loops[] = { loop };
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protocols;
	info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
	info.foreign_loops = loops;
	info.retry_and_idle_policy = &retry;
	info.client_ssl_ca_filepath = cfg_str(cfg, "ca_file");
	info.client_ssl_cert_filepath = cfg_str(cfg, "cert_file");
	info.client_ssl_private_key_filepath = cfg_str(cfg, "key_file");
	W.ctx = lws_create_context(&info);
	if (!W.ctx) {
		snprintf(err, errlen, "cannot create the libwebsockets context (is the libuv event library installed?)");
		return UCGW_EXIT_CONFIG;
	}
	if (cfg_bool(cfg, "insecure"))
		log_warnx("websocket.insecure is true: the server's certificate is NOT verified");
	uv_timer_init(loop, &W.reconnect);
	uv_timer_init(loop, &W.sweep);
	uv_timer_start(&W.sweep, sweep, 250, 250);
	worker_health(false, 0, "connecting to %s:%d", W.host, W.port);
	do_connect(NULL);
	return 0;
}

static void ws_shutdown(void)
{
	W.stopping = true;
	uv_timer_stop(&W.reconnect);
	uv_timer_stop(&W.sweep);
	W.queue_tail = W.unacked_tail = NULL;
	fail_all(&W.queue, "worker is shutting down");
	fail_all(&W.unacked, "worker is shutting down");
}

static const struct worker_ops ws_ops = {
	.name = "websocket",
	.init = ws_init,
	.submit = ws_submit,
	.shutdown = ws_shutdown,
};

WORKER_MAIN(ws_ops)
