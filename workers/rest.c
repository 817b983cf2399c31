/* ucgw-rest: metadata as HTTP POSTs with libcurl's multi interface driven by the
 * framework's libuv loop (CURLMOPT_SOCKETFUNCTION/TIMERFUNCTION), over a pool of
 * keep-alive connections. 2xx is ok; 408, 429, 5xx and transport errors are
 * retry (the supervisor retries, never this worker); other 4xx are permfail.
 *
 * rest.base_url may name several servers (workers/servers.c picks one per
 * request by rest.servers_policy): a request that gets a retry answer from one
 * goes to the next server of the list at once, and is answered retry only
 * when every server has failed it. */
#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/compress.h"
#include "workers/servers.h"
#include "workers/worker.h"

#define BODY_KEEP 200            /* bytes of a refusal's body quoted in the error */
#define REASON_KEEP 64           /* the status line's reason phrase */
#define PROBE_FIRST_MS 1000      /* reachability probes while the server is away: */
#define PROBE_MAX_MS 5000        /* 1 s, doubling to every 5 s */
#define RETRY_AFTER_MAX_S 86400

struct req {
	struct job *job;             /* one record per POST; NULL for a batch */
	struct job **batch;          /* rest.batch_max > 1: the records of this POST, in the array's order */
	size_t nbatch;
	char *batch_body;
	unsigned char *zbody;        /* the body compressed (rest.compress), sent instead */
	CURL *easy;
	struct curl_slist *headers;
	char body[BODY_KEEP + 1];
	size_t body_len;
	char reason[REASON_KEEP];
	char errbuf[CURL_ERROR_SIZE];
	uint64_t retry_after_ms;
	size_t server;               /* the index in rest.base_url it goes to */
	size_t tried;                /* servers that have failed it */
};

/* One server of rest.base_url. */
struct rsrv {
	char *base;                  /* without a final '/' */
	CURLU *url;                  /* base + rest.endpoint, parsed once */
	char hostport[300];          /* for "connect to HOST:PORT failed" */
};

static struct {
	CURLM *multi;
	uv_timer_t timer, probe_timer;
	struct rsrv srv[SERVERS_MAX];
	size_t nsrv;
	size_t probe_server;         /* the server the probe under way connects to */
	unsigned probe_fails;        /* probes failed in a row */
	uv_timer_t servers_tick;     /* failback and the per-server report */
	bool no_proxy_env;           /* none of libcurl's proxy variables is set */
	struct curl_slist *base_headers;
	long timeout_ms, connect_ms;
	const struct cfg_section *cfg;
	CURL **idle;                 /* easy handles kept for reuse (their connections stay in the pool) */
	size_t nidle, capidle;
	CURL *probe;
	char probe_err[CURL_ERROR_SIZE];
	bool probing;
	uint64_t probe_delay_ms;
	/* Jobs beyond one per connection wait here rather than in libcurl,
	 * whose handling of pending transfers costs more per request. */
	struct job **waiting;
	size_t nwaiting, capwaiting, head;
	long active, max_active;
	long conns, streams;         /* rest.connections; rest.streams per connection under HTTP/2 */
	long http_version;           /* CURLOPT_HTTP_VERSION, from rest.http2 */
	bool h2;                     /* the server answers over HTTP/2: many requests per connection */
	long may_h2;                 /* prior knowledge, or offered over TLS */
	uint64_t rtt_sum, rtt_n, rtt_reported_ms;
	long verbose;                /* UCGW_CURL_VERBOSE set: libcurl's trace on stderr */
	enum compress_alg calg;      /* rest.compress */
	size_t cmin;                 /* rest.compress_min_bytes */
} H;

struct jobq {
	struct job **v;
	size_t n, cap, head;
};

/* rest.batch_max > 1: records waiting to share a POST. */
static struct {
	long max;
	uint64_t linger_ms;
	struct jobq pend;
	uv_timer_t linger;
	bool due;                    /* the oldest has waited batch_linger_ms: send what there is */
} B;

static void check_done(void);
static void start_probe(void);
static void start_waiting(void);

/* ---- libcurl <-> libuv ----
 * libcurl's sockets live in an epoll set of their own, and the loop watches
 * only that set's descriptor (one uv_poll handle, started once). Written by
 * hand because a uv_poll handle per socket costs too much here: libuv 1.44's
 * uv_poll_start takes the descriptor out of epoll and puts it back on every
 * call, and libcurl changes what it waits for two or three times per request
 * and stops watching a keep-alive connection after each answer; that was 6
 * epoll_ctl and an ioctl per request (118,600 epoll_ctl for 20,000 POSTs).
 *
 * A connection libcurl stops watching (CURL_POLL_REMOVE) stays in the set as
 * it was, so its next request usually needs no epoll_ctl at all; should it
 * report anything meanwhile (the server closed it), it leaves the set then.
 * That is safe only for sockets whose whole life this worker sees: the ones
 * libcurl opens and closes through the callbacks below ("own"). Others (the
 * resolver's socketpair) are closed by libcurl directly, so they leave the set
 * at once and are never assumed to be in it. */

