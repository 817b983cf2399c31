/* ucgw-mqtt: metadata over MQTT with libmosquitto, driven by the framework's
 * libuv loop (no libmosquitto thread): a uv_poll on the client's socket calls
 * mosquitto_loop_read/write, a timer calls mosquitto_loop_misc (keepalive).
 * A job is answered ok only on PUBACK (QoS 1) or PUBCOMP (QoS 2); with QoS 0,
 * which has no acknowledgment, once the message is written to the socket.
 *
 * Each connection is made by a new client: when one ends, its jobs are answered
 * retry at once and the supervisor sends them again, so the old client must not
 * keep them (libmosquitto would publish them again after reconnecting, a second
 * copy of each).
 *
 * A message without its acknowledgment ack_timeout_ms after it was published
 * ends the connection as a loss does: a broker that has stopped answering while
 * the TCP connection stays up is otherwise noticed only by keepalive. So is a
 * connect without the broker's CONNACK connect_timeout_ms after it began: the
 * attempt is dropped and a new one made after the backoff.
 *
 * A connection given up (no CONNACK or PUBACK in time, keepalive) is reset,
 * not closed: the kernel discards what it has not yet delivered (a CONNECT or
 * PUBLISH packets stuck in a black hole) and stops retransmitting it. A closed
 * one would go on retransmitting, and a CONNECT that got through once the hole
 * cleared would take the client id's session over from the live connection
 * made meanwhile (the broker keeps the newest). Each socket is set to SO_LINGER
 * {1, 0} when its connect begins, so every close of it resets, libmosquitto's
 * own (keepalive, a lost connection, mosquitto_destroy) and the kernel's when
 * the process dies; only the goodbye at shutdown switches it off, to close in
 * order after DISCONNECT.
 *
 * All of the above holds per connection: there are up to mqtt.connections of
 * them (struct conn), because an MQTT 5 broker's Receive Maximum caps what
 * one may have unacknowledged (mosquitto's default: 20, which on a 100 ms
 * link is 200 messages/s). More are opened while every open one is full and
 * acknowledgments take long, as many at once as the messages waiting behind
 * full connections need; each job goes to the one with the most room.
 *
 * mqtt.broker_url may name several brokers (a cluster): each connection goes
 * to the broker workers/servers.c picks (mqtt.servers_policy). When a
 * connection is lost, the messages it held, and those that come while no
 * connection is up, wait (connect_timeout_ms at most) for the connection to
 * the next broker and go out there; only then are they answered retry.
 * Failover goes back to the first broker after failback_s: a connection on a
 * later one takes no new messages, is dropped once it holds none, and
 * connects again to the first. */
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/socket.h>

#include "common/compress.h"
#include "workers/servers.h"
#include "workers/worker.h"

#define MAX_CONNS 256
#define EXTRA_CONNECTS 16       /* connections being opened at once beyond the first */
#define LONG_RTT_US 5000        /* acks slower than this: a long path, worth more connections */

/* A message published and not yet acknowledged, by its message id. The
 * table's size is a power of two: the slot is mid & (cap - 1); ids come in
 * order, so it grows only when as many are held as it has slots. */
struct held {
	struct job *job;
	uint64_t sent_us;          /* 0: queued inside libmosquitto behind a full window, no RTT sample */
	int mid;
};

/* One connection: its own libmosquitto client, client id, session and
 * message ids. The first is client_id itself and carries the status topic
 * (birth and will); the others are client_id-2, -3 ..., opened when every
 * open one is full and acknowledgments take long (a long link), up to
 * mqtt.connections. Each keeps the order of what it publishes. */
struct conn {
	int idx;
	size_t server;                 /* the broker of this connection (its index in broker_url) */
	bool moving;                   /* failback: takes no new jobs, then connects to the first broker */
	unsigned fails;                /* connects that failed in a row */
	struct mosquitto *mosq;
	bool used;                     /* mosq has been asked to connect: the next connection needs a new one */
	bool connected, attempting, opened;
	struct job *publishing;        /* QoS 0: the job mosquitto_publish is writing now */
	uv_poll_t *poll;
	int poll_fd, poll_ev;          /* the socket polled and the events asked for */
	uv_timer_t retry, connack;     /* connack: the deadline of a connect in progress */
	uint64_t backoff_ms;
	char why[256];                 /* why not connected: the last failure ("" before the first) */
	char client_id[300];
	struct held *held;
	unsigned cap, nheld;
	unsigned limit;                /* in flight at once: max_inflight, or the broker's Receive Maximum if lower */
	unsigned recv_max;             /* the broker's Receive Maximum (MQTT 5; 65535 when it gives none) */
	bool alias_ok;                 /* MQTT 5: the broker takes topic aliases on this connection */
	bool alias_set;                /* mqtt.topic has been published with alias 1 on this connection */
};

/* One broker of mqtt.broker_url. */
struct broker {
	SSL_CTX *ssl_ctx;              /* NULL: no TLS */
	char host[256];
	int port;
	bool tls;
};

static struct {
	const struct cfg_section *cfg;
	struct broker srv[SERVERS_MAX];
	size_t nsrv;
	struct job **pending;          /* waiting for a connection to the next broker */
	size_t npending, cappending;
	uv_timer_t pending_timer;
	char pending_why[256];
	int qos, keepalive;
	unsigned max_inflight;
	uint64_t ack_timeout_ms, connect_timeout_ms;
	bool v5, envelope, stopping;
	enum compress_alg calg;        /* mqtt.compress (MQTT 5 only: config.c) */
	size_t cmin;                   /* mqtt.compress_min_bytes */
	char *topic, *status_topic;
	uv_timer_t misc, sweep;
	struct conn conns[MAX_CONNS];
	int nconns, nopened;           /* mqtt.connections; how many have been opened */
	uint64_t rtt_sum, rtt_n, rtt_reported_ms, rtt_recent_us;
	bool bound;                    /* every connection was full, none more may open: the limit binds */
	char health[400];
} M;

