/* ucgw-linkem: a TCP relay that behaves like a network link, for the tests and
 * the benchmarks (this kernel has no netem, and CI may not touch tc).
 *
 *   ucgw-linkem LISTEN_PORT TARGET_HOST TARGET_PORT [--profile lan|lte|poor]
 *               [--delay-ms D] [--rate-kbit R] [--buffer-bytes B] [--jitter-ms J]
 *               [--control PORT] [--route LISTEN_PORT:TARGET_HOST:TARGET_PORT]...
 *
 * Each direction of the link is a delay line, not a stop-and-wait relay: a chunk
 * read from a sender joins the bottleneck's queue at once (reading goes on while
 * earlier chunks are on their way), leaves it at the link's rate (one
 * serialisation clock per direction, shared by every connection, as one radio
 * is: a chunk's bits leave from max(now, last departure) for len*8/rate), and
 * reaches the receiver D later, a packet at a time as its bits leave. A bounded
 * buffer per direction (what has been read and not yet delivered: the queue and
 * the wire) stops reading from every sender of that direction when full and
 * resumes as it drains, least recently read sender first (to_tail): that is how
 * a full bottleneck looks to a TCP sender, its queue shared among the senders.
 * A receiver that does not read stops only its own sender.
 *
 * A relay answers a client's connect at once; the handshake a real link would
 * cost is charged instead: a client's first bytes arrive no sooner than 1.5 RTT
 * after its connect, a server's no sooner than 2 RTT, as over a real link.
 *
 * --route adds a server behind the same link (a camera's one uplink to a broker,
 * an HTTP server and an SSH server): all routes share its clocks and buffers.
 *
 * This is hand-written because no library emulates a link in user space; it is
 * one libuv loop so that it is never the bottleneck on a loaded machine.
 * tests/lib/linkem.py starts it for the tests and bench/bench_link.py. */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define MSS 1448                  /* bytes a link delivers at once: one TCP segment */
#define READ_SIZE 65536           /* the most one read takes from a sender */
#define BUFFER_EXTRA 65536        /* the default buffer: two ways' bandwidth-delay product plus this */
#define BACKLOG_CAP (256 * 1024)  /* delivered bytes a slow receiver may leave unwritten before its sender stops */
#define SOCKET_BUFFER 65536       /* the relay's own receive buffers: little hidden queue beside the link's */
#define SLACK_NS 500000           /* libuv's timers count milliseconds: deliver what is due within half of one */
#define NS UINT64_C(1000000000)
#define MS UINT64_C(1000000)

enum { UP, DOWN }; /* UP: client to server, DOWN: server to client */

struct profile {
	const char *name;
	unsigned delay_ms;
	uint64_t rate_kbit;
};

static const struct profile profiles[] = {
	{"lan", 1, 100000},
	{"lte", 50, 20000},
	{"poor", 150, 5000},
};

struct chunk {
	struct chunk *next;
	uint64_t start, end;  /* link time the first bit leaves the bottleneck, and the last */
	uint64_t delay;       /* its one-way delay, jitter included */
	uint64_t not_before;  /* nothing of it arrives before (the connection's handshake) */
	size_t len, off;      /* off: bytes delivered so far */
	char data[];
};

struct conn;

struct pipe {
	struct conn *conn;
	int dir;
	uv_stream_t *src, *dst;
	struct chunk *head, *tail;
	uint64_t queued;      /* read, not yet delivered */
	uint64_t backlog;     /* delivered (handed to uv_write), not yet written */
	uint64_t not_before;  /* the handshake: link time before which nothing arrives */
	uint64_t eof_at;      /* link time the sender's end arrives */
	uv_timer_t timer;
	uv_shutdown_t sreq;
	bool reading, eof, shut, shut_done;
};

struct route {
	uv_tcp_t listener;
	unsigned listen_port;
	struct sockaddr_storage target;
	char name[300];
};

#define MAX_ROUTES 16

struct conn {
	struct conn *prev, *next;
	struct route *route;
	uv_tcp_t client, server;
	uv_connect_t creq;
	struct pipe pipe[2];
	bool connected, connect_pending, closing;
	int open_handles;
};