struct csock {
	uint32_t want; /* what libcurl waits for (EPOLLIN/EPOLLOUT); 0: nothing */
	uint32_t have; /* what the set watches for it; 0: it is not in the set */
	bool own;
};

static struct {
	int ep;
	uv_poll_t poll;
	struct csock *s;
	size_t cap;
} rest_state = { .ep = -1 };

static struct csock *csock(curl_socket_t fd)
{
	if ((size_t)fd >= rest_state.cap) {
		size_t cap = rest_state.cap ? rest_state.cap : 64;
		while (cap <= (size_t)fd)
			cap *= 2;
		rest_state.s = xrealloc(rest_state.s, cap * sizeof *rest_state.s);
		memset(rest_state.s + rest_state.cap, 0, (cap - rest_state.cap) * sizeof *rest_state.s);
		rest_state.cap = cap;
	}
	return &rest_state.s[fd];
}

/* ADD or MOD, whichever the kernel agrees with: a descriptor closed behind
 * this worker's back left the set by itself. */
static void set_watch(curl_socket_t fd, struct csock *c, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.fd = fd };
	int op = c->have ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
	c->have = 0;
	if (epoll_ctl(rest_state.ep, op, fd, &ev) < 0) {
		int again = errno == ENOENT ? EPOLL_CTL_ADD : errno == EEXIST ? EPOLL_CTL_MOD : -1;
		if (again < 0 || epoll_ctl(rest_state.ep, again, fd, &ev) < 0) {
			log_warnx("epoll_ctl on socket %d: %s", (int)fd, strerror(errno));
			return;
		}
	}
	c->have = events;
}