/* ---- the broker URL: "host", "host:port", "mqtt://host[:port]", "mqtts://host[:port]" ---- */

#define HOST(c) (M.srv[(c)->server].host)
#define PORT(c) (M.srv[(c)->server].port)

static int parse_broker(const char *url, struct broker *b, char *err, size_t errlen)
{
	const char *h = url;
	b->tls = false;
	if (strncmp(url, "mqtts://", 8) == 0) {
		b->tls = true;
		h = url + 8;
	} else if (strncmp(url, "mqtt://", 7) == 0) {
		h = url + 7;
	} else if (strstr(url, "://")) {
		snprintf(err, errlen, "mqtt.broker_url '%s': expected host, host:port, mqtt:// or mqtts:// URL", url);
		return -1;
	}
	b->port = b->tls ? 8883 : 1883;
	size_t n = strcspn(h, ":/");
	if (n == 0 || n >= sizeof b->host) {
		snprintf(err, errlen, "mqtt.broker_url '%s': no host name", url);
		return -1;
	}
	memcpy(b->host, h, n);
	b->host[n] = '\0';
	if (h[n] == ':') {
		char *end;
		long p = strtol(h + n + 1, &end, 10);
		if (p < 1 || p > 65535 || (*end && *end != '/')) {
			snprintf(err, errlen, "mqtt.broker_url '%s': bad port", url);
			return -1;
		}
		b->port = (int)p;
	}
	return 0;
}

/* ---- the messages a connection holds ---- */

static struct held *slot_of(struct conn *c, int mid) { return &c->held[(unsigned)mid & (c->cap - 1)]; }

/* Room for mid: when its slot holds another id, the table doubles (two ids
 * that share a slot at 2n shared it at n, so the move finds no collision). */
static struct held *slot_for(struct conn *c, int mid)
{
	while (c->cap < 65536 && slot_of(c, mid)->job && slot_of(c, mid)->mid != mid) {
		struct held *old = c->held;
		unsigned n = c->cap;
		c->cap *= 2;
		c->held = xcalloc(c->cap, sizeof *c->held);
		for (unsigned i = 0; i < n; i++)
			if (old[i].job)
				*slot_of(c, old[i].mid) = old[i];
		free(old);
	}
	return slot_of(c, mid);
}

static struct job *take_held(struct conn *c, int mid, uint64_t *sent_us)
{
	struct held *h = slot_of(c, mid);
	if (!h->job || h->mid != mid)
		return NULL;
	struct job *j = h->job;
	*sent_us = h->sent_us;
	h->job = NULL;
	c->nheld--;
	return j;
}

/* ---- messages waiting for the connection to the next broker ---- */

static void answer_pending(uv_timer_t *t)
{
	size_t n = M.npending;
	M.npending = 0;
	for (size_t i = 0; i < n; i++)
		worker_result(M.pending[i], JOB_RETRY, 0, "%s", M.pending_why[0] ? M.pending_why : "no broker reachable");
}

/* With more than one broker a job that found no connection (or lost its
 * own) waits for the next connection, up to connect_timeout_ms. */
static bool may_wait(void) { return M.nsrv > 1 && !M.stopping; }

static void wait_for_broker(struct job *j, const char *why)
{
	if (M.npending == M.cappending) {
		M.cappending = M.cappending ? M.cappending * 2 : 64;
		M.pending = xrealloc(M.pending, M.cappending * sizeof *M.pending);
	}
	M.pending[M.npending++] = j;
	/* a new wait (for the next broker, then its ack): the supervisor's
	 * gateway.job_timeout_ms starts again, so it does not send the message
	 * elsewhere while this worker still has it */
	worker_progress(j, 0);
	if (why)
		snprintf(M.pending_why, sizeof M.pending_why, "%s", why);
	if (!uv_is_active((uv_handle_t *)&M.pending_timer))
		uv_timer_start(&M.pending_timer, answer_pending, M.connect_timeout_ms, 0);
}

static void mqtt_submit(struct job *j);

static void flush_pending(void)
{
	uv_timer_stop(&M.pending_timer);
	size_t n = M.npending;
	struct job **v = M.pending;
	M.pending = NULL;
	M.npending = M.cappending = 0;
	for (size_t i = 0; i < n; i++)
		mqtt_submit(v[i]);
	free(v);
}

/* ---- answering jobs ---- */

static void answer_all_held(struct conn *c, enum job_status st, const char *why)
{
	for (unsigned i = 0; i < c->cap; i++)
		if (c->held[i].job) {
			struct job *j = c->held[i].job;
			c->held[i].job = NULL;
			if (st == JOB_RETRY && may_wait()) {
				servers_failed(c->server);
				wait_for_broker(j, why);
			} else {
				worker_result(j, st, 0, "%s", why);
			}
		}
	c->nheld = 0;
}

static int connected_count(void)
{
	int n = 0;
	for (int i = 0; i < M.nopened; i++)
		n += M.conns[i].connected;
	return n;
}

/* What health says while connected: over how many connections, and the
 * broker's Receive Maximum when it is below max_inflight, with a word when
 * it is what limits the rate. */
static void health_text(char *out, size_t len)
{
	int n = connected_count();
	unsigned recv = 65535;
	for (int i = 0; i < M.nopened; i++)
		if (M.conns[i].connected && M.conns[i].recv_max < recv)
			recv = M.conns[i].recv_max;
	const struct conn *first = NULL;
	for (int i = 0; i < M.nopened && !first; i++)
		if (M.conns[i].connected)
			first = &M.conns[i];
	int w = snprintf(out, len, "connected to %s:%d", HOST(first), PORT(first));
	if (M.nconns > 1 && w >= 0 && (size_t)w < len)
		w += snprintf(out + w, len - (size_t)w, " over %d of %d connection%s", n, M.nconns, M.nconns == 1 ? "" : "s");
	if (recv < M.max_inflight && w >= 0 && (size_t)w < len)
		snprintf(out + w, len - (size_t)w,
			 M.bound ? "; limited by the broker: it allows %u in flight per connection (Receive Maximum), %d "
				   "connections (mqtt.connections) allow %u; raise either for more"
				 : "; the broker allows %u in flight per connection (Receive Maximum)",
			 recv, n, recv * (unsigned)n);
}