struct link {
	const char *profile;
	uint64_t delay, jitter;  /* ns */
	uint64_t rate_kbit;      /* 0: no limit */
	uint64_t buffer;
	bool buffer_set;
	uint64_t clock[2];       /* link time the bottleneck is free again, each way */
	uint64_t queued[2], max_queued[2], bytes_in[2], bytes_out[2];
	bool full[2];
	bool down;
	uint64_t down_since, down_total; /* real ns: the link's clock stands still while down */
	unsigned conns;
	uint64_t accepted, refused;
	struct conn *list, *tail; /* least recently read first (to_tail) */
	struct route routes[MAX_ROUTES];
	int nroutes;
	uint64_t rng;
};

static struct link L;
static uv_loop_t *loop;

static void arm(struct pipe *p);
static void deliver(struct pipe *p);
static void conn_close(struct conn *c, bool reset);

/* The link's own clock: real time less the time it was down, so that what is on
 * its way when it goes down arrives as much later as the outage lasted. */
static uint64_t link_now(void)
{
	return (L.down ? L.down_since : uv_hrtime()) - L.down_total;
}

static uint64_t random_below(uint64_t n)
{
	L.rng ^= L.rng << 13;
	L.rng ^= L.rng >> 7;
	L.rng ^= L.rng << 17;
	return n ? L.rng % n : 0;
}

static uint64_t default_buffer(void)
{
	if (!L.rate_kbit)
		return 16u << 20;
	return L.rate_kbit * 1000 / 8 * 2 * L.delay / NS + BUFFER_EXTRA;
}

static const struct profile *find_profile(const char *name)
{
	for (size_t i = 0; i < sizeof profiles / sizeof profiles[0]; i++)
		if (strcmp(profiles[i].name, name) == 0)
			return &profiles[i];
	return NULL;
}

static void set_profile(const struct profile *pr)
{
	L.profile = pr->name;
	L.delay = pr->delay_ms * MS;
	L.rate_kbit = pr->rate_kbit;
}

/* ---- one direction of one connection ---- */

static size_t serialised(const struct chunk *k, uint64_t t)
{
	if (t >= k->end)
		return k->len;
	if (t <= k->start)
		return 0;
	return (size_t)((t - k->start) * k->len / (k->end - k->start));
}

/* Bytes of k at the receiver by link time t: whole packets, or all of it. */
static size_t arrived(const struct chunk *k, uint64_t t)
{
	if (t < k->not_before || t < k->delay)
		return 0;
	size_t n = serialised(k, t - k->delay);
	return n == k->len ? n : n / MSS * MSS;
}

/* Link time k's next packet (or its last bytes) arrives. */
static uint64_t next_arrival(const struct chunk *k)
{
	size_t target = k->off + MSS < k->len ? k->off + MSS : k->len;
	uint64_t span = k->end - k->start;
	uint64_t t = k->start + (span * target + k->len - 1) / k->len + k->delay;
	return t > k->not_before ? t : k->not_before;
}