static void unwatch(curl_socket_t fd, struct csock *c)
{
	if (c->have)
		epoll_ctl(rest_state.ep, EPOLL_CTL_DEL, fd, NULL); /* ENOENT: it left already */
	c->have = 0;
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct csock *c = csock(fd);
	c->want = what == CURL_POLL_REMOVE ? 0 : (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
	if (!c->want) { /* nothing wanted (CURL_POLL_REMOVE or _NONE) */
		if (!c->own)
			unwatch(fd, c);
	} else if (!c->own || c->have != c->want) {
		set_watch(fd, c, c->want);
	}
	return 0;
}

static curl_socket_t open_socket(void *userp, curlsocktype purpose, struct curl_sockaddr *a)
{
	curl_socket_t fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
	if (fd >= 0)
		*csock(fd) = (struct csock){ .own = true };
	return fd;
}

static int close_socket(void *userp, curl_socket_t fd)
{
	struct csock *c = csock(fd);
	unwatch(fd, c);
	*c = (struct csock){ 0 };
	worker_wire_sample(); /* the connection's last bytes, for the link's byte budget */
	return close(fd);
}

/* Everything ready in libcurl's set, then the finished transfers at once. */
static void on_sockets(uv_poll_t *p, int status, int events)
{
	struct epoll_event ev[64];
	int n, running;
	do {
		n = epoll_wait(rest_state.ep, ev, 64, 0);
		for (int i = 0; i < n; i++) {
			curl_socket_t fd = ev[i].data.fd;
			struct csock *c = csock(fd);
			uint32_t e = ev[i].events;
			if (!c->want) { /* a connection at rest that spoke: libcurl looks at it when it reuses it */
				unwatch(fd, c);
				continue;
			}
			int flags = ((e & (EPOLLIN | EPOLLHUP | EPOLLERR)) && (c->want & EPOLLIN) ? CURL_CSELECT_IN : 0) |
				    ((e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) && (c->want & EPOLLOUT) ? CURL_CSELECT_OUT : 0) |
				    (e & EPOLLERR ? CURL_CSELECT_ERR : 0);
			curl_multi_socket_action(H.multi, fd, flags, &running);
		}
	} while (n == 64);
	check_done();
}

static void set_sockets(CURL *e)
{
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_socket);
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

/* Retry-After is either delta-seconds or an HTTP date (RFC 9110 10.2.3). */
static uint64_t parse_retry_after(const char *v)
{
	while (*v == ' ' || *v == '\t')
		v++;
	long secs;
	if (*v >= '0' && *v <= '9') {
		secs = strtol(v, NULL, 10);
	} else {
		time_t when = curl_getdate(v, NULL);
		secs = when < 0 ? 0 : (long)(when - time(NULL));
	}
	if (secs <= 0)
		return 0;
	return (uint64_t)(secs < RETRY_AFTER_MAX_S ? secs : RETRY_AFTER_MAX_S) * 1000;
}

/* "HTTP/1.1 503 Service Unavailable\r\n": keep the reason phrase. A later
 * status line (after a 100 Continue, say) replaces an earlier one. */
static void take_reason(struct req *r, const char *line, size_t len)
{
	const char *p = memchr(line, ' ', len);
	p = p ? memchr(p + 1, ' ', len - (size_t)(p + 1 - line)) : NULL;
	size_t n = 0;
	if (p) {
		p++;
		n = len - (size_t)(p - line);
		while (n && (p[n - 1] == '\r' || p[n - 1] == '\n' || p[n - 1] == ' '))
			n--;
		if (n >= sizeof r->reason)
			n = sizeof r->reason - 1;
		memcpy(r->reason, p, n);
	}
	r->reason[n] = '\0';
	r->retry_after_ms = 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *userp)
{
	struct req *r = userp;
	size_t len = size * n;
	if (len > 5 && strncmp(p, "HTTP/", 5) == 0) {
		take_reason(r, p, len);
	} else if (len > 12 && strncasecmp(p, "Retry-After:", 12) == 0) {
		char v[128];
		size_t vn = len - 12 < sizeof v - 1 ? len - 12 : sizeof v - 1;
		memcpy(v, p + 12, vn);
		v[vn] = '\0';
		r->retry_after_ms = parse_retry_after(v);
	}
	return len;
}

/* Every successful exchange proves the path; the round trip goes to the
 * network monitor averaged, at most once a second, so it is not flooded. */
static void note_success(CURL *easy, size_t server)
{
	curl_off_t us = 0;
	curl_easy_getinfo(easy, CURLINFO_TOTAL_TIME_T, &us);
	H.rtt_sum += (uint64_t)us;
	H.rtt_n++;
	servers_up(server, (uint64_t)us);
	uint64_t now = now_ms();
	if (!worker_connected() || now - H.rtt_reported_ms >= 1000) {
		worker_health(true, H.rtt_sum / H.rtt_n, "%s reachable", H.srv[server].base);
		H.rtt_sum = H.rtt_n = 0;
		H.rtt_reported_ms = now;
	}
}

/* HTTP/2 has no reason phrase, and some servers send none: say it anyway,
 * an operator reads "429 Too Many Requests" faster than "429". */
static const char *standard_reason(long status)
{
	static const struct {
		long status;
		const char *reason;
	} t[] = {
		{ 400, "Bad Request" }, { 401, "Unauthorized" }, { 403, "Forbidden" }, { 404, "Not Found" },
		{ 405, "Method Not Allowed" }, { 408, "Request Timeout" }, { 409, "Conflict" },
		{ 413, "Content Too Large" }, { 415, "Unsupported Media Type" }, { 422, "Unprocessable Content" },
		{ 429, "Too Many Requests" }, { 500, "Internal Server Error" }, { 502, "Bad Gateway" },
		{ 503, "Service Unavailable" }, { 504, "Gateway Timeout" },
	};
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
		if (t[i].status == status)
			return t[i].reason;
	return "";
}

/* The server's words, cut to one line, for the error text. */
static const char *body_line(struct req *r)
{
	for (char *p = r->body; *p; p++)
		if (*p == '\n' || *p == '\r' || *p == '\t')
			*p = ' ';
	return r->body_len ? r->body : "(empty body)";
}

/* Why a transfer failed, in words an operator can act on. */
static void transport_reason(CURL *easy, CURLcode rc, const char *errbuf, size_t server, char *out, size_t len)
{
	long os_errno = 0;
	curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &os_errno);
	if (rc == CURLE_COULDNT_CONNECT && os_errno)
		snprintf(out, len, "connect to %s failed: %s", H.srv[server].hostport, strerror((int)os_errno));
	else if (errbuf[0])
		snprintf(out, len, "%s", errbuf);
	else
		snprintf(out, len, "%s", curl_easy_strerror(rc));
}

/* The same answer for every record of the request: a batch is all or nothing. */
static void answer(struct req *r, enum job_status st, uint64_t retry_after_ms, const char *fmt, ...) PRINTF(4, 5);
static void answer(struct req *r, enum job_status st, uint64_t retry_after_ms, const char *fmt, ...)
{
	char text[1024] = "";
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(text, sizeof text, fmt, ap);
		va_end(ap);
	}
	if (r->job) {
		worker_result(r->job, st, retry_after_ms, fmt ? "%s" : NULL, text);
		return;
	}
	for (size_t i = 0; i < r->nbatch; i++)
		worker_result(r->batch[i], st, retry_after_ms, fmt ? "%s%s" : NULL, text,
			      r->nbatch > 1 ? " (the whole batch)" : "");
}

static void send_alone(struct job *j);

/* Is any server of the list up (or not yet tried, with another to come)? */
static bool some_server_up(void)
{
	for (size_t i = 0; i < H.nsrv; i++)
		if (servers_is_up(i))
			return true;
	return false;
}

/* A retry answer from r's server: true when r should go to the next server
 * of the list instead (one that has not failed it yet). */