static void report_health(bool force)
{
	uint64_t now = now_ms();
	if (!connected_count() || (!force && now - M.rtt_reported_ms < 1000))
		return;
	char text[sizeof M.health];
	health_text(text, sizeof text);
	if (!force && !M.rtt_n && strcmp(text, M.health) == 0)
		return;
	snprintf(M.health, sizeof M.health, "%s", text);
	if (M.rtt_n)
		M.rtt_recent_us = M.rtt_sum / M.rtt_n;
	worker_health(true, M.rtt_n ? M.rtt_sum / M.rtt_n : 0, "%s", M.health);
	M.rtt_sum = M.rtt_n = 0;
	M.rtt_reported_ms = now;
}

static bool reason_is_retry(int rc)
{
	return rc == MQTT_RC_QUOTA_EXCEEDED || rc == MQTT_RC_SERVER_BUSY || rc == MQTT_RC_UNSPECIFIED ||
	       rc == MQTT_RC_IMPLEMENTATION_SPECIFIC;
}

static void on_publish(struct mosquitto *m, void *obj, int mid, int reason, const mosquitto_property *props)
{
	struct conn *c = obj;
	uint64_t sent_us = 0;
	struct job *j = take_held(c, mid, &sent_us);
	if (!j && c->publishing) {
		/* QoS 0, written at once inside mosquitto_publish, before its mid was known */
		worker_result(c->publishing, JOB_OK, 0, NULL);
		c->publishing = NULL;
		return;
	}
	if (!j)
		return; /* our status message, or a job already answered when the connection dropped */
	if (reason >= 0x80) {
		enum job_status st = reason_is_retry(reason) ? JOB_RETRY : JOB_PERMFAIL;
		servers_failed(c->server);
		worker_result(j, st, 0, "broker refused the message: %s (reason 0x%02x)", mosquitto_reason_string(reason),
			      reason);
		return;
	}
	uint64_t rtt = sent_us ? uv_hrtime() / 1000 - sent_us : 0;
	if (sent_us) {
		M.rtt_sum += rtt;
		M.rtt_n++;
	}
	servers_delivered(c->server, rtt);
	worker_result(j, JOB_OK, 0, NULL);
	report_health(false);
}

/* ---- the connection ---- */

/* on: a close of the client's socket resets the connection (SO_LINGER {1, 0}),
 * dropping what the kernel has not delivered; off: the usual orderly close.
 * The descriptor is libmosquitto's, which it closes (net__socket_close, a plain
 * close() after SSL_shutdown under TLS, in 2.0.11) on keepalive, on a lost
 * connection, after writing DISCONNECT, and in mosquitto_destroy; it stays the
 * same from the connect call to that close. */
static void abort_on_close(struct conn *c, bool on)
{
	int fd = mosquitto_socket(c->mosq);
	struct linger l = { .l_onoff = on, .l_linger = 0 };
	if (fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l) < 0)
		log_warnx("SO_LINGER on the socket to %s:%d: %s", HOST(c), PORT(c), strerror(errno));
}

static void update_poll(struct conn *c);
static void schedule_reconnect(struct conn *c);

static void stop_poll(struct conn *c)
{
	if (!c->poll)
		return;
	uv_poll_stop(c->poll);
	uv_close((uv_handle_t *)c->poll, (uv_close_cb)free);
	c->poll = NULL;
	c->poll_fd = -1;
}

static const char *tls_reason(int rc)
{
	static char buf[200];
	unsigned long e = ERR_peek_last_error();
	if (rc == MOSQ_ERR_TLS && e) {
		snprintf(buf, sizeof buf, "TLS: %s", ERR_reason_error_string(e));
		ERR_clear_error();
		return buf;
	}
	return mosquitto_strerror(rc);
}

/* A connection ended: its jobs go back (retry). Health says down only when
 * it was the last one up. */
static void went_down(struct conn *c, const char *why)
{
	bool was = c->connected, moving = c->moving;
	uv_timer_stop(&c->connack);
	c->connected = false;
	c->attempting = false;
	c->moving = false;
	snprintf(c->why, sizeof c->why, "%s", why);
	stop_poll(c);
	if (!moving && !M.stopping) {
		c->fails++;
		servers_down(c->server, c->why);
	}
	answer_all_held(c, JOB_RETRY, c->why);
	if (connected_count() && M.npending)
		flush_pending(); /* to a connection that is still up (spread: another broker) */
	if (!connected_count() && !moving) {
		M.rtt_sum = M.rtt_n = 0; /* acks of this connection must not report the next one up */
		M.health[0] = '\0';
		worker_health(false, 0, "broker %s:%d unreachable: %s", HOST(c), PORT(c), c->why);
	} else if (connected_count()) {
		report_health(true);
	}
	if (moving)
		log_info("leaving %s:%d: %s", HOST(c), PORT(c), c->why);
	else if (was && c->idx == 0)
		log_warnx("disconnected from %s:%d: %s", HOST(c), PORT(c), c->why);
	else if (was)
		log_warnx("disconnected from %s:%d: %s (connection %d, %s)", HOST(c), PORT(c), c->why, c->idx + 1,
			  c->client_id);
	if (!M.stopping)
		schedule_reconnect(c);
}