static bool pipe_wants_input(const struct pipe *p)
{
	const struct conn *c = p->conn;
	return !L.down && !c->closing && !p->eof && !L.full[p->dir] && p->backlog < BACKLOG_CAP
	       && (p->dir == UP || c->connected);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct chunk *k = malloc(sizeof *k + READ_SIZE);
	*buf = uv_buf_init(k ? k->data : NULL, k ? READ_SIZE : 0);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void update_reading(struct pipe *p)
{
	bool want = pipe_wants_input(p);
	if (want == p->reading)
		return;
	if (want)
		uv_read_start(p->src, on_alloc, on_read);
	else
		uv_read_stop(p->src);
	p->reading = want;
}

static void update_full(int dir)
{
	bool full = L.queued[dir] >= L.buffer;
	if (full == L.full[dir])
		return;
	L.full[dir] = full;
	for (struct conn *c = L.list; c; c = c->next)
		update_reading(&c->pipe[dir]);
}

static void enqueue(struct pipe *p, struct chunk *k, size_t n)
{
	uint64_t now = link_now();
	uint64_t start = L.clock[p->dir] > now ? L.clock[p->dir] : now;
	uint64_t ser = L.rate_kbit ? (uint64_t)n * 8 * NS / (L.rate_kbit * 1000) : 0;
	k->next = NULL;
	k->start = start;
	k->end = start + ser;
	L.clock[p->dir] = k->end;
	k->delay = L.delay;
	if (L.jitter) {
		uint64_t j = random_below(2 * L.jitter + 1);
		k->delay = L.delay + j > L.jitter ? L.delay + j - L.jitter : 0;
	}
	k->not_before = p->not_before;
	k->len = n;
	k->off = 0;
	bool was_empty = !p->head;
	if (p->tail)
		p->tail->next = k;
	else
		p->head = k;
	p->tail = k;
	p->queued += n;
	L.queued[p->dir] += n;
	L.bytes_in[p->dir] += n;
	if (L.queued[p->dir] > L.max_queued[p->dir])
		L.max_queued[p->dir] = L.queued[p->dir];
	update_full(p->dir);
	if (was_empty)
		arm(p);
}

/* A connection that was just read goes to the end of the list: when a full
 * buffer frees, update_full starts reading the connections in list order, and
 * the first to read fill it again. In order of arrival, newest first, the
 * oldest of many connections waited for a turn for ever (MQTT's 128 on
 * `poor`: no PUBACK within 10 s); least recently read first, each gets its
 * turn, as a bottleneck's queue shares itself among the flows that fill it. */
static void to_tail(struct conn *c)
{
	if (L.tail == c)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		L.list = c->next;
	c->next->prev = c->prev;
	c->prev = L.tail;
	c->next = NULL;
	L.tail->next = c;
	L.tail = c;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct pipe *p = s->data;
	struct chunk *k = buf->base ? (struct chunk *)(buf->base - offsetof(struct chunk, data)) : NULL;
	if (n > 0) {
		struct chunk *small = realloc(k, sizeof *k + (size_t)n);
		enqueue(p, small ? small : k, (size_t)n);
		to_tail(p->conn);
		return;
	}
	free(k);
	if (n == 0)
		return;
	if (n == UV_EOF) {
		uint64_t at = link_now() + L.delay;
		if (p->tail && p->tail->end + p->tail->delay > at)
			at = p->tail->end + p->tail->delay;
		p->eof_at = at > p->not_before ? at : p->not_before;
		p->eof = true;
		p->reading = false; /* libuv stops reading at the end */
		uv_read_stop(p->src);
		arm(p);
		return;
	}
	conn_close(p->conn, true);
}

struct write_req {
	uv_write_t req;
	struct pipe *pipe;
	size_t len;
	char data[];
};

static void on_written(uv_write_t *r, int status)
{
	struct write_req *w = (struct write_req *)r;
	struct pipe *p = w->pipe;
	p->backlog -= w->len;
	free(w);
	if (p->conn->closing)
		return;
	if (status < 0) {
		conn_close(p->conn, true);
		return;
	}
	update_reading(p);
}

static void on_shut(uv_shutdown_t *r, int status)
{
	struct pipe *p = r->data;
	struct conn *c = p->conn;
	if (c->closing)
		return;
	p->shut_done = true;
	if (status < 0 || (c->pipe[UP].shut_done && c->pipe[DOWN].shut_done))
		conn_close(c, status < 0);
}

/* Hand what has arrived by now to the receiver, in one write. */
static void send_arrived(struct pipe *p, size_t total, uint64_t now)
{
	struct write_req *w = malloc(sizeof *w + total);
	if (!w) {
		fprintf(stderr, "ucgw-linkem: out of memory\n");
		exit(1);
	}
	size_t pos = 0;
	while (pos < total) {
		struct chunk *k = p->head;
		size_t n = arrived(k, now);
		memcpy(w->data + pos, k->data + k->off, n - k->off);
		pos += n - k->off;
		k->off = n;
		if (n < k->len)
			break;
		p->head = k->next;
		if (!p->head)
			p->tail = NULL;
		free(k);
	}
	w->pipe = p;
	w->len = total;
	p->queued -= total;
	L.queued[p->dir] -= total;
	L.bytes_out[p->dir] += total;
	p->backlog += total;
	uv_buf_t b = uv_buf_init(w->data, (unsigned)total);
	if (uv_write(&w->req, p->dst, &b, 1, on_written) < 0) {
		p->backlog -= total;
		free(w);
		conn_close(p->conn, true);
		return;
	}
	update_full(p->dir);
	update_reading(p);
}

static void deliver(struct pipe *p)
{
	struct conn *c = p->conn;
	if (L.down || c->closing || !c->connected)
		return;
	uint64_t now = link_now() + SLACK_NS;
	size_t total = 0;
	for (struct chunk *k = p->head; k; k = k->next) {
		size_t n = arrived(k, now);
		total += n - k->off;
		if (n < k->len)
			break;
	}
	if (total)
		send_arrived(p, total, now);
	if (c->closing)
		return;
	if (!p->head && p->eof && !p->shut && now >= p->eof_at) {
		p->shut = true;
		p->sreq.data = p;
		if (uv_shutdown(&p->sreq, p->dst, on_shut) < 0) {
			conn_close(c, true);
			return;
		}
	}
	arm(p);
}

static void on_timer(uv_timer_t *t)
{
	deliver(t->data);
}

static void arm(struct pipe *p)
{
	uint64_t due;
	if (L.down || p->conn->closing || !p->conn->connected)
		return;
	if (p->head)
		due = next_arrival(p->head);
	else if (p->eof && !p->shut)
		due = p->eof_at;
	else {
		uv_timer_stop(&p->timer);
		return;
	}
	/* A timer fires once the loop's clock (whole milliseconds of the same monotonic
	 * clock) reaches its due time: aim at the millisecond that begins within SLACK_NS
	 * before the real due time, so that deliveries are neither early nor late on
	 * average. */
	uv_update_time(loop);
	uint64_t real = due + L.down_total;
	uint64_t target = (real > SLACK_NS ? real - SLACK_NS + MS - 1 : 0) / MS;
	uint64_t now = uv_now(loop);
	uv_timer_start(&p->timer, on_timer, target > now ? target - now : 0, 0);
}

/* ---- connections ---- */

static void on_handle_closed(uv_handle_t *h)
{
	struct conn *c = h->data == NULL ? NULL : ((struct pipe *)h->data)->conn;
	if (c && --c->open_handles == 0)
		free(c);
}

static void close_stream(uv_tcp_t *t, bool reset)
{
	if (!reset || uv_tcp_close_reset(t, on_handle_closed) != 0)
		uv_close((uv_handle_t *)t, on_handle_closed);
}

static void conn_close(struct conn *c, bool reset)
{
	if (c->closing)
		return;
	c->closing = true;
	for (int dir = UP; dir <= DOWN; dir++) {
		struct pipe *p = &c->pipe[dir];
		while (p->head) {
			struct chunk *k = p->head;
			p->head = k->next;
			free(k);
		}
		p->tail = NULL;
		L.queued[dir] -= p->queued;
		p->queued = 0;
		uv_close((uv_handle_t *)&p->timer, on_handle_closed);
	}
	close_stream(&c->client, reset);
	close_stream(&c->server, reset);
	if (c->prev)
		c->prev->next = c->next;
	else
		L.list = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		L.tail = c->prev;
	L.conns--;
	update_full(UP);
	update_full(DOWN);
}

static void on_connected(uv_connect_t *r, int status)
{
	struct conn *c = r->data;
	if (status == UV_ECANCELED || c->closing)
		return;
	if (status < 0) {
		fprintf(stderr, "ucgw-linkem: connect to %s: %s (the client is reset)\n", c->route->name,
		        uv_strerror(status));
		L.refused++;
		conn_close(c, true);
		return;
	}
	c->connected = true;
	uv_tcp_nodelay(&c->server, 1);
	for (int dir = UP; dir <= DOWN; dir++) {
		update_reading(&c->pipe[dir]);
		deliver(&c->pipe[dir]);
	}
}

static void start_connect(struct conn *c)
{
	c->connect_pending = false;
	c->creq.data = c;
	int rc = uv_tcp_connect(&c->creq, &c->server, (struct sockaddr *)&c->route->target, on_connected);
	if (rc < 0) {
		fprintf(stderr, "ucgw-linkem: connect to %s: %s\n", c->route->name, uv_strerror(rc));
		conn_close(c, true);
	}
}

static void pipe_init(struct conn *c, int dir, uint64_t handshake)
{
	struct pipe *p = &c->pipe[dir];
	p->conn = c;
	p->dir = dir;
	p->src = (uv_stream_t *)(dir == UP ? &c->client : &c->server);
	p->dst = (uv_stream_t *)(dir == UP ? &c->server : &c->client);
	p->src->data = p;
	p->not_before = link_now() + handshake;
	uv_timer_init(loop, &p->timer);
	p->timer.data = p;
}

static void on_connection(uv_stream_t *server, int status)
{
	if (status < 0)
		return;
	struct conn *c = calloc(1, sizeof *c);
	if (!c)
		return;
	c->route = server->data;
	uv_tcp_init(loop, &c->client);
	if (uv_tcp_init_ex(loop, &c->server, c->route->target.ss_family) < 0)
		uv_tcp_init(loop, &c->server);
	c->open_handles = 4;
	/* A client's bytes leave once its connect would have returned (1 RTT) and arrive
	 * half an RTT later; the server accepts when the handshake's last ACK arrives
	 * (1.5 RTT), and what it sends first arrives half an RTT after that. */
	pipe_init(c, UP, 3 * L.delay);
	pipe_init(c, DOWN, 4 * L.delay);
	if (uv_accept(server, (uv_stream_t *)&c->client) < 0) {
		c->closing = true;
		uv_close((uv_handle_t *)&c->client, on_handle_closed);
		uv_close((uv_handle_t *)&c->server, on_handle_closed);
		uv_close((uv_handle_t *)&c->pipe[UP].timer, on_handle_closed);
		uv_close((uv_handle_t *)&c->pipe[DOWN].timer, on_handle_closed);
		return;
	}
	int size = SOCKET_BUFFER;
	uv_recv_buffer_size((uv_handle_t *)&c->server, &size);
	uv_tcp_nodelay(&c->client, 1);
	c->prev = NULL;
	c->next = L.list;
	if (L.list)
		L.list->prev = c;
	else
		L.tail = c;
	L.list = c;
	L.conns++;
	L.accepted++;
	update_reading(&c->pipe[UP]);
	if (L.down)
		c->connect_pending = true; /* a dead radio carries no SYN either */
	else
		start_connect(c);
}

/* ---- outage ---- */

static void link_down(void)
{
	if (L.down)
		return;
	L.down_since = uv_hrtime();
	L.down = true;
	for (struct conn *c = L.list; c; c = c->next)
		for (int dir = UP; dir <= DOWN; dir++) {
			update_reading(&c->pipe[dir]);
			uv_timer_stop(&c->pipe[dir].timer);
		}
}

static void link_up(void)
{
	if (!L.down)
		return;
	L.down_total += uv_hrtime() - L.down_since;
	L.down = false;
	struct conn *next;
	for (struct conn *c = L.list; c; c = next) {
		next = c->next;
		if (c->connect_pending) {
			start_connect(c);
			continue;
		}
		for (int dir = UP; dir <= DOWN && !c->closing; dir++) {
			update_reading(&c->pipe[dir]);
			deliver(&c->pipe[dir]);
		}
	}
}

/* ---- control port: one command a line, one answer a line ---- */

struct control {
	uv_tcp_t tcp;
	char line[512];
	size_t len;
};

static void on_control_closed(uv_handle_t *h)
{
	free(h->data);
}

static void on_reply_written(uv_write_t *r, int status)
{
	free(r);
}

static void reply(struct control *ctl, const char *text)
{
	size_t n = strlen(text);
	uv_write_t *r = malloc(sizeof *r + n + 1);
	if (!r)
		return;
	char *copy = (char *)(r + 1);
	memcpy(copy, text, n);
	copy[n] = '\n';
	uv_buf_t b = uv_buf_init(copy, (unsigned)n + 1);
	if (uv_write(r, (uv_stream_t *)&ctl->tcp, &b, 1, on_reply_written) < 0)
		free(r);
}

static void describe(char *out, size_t len)
{
	uint64_t backlog[2] = {0, 0};
	for (struct conn *c = L.list; c; c = c->next)
		for (int dir = UP; dir <= DOWN; dir++)
			backlog[dir] += c->pipe[dir].backlog;
	snprintf(out, len,
	         "state %s profile %s delay_ms %" PRIu64 " rate_kbit %" PRIu64 " jitter_ms %" PRIu64
	         " buffer %" PRIu64 " connections %u accepted %" PRIu64 " refused %" PRIu64
	         " up_bytes %" PRIu64 " down_bytes %" PRIu64 " up_in %" PRIu64 " down_in %" PRIu64
	         " up_queued %" PRIu64 " down_queued %" PRIu64 " up_max_queued %" PRIu64
	         " down_max_queued %" PRIu64 " up_backlog %" PRIu64 " down_backlog %" PRIu64,
	         L.down ? "down" : "up", L.profile, L.delay / MS, L.rate_kbit, L.jitter / MS, L.buffer,
	         L.conns, L.accepted, L.refused, L.bytes_out[UP], L.bytes_out[DOWN], L.bytes_in[UP],
	         L.bytes_in[DOWN], L.queued[UP], L.queued[DOWN], L.max_queued[UP], L.max_queued[DOWN],
	         backlog[UP], backlog[DOWN]);
}

static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	if (!s || *s < '0' || *s > '9')
		return false;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return false;
	*out = v;
	return true;
}