static bool next_server(struct req *r, const char *why, bool unreachable)
{
	servers_failed(r->server);
	if (unreachable)
		servers_down(r->server, why);
	if (++r->tried >= H.nsrv || false)
		return false;
	size_t next = servers_next(r->server);
	if (next == r->server)
		return false;
	log_debug("%s: %s; sending it to %s", H.srv[r->server].base, why, H.srv[next].base);
	r->server = next;
	/* Each server may take up to rest.timeout: a list of them can take longer
	 * than gateway.job_timeout_ms. Progress tells the supervisor the job is
	 * still being tried (its job timer starts again), so it does not send the
	 * message elsewhere while this attempt goes on. */
	for (size_t i = 0; i < (r->job ? 1 : r->nbatch); i++)
		worker_progress(r->job ? r->job : r->batch[i], 0);
	return true;
}

static bool finish_transport(struct req *r, CURLcode rc, long status)
{
	char why[CURL_ERROR_SIZE + 320];
	transport_reason(r->easy, rc, r->errbuf, r->server, why, sizeof why);
	if (rc == CURLE_URL_MALFORMAT) {
		/* Only a message's own endpoint can make the URL bad: no retry mends it. */
		answer(r, JOB_PERMFAIL, 0, "bad URL: %s", why);
		return false;
	}
	size_t server = r->server;
	if (next_server(r, why, status == 0))
		return true;
	answer(r, JOB_RETRY, 0, "%s", why);
	if (status == 0 && !some_server_up()) { /* nothing came back: the path itself is in doubt */
		worker_health(false, 0, "%s unreachable: %s", H.srv[server].base, why);
		start_probe();
	}
	return false;
}

/* Under HTTP/2 a connection carries rest.streams requests at once, under
 * HTTP/1.1 one: libcurl is given that many (the rest wait in H.waiting). The
 * version is the server's choice (ALPN), learnt from its answers. */
static void note_version(CURL *easy, size_t server)
{
	long v = 0;
	curl_easy_getinfo(easy, CURLINFO_HTTP_VERSION, &v);
	bool h2 = v == CURL_HTTP_VERSION_2_0;
	if (!v || h2 == H.h2)
		return;
	H.h2 = h2;
	H.max_active = h2 ? H.conns * H.streams : H.conns;
	log_info("%s answers over HTTP/%s: %ld requests at once", H.srv[server].base, h2 ? "2" : "1.1", H.max_active);
}

/* true: r goes to the next server (not answered) */
static bool finish(struct req *r, CURLcode rc)
{
	long status = 0;
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
	if (status)
		note_version(r->easy, r->server);
	if (rc != CURLE_OK)
		return finish_transport(r, rc, status);
	note_success(r->easy, r->server);
	if (status >= 200 && status < 300) {
		for (size_t i = 0; i < (r->job ? 1 : r->nbatch); i++)
			servers_delivered(r->server, 0);
		answer(r, JOB_OK, 0, NULL);
		return false;
	}
	bool retry = status == 408 || status == 429 || status >= 500;
	if (retry) {
		char why[64];
		snprintf(why, sizeof why, "HTTP %ld", status);
		if (next_server(r, why, false))
			return true;
	}
	if (!retry && r->batch) { /* a batch of one too: its array was what the server refused */
		/* Refused as a whole: each record goes again alone, for its own verdict. */
		log_info("%s refused a batch of %zu records (HTTP %ld): sending them one per POST", H.srv[r->server].base,
			 r->nbatch, status);
		for (size_t i = 0; i < r->nbatch; i++)
			send_alone(r->batch[i]);
		return false;
	}
	const char *reason = r->reason[0] ? r->reason : standard_reason(status);
	answer(r, retry ? JOB_RETRY : JOB_PERMFAIL, retry ? r->retry_after_ms : 0, "HTTP %ld%s%s: %.200s",
		      status, reason[0] ? " " : "", reason, body_line(r));
	return false;
}

static void release(struct req *r)
{
	curl_multi_remove_handle(H.multi, r->easy);
	curl_slist_free_all(r->headers);
	free(r->batch);
	free(r->batch_body);
	free(r->zbody);
	curl_easy_setopt(r->easy, CURLOPT_PRIVATE, NULL);
	curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, NULL);
	if (H.nidle == H.capidle) {
		H.capidle = H.capidle ? H.capidle * 2 : 16;
		H.idle = xrealloc(H.idle, H.capidle * sizeof *H.idle);
	}
	H.idle[H.nidle++] = r->easy;
	free(r);
}

static void probe_done(CURLcode rc);
static void start_waiting(void);
static void resend(struct req *r);

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
		if (finish(r, rc)) {
			resend(r);
			continue;
		}
		release(r);
		H.active--;
	}
	start_waiting();
}

/* ---- TLS ---- */

/* ca_file, cert_file and key_file as the supervisor read them: the worker may
 * run as a user that cannot open them. The bytes live as long as the process. */
static struct curl_blob tls_blob[3];
static const char *const tls_keys[3] = { "ca_file", "cert_file", "key_file" };

static int load_tls_files(char *err, size_t errlen)
{
	for (int i = 0; i < 3; i++) {
		const char *why;
		size_t len;
		const char *data = worker_file(tls_keys[i], &len, &why);
		if (why) {
			snprintf(err, errlen, "rest.%s: %s", tls_keys[i], why);
			return -1;
		}
		tls_blob[i] = (struct curl_blob){ .data = (void *)data, .len = len, .flags = CURL_BLOB_NOCOPY };
	}
	return 0;
}

