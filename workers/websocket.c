/* ucgw-websocket: metadata over one persistent WebSocket (libwebsockets on the
 * framework's libuv loop). Each job goes out as {"id": ID, "accepted_at":
 * TIME, ["clock_corrected": true,] "data": PAYLOAD}.
 *
 * With `ack: message` (the default) a job is ok when the server answers
 * {"ack": ID}; a {"nack": ID, "status": N, "error": "..."} is permfail for a
 * 4xx other than 408/429 and retry otherwise; no answer within ack_timeout_ms,
 * or a connection lost with the job unacked, is retry.
 *
 * With `ack: none` a job is ok once lws took the frame. That is the weak mode:
 * a frame still in the kernel's buffers when the connection drops, or one the
 * server drops, is lost without anyone knowing.
 *
 * The connection is re-made forever (the camera has no operator): every
 * reconnect_delay for reconnect_attempts tries, then slower and slower. While
 * it is down, health says so and new jobs are answered retry at once.
 *
 * websocket.server_url may name several servers (workers/servers.c picks the
 * one for each connection by websocket.servers_policy). When the connection
 * is lost and another server of the list is still to be tried, what it held
 * (written and unacknowledged, or waiting to be written) and what comes
 * meanwhile waits, ack_timeout_ms at most, for the connection to that server
 * and goes out there; only then is it answered retry. Failover goes back to
 * the first server after failback_s: nothing more is written on the
 * connection to the later one, which is closed once every frame it carried
 * is acknowledged, and the next connection goes to the first. */
#include <libwebsockets.h>
#include <stdlib.h>
#include <string.h>

#include "common/compress.h"
#include "workers/servers.h"
#include "workers/worker.h"

#define RX_MAX 65536                 /* a server message larger than this is not an ack: dropped */
#define RECONNECT_MIN_MS 100         /* reconnect_delay 0 must not spin */
#define RECONNECT_CAP_MS 30000       /* slowest retry pace, unless reconnect_delay is larger */
#define PING_MAGIC "ucgw-ping"

enum state { WS_WAITING, WS_CONNECTING, WS_UP };

struct wjob {                        /* a job's place in the send queue or the unacked list */
	struct job *job;
	uint64_t sent_us;
	struct wjob *next;
};

struct wlist {
	struct wjob *head, *tail;
};

/* One server of websocket.server_url. */
struct wsrv {
	char host[256], path[512], url[900];
	int port;
	bool tls;
};

static struct {
	struct lws_context *ctx;
	struct lws *wsi;
	enum state state;
	bool stopping, ack;
	struct wsrv srv[SERVERS_MAX];
	size_t nsrv, server;             /* the servers; the one of this connection */
	char host[256], path[512], url[900]; /* the server of this connection */
	int port;
	bool tls;
	bool moving;                     /* failback: nothing more written here; closed once all is acked */
	uv_timer_t servers_tick, held;   /* failback and the per-server report; the wait for the next server */
	uint64_t ack_timeout_ms, delay_ms, ping_ms;
	unsigned failures, fail_limit;
	struct wlist queue;              /* waiting to be written, in order */
	struct wlist unacked;            /* written, waiting for their ack, oldest first */
	char *rx;                        /* a server message being reassembled */
	size_t rxlen, rxcap;
	bool rx_overflow;
	unsigned char *tx;               /* LWS_PRE + the frames of one send */
	size_t txcap;
	bool ping_due;
	uint64_t ping_sent_us;           /* 0: no ping outstanding */
	uint64_t rtt_sum, rtt_n, rtt_reported_ms; /* ack round trips, averaged per second */
	uv_timer_t reconnect, sweep, ping;
	const struct cfg_section *cfg;
	char why[256];
	char tls_why[160];               /* the TLS verdict lws logged for this attempt */
	char close_why[160];             /* the server's close frame: code and reason */
	uint64_t connect_ms;             /* when this attempt started */
	uint64_t valid_ms;               /* when we last told lws the connection lives */
	bool offer_pmd;                  /* websocket.compress: gzip */
	size_t cmin;                     /* websocket.compress_min_bytes */
	struct pmd *pmd;                 /* this connection's deflater, when the server agreed */
	char *env;                       /* an envelope being compressed */
	size_t envcap;
} W;

/* ---- job lists ---- */

static void push(struct wlist *l, struct wjob *w)
{
	w->next = NULL;
	if (l->tail)
		l->tail->next = w;
	else
		l->head = w;
	l->tail = w;
}

static struct wjob *pop(struct wlist *l)
{
	struct wjob *w = l->head;
	if (w) {
		l->head = w->next;
		if (!l->head)
			l->tail = NULL;
	}
	return w;
}

static void fail_all(struct wlist *l, const char *why)
{
	struct wjob *w;
	while ((w = pop(l))) {
		worker_result(w->job, JOB_RETRY, 0, "%s", why);
		free(w);
	}
}

/* ---- several servers ---- */

/* Another server of the list is next, or this one is being left on purpose:
 * what the connection held is worth keeping for the next one. */
static bool next_server_coming(void)
{
	return W.nsrv > 1 && !W.stopping && (W.moving || W.failures % W.nsrv != 0 || W.failures == 0);
}