static void link_changed(void)
{
	if (!L.buffer_set)
		L.buffer = default_buffer();
	update_full(UP);
	update_full(DOWN);
}

static const char CONTROL_HELP[] =
	"commands: down, up, stats, profile lan|lte|poor, delay MS, rate KBIT, jitter MS, buffer BYTES";

static void command(struct control *ctl, char *line)
{
	char out[1024];
	char *verb = strtok(line, " \t\r");
	char *arg = strtok(NULL, " \t\r");
	uint64_t v;
	if (!verb)
		return;
	if (strcmp(verb, "down") == 0)
		link_down();
	else if (strcmp(verb, "up") == 0)
		link_up();
	else if (strcmp(verb, "stats") == 0) {
		describe(out, sizeof out);
		reply(ctl, out);
		return;
	} else if (strcmp(verb, "profile") == 0) {
		const struct profile *pr = arg ? find_profile(arg) : NULL;
		if (!pr) {
			reply(ctl, "error: profile must be one of lan, lte, poor");
			return;
		}
		set_profile(pr);
		link_changed();
	} else if (strcmp(verb, "delay") == 0 && parse_u64(arg, 100000, &v)) {
		L.delay = v * MS;
		link_changed();
	} else if (strcmp(verb, "rate") == 0 && parse_u64(arg, 100000000, &v)) {
		L.rate_kbit = v;
		link_changed();
	} else if (strcmp(verb, "jitter") == 0 && parse_u64(arg, 100000, &v)) {
		L.jitter = v * MS;
	} else if (strcmp(verb, "buffer") == 0 && parse_u64(arg, UINT64_C(1) << 40, &v) && v > 0) {
		L.buffer = v;
		L.buffer_set = true;
		link_changed();
	} else {
		snprintf(out, sizeof out, "error: cannot do '%s%s%s' (%s)", verb, arg ? " " : "", arg ? arg : "",
		         CONTROL_HELP);
		reply(ctl, out);
		return;
	}
	reply(ctl, "ok");
}