static void on_connect(struct mosquitto *m, void *obj, int rc, int flags, const mosquitto_property *props)
{
	struct conn *c = obj;
	uv_timer_stop(&c->connack);
	if (rc != 0) {
		char why[200];
		snprintf(why, sizeof why, "broker refused the connection: %s",
			 M.v5 ? mosquitto_reason_string(rc) : mosquitto_connack_string(rc));
		/* The socket stays open until the broker closes it; close it ourselves. */
		mosquitto_disconnect(c->mosq);
		went_down(c, why);
		return;
	}
	uint16_t recv = 65535;
	if (M.v5)
		mosquitto_property_read_int16(props, MQTT_PROP_RECEIVE_MAXIMUM, &recv, false);
	c->recv_max = recv ? recv : 65535;
	/* Topic alias 1 stands for mqtt.topic on this connection once a publish
	 * gave both (MQTT 5: the mapping lives as long as the network connection,
	 * and each connect has a client of its own, which resends nothing of the
	 * last): the topic's bytes then go once, not in every message. */
	uint16_t aliases = 0;
	if (M.v5)
		mosquitto_property_read_int16(props, MQTT_PROP_TOPIC_ALIAS_MAXIMUM, &aliases, false);
	c->alias_ok = aliases > 0;
	c->alias_set = false;
	c->limit = c->recv_max < M.max_inflight ? c->recv_max : M.max_inflight;
	c->connected = true;
	c->attempting = false;
	c->backoff_ms = 0;
	c->fails = 0;
	c->why[0] = '\0';
	servers_up(c->server, 0);
	log_info("connected to %s:%d as %s (MQTT %s, QoS %d, %u in flight at most%s)", HOST(c), PORT(c), c->client_id,
		 M.v5 ? "5" : "3.1.1", M.qos, c->limit, c->limit < M.max_inflight ? ": the broker's Receive Maximum" : "");
	if (c->idx == 0)
		mosquitto_publish(c->mosq, NULL, M.status_topic, 6, "online", 1, true);
	report_health(true);
	servers_report(true);
	flush_pending();
}

/* The end of a connection, or of a connect under way; once per attempt (went_
 * down may have been told already, by service() or on_connect). */
static void on_disconnect(struct mosquitto *m, void *obj, int rc, const mosquitto_property *props)
{
	struct conn *c = obj;
	if (c->connected || c->attempting)
		went_down(c, rc == 0 ? "disconnected"
			     /* libmosquitto's own keepalive check; 2.0.11's strerror has no text for it */
			     : rc == MOSQ_ERR_KEEPALIVE ? "keepalive: the broker stopped answering"
							: mosquitto_strerror(rc));
}

static void service(uv_poll_t *h, int status, int events)
{
	struct conn *c = h->data;
	int rc = MOSQ_ERR_SUCCESS;
	if (status < 0)
		c->poll_ev = 0; /* libuv has stopped the handle */
	/* While connecting (TCP or TLS handshake), libmosquitto advances in
	 * loop_read, whatever the event; after that, each event to its side. */
	if (status < 0 || (events & UV_READABLE) || !c->connected)
		rc = mosquitto_loop_read(c->mosq, 16);
	if (rc == MOSQ_ERR_SUCCESS && (events & UV_WRITABLE) && mosquitto_want_write(c->mosq))
		rc = mosquitto_loop_write(c->mosq, 16);
	if (rc != MOSQ_ERR_SUCCESS) {
		if (c->poll)
			went_down(c, tls_reason(rc));
		return;
	}
	update_poll(c);
}

static void update_poll(struct conn *c)
{
	int fd = mosquitto_socket(c->mosq);
	if (fd < 0) {
		stop_poll(c);
		return;
	}
	if (c->poll && c->poll_fd != fd)
		stop_poll(c);
	if (!c->poll) {
		c->poll = xcalloc(1, sizeof *c->poll);
		uv_poll_init(worker_loop(), c->poll, fd);
		c->poll->data = c;
		c->poll_fd = fd;
		c->poll_ev = 0;
	}
	/* uv_poll_start takes the socket out of epoll and puts it back (two
	 * system calls) even when the events are the same: only when they change. */
	int ev = UV_READABLE | (mosquitto_want_write(c->mosq) || !c->connected ? UV_WRITABLE : 0);
	if (ev != c->poll_ev) {
		uv_poll_start(c->poll, ev, service);
		c->poll_ev = ev;
	}
}

static int new_client(struct conn *c, char *err, size_t errlen);
static void connect_resolved(void *arg, const char *why);

/* The client and what it holds of its connection go; the next connect makes
 * a new one. Its socket, if open, is closed: reset (abort_on_close). Never
 * from inside a libmosquitto call or callback. */
static void discard_client(struct conn *c)
{
	if (c->mosq)
		mosquitto_destroy(c->mosq);
	c->mosq = NULL;
	c->used = false;
}

/* Give the connection up now, as a loss does, and reset it: went_down answers
 * its jobs retry and stops polling the socket, then the client goes with it
 * (an orderly close, or a shutdown(), would leave the kernel retransmitting
 * what the broker has not acknowledged: a CONNECT that arrives late takes the
 * session over from the next connection). */
static void drop_connection(struct conn *c, const char *why)
{
	went_down(c, why);
	discard_client(c);
}

/* connect_timeout_ms since the connect call and no CONNACK (the TCP connect,
 * the TLS handshake or the broker itself stalled): this attempt ends as a lost
 * connection does, and the next comes after the backoff, with a new client. */
static void connack_late(uv_timer_t *t)
{
	struct conn *c = t->data;
	char why[200];
	snprintf(why, sizeof why, "no CONNACK within %llu ms", (unsigned long long)M.connect_timeout_ms);
	log_info("no CONNACK from %s:%d within %llu ms; connecting again", HOST(c), PORT(c),
		 (unsigned long long)M.connect_timeout_ms);
	drop_connection(c, why);
}