static void held_too_long(uv_timer_t *t)
{
	char msg[400];
	snprintf(msg, sizeof msg, "%s unreachable: %s", W.url, W.why[0] ? W.why : "connecting");
	fail_all(&W.queue, msg);
}

/* The unacked (oldest first) go back to the head of the queue, for the next
 * connection; the server may have some of them: the id lets it drop a copy. */
static void keep_for_next(void)
{
	for (struct wjob *w = W.unacked.head; w; w = w->next) {
		servers_failed(W.server);
		/* a new wait (for the next server, then its ack): the supervisor's
		 * gateway.job_timeout_ms starts again, so it does not send the message
		 * elsewhere while this worker still has it */
		worker_progress(w->job, 0);
	}
	if (W.unacked.head) {
		W.unacked.tail->next = W.queue.head;
		if (!W.queue.head)
			W.queue.tail = W.unacked.tail;
		W.queue.head = W.unacked.head;
		W.unacked.head = W.unacked.tail = NULL;
	}
	if (W.queue.head && !uv_is_active((uv_handle_t *)&W.held))
		uv_timer_start(&W.held, held_too_long, W.ack_timeout_ms, 0);
}

/* ---- connection state ---- */

static void schedule_reconnect(void);

/* The connection is gone (or never came): everything in hand is retried, since
 * the server may or may not have it; the id lets it drop a duplicate. */
static void went_down(const char *why)
{
	bool was_up = W.state == WS_UP, moving = W.moving;
	if (W.state == WS_WAITING)
		return; /* already handled this loss */
	W.moving = false;
	W.state = WS_WAITING;
	W.wsi = NULL;
	pmd_free(W.pmd); /* the next connection negotiates afresh, with an empty window */
	W.pmd = NULL;
	W.rxlen = 0;
	W.rx_overflow = false;
	W.ping_due = false;
	W.ping_sent_us = 0;
	snprintf(W.why, sizeof W.why, "%s", why);
	if (!moving && !W.stopping)
		servers_down(W.server, W.why);
	if (!was_up && !moving)
		W.failures++;
	char msg[320];
	snprintf(msg, sizeof msg, "connection lost before the server's ack: %s", W.why);
	if (next_server_coming()) {
		keep_for_next();
	} else {
		for (struct wjob *w = W.unacked.head; w; w = w->next)
			servers_failed(W.server);
		fail_all(&W.queue, msg);
		fail_all(&W.unacked, msg);
	}
	if (moving)
		log_info("leaving %s: %s", W.url, W.why);
	else if (was_up)
		log_warnx("disconnected from %s: %s", W.url, W.why);
	if (W.failures > 0 && W.failures == W.fail_limit)
		log_warnx("%s: %u failed connects in a row (last: %s); retrying ever more slowly", W.url, W.failures, W.why);
	if (!W.stopping)
		schedule_reconnect();
}

/* Our own decision to drop the connection (no pong, a failed write): lws
 * closes it at its next turn; its later callbacks no longer match W.wsi. */
static void drop_connection(const char *why)
{
	struct lws *wsi = W.wsi;
	went_down(why);
	if (wsi)
		lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

static void on_established(struct lws *wsi)
{
	W.state = WS_UP;
	W.wsi = wsi;
	W.failures = 0;
	W.why[0] = '\0';
	W.rxlen = 0;
	W.valid_ms = 0;
	log_info("connected to %s", W.url);
	worker_health(true, 0, "connected to %s", W.url);
	servers_up(W.server, 0);
	servers_report(true);
	uv_timer_stop(&W.held);
	if (W.queue.head) /* kept from the last connection, or come while it was being made */
		lws_callback_on_writable(wsi);
}

/* ---- the server's messages ---- */

/* A JSON string at p (just past its opening quote) into out, escapes taken
 * as the character they escape (ids and error texts need no more).
 * Returns the position after the closing quote, NULL if unterminated. */
static const char *json_string(const char *p, char *out, size_t len)
{
	size_t n = 0;
	for (; *p && *p != '"'; p++) {
		if (*p == '\\' && p[1])
			p++;
		if (out && n + 1 < len)
			out[n++] = *p;
	}
	if (out && len)
		out[n] = '\0';
	return *p == '"' ? p + 1 : NULL;
}

/* Past one value of any kind (nested objects and arrays included). */
static const char *json_skip(const char *p)
{
	int depth = 0;
	do {
		while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
			p++;
		if (*p == '"') {
			if (!(p = json_string(p + 1, NULL, 0)))
				return NULL;
		} else if (*p == '{' || *p == '[') {
			depth++;
			p++;
		} else if (*p == '}' || *p == ']') {
			depth--;
			p++;
		} else if (*p == ',' || *p == ':') {
			p++;
		} else if (*p) {
			p += strcspn(p, ",}] \t\r\n");
		} else {
			return NULL;
		}
	} while (depth > 0);
	return p;
}

struct answer {
	char ack[64], nack[64], error[200];
	long status;
};

static const char *skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
		p++;
	return p;
}