static void on_control_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct control *ctl = h->data;
	*buf = uv_buf_init(ctl->line + ctl->len, (unsigned)(sizeof ctl->line - 1 - ctl->len));
}

static void on_control_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct control *ctl = s->data;
	if (n < 0) {
		uv_close((uv_handle_t *)s, on_control_closed);
		return;
	}
	ctl->len += (size_t)n;
	char *nl;
	while ((nl = memchr(ctl->line, '\n', ctl->len))) {
		*nl = '\0';
		size_t used = (size_t)(nl - ctl->line) + 1;
		command(ctl, ctl->line);
		memmove(ctl->line, ctl->line + used, ctl->len - used);
		ctl->len -= used;
	}
	if (ctl->len == sizeof ctl->line - 1) {
		reply(ctl, "error: line too long");
		uv_close((uv_handle_t *)s, on_control_closed);
	}
}

static void on_control_connection(uv_stream_t *server, int status)
{
	struct control *ctl = calloc(1, sizeof *ctl);
	if (status < 0 || !ctl) {
		free(ctl);
		return;
	}
	uv_tcp_init(loop, &ctl->tcp);
	ctl->tcp.data = ctl;
	if (uv_accept(server, (uv_stream_t *)&ctl->tcp) < 0) {
		uv_close((uv_handle_t *)&ctl->tcp, on_control_closed);
		return;
	}
	uv_read_start((uv_stream_t *)&ctl->tcp, on_control_alloc, on_control_read);
}