static void set_tls(CURL *e)
{
	const struct cfg_section *c = H.cfg;
	static const CURLoption opts[3] = { CURLOPT_CAINFO_BLOB, CURLOPT_SSLCERT_BLOB, CURLOPT_SSLKEY_BLOB };
	for (int i = 0; i < 3; i++)
		if (tls_blob[i].data)
			curl_easy_setopt(e, opts[i], &tls_blob[i]);
	if (tls_blob[1].data)
		curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
	if (tls_blob[2].data)
		curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
	if (cfg_bool(c, "insecure")) {
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	}
}

/* ---- the reachability probe: a connect (and TLS handshake), no request ----
 * While the server is away no job comes (health says disconnected), so
 * something must notice when it is back. */

static void probe_tick(uv_timer_t *t) { start_probe(); }

static void start_probe(void)
{
	if (H.probing)
		return;
	H.probing = true;
	uv_timer_stop(&H.probe_timer);
	curl_easy_reset(H.probe);
	H.probe_err[0] = '\0';
	H.probe_server = servers_pick();
	curl_easy_setopt(H.probe, CURLOPT_URL, H.srv[H.probe_server].base);
	curl_easy_setopt(H.probe, CURLOPT_ERRORBUFFER, H.probe_err);
	curl_easy_setopt(H.probe, CURLOPT_CONNECT_ONLY, 1L);
	curl_easy_setopt(H.probe, CURLOPT_CONNECTTIMEOUT_MS, H.connect_ms);
	curl_easy_setopt(H.probe, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(H.probe, CURLOPT_FRESH_CONNECT, 1L);
	curl_easy_setopt(H.probe, CURLOPT_FORBID_REUSE, 1L);
	set_sockets(H.probe);
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
		H.probe_delay_ms = 0;
		H.probe_fails = 0;
		servers_up(H.probe_server, us > 0 ? (uint64_t)us : 1);
		worker_health(true, us > 0 ? (uint64_t)us : 1, "%s reachable", H.srv[H.probe_server].base);
		servers_report(true);
		return;
	}
	char why[CURL_ERROR_SIZE + 320];
	transport_reason(H.probe, rc, H.probe_err, H.probe_server, why, sizeof why);
	servers_down(H.probe_server, why);
	if (some_server_up())
		return; /* a request found another meanwhile */
	worker_health(false, 0, "%s unreachable: %s", H.srv[H.probe_server].base, why);
	if (++H.probe_fails % H.nsrv != 0) {
		start_probe(); /* the next server at once; the wait comes once each has failed */
		return;
	}
	H.probe_delay_ms = H.probe_delay_ms ? H.probe_delay_ms * 2 : PROBE_FIRST_MS;
	if (H.probe_delay_ms > PROBE_MAX_MS)
		H.probe_delay_ms = PROBE_MAX_MS;
	uv_timer_start(&H.probe_timer, probe_tick, H.probe_delay_ms, 0);
}

/* ---- jobs ---- */

static CURL *take_easy(void)
{
	if (H.nidle)
		return H.idle[--H.nidle];
	return curl_easy_init();
}

static void start_request(struct job *j);
static void start_batch(void);

static void jobq_push(struct jobq *q, struct job *j)
{
	if (q->n == q->cap) {
		/* compact, then grow */
		if (q->head)
			memmove(q->v, q->v + q->head, (q->n - q->head) * sizeof *q->v);
		q->n -= q->head;
		q->head = 0;
		if (q->n == q->cap) {
			q->cap = q->cap ? q->cap * 2 : 256;
			q->v = xrealloc(q->v, q->cap * sizeof *q->v);
		}
	}
	q->v[q->n++] = j;
}

/* A record that may share a POST: batching is on, it goes to the usual
 * endpoint, has not been refused in a batch already (priv), and is a JSON
 * object or array (what else would break the array is found by the server's
 * refusal, after which each record goes alone). */
static bool batchable(const struct job *j)
{
	if (B.max <= 1 || j->endpoint || j->priv)
		return false;
	const char *p = j->payload;
	while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
		p++;
	return *p == '{' || *p == '[';
}

static void linger_over(uv_timer_t *t)
{
	B.due = true;
	start_waiting();
}

static void rest_submit(struct job *j)
{
	if (batchable(j)) {
		jobq_push(&B.pend, j);
		if (B.pend.n - B.pend.head == 1)
			uv_timer_start(&B.linger, linger_over, B.linger_ms, 0);
		start_waiting();
		return;
	}
	if (H.active < H.max_active) {
		start_request(j);
		return;
	}
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
}

static void send_alone(struct job *j)
{
	j->priv = j; /* not batchable again */
	rest_submit(j);
}

/* A batch goes when it is full, or when the first of its records has waited
 * rest.batch_linger_ms; then the records alone. */