/* One top-level member "key": value into the answer, if it is one we know. */
static const char *take_member(const char *p, struct answer *a)
{
	char key[16];
	if (*p != '"' || !(p = json_string(p + 1, key, sizeof key)))
		return NULL;
	p = skip_ws(p);
	if (*p++ != ':')
		return NULL;
	p = skip_ws(p);
	char *dst = strcmp(key, "ack") == 0 ? a->ack : strcmp(key, "nack") == 0 ? a->nack
					       : strcmp(key, "error") == 0 ? a->error : NULL;
	size_t cap = dst == a->error ? sizeof a->error : sizeof a->ack;
	if (dst && *p == '"')
		return json_string(p + 1, dst, cap);
	if (strcmp(key, "status") == 0)
		a->status = strtol(p, NULL, 10);
	return json_skip(p);
}

/* Only top-level members count: an "ack" inside the echoed data is not one. */
static bool parse_answer(const char *msg, struct answer *a)
{
	memset(a, 0, sizeof *a);
	const char *p = skip_ws(msg);
	if (*p++ != '{')
		return false;
	for (p = skip_ws(p); p && *p && *p != '}'; p = p ? skip_ws(p) : NULL) {
		if (!(p = take_member(p, a)))
			return false;
		p = skip_ws(p);
		if (*p == ',')
			p++;
	}
	return p && *p == '}' && (a->ack[0] || a->nack[0]);
}

/* Acks come back in order, so the one wanted is nearly always the oldest. */
static struct wjob *take_unacked(const char *id)
{
	struct wjob *prev = NULL;
	for (struct wjob *w = W.unacked.head; w; prev = w, w = w->next) {
		if (strcmp(w->job->id, id) != 0)
			continue;
		if (prev)
			prev->next = w->next;
		else
			W.unacked.head = w->next;
		if (W.unacked.tail == w)
			W.unacked.tail = prev;
		return w;
	}
	return NULL;
}

/* An ack's round trip (server processing included) is what a message costs on
 * this path: the network monitor gets the average, at most once a second. */
static void note_rtt(uint64_t us)
{
	W.rtt_sum += us;
	W.rtt_n++;
	uint64_t now = now_ms();
	if (now - W.rtt_reported_ms >= 1000) {
		uint64_t avg = W.rtt_sum / W.rtt_n;
		worker_health(true, avg ? avg : 1, "connected to %s", W.url);
		W.rtt_sum = W.rtt_n = 0;
		W.rtt_reported_ms = now;
	}
}

static void on_server_message(const char *msg)
{
	struct answer a;
	if (!parse_answer(msg, &a))
		return; /* not for us */
	struct wjob *w = take_unacked(a.ack[0] ? a.ack : a.nack);
	if (!w)
		return; /* already timed out and retried */
	if (a.ack[0]) {
		uint64_t rtt = now_us() - w->sent_us;
		note_rtt(rtt);
		servers_delivered(W.server, rtt);
		worker_result(w->job, JOB_OK, 0, NULL);
	} else {
		servers_failed(W.server);
		long c = a.status;
		bool retry = c == 0 || c == 408 || c == 429 || c >= 500 || c < 400;
		worker_result(w->job, retry ? JOB_RETRY : JOB_PERMFAIL, c == 429 ? 1000 : 0, "server refused (%ld): %s", c,
			      a.error[0] ? a.error : "no reason given");
	}
	free(w);
}

static void receive(struct lws *wsi, const void *in, size_t len)
{
	if (W.rxlen + len > RX_MAX)
		W.rx_overflow = true;
	if (!W.rx_overflow) {
		if (W.rxlen + len + 1 > W.rxcap) {
			W.rxcap = W.rxlen + len + 1 < 1024 ? 1024 : (W.rxlen + len + 1) * 2;
			W.rx = xrealloc(W.rx, W.rxcap);
		}
		memcpy(W.rx + W.rxlen, in, len);
		W.rxlen += len;
		W.rx[W.rxlen] = '\0';
	}
	if (!lws_is_final_fragment(wsi))
		return;
	if (!W.rx_overflow)
		on_server_message(W.rx);
	else
		log_warnx("a message of more than %d bytes from the server ignored", RX_MAX);
	W.rxlen = 0;
	W.rx_overflow = false;
	/* Traffic both ways: the connection lives. lws counts validity in whole
	 * seconds (ping_interval_s * 3 + 5 at least), and rescheduling its two
	 * timers for every ack is waste: once a second is as good. */
	uint64_t now = now_ms();
	if (now - W.valid_ms >= 1000) {
		W.valid_ms = now;
		lws_validity_confirmed(wsi);
	}
}

/* ---- ping / pong: liveness and the round trip the monitor uses ---- */

static void ping_tick(uv_timer_t *t)
{
	if (W.state != WS_UP)
		return;
	if (W.ping_sent_us || W.ping_due) { /* the last one unanswered, or not even written */
		char why[96];
		snprintf(why, sizeof why, "no pong within %llu s", (unsigned long long)(W.ping_ms / 1000));
		drop_connection(why);
		return;
	}
	W.ping_due = true;
	lws_callback_on_writable(W.wsi);
}

/* Under permessage-deflate the ping goes empty: libwebsockets 4.1 passes a
 * pong's payload to the extension and, finding it not compressed, hands it
 * to the pong callback again and again (150,000 times a pong, the loop
 * starved, the worker killed for not answering the supervisor's pings). An
 * empty pong is then ours if one is outstanding: lws's own keepalive pings
 * only after secs_since_valid_ping of silence, which ours prevent. */