/* ---- start ---- */

static const char USAGE[] =
	"usage: ucgw-linkem LISTEN_PORT TARGET_HOST TARGET_PORT [--profile lan|lte|poor]\n"
	"                   [--delay-ms D] [--rate-kbit R] [--buffer-bytes B] [--jitter-ms J]\n"
	"                   [--control PORT] [--route LISTEN_PORT:TARGET_HOST:TARGET_PORT]...\n";

static const char HELP[] =
	"\n"
	"A TCP relay on 127.0.0.1:LISTEN_PORT to TARGET_HOST:TARGET_PORT that behaves like a\n"
	"network link, for tests and benchmarks. Each direction is a delay line: bytes are read\n"
	"while earlier ones are on their way, leave a bottleneck queue at the link's rate (one\n"
	"clock each way, shared by all connections) and arrive D ms after they leave. A bounded\n"
	"buffer each way stops reading from the senders when full, as a full bottleneck does.\n"
	"A connection's first bytes arrive after its handshake would have: 1.5 RTT (client), 2 RTT\n"
	"(server).\n"
	"\n"
	"  --profile NAME     lan: 1 ms each way, 100 Mbit/s; lte: 50 ms, 20 Mbit/s (default);\n"
	"                     poor: 150 ms, 5 Mbit/s\n"
	"  --delay-ms D       one-way delay, each way (overrides the profile's)\n"
	"  --rate-kbit R      rate each way in kbit/s, 0 for no limit (overrides the profile's)\n"
	"  --buffer-bytes B   bytes each way read but not yet delivered before reading stops\n"
	"                     (default: rate x RTT + 64 KiB)\n"
	"  --jitter-ms J      each chunk's delay varies by up to J ms either way; order is kept\n"
	"  --control PORT     a line protocol on 127.0.0.1:PORT: down (an outage: nothing moves,\n"
	"                     connections stay open, new ones are accepted and wait), up, stats,\n"
	"                     profile NAME, delay MS, rate KBIT, jitter MS, buffer BYTES\n"
	"  --route L:HOST:P   also relay 127.0.0.1:L to HOST:P over the same link (its rate and\n"
	"                     buffers shared), as one uplink reaches several servers\n"
	"\n"
	"Prints \"ready\" on stdout once it listens; SIGTERM or SIGINT stop it.\n";