/* A new attempt keeps the reason of the last failure (why): jobs answered
 * while it is under way say why the broker is not reachable, not just that a
 * connect is in progress. */
static void start_connect(uv_timer_t *t)
{
	struct conn *c = t->data;
	c->attempting = true;
	size_t server = servers_pick();
	if (c->used || (c->mosq && server != c->server))
		discard_client(c); /* and with it what it still held of the last connection */
	c->server = server;
	if (!c->mosq) {
		char err[256];
		if (new_client(c, err, sizeof err) < 0) {
			went_down(c, err);
			return;
		}
	}
	c->used = true;
	worker_resolve(HOST(c), connect_resolved, c);
}

/* libmosquitto looks the name up inside its connect call, blocking. */
static void connect_resolved(void *arg, const char *why)
{
	struct conn *c = arg;
	if (M.stopping)
		return;
	if (why) {
		char msg[200];
		snprintf(msg, sizeof msg, "cannot resolve the broker's name: %s", why);
		went_down(c, msg);
		return;
	}
	int rc = mosquitto_connect_bind_async(c->mosq, HOST(c), PORT(c), M.keepalive, NULL);
	if (rc != MOSQ_ERR_SUCCESS) {
		went_down(c, rc == MOSQ_ERR_EAI     ? "cannot resolve the broker's name" /* DNS changed its mind */
			     : rc == MOSQ_ERR_ERRNO ? strerror(errno)
						    : mosquitto_strerror(rc));
		return;
	}
	abort_on_close(c, true); /* the socket exists from here until libmosquitto closes it */
	uv_timer_start(&c->connack, connack_late, M.connect_timeout_ms, 0);
	update_poll(c);
}

static void schedule_reconnect(struct conn *c)
{
	if (c->fails % M.nsrv != 0 || c->fails == 0) {
		/* another broker of the list is next (or this one, left on purpose): at once */
		uv_timer_start(&c->retry, start_connect, 0, 0);
		return;
	}
	c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : 250;
	if (c->backoff_ms > 15000)
		c->backoff_ms = 15000;
	uv_timer_start(&c->retry, start_connect, c->backoff_ms, 0);
}

static void open_conn(struct conn *c)
{
	c->opened = true;
	c->poll_fd = -1;
	c->cap = 256;
	c->held = xcalloc(c->cap, sizeof *c->held);
	c->limit = M.max_inflight;
	c->recv_max = 65535;
	uv_timer_init(worker_loop(), &c->retry);
	uv_timer_init(worker_loop(), &c->connack);
	c->retry.data = c->connack.data = c;
	start_connect(&c->retry);
}

/* The broker's limit binds no longer once no connection is full. */
static void check_bound(void)
{
	for (int i = 0; i < M.nopened; i++)
		if (M.conns[i].connected && M.conns[i].nheld >= M.conns[i].limit)
			return;
	if (M.bound) {
		M.bound = false;
		report_health(true);
	}
}

/* Failover's time on a later broker is up: its connections take no new
 * messages, and each that holds none is dropped and connects to the first
 * (leave_drained). */
static void failback_check(void)
{
	if (!servers_failback_due())
		return;
	servers_failback();
	for (int i = 0; i < M.nopened; i++)
		if (M.conns[i].connected && M.conns[i].server != 0)
			M.conns[i].moving = true;
}

static void leave_drained(void)
{
	for (int i = 0; i < M.nopened; i++) {
		struct conn *c = &M.conns[i];
		if (c->moving && c->connected && c->nheld == 0)
			drop_connection(c, "failback to the first broker");
	}
}

static void misc_tick(uv_timer_t *t)
{
	check_bound();
	failback_check();
	leave_drained();
	servers_report(false);
	for (int i = 0; i < M.nopened; i++) {
		struct conn *c = &M.conns[i];
		if (!c->poll)
			continue;
		int rc = mosquitto_loop_misc(c->mosq);
		if (rc == MOSQ_ERR_NO_CONN || rc == MOSQ_ERR_CONN_LOST) {
			went_down(c, "keepalive: the broker stopped answering");
			continue;
		}
		update_poll(c);
	}
	report_health(false);
}

/* A job held by c has waited ack_timeout_ms for its acknowledgment: each late
 * job is answered retry saying so; then the connection is reset (drop_
 * connection), which answers the rest retry and reconnects with a new client:
 * a broker that sits on one message may sit on all of them, and its
 * acknowledgments of this connection's messages must not answer anything
 * after this. */
static void sweep_conn(struct conn *c, uint64_t now)
{
	const char *late = M.qos == 0 ? "not written" : M.qos == 1 ? "no PUBACK" : "no PUBCOMP";
	unsigned long long ms = (unsigned long long)M.ack_timeout_ms;
	bool any = false;
	for (unsigned i = 0; i < c->cap && c->nheld; i++) {
		struct job *j = c->held[i].job;
		if (j && now - j->start_ms >= M.ack_timeout_ms) {
			c->held[i].job = NULL;
			c->nheld--;
			any = true;
			servers_failed(c->server);
			worker_result(j, JOB_RETRY, 0, "%s %s %s:%d within %llu ms", late, M.qos == 0 ? "to" : "from", HOST(c),
				      PORT(c), ms);
		}
	}
	if (!any)
		return;
	char why[200];
	snprintf(why, sizeof why, "%s within %llu ms; connection dropped", late, ms);
	drop_connection(c, why);
}

/* The framework's list is in arrival order, and a job is published as it
 * arrives, so one look at its head suffices while nothing is late. */
static void sweep_tick(uv_timer_t *t)
{
	struct job *oldest = worker_jobs();
	uint64_t now = now_ms();
	if (!oldest || now - oldest->start_ms < M.ack_timeout_ms)
		return;
	for (int i = 0; i < M.nopened; i++)
		if (M.conns[i].connected)
			sweep_conn(&M.conns[i], now);
}