static int write_ping(struct lws *wsi)
{
	unsigned char buf[LWS_PRE + sizeof PING_MAGIC];
	size_t n = W.pmd ? 0 : sizeof PING_MAGIC - 1;
	memcpy(buf + LWS_PRE, PING_MAGIC, sizeof PING_MAGIC - 1);
	W.ping_due = false;
	W.ping_sent_us = now_us();
	return lws_write(wsi, buf + LWS_PRE, n, LWS_WRITE_PING) < 0 ? -1 : 0;
}

static void on_pong(struct lws *wsi, const void *in, size_t len)
{
	lws_validity_confirmed(wsi);
	bool ours = W.pmd ? len == 0 : len == sizeof PING_MAGIC - 1 && memcmp(in, PING_MAGIC, len) == 0;
	if (!W.ping_sent_us || !ours)
		return; /* lws's own keepalive, not our measurement */
	uint64_t rtt = now_us() - W.ping_sent_us;
	W.ping_sent_us = 0;
	worker_health(true, rtt ? rtt : 1, "connected to %s", W.url);
}

/* ---- sending ---- */

/* lws_write(LWS_WRITE_TEXT) costs two system calls per message: a read of
 * /dev/urandom for the frame's mask key, and a send. So the frames are made
 * here, byte for byte as lws makes them (RFC 6455 5.2: FIN and the text
 * opcode, the shortest length form, the mask bit, a fresh random key, the
 * payload masked with it), many of them in one buffer handed to lws as raw
 * bytes: one send for up to BATCH_BYTES of messages, one read of random
 * bytes for MASK_KEYS frames. Still one WebSocket message per envelope; lws
 * keeps what the kernel does not take and sends it first at the next
 * WRITEABLE, as it does for its own frames. The one extension offered is
 * permessage-deflate (websocket.compress: gzip): lws negotiates it and
 * inflates what the server sends, and the frames made here carry RSV1 and
 * the message deflated by this connection's own stream (W.pmd). */
#define BATCH_BYTES (32 * 1024) /* lws sends at most rx_buffer_size (64 KiB) per call */
#define MASK_KEYS 256

static struct {
	unsigned char key[4 * MASK_KEYS];
	unsigned used;
} K = { .used = MASK_KEYS };

static int mask_key(unsigned char out[4])
{
	if (K.used == MASK_KEYS) {
		if (lws_get_random(W.ctx, K.key, sizeof K.key) != sizeof K.key)
			return -1;
		K.used = 0;
	}
	memcpy(out, K.key + 4 * K.used++, 4);
	return 0;
}

/* Room for n bytes of frames after LWS_PRE; the buffer may move. */
static unsigned char *frame_buf(size_t n)
{
	if (LWS_PRE + n > W.txcap) {
		W.txcap = (LWS_PRE + n) * 2;
		W.tx = xrealloc(W.tx, W.txcap);
	}
	return W.tx + LWS_PRE;
}

static void mask(unsigned char *p, size_t n, const unsigned char key[4])
{
	uint64_t m;
	unsigned char k8[8];
	memcpy(k8, key, 4);
	memcpy(k8 + 4, key, 4);
	memcpy(&m, k8, 8);
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t v;
		memcpy(&v, p + i, 8);
		v ^= m;
		memcpy(p + i, &v, 8);
	}
	for (; i < n; i++)
		p[i] ^= key[i & 3];
}

/* A frame's header for n bytes of payload at offset at of the frame buffer;
 * returns where the payload goes (its mask key just before it), NULL if no
 * mask key could be had. */
