/* ucgw-toyproto: the smallest protocol worker, added through its descriptor
 * alone (its row is in tests/tools/test_protocols.c; nothing else in ucgw
 * names it). It keeps one TCP connection to `toyproto.server` (IPv4
 * "address:port") and writes each message as a line "ID SIZE", then its bytes
 * and a newline; a job is answered ok once its bytes are written, retry when
 * the connection is not up or breaks. What workers/README.md says a protocol
 * takes, and no more. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "workers/worker.h"

static uv_loop_t *loop;
static struct sockaddr_in peer;
static uv_tcp_t *conn;      /* NULL while not connected */
static bool connecting;
static uv_timer_t retry_timer;

struct out {
	uv_write_t req;
	struct job *job;
	char *buf;
};

static void connect_now(uv_timer_t *t);

static void closed(uv_handle_t *h) { free(h); }

static void lost(const char *why)
{
	if (conn) {
		uv_close((uv_handle_t *)conn, closed);
		conn = NULL;
	}
	worker_health(false, 0, "toyproto: %s", why);
	uv_timer_start(&retry_timer, connect_now, 200, 0);
}

static void on_connect(uv_connect_t *req, int status)
{
	uv_tcp_t *tcp = (uv_tcp_t *)req->handle;
	free(req);
	connecting = false;
	if (status < 0) {
		uv_close((uv_handle_t *)tcp, closed);
		worker_health(false, 0, "toyproto: connect: %s", uv_strerror(status));
		uv_timer_start(&retry_timer, connect_now, 200, 0);
		return;
	}
	conn = tcp;
	worker_health(true, 0, "toyproto: connected");
}

static void connect_now(uv_timer_t *t)
{
	if (conn || connecting)
		return;
	uv_tcp_t *tcp = xcalloc(1, sizeof *tcp);
	uv_connect_t *req = xcalloc(1, sizeof *req);
	uv_tcp_init(loop, tcp);
	connecting = true;
	if (uv_tcp_connect(req, tcp, (const struct sockaddr *)&peer, on_connect) < 0) {
		free(req);
		connecting = false;
		uv_close((uv_handle_t *)tcp, closed);
		uv_timer_start(&retry_timer, connect_now, 200, 0);
	}
}

static int toy_init(uv_loop_t *l, const struct cfg_section *cfg, char *err, size_t errlen)
{
	loop = l;
	const char *server = cfg_str(cfg, "server");
	char host[64];
	const char *colon = strrchr(server, ':');
	if (!colon || colon == server || (size_t)(colon - server) >= sizeof host) {
		snprintf(err, errlen, "toyproto.server '%s' is not address:port", server);
		return UCGW_EXIT_CONFIG;
	}
	snprintf(host, sizeof host, "%.*s", (int)(colon - server), server);
	if (uv_ip4_addr(host, atoi(colon + 1), &peer) < 0) {
		snprintf(err, errlen, "toyproto.server '%s': not an IPv4 address and port", server);
		return UCGW_EXIT_CONFIG;
	}
	uv_timer_init(loop, &retry_timer);
	connect_now(NULL);
	return 0;
}

static void written(uv_write_t *req, int status)
{
	struct out *o = req->data;
	if (status < 0) {
		worker_result(o->job, JOB_RETRY, 0, "toyproto: write: %s", uv_strerror(status));
		if (conn)
			lost(uv_strerror(status));
	} else {
		worker_result(o->job, JOB_OK, 0, NULL);
	}
	free(o->buf);
	free(o);
}

/* The whole file, read from the descriptor the supervisor handed over. */
static char *read_file(struct job *job, size_t *len)
{
	char *buf = xmalloc(job->size + 1);
	size_t n = 0;
	ssize_t r;
	while (n < job->size && (r = pread(job->fd, buf + n, job->size - n, (off_t)n)) > 0)
		n += (size_t)r;
	*len = n;
	return buf;
}

static void toy_submit(struct job *job)
{
	if (!conn) {
		worker_result(job, JOB_RETRY, 0, "toyproto: not connected to %s", "the peer");
		return;
	}
	size_t len = job->payload_len;
	char *body = job->kind == JOB_FILE ? read_file(job, &len) : NULL;
	const char *bytes = body ? body : job->payload;
	char head[96];
	int hn = snprintf(head, sizeof head, "%s %zu\n", job->id, len);
	struct out *o = xcalloc(1, sizeof *o);
	o->job = job;
	o->buf = xmalloc((size_t)hn + len + 1);
	memcpy(o->buf, head, (size_t)hn);
	memcpy(o->buf + hn, bytes, len);
	o->buf[(size_t)hn + len] = '\n';
	free(body);
	uv_buf_t b = uv_buf_init(o->buf, (unsigned)((size_t)hn + len + 1));
	o->req.data = o;
	if (uv_write(&o->req, (uv_stream_t *)conn, &b, 1, written) < 0) {
		worker_result(job, JOB_RETRY, 0, "toyproto: cannot write");
		free(o->buf);
		free(o);
	}
}

static void toy_shutdown(void)
{
	uv_timer_stop(&retry_timer);
	uv_close((uv_handle_t *)&retry_timer, NULL);
	if (conn) {
		uv_close((uv_handle_t *)conn, closed);
		conn = NULL;
	}
}

static const struct worker_ops toy_ops = {
	.name = "toyproto",
	.init = toy_init,
	.submit = toy_submit,
	.shutdown = toy_shutdown,
};

WORKER_MAIN(toy_ops)