static void usage_error(const char *fmt, const char *what)
{
	fprintf(stderr, "ucgw-linkem: ");
	fprintf(stderr, fmt, what);
	fprintf(stderr, "\n%s", USAGE);
	exit(2);
}

static unsigned parse_port(const char *s, const char *what)
{
	uint64_t v;
	if (!parse_u64(s, 65535, &v))
		usage_error("%s must be a port number (0-65535)", what);
	return (unsigned)v;
}

static uint64_t parse_number(const char *s, uint64_t max, const char *what)
{
	uint64_t v;
	if (!parse_u64(s, max, &v))
		usage_error("%s needs a whole number within its range", what);
	return v;
}

static void resolve_target(struct route *r, const char *host, unsigned port)
{
	char service[8];
	snprintf(service, sizeof service, "%u", port);
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res;
	int rc = getaddrinfo(host, service, &hints, &res);
	if (rc != 0) {
		fprintf(stderr, "ucgw-linkem: target %s: %s\n", host, gai_strerror(rc));
		exit(1);
	}
	/* A test tool: it relays to this machine only, never elsewhere. */
	bool loopback = (res->ai_family == AF_INET &&
			 (ntohl(((struct sockaddr_in *)res->ai_addr)->sin_addr.s_addr) >> 24) == 127) ||
			(res->ai_family == AF_INET6 &&
			 IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr));
	if (!loopback) {
		fprintf(stderr, "ucgw-linkem: target %s is not a loopback address (127.0.0.0/8 or ::1)\n", host);
		exit(1);
	}
	memcpy(&r->target, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	snprintf(r->name, sizeof r->name, "%s:%u", host, port);
}

static void add_route(const char *listen_port, const char *host, const char *target_port)
{
	struct route *r = &L.routes[L.nroutes++];
	r->listen_port = parse_port(listen_port, "LISTEN_PORT");
	resolve_target(r, host, parse_port(target_port, "TARGET_PORT"));
}

/* LISTEN_PORT:TARGET_HOST:TARGET_PORT; the host may be [::1] or ::1. */
static void add_route_spec(char *spec)
{
	char *first = strchr(spec, ':'), *last = strrchr(spec, ':');
	if (!first || first == last)
		usage_error("--route '%s' must be LISTEN_PORT:TARGET_HOST:TARGET_PORT", spec);
	*first = *last = '\0';
	char *host = first + 1;
	size_t n = strlen(host);
	if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
		host[n - 1] = '\0';
		host++;
	}
	add_route(spec, host, last + 1);
}

static void listen_on(uv_tcp_t *t, unsigned port, uv_connection_cb cb, const char *what)
{
	struct sockaddr_in a;
	uv_ip4_addr("127.0.0.1", (int)port, &a);
	uv_tcp_init(loop, t);
	int rc = uv_tcp_bind(t, (struct sockaddr *)&a, 0);
	if (rc == 0) {
		int size = SOCKET_BUFFER; /* inherited by the accepted sockets */
		uv_recv_buffer_size((uv_handle_t *)t, &size);
		rc = uv_listen((uv_stream_t *)t, 128, cb);
	}
	if (rc < 0) {
		fprintf(stderr, "ucgw-linkem: cannot listen on 127.0.0.1:%u for %s: %s\n", port, what,
		        uv_strerror(rc));
		exit(1);
	}
}