static unsigned char *frame_head(size_t at, size_t n, unsigned char first, size_t *end)
{
	size_t hdr = 2 + (n < 126 ? 0 : n < 65536 ? 2 : 8) + 4;
	unsigned char *f = frame_buf(at + hdr + n) + at;
	*end = at + hdr + n;
	f[0] = first;
	if (n < 126) {
		f[1] = (unsigned char)(0x80 | n);
	} else if (n < 65536) {
		f[1] = 0x80 | 126;
		f[2] = (unsigned char)(n >> 8);
		f[3] = (unsigned char)n;
	} else {
		f[1] = 0x80 | 127;
		for (int i = 0; i < 8; i++)
			f[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
	}
	return mask_key(f + hdr - 4) < 0 ? NULL : f + hdr;
}

/* What goes between the id and the payload in the envelope
 * {"id":"...","accepted_at":"...",["clock_corrected":true,]"data":...}; its length. */
static int envelope_middle(const struct job *j, char *b, size_t len)
{
	char when[RFC3339_MS_LEN];
	fmt_rfc3339_ms(j->accepted_ms, when);
	return snprintf(b, len, "\",\"accepted_at\":\"%s\",%s\"data\":", when,
			j->clock_corrected ? "\"clock_corrected\":true," : "");
}

/* The envelope deflated (permessage-deflate), in a frame with RSV1 set;
 * 0 when zlib or the mask key failed (the connection is dropped: its
 * deflate stream is out of step). Larger or not, once deflated it goes
 * deflated, since it is in the window the server's inflater keeps too. */
static size_t add_deflated(size_t at, const struct job *j, const char *mid, size_t n)
{
	if (n + 1 > W.envcap) {
		W.envcap = (n + 1) * 2;
		W.env = xrealloc(W.env, W.envcap);
	}
	int w = snprintf(W.env, n + 1, "{\"id\":\"%s%s", j->id, mid);
	memcpy(W.env + w, j->payload, j->payload_len);
	W.env[n - 1] = '}';
	size_t zlen, end;
	unsigned char *z = pmd_run(W.pmd, W.env, n, 0, &zlen), *p;
	if (!z)
		return 0;
	if ((p = frame_head(at, zlen, 0xc1 /* FIN, RSV1 (compressed), text */, &end))) {
		memcpy(p, z, zlen);
		mask(p, zlen, p - 4);
	}
	free(z);
	return p ? end : 0;
}

/* The envelope as one masked text frame at offset at of the frame buffer;
 * the payload is JSON the supervisor checked. Returns the offset past it, 0
 * if no mask key could be had. */
static size_t add_frame(size_t at, const struct job *j)
{
	static const char a[] = "{\"id\":\"";
	char b[RFC3339_MS_LEN + 64];
	size_t blen = (size_t)envelope_middle(j, b, sizeof b);
	size_t idlen = strlen(j->id), n = sizeof a - 1 + idlen + blen + j->payload_len + 1, end;
	if (W.pmd && n >= W.cmin)
		return add_deflated(at, j, b, n);
	unsigned char *p = frame_head(at, n, 0x81 /* FIN, text */, &end);
	if (!p)
		return 0;
	unsigned char *key = p - 4;
	memcpy(p, a, sizeof a - 1);
	memcpy(p + sizeof a - 1, j->id, idlen);
	memcpy(p + sizeof a - 1 + idlen, b, blen);
	memcpy(p + sizeof a - 1 + idlen + blen, j->payload, j->payload_len);
	p[n - 1] = '}';
	mask(p, n, key);
	return end;
}

/* As many frames as the socket takes now; the rest at the next WRITEABLE. */
static int write_some(struct lws *wsi)
{
	if (W.ping_due && write_ping(wsi) < 0)
		return -1;
	while (W.queue.head && !W.moving && !lws_send_pipe_choked(wsi)) {
		size_t len = 0;
		unsigned count = 0;
		for (struct wjob *w = W.queue.head; w && (count == 0 || len < BATCH_BYTES); w = w->next, count++)
			if (!(len = add_frame(len, w->job)))
				return -1;
		if (lws_write(wsi, W.tx + LWS_PRE, len, LWS_WRITE_RAW) < (int)len)
			return -1;
		uint64_t now = now_us();
		while (count--) {
			struct wjob *w = pop(&W.queue);
			if (!W.ack) {
				servers_delivered(W.server, 0);
				worker_result(w->job, JOB_OK, 0, NULL);
				free(w);
				continue;
			}
			w->sent_us = now;
			push(&W.unacked, w);
		}
	}
	if (W.queue.head && !W.moving)
		lws_callback_on_writable(wsi);
	return 0;
}

/* ---- the upgrade request's headers ---- */

static int add_header(struct lws *wsi, const char *name, const char *value, unsigned char **p, unsigned char *end)
{
	char n[160];
	snprintf(n, sizeof n, "%s:", name);
	return lws_add_http_header_by_name(wsi, (const unsigned char *)n, (const unsigned char *)value,
					   (int)strlen(value), p, end);
}

static int handshake_headers(struct lws *wsi, unsigned char **p, unsigned char *end)
{
	const struct cfg_value *hv = cfg_get(W.cfg, "headers");
	for (size_t i = 0; i < hv->nitems; i++)
		if (add_header(wsi, hv->items[i], hv->vals[i], p, end))
			return -1;
	const char *bearer = worker_bearer(cfg_str(W.cfg, "jwt_secret"));
	if (bearer && add_header(wsi, "Authorization", bearer, p, end))
		return -1;
	if (cfg_str(W.cfg, "api_key") && add_header(wsi, cfg_str(W.cfg, "api_key_header"), cfg_str(W.cfg, "api_key"), p, end))
		return -1;
	return add_header(wsi, "User-Agent", "ucgw/" UCGW_VERSION, p, end);
}

/* ---- permessage-deflate (RFC 7692) ---- */

/* The server's Sec-WebSocket-Extensions answer: when it accepted
 * permessage-deflate, this connection's deflater, with the window the server
 * allows (client_max_window_bits) and a fresh start per message if it asked
 * for client_no_context_takeover. Offered only with websocket.compress: gzip
 * (lws, given the extension, offers it and refuses an answer naming another). */
static void take_extensions(struct lws *wsi)
{
	char ext[256];
	if (!W.offer_pmd || lws_hdr_copy(wsi, ext, sizeof ext, WSI_TOKEN_EXTENSIONS) <= 0 ||
	    !strstr(ext, "permessage-deflate")) {
		if (W.offer_pmd)
			log_info("%s did not accept permessage-deflate: messages go uncompressed", W.url);
		return;
	}
	int bits = 15;
	const char *p = strstr(ext, "client_max_window_bits");
	if (p && p[strlen("client_max_window_bits")] == '=')
		bits = atoi(p + strlen("client_max_window_bits") + 1);
	if (bits < 9 || bits > 15) {
		/* zlib makes no raw stream with a window of 8 bits: it would use 9, more than allowed */
		log_warnx("%s allows a deflate window of %d bits (client_max_window_bits), which zlib cannot keep to: "
			  "messages go uncompressed", W.url, bits);
		return;
	}
	bool takeover = !strstr(ext, "client_no_context_takeover");
	W.pmd = pmd_new(true, bits, takeover);
	log_info("permessage-deflate with %s (window %d bits%s)", W.url, bits,
		 takeover ? ", context kept across messages" : ", each message on its own");
}

/* ---- the lws callback ---- */

/* Callbacks of a connection we already gave up on are not ours to act on. */
static bool current(struct lws *wsi) { return W.state != WS_WAITING && (wsi == W.wsi || !W.wsi); }

static void connection_error(struct lws *wsi, const void *in, size_t len)
{
	char why[200];
	if (W.tls_why[0])
		snprintf(why, sizeof why, "TLS handshake failed: %s", W.tls_why);
	else
		snprintf(why, sizeof why, "connect to %s:%d failed: %.*s", W.host, W.port, in ? (int)len : 15,
			 in ? (const char *)in : "no reason given");
	went_down(why);
}

/* A close frame: 2 bytes of status code, then the server's words if any. */
static void note_close_frame(const void *in, size_t len)
{
	const unsigned char *p = in;
	if (len < 2)
		return;
	unsigned code = (unsigned)p[0] << 8 | p[1];
	size_t n = len - 2 < 120 ? len - 2 : 120;
	snprintf(W.close_why, sizeof W.close_why, "the server closed the connection (%u%s%.*s)", code, n ? ": " : "",
		 (int)n, (const char *)p + 2);
}

static void closed(void)
{
	char why[200];
	if (W.close_why[0])
		snprintf(why, sizeof why, "%s", W.close_why);
	else if (W.state == WS_CONNECTING)
		snprintf(why, sizeof why, "connection closed before the WebSocket upgrade completed (after %llu ms)",
			 (unsigned long long)(now_ms() - W.connect_ms));
	else
		snprintf(why, sizeof why, "the server closed the connection");
	went_down(why);
}

/* lws tells why a certificate was refused only in its log ("SSL error: unable
 * to get local issuer certificate (preverify_ok=0;...)"); the connection
 * error itself carries OpenSSL's error queue, empty by then. So keep that
 * line for the error text, and pass the rest on at debug level: lws repeats
 * itself at every reconnect. */
static void lws_log(int level, const char *line)
{
	const char *p = strstr(line, "SSL error: ");
	if (p) {
		p += strlen("SSL error: ");
		size_t n = strcspn(p, "(\r\n");
		while (n && p[n - 1] == ' ')
			n--;
		snprintf(W.tls_why, sizeof W.tls_why, "%.*s", (int)n, p);
	}
	log_debug("lws: %.*s", (int)strcspn(line, "\r\n"), line);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	switch (reason) {
	case LWS_CALLBACK_CLIENT_FILTER_PRE_ESTABLISH:
		if (current(wsi))
			take_extensions(wsi);
		break;
	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		if (current(wsi))
			on_established(wsi);
		break;
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
		if (current(wsi))
			connection_error(wsi, in, len);
		break;
	case LWS_CALLBACK_CLIENT_RECEIVE:
		if (current(wsi))
			receive(wsi, in, len);
		break;
	case LWS_CALLBACK_CLIENT_RECEIVE_PONG:
		if (current(wsi))
			on_pong(wsi, in, len);
		break;
	case LWS_CALLBACK_CLIENT_WRITEABLE:
		if (!current(wsi))
			return -1; /* a connection we dropped: close it now */
		if (write_some(wsi) < 0) {
			went_down("write failed");
			return -1;
		}
		break;
	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
		if (current(wsi))
			note_close_frame(in, len);
		break;
	case LWS_CALLBACK_CLIENT_CLOSED:
		if (current(wsi))
			closed();
		break;
	case LWS_CALLBACK_WSI_DESTROY:
		/* The last word on any connection: nothing else may have told us. */
		if (current(wsi) && wsi == W.wsi)
			closed();
		break;
	case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
		unsigned char **p = (unsigned char **)in;
		return handshake_headers(wsi, p, *p + len) ? -1 : 0;
	}
	default:
		break;
	}
	return 0;
}