static void start_waiting(void)
{
	while (H.active < H.max_active && B.pend.n > B.pend.head &&
	       (B.pend.n - B.pend.head >= (size_t)B.max || B.due))
		start_batch();
	if (B.pend.n == B.pend.head) {
		B.pend.n = B.pend.head = 0;
		B.due = false;
		uv_timer_stop(&B.linger);
	}
	while (H.active < H.max_active && H.head < H.nwaiting)
		start_request(H.waiting[H.head++]);
	if (H.head == H.nwaiting)
		H.head = H.nwaiting = 0;
}

/* The configured headers, then this message's own. */
static struct curl_slist *request_headers(const struct job *j, bool idempotency_key)
{
	struct curl_slist *l = NULL;
	for (struct curl_slist *h = H.base_headers; h; h = h->next)
		l = curl_slist_append(l, h->data);
	char idem[UCGW_ID_LEN + 32];
	snprintf(idem, sizeof idem, "Idempotency-Key: %s", j->id);
	if (idempotency_key) { /* one record: its own headers (a batch's records carry theirs) */
		char at[RFC3339_MS_LEN], h[RFC3339_MS_LEN + 20];
		fmt_rfc3339_ms(j->accepted_ms, at);
		snprintf(h, sizeof h, "X-Accepted-At: %s", at);
		l = curl_slist_append(l, idem);
		l = curl_slist_append(l, h);
		if (j->clock_corrected)
			l = curl_slist_append(l, "X-Clock-Corrected: true");
	}
	const char *bearer = worker_bearer(cfg_str(H.cfg, "jwt_secret"));
	if (bearer) {
		char *h = xasprintf("Authorization: %s", bearer);
		l = curl_slist_append(l, h);
		free(h);
	}
	return l;
}

static void launch(struct req *r, const char *body, size_t len);

static void start_request(struct job *j)
{
	struct req *r = xcalloc(1, sizeof *r);
	r->job = j;
	r->server = servers_pick();
	r->headers = request_headers(j, true);
	launch(r, j->payload, j->payload_len);
}

/* rest.batch_max records in one POST: a JSON array of {"id":...,
 * "accepted_at":..., ["clock_corrected":true,] "data": <payload>}, each record
 * with its id (there is no Idempotency-Key: the ids are the records'). */
static void start_batch(void)
{
	struct req *r = xcalloc(1, sizeof *r);
	size_t n = B.pend.n - B.pend.head, len = 2;
	if (n > (size_t)B.max)
		n = (size_t)B.max;
	r->batch = xcalloc(n, sizeof *r->batch);
	r->nbatch = n;
	r->server = servers_pick();
	for (size_t i = 0; i < n; i++) {
		r->batch[i] = B.pend.v[B.pend.head++];
		len += r->batch[i]->payload_len + UCGW_ID_LEN + 100;
	}
	char *p = r->batch_body = xcalloc(1, len + 1);
	*p++ = '[';
	for (size_t i = 0; i < n; i++) {
		char at[RFC3339_MS_LEN];
		fmt_rfc3339_ms(r->batch[i]->accepted_ms, at);
		p += sprintf(p, "%s{\"id\":\"%s\",\"accepted_at\":\"%s\",%s\"data\":", i ? "," : "", r->batch[i]->id, at,
			     r->batch[i]->clock_corrected ? "\"clock_corrected\":true," : "");
		memcpy(p, r->batch[i]->payload, r->batch[i]->payload_len);
		p += r->batch[i]->payload_len;
		*p++ = '}';
	}
	*p++ = ']';
	r->headers = request_headers(r->batch[0], false);
	launch(r, r->batch_body, (size_t)(p - r->batch_body));
}

/* rest.compress: the whole body (a batch as one), when it is large enough to
 * gain and comes out smaller, with the Content-Encoding that says so. */
static const char *compressed_body(struct req *r, const char *body, size_t *len)
{
	size_t zlen;
	if (H.calg == COMPRESS_NONE || *len < H.cmin || !(r->zbody = compress_buf(H.calg, body, *len, &zlen)))
		return body;
	char h[64];
	snprintf(h, sizeof h, "Content-Encoding: %s", compress_alg_name(H.calg));
	r->headers = curl_slist_append(r->headers, h);
	*len = zlen;
	return (const char *)r->zbody;
}

static void set_url(struct req *r)
{
	CURL *e = r->easy;
	const char *endpoint = r->job ? r->job->endpoint : NULL;
	if (endpoint) {
		char *url = xasprintf("%s%s", H.srv[r->server].base, endpoint);
		curl_easy_setopt(e, CURLOPT_CURLU, NULL); /* it would win over CURLOPT_URL */
		curl_easy_setopt(e, CURLOPT_URL, url);
		free(url);
	} else {
		/* Parsed once: libcurl would parse the same URL text again for every request. */
		curl_easy_setopt(e, CURLOPT_CURLU, H.srv[r->server].url);
	}
}

