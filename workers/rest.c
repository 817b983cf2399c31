/* ucgw-rest: metadata as HTTP POSTs with libcurl's multi interface driven by the
 * framework's libuv loop (CURLMOPT_SOCKETFUNCTION/TIMERFUNCTION), over a pool of
 * keep-alive connections. 2xx is ok; 408, 429, 5xx and transport errors are
 * retry (the supervisor retries, never this worker); other 4xx are permfail. */
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#include "workers/worker.h"

#define BODY_KEEP 512

struct req {
	struct job *job;
	CURL *easy;
	struct curl_slist *headers;
	char body[BODY_KEEP + 1];
	size_t body_len;
	uint64_t retry_after_ms;
};

struct sock {
	uv_poll_t poll;
	curl_socket_t fd;
};

static struct {
	CURLM *multi;
	uv_timer_t timer, probe_timer;
	char *url_base, *endpoint;
	struct curl_slist *base_headers;
	long timeout_ms, connect_ms;
	const struct cfg_section *cfg;
	CURL **idle;                 /* easy handles kept for reuse (their connections stay in the pool) */
	size_t nidle, capidle;
	CURL *probe;
	bool probing;
	/* Jobs beyond a few per connection wait here rather than in libcurl,
	 * whose handling of many pending transfers costs more per request. */
	struct job **waiting;
	size_t nwaiting, capwaiting, head;
	long active, max_active;
	uint64_t rtt_sum, rtt_n, rtt_reported_ms;
} H;

/* ---- libcurl <-> libuv ---- */

static void check_done(void);
static void start_waiting(void);

static void on_poll(uv_poll_t *p, int status, int events)
{
	struct sock *s = p->data;
	int flags = status < 0 ? CURL_CSELECT_ERR
			       : ((events & UV_READABLE) ? CURL_CSELECT_IN : 0) | ((events & UV_WRITABLE) ? CURL_CSELECT_OUT : 0);
	int running;
	curl_multi_socket_action(H.multi, s->fd, flags, &running);
	check_done();
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct sock *s = socketp;
	if (what == CURL_POLL_REMOVE) {
		if (s) {
			uv_poll_stop(&s->poll);
			uv_close((uv_handle_t *)&s->poll, (uv_close_cb)free);
			curl_multi_assign(H.multi, fd, NULL);
		}
		return 0;
	}
	if (!s) {
		s = xcalloc(1, sizeof *s);
		s->fd = fd;
		uv_poll_init_socket(worker_loop(), &s->poll, fd);
		s->poll.data = s;
		curl_multi_assign(H.multi, fd, s);
	}
	int ev = (what & CURL_POLL_IN ? UV_READABLE : 0) | (what & CURL_POLL_OUT ? UV_WRITABLE : 0);
	uv_poll_start(&s->poll, ev, on_poll);
	return 0;
}