/* Offered only with websocket.compress: gzip (make_context). */
static const struct lws_extension extensions[] = {
	{ "permessage-deflate", lws_extension_callback_pm_deflate, "permessage-deflate; client_max_window_bits" },
	{ NULL, NULL, NULL },
};

static const struct lws_protocols protocols[] = {
	{ "ucgw", callback, 0, 65536, 0, NULL, 0 },
	{ NULL, NULL, 0, 0, 0, NULL, 0 },
};

/* ---- connecting ---- */

/* Debian's libwebsockets looks the name up inside lws_client_connect_via_info,
 * blocking the loop: ask first, from the thread pool. Until the answer the
 * state stays WS_WAITING, so that no late callback of the last connection is
 * taken for the next one's. */
static void resolved(void *arg, const char *why);

/* The next connection's server: its address becomes W's. */
static void do_connect(uv_timer_t *t)
{
	W.server = servers_pick();
	const struct wsrv *s = &W.srv[W.server];
	memcpy(W.host, s->host, sizeof W.host);
	memcpy(W.path, s->path, sizeof W.path);
	memcpy(W.url, s->url, sizeof W.url);
	W.port = s->port;
	W.tls = s->tls;
	worker_resolve(W.host, resolved, NULL);
}

static void resolved(void *arg, const char *why)
{
	if (W.stopping)
		return;
	struct lws_client_connect_info ci;
	memset(&ci, 0, sizeof ci);
	ci.context = W.ctx;
	ci.address = W.host;
	ci.port = W.port;
	ci.path = W.path;
	ci.host = W.host;
	ci.origin = W.host;
	ci.local_protocol_name = "ucgw";
	if (W.tls) {
		ci.ssl_connection = LCCSCF_USE_SSL;
		if (cfg_bool(W.cfg, "insecure"))
			ci.ssl_connection |= LCCSCF_ALLOW_SELFSIGNED | LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK |
					     LCCSCF_ALLOW_INSECURE | LCCSCF_ALLOW_EXPIRED;
	}
	W.state = WS_CONNECTING;
	W.wsi = NULL;
	W.tls_why[0] = W.close_why[0] = '\0';
	W.connect_ms = now_ms();
	if (why) {
		char msg[300];
		snprintf(msg, sizeof msg, "cannot resolve %s: %s", W.host, why);
		went_down(msg);
		return;
	}
	struct lws *wsi = lws_client_connect_via_info(&ci);
	if (W.state != WS_CONNECTING)
		return; /* it failed (and was handled) inside the call */
	if (!wsi)
		went_down("cannot start a connection");
	else
		W.wsi = wsi;
}