/* ---- jobs ---- */

/* {"id":..., "accepted_at":..., ["clock_corrected":true,] "data":...}: the
 * time the gateway accepted it, corrected if it was stamped before the
 * camera's clock was set (and then said so). */
static char *envelope(const struct job *j, size_t *len)
{
	char at[RFC3339_MS_LEN];
	fmt_rfc3339_ms(j->accepted_ms, at);
	char *out = xasprintf("{\"id\":\"%s\",\"accepted_at\":\"%s\",%s\"data\":%s}", j->id, at,
			      j->clock_corrected ? "\"clock_corrected\":true," : "", j->payload);
	*len = strlen(out);
	return out;
}

/* A connection is on its way to a broker not yet tried in this round (after a
 * failover, or a failback): worth waiting for, unlike the backoff after every
 * broker of the list has failed. */
static bool next_broker_coming(void)
{
	for (int i = 0; i < M.nopened; i++) {
		const struct conn *c = &M.conns[i];
		bool fresh = c->fails == 0 || c->fails % M.nsrv != 0;
		if (c->moving || (fresh && (c->attempting || uv_is_active((const uv_handle_t *)&c->retry))))
			return true;
	}
	return false;
}

/* The connected connection with the most room; when every one is full and
 * acknowledgments take long (the bandwidth-delay product is larger than the
 * broker lets one connection hold), the next connection is opened. */
static struct conn *pick_conn(void)
{
	struct conn *best = NULL;
	int connecting = 0;
	for (int i = 0; i < M.nopened; i++) {
		struct conn *c = &M.conns[i];
		connecting += c->attempting || c->moving;
		if (c->connected && !c->moving && (!best || c->nheld * best->limit < best->nheld * c->limit))
			best = c;
	}
	bool full = best && best->nheld >= best->limit;
	if (full && M.rtt_recent_us >= LONG_RTT_US && M.nopened < M.nconns && connecting < EXTRA_CONNECTS) {
		/* the messages waiting inside libmosquitto behind full connections:
		 * the connections being opened take over as many as they may hold */
		unsigned waiting = 0, coming = (unsigned)connecting * best->limit;
		for (int i = 0; i < M.nopened; i++)
			if (M.conns[i].connected && M.conns[i].nheld > M.conns[i].limit)
				waiting += M.conns[i].nheld - M.conns[i].limit;
		if (waiting >= coming) {
			log_info("every connection to %s:%d holds its %u in flight and acks take %.1f ms: opening connection "
				 "%d of %d", HOST(best), PORT(best), best->limit, (double)M.rtt_recent_us / 1000, M.nopened + 1,
				 M.nconns);
			open_conn(&M.conns[M.nopened++]);
		}
	}
	bool bound = full && M.nopened == M.nconns && best->limit < M.max_inflight;
	if (bound != M.bound) {
		M.bound = bound;
		if (bound)
			log_info("limited by the broker: every one of %d connections holds its %u in flight (Receive Maximum)",
				 M.nopened, best->limit);
		report_health(true);
	}
	return best;
}

static void mqtt_submit(struct job *j)
{
	struct conn *c = pick_conn();
	if (!c) {
		struct conn *first = &M.conns[0];
		char why[400];
		/* "connecting" only before the first attempt has ended */
		snprintf(why, sizeof why, "broker %s:%d unreachable: %s%s", HOST(first), PORT(first),
			 first->why[0] ? first->why : "connecting", first->why[0] && first->attempting ? " (reconnecting)" : "");
		if (may_wait() && next_broker_coming())
			wait_for_broker(j, why);
		else
			worker_result(j, JOB_RETRY, 0, "%s", why);
		return;
	}
	char *topic = j->topic ? worker_expand(j->topic) : NULL;
	size_t len = j->payload_len;
	char *wrapped = M.envelope ? envelope(j, &len) : NULL;
	const void *body = wrapped ? wrapped : j->payload;
	mosquitto_property *props = NULL;
	if (M.v5) {
		char at[RFC3339_MS_LEN];
		fmt_rfc3339_ms(j->accepted_ms, at);
		mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "message-id", j->id);
		mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "accepted-at", at);
		if (j->clock_corrected)
			mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "clock-corrected", "true");
	}
	/* mqtt.compress: what is published, envelope and all, named by a user property */
	size_t zlen;
	unsigned char *z = M.calg && len >= M.cmin ? compress_buf(M.calg, body, len, &zlen) : NULL;
	if (z) {
		mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "content-encoding",
						   compress_alg_name(M.calg));
		body = z;
		len = zlen;
	}
	bool alias = !topic && c->alias_ok;
	if (alias)
		mosquitto_property_add_int16(&props, MQTT_PROP_TOPIC_ALIAS, 1);
	int mid = 0;
	c->publishing = M.qos == 0 ? j : NULL;
	int rc = mosquitto_publish_v5(c->mosq, &mid, topic ? topic : alias && c->alias_set ? "" : M.topic, (int)len,
				      body, M.qos, false, props);
	if (alias && rc == MOSQ_ERR_SUCCESS)
		c->alias_set = true; /* libmosquitto sends its messages in order: this one goes first */
	free(z);
	bool written = M.qos == 0 && !c->publishing; /* answered ok inside, by on_publish */
	c->publishing = NULL;
	mosquitto_property_free_all(&props);
	free(wrapped);
	free(topic);
	if (rc != MOSQ_ERR_SUCCESS) {
		bool perm = rc == MOSQ_ERR_PAYLOAD_SIZE || rc == MOSQ_ERR_INVAL || rc == MOSQ_ERR_MALFORMED_UTF8 ||
			    rc == MOSQ_ERR_OVERSIZE_PACKET;
		if (!written)
			worker_result(j, perm ? JOB_PERMFAIL : JOB_RETRY, 0, "publish failed: %s", mosquitto_strerror(rc));
		return;
	}
	if (written) {
		update_poll(c);
		return;
	}
	struct held *h = slot_for(c, mid);
	if (h->job) {
		/* 65535 publishes since this id's message, still unacknowledged: whose
		 * the broker's answer would be cannot be told, so neither waits for it. */
		struct job *old = h->job;
		h->job = NULL;
		c->nheld--;
		worker_result(old, JOB_RETRY, 0, "message id %d reused before the broker acknowledged it", mid);
		worker_result(j, JOB_RETRY, 0, "message id %d reused before the broker acknowledged it", mid);
		update_poll(c);
		return;
	}
	/* Sent at once only while the connection has room; behind a full window
	 * it waits in libmosquitto, and its ack would time the queue, not the path. */
	*h = (struct held){ .job = j, .mid = mid, .sent_us = c->nheld < c->limit ? uv_hrtime() / 1000 : 0 };
	c->nheld++;
	update_poll(c);
}