static void on_timeout(uv_timer_t *t)
{
	int running;
	curl_multi_socket_action(H.multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done();
}

static int timer_cb(CURLM *multi, long ms, void *userp)
{
	if (ms < 0)
		uv_timer_stop(&H.timer);
	else
		uv_timer_start(&H.timer, on_timeout, (uint64_t)ms, 0);
	return 0;
}

/* ---- responses ---- */

static size_t on_body(char *p, size_t size, size_t n, void *userp)
{
	struct req *r = userp;
	size_t len = size * n, room = BODY_KEEP - r->body_len;
	size_t take = len < room ? len : room;
	memcpy(r->body + r->body_len, p, take);
	r->body_len += take;
	r->body[r->body_len] = '\0';
	return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *userp)
{
	struct req *r = userp;
	size_t len = size * n;
	if (len > 12 && strncasecmp(p, "Retry-After:", 12) == 0) {
		long secs = strtol(p + 12, NULL, 10);
		if (secs > 0 && secs < 86400)
			r->retry_after_ms = (uint64_t)secs * 1000;
	}
	return len;
}

static void note_rtt(CURL *easy)
{
	curl_off_t us = 0;
	curl_easy_getinfo(easy, CURLINFO_TOTAL_TIME_T, &us);
	H.rtt_sum += (uint64_t)us;
	H.rtt_n++;
	uint64_t now = now_ms();
	if (now - H.rtt_reported_ms >= 1000) {
		worker_health(true, H.rtt_sum / H.rtt_n, "%s reachable", H.url_base);
		H.rtt_sum = H.rtt_n = 0;
		H.rtt_reported_ms = now;
	}
}

/* The server's words, cut to one line, for the error text. */
static const char *body_line(struct req *r)
{
	for (char *p = r->body; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	return r->body_len ? r->body : "(empty body)";
}

static bool transport_down(CURLcode rc)
{
	return rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_SEND_ERROR ||
	       rc == CURLE_RECV_ERROR || rc == CURLE_GOT_NOTHING || rc == CURLE_OPERATION_TIMEDOUT;
}

static void start_probe(void);
static void set_tls(CURL *e);

static void finish(struct req *r, CURLcode rc)
{
	long status = 0;
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
	struct job *j = r->job;
	if (rc != CURLE_OK) {
		worker_result(j, JOB_RETRY, 0, "%s", curl_easy_strerror(rc));
		if (transport_down(rc) && status == 0) {
			worker_health(false, 0, "%s unreachable: %s", H.url_base, curl_easy_strerror(rc));
			start_probe();
		}
	} else if (status >= 200 && status < 300) {
		note_rtt(r->easy);
		worker_result(j, JOB_OK, 0, NULL);
	} else if (status == 408 || status == 429 || status >= 500) {
		note_rtt(r->easy);
		worker_result(j, JOB_RETRY, r->retry_after_ms, "HTTP %ld: %.200s", status, body_line(r));
	} else {
		note_rtt(r->easy);
		worker_result(j, JOB_PERMFAIL, 0, "HTTP %ld: %.200s", status, body_line(r));
	}
}

static void release(struct req *r)
{
	curl_multi_remove_handle(H.multi, r->easy);
	curl_slist_free_all(r->headers);
	curl_easy_setopt(r->easy, CURLOPT_PRIVATE, NULL);
	if (H.nidle == H.capidle) {
		H.capidle = H.capidle ? H.capidle * 2 : 16;
		H.idle = xrealloc(H.idle, H.capidle * sizeof *H.idle);
	}
	H.idle[H.nidle++] = r->easy;
	free(r);
}

static void probe_done(CURLcode rc);

static void check_done(void)
{
	CURLMsg *msg;
	int left;
	while ((msg = curl_multi_info_read(H.multi, &left))) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		CURL *easy = msg->easy_handle;
		CURLcode rc = msg->data.result;
		if (easy == H.probe) {
			probe_done(rc);
			continue;
		}
		struct req *r = NULL;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&r);
		if (!r)
			continue;
		finish(r, rc);
		release(r);
		H.active--;
	}
	start_waiting();
}

/* ---- the reachability probe: a connect, no request ---- */

static void probe_tick(uv_timer_t *t) { start_probe(); }

static void start_probe(void)
{
	if (H.probing)
		return;
	H.probing = true;
	curl_easy_reset(H.probe);
	curl_easy_setopt(H.probe, CURLOPT_URL, H.url_base);
	curl_easy_setopt(H.probe, CURLOPT_CONNECT_ONLY, 1L);
	curl_easy_setopt(H.probe, CURLOPT_CONNECTTIMEOUT_MS, H.connect_ms);
	curl_easy_setopt(H.probe, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(H.probe, CURLOPT_FRESH_CONNECT, 1L);
	curl_easy_setopt(H.probe, CURLOPT_FORBID_REUSE, 1L);
	set_tls(H.probe);
	curl_multi_add_handle(H.multi, H.probe);
}

static void probe_done(CURLcode rc)
{
	curl_multi_remove_handle(H.multi, H.probe);
	H.probing = false;
	if (rc == CURLE_OK) {
		curl_off_t us = 0;
		curl_easy_getinfo(H.probe, CURLINFO_CONNECT_TIME_T, &us);
		worker_health(true, (uint64_t)us, "%s reachable", H.url_base);
		return;
	}
	worker_health(false, 0, "%s unreachable: %s", H.url_base, curl_easy_strerror(rc));
	uv_timer_start(&H.probe_timer, probe_tick, 1000, 0);
}

/* ---- jobs ---- */

static CURL *take_easy(void)
{
	if (H.nidle)
		return H.idle[--H.nidle];
	return curl_easy_init();
}

static void set_tls(CURL *e)
{
	const struct cfg_section *c = H.cfg;
	if (cfg_str(c, "ca_file"))
		curl_easy_setopt(e, CURLOPT_CAINFO, cfg_str(c, "ca_file"));
	if (cfg_str(c, "cert_file"))
		curl_easy_setopt(e, CURLOPT_SSLCERT, cfg_str(c, "cert_file"));
	if (cfg_str(c, "key_file"))
		curl_easy_setopt(e, CURLOPT_SSLKEY, cfg_str(c, "key_file"));
	if (cfg_bool(c, "insecure")) {
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	}
}

static void start_request(struct job *j);

static void rest_submit(struct job *j)
{
	if (H.active >= H.max_active) {
		if (H.nwaiting == H.capwaiting) {
			/* compact, then grow */
			if (H.head)
				memmove(H.waiting, H.waiting + H.head, (H.nwaiting - H.head) * sizeof *H.waiting);
			H.nwaiting -= H.head;
			H.head = 0;
			if (H.nwaiting == H.capwaiting) {
				H.capwaiting = H.capwaiting ? H.capwaiting * 2 : 256;
				H.waiting = xrealloc(H.waiting, H.capwaiting * sizeof *H.waiting);
			}
		}
		H.waiting[H.nwaiting++] = j;
		return;
	}
	start_request(j);
}

static void start_waiting(void)
{
	while (H.active < H.max_active && H.head < H.nwaiting)
		start_request(H.waiting[H.head++]);
	if (H.head == H.nwaiting)
		H.head = H.nwaiting = 0;
}

static void start_request(struct job *j)
{
	H.active++;
	struct req *r = xcalloc(1, sizeof *r);
	r->job = j;
	r->easy = take_easy();
	for (struct curl_slist *h = H.base_headers; h; h = h->next)
		r->headers = curl_slist_append(r->headers, h->data);
	char idem[64];
	snprintf(idem, sizeof idem, "Idempotency-Key: %s", j->id);
	r->headers = curl_slist_append(r->headers, idem);
	const char *bearer = worker_bearer(cfg_str(H.cfg, "jwt_secret"));
	if (bearer) {
		char *h = xasprintf("Authorization: %s", bearer);
		r->headers = curl_slist_append(r->headers, h);
		free(h);
	}
	char *url = xasprintf("%s%s", H.url_base, j->endpoint ? j->endpoint : H.endpoint);
	CURL *e = r->easy;
	curl_easy_setopt(e, CURLOPT_URL, url);
	free(url);
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, j->payload);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)j->payload_len);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "ucgw/" UCGW_VERSION);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, H.timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, H.connect_ms);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(e, CURLOPT_PRIVATE, r);
	curl_easy_setopt(e, CURLOPT_VERBOSE, getenv("UCGW_CURL_VERBOSE") ? 1L : 0L);
	/* A 100-continue round trip per request would halve the rate. */
	set_tls(e);
	curl_multi_add_handle(H.multi, e);
}