/* reconnect_delay for the first reconnect_attempts tries, then doubling up to
 * RECONNECT_CAP_MS; +-10% jitter so that many cameras do not come back in step. */
static uint64_t next_delay(void)
{
	uint64_t d = W.delay_ms, cap = W.delay_ms > RECONNECT_CAP_MS ? W.delay_ms : RECONNECT_CAP_MS;
	for (unsigned i = W.fail_limit; i < W.failures && d < cap; i++)
		d *= 2;
	if (d > cap)
		d = cap;
	return d - d / 10 + rand_u64() % (d / 5 + 1);
}

static void schedule_reconnect(void)
{
	if (next_server_coming()) { /* the next of the list at once; the waits come once all have failed */
		uv_timer_start(&W.reconnect, do_connect, 0, 0);
		return;
	}
	uint64_t d = next_delay();
	if (W.failures > 0 && W.failures >= W.fail_limit)
		worker_health(false, 0, "%s down: %u failed connects in a row (last: %s); next try in %.1f s", W.url,
			      W.failures, W.why, (double)d / 1000);
	else
		worker_health(false, 0, "%s unreachable: %s; reconnecting", W.url, W.why);
	uv_timer_start(&W.reconnect, do_connect, d, 0);
}

/* ---- jobs ---- */

/* Unacked past ack_timeout_ms: retry them (the server may have lost them).
 * The list is in sending order, so the expired ones are at its head. */
static void sweep(uv_timer_t *t)
{
	uint64_t now = now_us();
	while (W.unacked.head && now - W.unacked.head->sent_us >= W.ack_timeout_ms * 1000) {
		struct wjob *w = pop(&W.unacked);
		servers_failed(W.server);
		worker_result(w->job, JOB_RETRY, 0, "no ack from the server within %llu ms",
			      (unsigned long long)W.ack_timeout_ms);
		free(w);
	}
}

/* Once a second: failover's time on a later server is up, so nothing more
 * is written here and the connection closes once every frame is acked (a
 * frame unacked for ack_timeout_ms is retried by sweep, so it does not wait
 * for ever); then each server's state to the supervisor. */
static void servers_tick(uv_timer_t *t)
{
	if (servers_failback_due()) {
		servers_failback();
		if (W.state == WS_UP && W.server != 0)
			W.moving = true;
	}
	if (W.moving && W.state == WS_UP && !W.unacked.head)
		drop_connection("failback to the first server");
	servers_report(false);
}

static void ws_submit(struct job *j)
{
	bool wait = W.state != WS_UP && next_server_coming();
	if (W.state != WS_UP && !wait) {
		worker_result(j, JOB_RETRY, 0, "%s unreachable: %s", W.url, W.why[0] ? W.why : "connecting");
		return;
	}
	struct wjob *w = xcalloc(1, sizeof *w);
	w->job = j;
	bool idle = !W.queue.head;
	push(&W.queue, w);
	if (wait || W.moving) { /* for the connection to the next server */
		if (!uv_is_active((uv_handle_t *)&W.held))
			uv_timer_start(&W.held, held_too_long, W.ack_timeout_ms, 0);
		return;
	}
	/* A queue that was not empty has its WRITEABLE asked for already (here or
	 * by write_some): asking again costs lws an epoll_ctl per message. */
	if (idle)
		lws_callback_on_writable(W.wsi);
}

/* ---- set-up ---- */

static int parse_url(const char *url, struct wsrv *s, char *err, size_t errlen)
{
	const char *prot, *addr, *path;
	char *copy = xstrdup(url);
	int port, rc = 0;
	if (lws_parse_uri(copy, &prot, &addr, &port, &path) || (strcmp(prot, "ws") && strcmp(prot, "wss")) || !addr[0]) {
		snprintf(err, errlen, "websocket.server_url '%s': expected ws://host[:port]/path or wss://...", url);
		rc = -1;
	} else {
		s->tls = strcmp(prot, "wss") == 0;
		snprintf(s->host, sizeof s->host, "%s", addr);
		snprintf(s->path, sizeof s->path, "/%s", path);
		s->port = port;
		snprintf(s->url, sizeof s->url, "%s://%s:%d%s", prot, s->host, s->port, s->path);
	}
	free(copy);
	return rc;
}