/* ---- set-up ---- */

/* The TLS context is built here from the files' contents as the supervisor
 * read them (the worker may run as a user that cannot open them), and handed
 * to libmosquitto whole (MOSQ_OPT_SSL_CTX, without its defaults, which would
 * want file paths). So what libmosquitto would otherwise do is done here: the
 * peer is verified against ca_file (or the system's store, /etc/ssl/certs, which
 * anyone may read), and its name against the broker's host name or address. */
static int tls_fail(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[256];
	ERR_error_string_n(e, buf, sizeof buf);
	snprintf(err, errlen, "mqtt TLS settings: %s%s%s", what, e ? ": " : "", e ? buf : "");
	ERR_clear_error();
	return -1;
}

static int setup_tls(const struct cfg_section *cfg, struct broker *b, char *err, size_t errlen)
{
	static const char *const keys[3] = { "ca_file", "cert_file", "key_file" };
	const char *data[3];
	size_t len[3];
	for (int i = 0; i < 3; i++) {
		const char *why;
		data[i] = worker_file(keys[i], &len[i], &why);
		if (why) {
			snprintf(err, errlen, "mqtt.%s: %s", keys[i], why);
			return -1;
		}
	}
	if (!b->tls && !data[0] && !data[1])
		return 0;
	b->tls = true;
	if (!data[1] != !data[2]) {
		snprintf(err, errlen, "mqtt: give both cert_file and key_file, or neither");
		return -1;
	}
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx)
		return tls_fail(err, errlen, "SSL_CTX_new");
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (data[0]) {
		BIO *bio = BIO_new_mem_buf(data[0], (int)len[0]);
		X509_STORE *store = SSL_CTX_get_cert_store(ctx);
		X509 *x;
		int n = 0;
		while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
			X509_STORE_add_cert(store, x);
			X509_free(x);
			n++;
		}
		BIO_free(bio);
		ERR_clear_error(); /* the end of the PEM data */
		if (n == 0) {
			snprintf(err, errlen, "mqtt.ca_file %s: no PEM certificate in it", cfg_str(cfg, "ca_file"));
			goto out;
		}
	} else if (!SSL_CTX_set_default_verify_paths(ctx)) {
		tls_fail(err, errlen, "the system's CA certificates");
		goto out;
	}
	if (data[1]) {
		BIO *bio = BIO_new_mem_buf(data[1], (int)len[1]);
		X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
		bool ok = x && SSL_CTX_use_certificate(ctx, x) == 1;
		X509_free(x);
		while (ok && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) /* the rest of the chain */
			if (SSL_CTX_add_extra_chain_cert(ctx, x) != 1)
				X509_free(x);
		BIO_free(bio);
		if (!ok) {
			tls_fail(err, errlen, "cert_file");
			goto out;
		}
		ERR_clear_error();
		bio = BIO_new_mem_buf(data[2], (int)len[2]);
		EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
		BIO_free(bio);
		ok = key && SSL_CTX_use_PrivateKey(ctx, key) == 1 && SSL_CTX_check_private_key(ctx) == 1;
		EVP_PKEY_free(key);
		if (!ok) {
			tls_fail(err, errlen, "key_file (or it does not match cert_file)");
			goto out;
		}
	}
	if (cfg_bool(cfg, "insecure")) {
		log_warnx("mqtt.insecure is true: the broker's certificate is NOT verified");
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
		/* Copied into every connection made from this context. */
		X509_VERIFY_PARAM *vp = SSL_CTX_get0_param(ctx);
		unsigned char addr[16];
		bool ip = inet_pton(AF_INET, b->host, addr) == 1 || inet_pton(AF_INET6, b->host, addr) == 1;
		if (!(ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, b->host) : X509_VERIFY_PARAM_set1_host(vp, b->host, 0))) {
			tls_fail(err, errlen, "the broker's name to verify");
			goto out;
		}
	}
	b->ssl_ctx = ctx; /* every new client to this broker gets it (new_client()) */
	return 0;
out:
	SSL_CTX_free(ctx);
	return -1;
}