/* ---- set-up ---- */

static void add_header(const char *name, const char *value)
{
	char *h = xasprintf("%s: %s", name, value);
	H.base_headers = curl_slist_append(H.base_headers, h);
	free(h);
}

static int rest_init(uv_loop_t *loop, const struct cfg_section *cfg, char *err, size_t errlen)
{
	const char *base = cfg_str(cfg, "base_url");
	if (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0) {
		snprintf(err, errlen, "rest.base_url '%s': expected an http:// or https:// URL", base);
		return UCGW_EXIT_CONFIG;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(err, errlen, "curl_global_init failed");
		return UCGW_EXIT_CONFIG;
	}
	H.cfg = cfg;
	H.url_base = xstrdup(base);
	size_t n = strlen(H.url_base);
	if (n && H.url_base[n - 1] == '/')
		H.url_base[n - 1] = '\0'; /* the endpoint brings its own slash */
	H.endpoint = xstrdup(cfg_str(cfg, "endpoint"));
	H.timeout_ms = (long)(cfg_num(cfg, "timeout") * 1000);
	H.connect_ms = H.timeout_ms < 10000 ? H.timeout_ms : 10000;
	add_header("Content-Type", "application/json");
	add_header("Expect", "");
	const struct cfg_value *hv = cfg_get(cfg, "headers");
	for (size_t i = 0; i < hv->nitems; i++)
		add_header(hv->items[i], hv->vals[i]);
	if (cfg_str(cfg, "auth_header"))
		H.base_headers = curl_slist_append(H.base_headers, cfg_str(cfg, "auth_header"));
	if (cfg_str(cfg, "api_key"))
		add_header(cfg_str(cfg, "api_key_header"), cfg_str(cfg, "api_key"));
	if (cfg_bool(cfg, "insecure"))
		log_warnx("rest.insecure is true: the server's certificate is NOT verified");
	H.multi = curl_multi_init();
	long conns = (long)cfg_int(cfg, "connections");
	H.max_active = conns * 2;
	curl_multi_setopt(H.multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(H.multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(H.multi, CURLMOPT_MAX_HOST_CONNECTIONS, conns);
	curl_multi_setopt(H.multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, conns);
	curl_multi_setopt(H.multi, CURLMOPT_MAXCONNECTS, conns);
	uv_timer_init(loop, &H.timer);
	uv_timer_init(loop, &H.probe_timer);
	H.probe = curl_easy_init();
	worker_health(false, 0, "connecting to %s", H.url_base);
	start_probe();
	return 0;
}

static void rest_shutdown(void)
{
	uv_timer_stop(&H.probe_timer);
	uv_timer_stop(&H.timer);
}

static const struct worker_ops rest_ops = {
	.name = "rest",
	.init = rest_init,
	.submit = rest_submit,
	.shutdown = rest_shutdown,
};

WORKER_MAIN(rest_ops)