static void read_settings(const struct cfg_section *cfg)
{
	W.ack = strcmp(cfg_str(cfg, "ack"), "message") == 0;
	W.ack_timeout_ms = (uint64_t)cfg_int(cfg, "ack_timeout_ms");
	W.delay_ms = (uint64_t)(cfg_num(cfg, "reconnect_delay") * 1000);
	if (W.delay_ms < RECONNECT_MIN_MS)
		W.delay_ms = RECONNECT_MIN_MS;
	W.fail_limit = (unsigned)cfg_int(cfg, "reconnect_attempts");
	W.ping_ms = (uint64_t)cfg_int(cfg, "ping_interval_s") * 1000;
	W.offer_pmd = strcmp(cfg_str(cfg, "compress"), "gzip") == 0; /* zstd: refused by config.c */
	W.cmin = (size_t)cfg_int(cfg, "compress_min_bytes");
}

static struct lws_context *make_context(uv_loop_t *loop, const struct cfg_section *cfg)
{
	/* lws's own idle keepalive is only a backstop: our pings come more often
	 * and each pong confirms the connection. */
	static lws_retry_bo_t retry;
	uint64_t ping_s = W.ping_ms / 1000;
	retry.secs_since_valid_ping = (uint16_t)(ping_s * 3 + 5 < 65535 ? ping_s * 3 + 5 : 65535);
	retry.secs_since_valid_hangup = (uint16_t)(ping_s * 4 + 10 < 65535 ? ping_s * 4 + 10 : 65535);
	void *loops[] = { loop };
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof info);
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protocols;
	info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
	info.foreign_loops = loops; /* copied by lws_create_context */
	info.retry_and_idle_policy = &retry;
	if (W.offer_pmd)
		info.extensions = extensions;
	/* The files as the supervisor read them (the worker may not be allowed
	 * to open them). lws decodes one PEM object from each: the first CA
	 * certificate of ca_file; an RSA or EC client key. */
	size_t len;
	if ((info.client_ssl_ca_mem = worker_file("ca_file", &len, NULL)))
		info.client_ssl_ca_mem_len = (unsigned)len;
	if ((info.client_ssl_cert_mem = worker_file("cert_file", &len, NULL)))
		info.client_ssl_cert_mem_len = (unsigned)len;
	if ((info.client_ssl_key_mem = worker_file("key_file", &len, NULL)))
		info.client_ssl_key_mem_len = (unsigned)len;
	return lws_create_context(&info);
}

static int ws_init(uv_loop_t *loop, const struct cfg_section *cfg, char *err, size_t errlen)
{
	W.cfg = cfg;
	if (servers_init(cfg, "server_url", err, errlen) < 0)
		return UCGW_EXIT_CONFIG;
	W.nsrv = servers_count();
	for (size_t i = 0; i < W.nsrv; i++)
		if (parse_url(servers_url(i), &W.srv[i], err, errlen) < 0)
			return UCGW_EXIT_CONFIG;
	read_settings(cfg);
	static const char *const files[] = { "ca_file", "cert_file", "key_file" };
	for (size_t i = 0; i < 3; i++) {
		const char *why;
		worker_file(files[i], NULL, &why);
		if (why) {
			snprintf(err, errlen, "websocket.%s: %s", files[i], why);
			return UCGW_EXIT_CONFIG;
		}
	}
	lws_set_log_level(LLL_ERR | LLL_WARN, lws_log);
	W.ctx = make_context(loop, cfg);
	if (!W.ctx) {
		snprintf(err, errlen, "cannot create the libwebsockets context (is the libuv event library installed?)");
		return UCGW_EXIT_CONFIG;
	}
	if (cfg_bool(cfg, "insecure"))
		log_warnx("websocket.insecure is true: the server's certificate is NOT verified");
	uv_timer_init(loop, &W.reconnect);
	uv_timer_init(loop, &W.sweep);
	uv_timer_init(loop, &W.ping);
	uint64_t period = W.ack_timeout_ms / 4 < 250 ? W.ack_timeout_ms / 4 + 1 : 250;
	uv_timer_start(&W.sweep, sweep, period, period);
	uv_timer_start(&W.ping, ping_tick, W.ping_ms, W.ping_ms);
	uv_timer_init(loop, &W.held);
	uv_timer_init(loop, &W.servers_tick);
	uv_timer_start(&W.servers_tick, servers_tick, 1000, 1000);
	W.state = WS_WAITING;
	worker_health(false, 0, "connecting to %s%s", W.srv[0].url, W.nsrv > 1 ? " (first of the list)" : "");
	do_connect(NULL);
	return 0;
}

static void ws_shutdown(void)
{
	W.stopping = true;
	uv_timer_stop(&W.reconnect);
	uv_timer_stop(&W.sweep);
	uv_timer_stop(&W.ping);
	uv_timer_stop(&W.held);
	uv_timer_stop(&W.servers_tick);
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