/* A client with every setting; the connection's own are made by start_connect. */
static int new_client(struct conn *c, char *err, size_t errlen)
{
	const struct cfg_section *cfg = M.cfg;
	c->mosq = mosquitto_new(c->client_id, cfg_bool(cfg, "clean_session"), c);
	if (!c->mosq) {
		snprintf(err, errlen, "mosquitto_new: %s", strerror(errno));
		return -1;
	}
	mosquitto_int_option(c->mosq, MOSQ_OPT_PROTOCOL_VERSION, M.v5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
	mosquitto_max_inflight_messages_set(c->mosq, M.max_inflight);
	mosquitto_int_option(c->mosq, MOSQ_OPT_TCP_NODELAY, 1); /* a message is small: do not hold it back */
	if (cfg_str(cfg, "username"))
		mosquitto_username_pw_set(c->mosq, cfg_str(cfg, "username"), cfg_str(cfg, "password"));
	/* The last will: a retained "offline" if we vanish without a word. Only
	 * the first connection speaks for the device: another's loss is not the
	 * device going away. */
	if (c->idx == 0)
		mosquitto_will_set(c->mosq, M.status_topic, 7, "offline", 1, true);
	if (M.srv[c->server].ssl_ctx) {
		/* The defaults are on unless switched off, and would want a CA path. */
		mosquitto_int_option(c->mosq, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0);
		int rc = mosquitto_void_option(c->mosq, MOSQ_OPT_SSL_CTX, M.srv[c->server].ssl_ctx); /* takes its own reference */
		if (rc != MOSQ_ERR_SUCCESS) {
			snprintf(err, errlen, "mqtt TLS settings: %s", mosquitto_strerror(rc));
			mosquitto_destroy(c->mosq); /* not one to connect with */
			c->mosq = NULL;
			return -1;
		}
	}
	mosquitto_connect_v5_callback_set(c->mosq, on_connect);
	mosquitto_disconnect_v5_callback_set(c->mosq, on_disconnect);
	mosquitto_publish_v5_callback_set(c->mosq, on_publish);
	return 0;
}

static int mqtt_init(uv_loop_t *loop, const struct cfg_section *cfg, char *err, size_t errlen)
{
	if (servers_init(cfg, "broker_url", err, errlen) < 0)
		return UCGW_EXIT_CONFIG;
	M.nsrv = servers_count();
	for (size_t i = 0; i < M.nsrv; i++)
		if (parse_broker(servers_url(i), &M.srv[i], err, errlen) < 0)
			return UCGW_EXIT_CONFIG;
	mosquitto_lib_init();
	M.qos = (int)cfg_int(cfg, "qos");
	M.keepalive = (int)cfg_int(cfg, "keepalive");
	M.max_inflight = (unsigned)cfg_int(cfg, "max_inflight");
	M.ack_timeout_ms = (uint64_t)cfg_int(cfg, "ack_timeout_ms");
	M.connect_timeout_ms = (uint64_t)cfg_int(cfg, "connect_timeout_ms");
	M.v5 = strcmp(cfg_str(cfg, "protocol_version"), "5") == 0;
	M.envelope = cfg_bool(cfg, "envelope");
	M.calg = (enum compress_alg)compress_alg_parse(cfg_str(cfg, "compress"));
	M.cmin = (size_t)cfg_int(cfg, "compress_min_bytes");
	M.topic = worker_expand(cfg_str(cfg, "topic"));
	M.status_topic = worker_expand(cfg_str(cfg, "status_topic"));
	M.cfg = cfg;
	M.nconns = (int)cfg_int(cfg, "connections");
	const char *cid = cfg_str(cfg, "client_id") ? cfg_str(cfg, "client_id") : worker_device_id();
	for (int i = 0; i < M.nconns; i++) {
		M.conns[i].idx = i;
		if (i == 0)
			snprintf(M.conns[i].client_id, sizeof M.conns[i].client_id, "%s", cid);
		else
			snprintf(M.conns[i].client_id, sizeof M.conns[i].client_id, "%s-%d", cid, i + 1);
	}
	for (size_t i = 0; i < M.nsrv; i++)
		if (setup_tls(cfg, &M.srv[i], err, errlen) < 0)
			return UCGW_EXIT_CONFIG;
	if (new_client(&M.conns[0], err, errlen) < 0)
		return UCGW_EXIT_CONFIG;
	uv_timer_init(loop, &M.pending_timer);
	uv_timer_init(loop, &M.misc);
	uv_timer_start(&M.misc, misc_tick, 1000, 1000);
	uint64_t period = M.ack_timeout_ms / 4 < 250 ? M.ack_timeout_ms / 4 + 1 : 250;
	uv_timer_init(loop, &M.sweep);
	uv_timer_start(&M.sweep, sweep_tick, period, period);
	worker_health(false, 0, "connecting to %s:%d%s", M.srv[0].host, M.srv[0].port,
		      M.nsrv > 1 ? " (first of the list)" : "");
	/* spread: a connection to each broker from the start (up to mqtt.connections) */
	M.nopened = servers_failover() ? 1 : (int)(M.nsrv < (size_t)M.nconns ? M.nsrv : (size_t)M.nconns);
	for (int i = 0; i < M.nopened; i++)
		open_conn(&M.conns[i]);
	return 0;
}

/* Say "offline" ourselves (a clean disconnect sends no will), then leave: in
 * order, so the broker reads both before the end. A connect under way is
 * reset when the process exits. */
static void conn_goodbye(struct conn *c)
{
	uv_timer_stop(&c->retry);
	uv_timer_stop(&c->connack);
	if (c->connected) {
		abort_on_close(c, false);
		if (c->idx == 0)
			mosquitto_publish(c->mosq, NULL, M.status_topic, 7, "offline", 1, true);
		mosquitto_disconnect(c->mosq);
		for (int i = 0; i < 20 && mosquitto_want_write(c->mosq); i++)
			if (mosquitto_loop_write(c->mosq, 16) != MOSQ_ERR_SUCCESS)
				break;
	}
	answer_all_held(c, JOB_RETRY, "worker is shutting down");
	stop_poll(c);
}

static void mqtt_shutdown(void)
{
	M.stopping = true;
	uv_timer_stop(&M.pending_timer);
	answer_pending(NULL);
	for (int i = M.nopened - 1; i >= 0; i--) /* the first, with the status topic, last */
		conn_goodbye(&M.conns[i]);
}

static const struct worker_ops mqtt_ops = {
	.name = "mqtt",
	.init = mqtt_init,
	.submit = mqtt_submit,
	.shutdown = mqtt_shutdown,
};

WORKER_MAIN(mqtt_ops)