/* The same request, to r->server now: its handle keeps every other option. */
static void resend(struct req *r)
{
	curl_multi_remove_handle(H.multi, r->easy);
	r->body[0] = r->reason[0] = r->errbuf[0] = '\0';
	r->body_len = 0;
	r->retry_after_ms = 0;
	set_url(r);
	curl_multi_add_handle(H.multi, r->easy);
}

static void launch(struct req *r, const char *body, size_t len)
{
	H.active++;
	body = compressed_body(r, body, &len);
	r->easy = take_easy();
	CURL *e = r->easy;
	set_url(r);
	if (H.no_proxy_env)
		curl_easy_setopt(e, CURLOPT_PROXY, ""); /* what libcurl would find, without its getenv() calls per request */
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "ucgw/" UCGW_VERSION);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, H.timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, H.connect_ms);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(e, CURLOPT_PRIVATE, r);
	curl_easy_setopt(e, CURLOPT_VERBOSE, H.verbose);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, H.http_version);
	/* Where HTTP/2 may come, wait for a connection that may multiplex rather than open one more. */
	curl_easy_setopt(e, CURLOPT_PIPEWAIT, H.may_h2);
	set_sockets(e);
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

static void base_headers(const struct cfg_section *cfg)
{
	add_header("Content-Type", "application/json");
	/* A 100-continue round trip per request would halve the rate. */
	add_header("Expect", "");
	const struct cfg_value *hv = cfg_get(cfg, "headers");
	for (size_t i = 0; i < hv->nitems; i++)
		add_header(hv->items[i], hv->vals[i]);
	if (cfg_str(cfg, "auth_header"))
		H.base_headers = curl_slist_append(H.base_headers, cfg_str(cfg, "auth_header"));
	if (cfg_str(cfg, "api_key"))
		add_header(cfg_str(cfg, "api_key_header"), cfg_str(cfg, "api_key"));
}

/* Accept only http(s) URLs libcurl can parse, and remember host:port for errors. */
static int parse_base(const char *base, char *hostport, size_t hplen, char *err, size_t errlen)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *port = NULL;
	int rc = curl_url_set(u, CURLUPART_URL, base, 0) == CURLUE_OK &&
			 curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
			 curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
			 curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
			 (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0)
		 ? 0
		 : -1;
	if (rc == 0)
		snprintf(hostport, hplen, "%s:%s", host, port);
	else
		snprintf(err, errlen, "rest.base_url '%s': expected an http:// or https:// URL", base);
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return rc;
}

/* rest.http2 and rest.streams; an error when they cannot work here. */
static int http_version(const struct cfg_section *cfg, char *err, size_t errlen)
{
	H.streams = (long)cfg_int(cfg, "streams");
	const char *h2 = cfg_str(cfg, "http2");
	H.http_version = strcmp(h2, "off") == 0		       ? CURL_HTTP_VERSION_1_1
			 : strcmp(h2, "prior-knowledge") == 0 ? CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE
							      : CURL_HTTP_VERSION_2TLS;
	H.h2 = H.http_version == CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE;
	const curl_version_info_data *ci = curl_version_info(CURLVERSION_NOW);
	if (H.h2 && ci->version_num < 0x080000) {
		/* curl issue #10634, fixed in 8.0.0: every request on a reused
		 * prior-knowledge connection fails "Error in the HTTP2 framing layer". */
		snprintf(err, errlen,
			 "rest.http2 prior-knowledge needs libcurl 8.0.0 or later (this is %s, whose reused HTTP/2 "
			 "connections without TLS fail: curl issue #10634); use an https:// base_url (HTTP/2 by ALPN) "
			 "or http2: auto",
			 ci->version);
		return -1;
	}
	return 0;
}