static unsigned bound_port(uv_tcp_t *t)
{
	struct sockaddr_in a;
	int len = sizeof a;
	uv_tcp_getsockname(t, (struct sockaddr *)&a, &len);
	return ntohs(a.sin_port);
}

static void on_signal(uv_signal_t *s, int signum)
{
	uv_stop(loop);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"profile", required_argument, NULL, 'p'},   {"delay-ms", required_argument, NULL, 'd'},
		{"rate-kbit", required_argument, NULL, 'r'}, {"buffer-bytes", required_argument, NULL, 'b'},
		{"jitter-ms", required_argument, NULL, 'j'}, {"control", required_argument, NULL, 'c'},
		{"route", required_argument, NULL, 'R'},     {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int64_t delay_ms = -1, rate = -1, control = -1;
	char *extra[MAX_ROUTES];
	int nextra = 0;
	set_profile(find_profile("lte"));
	int o;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 'p':
			if (!find_profile(optarg))
				usage_error("unknown profile '%s' (lan, lte, poor)", optarg);
			set_profile(find_profile(optarg));
			break;
		case 'd': delay_ms = (int64_t)parse_number(optarg, 100000, "--delay-ms"); break;
		case 'r': rate = (int64_t)parse_number(optarg, 100000000, "--rate-kbit"); break;
		case 'j': L.jitter = parse_number(optarg, 100000, "--jitter-ms") * MS; break;
		case 'c': control = parse_port(optarg, "--control"); break;
		case 'b':
			L.buffer = parse_number(optarg, UINT64_C(1) << 40, "--buffer-bytes");
			if (L.buffer == 0)
				usage_error("%s must be at least 1", "--buffer-bytes");
			L.buffer_set = true;
			break;
		case 'R':
			if (nextra == MAX_ROUTES - 1)
				usage_error("%s", "too many --route (15 at most)");
			extra[nextra++] = optarg;
			break;
		case 'h': printf("%s%s", USAGE, HELP); return 0;
		default: fprintf(stderr, "%s", USAGE); return 2;
		}
	}
	if (argc - optind != 3)
		usage_error("%s", "needs LISTEN_PORT TARGET_HOST TARGET_PORT");
	add_route(argv[optind], argv[optind + 1], argv[optind + 2]);
	for (int i = 0; i < nextra; i++)
		add_route_spec(extra[i]);
	if (delay_ms >= 0)
		L.delay = (uint64_t)delay_ms * MS;
	if (rate >= 0)
		L.rate_kbit = (uint64_t)rate;
	if (!L.buffer_set)
		L.buffer = default_buffer();
	L.rng = uv_hrtime() | 1;

	signal(SIGPIPE, SIG_IGN);
	loop = uv_default_loop();
	static uv_tcp_t control_listener;
	static uv_signal_t sigterm, sigint;
	for (int i = 0; i < L.nroutes; i++) {
		struct route *r = &L.routes[i];
		listen_on(&r->listener, r->listen_port, on_connection, r->name);
		r->listener.data = r;
	}
	if (control >= 0)
		listen_on(&control_listener, (unsigned)control, on_control_connection, "control");
	uv_signal_init(loop, &sigterm);
	uv_signal_start(&sigterm, on_signal, SIGTERM);
	uv_signal_init(loop, &sigint);
	uv_signal_start(&sigint, on_signal, SIGINT);
	fprintf(stderr, "ucgw-linkem: %" PRIu64 " ms each way, %" PRIu64 " kbit/s, buffer %" PRIu64 " bytes",
	        L.delay / MS, L.rate_kbit, L.buffer);
	for (int i = 0; i < L.nroutes; i++)
		fprintf(stderr, ", 127.0.0.1:%u -> %s", bound_port(&L.routes[i].listener), L.routes[i].name);
	if (control >= 0)
		fprintf(stderr, ", control 127.0.0.1:%u", bound_port(&control_listener));
	fprintf(stderr, "\n");
	printf("ready\n");
	fflush(stdout);
	uv_run(loop, UV_RUN_DEFAULT);
	return 0;
}