static int multi_init(uv_loop_t *loop, const struct cfg_section *cfg, char *err, size_t errlen)
{
	long conns = (long)cfg_int(cfg, "connections");
	rest_state.ep = epoll_create1(EPOLL_CLOEXEC);
	if (rest_state.ep < 0) {
		snprintf(err, errlen, "epoll_create1: %s", strerror(errno));
		return -1; /* out of descriptors or memory: worth a restart, unlike a bad configuration */
	}
	uv_poll_init(loop, &rest_state.poll, rest_state.ep);
	uv_poll_start(&rest_state.poll, UV_READABLE, on_sockets);
	H.multi = curl_multi_init();
	/* One request per connection in libcurl's hands; the rest wait in
	 * H.waiting. A transfer libcurl must park until a connection frees is
	 * looked at again and again: with twice as many, this worker used 60% more
	 * CPU per request and delivered fewer. The next request starts as soon as
	 * the previous one's answer is in, in the same callback. */
	H.conns = conns;
	H.max_active = H.h2 ? conns * H.streams : conns;
	H.may_h2 = H.h2;
	for (size_t i = 0; i < H.nsrv; i++)
		if (H.http_version == CURL_HTTP_VERSION_2TLS && strncasecmp(H.srv[i].base, "https:", 6) == 0)
			H.may_h2 = 1;
	curl_multi_setopt(H.multi, CURLMOPT_PIPELINING, H.http_version == CURL_HTTP_VERSION_1_1 ? CURLPIPE_NOTHING
											    : CURLPIPE_MULTIPLEX);
	curl_multi_setopt(H.multi, CURLMOPT_MAX_CONCURRENT_STREAMS, H.streams);
	curl_multi_setopt(H.multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(H.multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(H.multi, CURLMOPT_MAX_HOST_CONNECTIONS, conns);
	curl_multi_setopt(H.multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, conns);
	curl_multi_setopt(H.multi, CURLMOPT_MAXCONNECTS, conns);
	return 0;
}

/* One server of rest.base_url: checked, and its endpoint URL parsed once. */
static int add_server(size_t i, const char *endpoint, char *err, size_t errlen)
{
	struct rsrv *sv = &H.srv[i];
	const char *base = servers_url(i);
	if (parse_base(base, sv->hostport, sizeof sv->hostport, err, errlen) < 0)
		return -1;
	sv->base = xstrdup(base);
	size_t n = strlen(sv->base);
	if (n && sv->base[n - 1] == '/')
		sv->base[n - 1] = '\0'; /* the endpoint brings its own slash */
	sv->url = curl_url();
	char *url = xasprintf("%s%s", sv->base, endpoint);
	CURLUcode uc = curl_url_set(sv->url, CURLUPART_URL, url, 0);
	if (uc != CURLUE_OK)
		snprintf(err, errlen, "rest.base_url + rest.endpoint '%s': %s", url, curl_url_strerror(uc));
	free(url);
	return uc == CURLUE_OK ? 0 : -1;
}

/* Once a second: back to the first server when failover's time is up, and
 * each server's state to the supervisor. */
static void servers_tick(uv_timer_t *t)
{
	if (servers_failback_due())
		servers_failback();
	servers_report(false);
}

static int rest_init(uv_loop_t *loop, const struct cfg_section *cfg, char *err, size_t errlen)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(err, errlen, "curl_global_init failed");
		return UCGW_EXIT_CONFIG;
	}
	if (servers_init(cfg, "base_url", err, errlen) < 0)
		return UCGW_EXIT_CONFIG;
	H.nsrv = servers_count();
	for (size_t i = 0; i < H.nsrv; i++)
		if (add_server(i, cfg_str(cfg, "endpoint"), err, errlen) < 0)
			return UCGW_EXIT_CONFIG;
	if (load_tls_files(err, errlen) < 0)
		return UCGW_EXIT_CONFIG;
	H.cfg = cfg;
	H.timeout_ms = (long)(cfg_num(cfg, "timeout") * 1000);
	if (H.timeout_ms < 1)
		H.timeout_ms = 1; /* 0 would mean "no timeout" to libcurl */
	H.connect_ms = H.timeout_ms < 10000 ? H.timeout_ms : 10000;
	/* libcurl reads these for every request unless told a proxy; with none
	 * of them set (a daemon's usual environment) it would find none. */
	static const char *const proxy_vars[] = { "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
						  "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY" };
	H.no_proxy_env = true;
	for (size_t i = 0; i < sizeof proxy_vars / sizeof proxy_vars[0]; i++)
		if (getenv(proxy_vars[i]))
			H.no_proxy_env = false;
	base_headers(cfg);
	H.verbose = getenv("UCGW_CURL_VERBOSE") ? 1L : 0L;
	if (cfg_bool(cfg, "insecure"))
		log_warnx("rest.insecure is true: the server's certificate is NOT verified");
	if (http_version(cfg, err, errlen) < 0)
		return UCGW_EXIT_CONFIG;
	if (multi_init(loop, cfg, err, errlen) < 0)
		return EXIT_FAILURE;
	uv_timer_init(loop, &H.timer);
	uv_timer_init(loop, &H.probe_timer);
	uv_timer_init(loop, &B.linger);
	B.max = (long)cfg_int(cfg, "batch_max");
	B.linger_ms = (uint64_t)cfg_int(cfg, "batch_linger_ms");
	H.calg = (enum compress_alg)compress_alg_parse(cfg_str(cfg, "compress"));
	H.cmin = (size_t)cfg_int(cfg, "compress_min_bytes");
	H.probe = curl_easy_init();
	uv_timer_init(loop, &H.servers_tick);
	uv_timer_start(&H.servers_tick, servers_tick, 1000, 1000);
	worker_health(false, 0, "connecting to %s%s", H.srv[0].base, H.nsrv > 1 ? " (first of the list)" : "");
	start_probe();
	return 0;
}

static void rest_shutdown(void)
{
	uv_timer_stop(&B.linger);
	uv_timer_stop(&H.probe_timer);
	uv_timer_stop(&H.timer);
	uv_timer_stop(&H.servers_tick);
}

static const struct worker_ops rest_ops = {
	.name = "rest",
	.init = rest_init,
	.submit = rest_submit,
	.shutdown = rest_shutdown,
};

WORKER_MAIN(rest_ops)
