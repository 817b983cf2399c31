/* libucgw: a blocking and non-blocking client of the control socket, on the
 * same codec as the daemon (proto/). */
#include "ucgw.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl/json.h"
#include "ipc/sendall.h"
#include "proto/proto.h"

struct pending {
	uint64_t seq;
	ucgw_callback cb;
	void *arg;
	struct pending *next;
};

struct ucgw {
	int fd;
	pthread_mutex_t lock;
	uint64_t seq;
	char *auth;
	char *buf;
	size_t len, cap;
	msgpack_zone zone;
	char *frame;       /* the frame decoded last: its fields point into it */
	struct pending *pending;
	char last_error[512];
};

const char *ucgw_strerror(int e)
{
	static const char *const text[] = { "ok", "bad argument", "ucgwd is not running", "connection to ucgwd broken",
					    "unreadable answer from ucgwd", "refused by ucgwd", "not delivered",
					    "out of memory" };
	return e >= 0 && e <= UCGW_E_NOMEM ? text[e] : "unknown error";
}

const char *ucgw_last_error(const ucgw_t *gw) { return gw ? gw->last_error : ""; }
int ucgw_fd(const ucgw_t *gw) { return gw ? gw->fd : -1; }

ucgw_t *ucgw_open(const char *path, const char *auth, int *error)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int dummy;
	error = error ? error : &dummy;
	if (!path || strlen(path) >= sizeof sa.sun_path) {
		*error = UCGW_E_ARG;
		return NULL;
	}
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		if (fd >= 0)
			close(fd);
		*error = UCGW_E_CONNECT;
		return NULL;
	}
	ucgw_t *gw = calloc(1, sizeof *gw);
	if (!gw) {
		close(fd);
		*error = UCGW_E_NOMEM;
		return NULL;
	}
	gw->fd = fd;
	pthread_mutex_init(&gw->lock, NULL);
	msgpack_zone_init(&gw->zone, 4096);
	const char *a = auth ? auth : getenv("UCGW_API_KEY") ? getenv("UCGW_API_KEY") : getenv("UCGW_JWT");
	gw->auth = a ? strdup(a) : NULL;
	*error = UCGW_OK;
	return gw;
}

void ucgw_close(ucgw_t *gw)
{
	if (!gw)
		return;
	close(gw->fd);
	while (gw->pending) {
		struct pending *p = gw->pending;
		gw->pending = p->next;
		free(p);
	}
	msgpack_zone_destroy(&gw->zone);
	pthread_mutex_destroy(&gw->lock);
	free(gw->auth);
	free(gw->buf);
	free(gw->frame);
	free(gw);
}

/* ---- the wire ---- */

static void pack_opts(msgpack_packer *pk, const struct ucgw_send_opts *o, int extra, bool file)
{
	struct ucgw_send_opts d = { 0 };
	o = o ? o : &d;
	int n = 4 + extra + !!o->topic + !!o->endpoint + !!o->remote_name + (o->ttl_s > 0) + (!file);
	msgpack_pack_map(pk, (size_t)n);
	pk_kv_str(pk, "protocol", o->protocol ? o->protocol : "auto");
	pk_kv_str(pk, "priority", o->priority ? o->priority : "normal");
	pk_kv_bool(pk, "wait", o->wait);
	pk_kv_bool(pk, "encrypt", o->encrypt);
	if (!file)
		pk_kv_str(pk, "format", o->format ? o->format : "json");
	if (o->topic)
		pk_kv_str(pk, "topic", o->topic);
	if (o->endpoint)
		pk_kv_str(pk, "endpoint", o->endpoint);
	if (o->remote_name)
		pk_kv_str(pk, "remote_name", o->remote_name);
	if (o->ttl_s > 0)
		pk_kv_u64(pk, "ttl_s", (uint64_t)o->ttl_s);
}

static int send_request(ucgw_t *gw, const char *name, const msgpack_sbuffer *args, int fd, uint64_t *seq)
{
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	struct msg m = { .type = MSG_REQUEST, .version = UCGW_PROTO_VERSION, .seq = ++gw->seq, .name = name,
			 .auth = gw->auth };
	if (args && args->size) {
		m.body_raw = args->data;
		m.body_raw_len = args->size;
	}
	msg_encode(&m, &sb);
	int rc = send_all_fd(gw->fd, sb.data, sb.size, fd) < 0 ? UCGW_E_IO : UCGW_OK;
	msgpack_sbuffer_destroy(&sb);
	*seq = m.seq;
	return rc;
}

static void fill_outcome(const struct msg *m, struct ucgw_outcome *out)
{
	memset(out, 0, sizeof *out);
	obj_get_str(m->body, "id", out->id, sizeof out->id);
	obj_get_str(m->body, "status", out->status, sizeof out->status);
	obj_get_str(m->body, "protocol", out->protocol, sizeof out->protocol);
	obj_get_str(m->body, "error", out->error, sizeof out->error);
	uint64_t a = 0;
	obj_get_u64(m->body, "attempts", &a);
	out->attempts = (unsigned)a;
	if (!m->ok)
		snprintf(out->error, sizeof out->error, "%s", m->error ? m->error : "refused");
}

static int status_of(const struct msg *m, const struct ucgw_outcome *out)
{
	if (!m->ok)
		return UCGW_E_REFUSED;
	return strcmp(out->status, "failed") == 0 ? UCGW_E_FAILED : UCGW_OK;
}

/* Read frames; hand replies to async callbacks; stop at `want` (0: when no
 * more data is ready). Returns the frame for `want` in *m. */
static int pump(ucgw_t *gw, uint64_t want, struct msg *m, bool block)
{
	for (;;) {
		while (gw->len >= FRAME_HDR) {
			const unsigned char *h = (const unsigned char *)gw->buf;
			size_t flen = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
			if (gw->len < FRAME_HDR + flen)
				break;
			char err[128];
			free(gw->frame);
			if (!(gw->frame = malloc(flen)))
				return UCGW_E_NOMEM;
			memcpy(gw->frame, gw->buf + FRAME_HDR, flen);
			memmove(gw->buf, gw->buf + FRAME_HDR + flen, gw->len - FRAME_HDR - flen);
			gw->len -= FRAME_HDR + flen;
			msgpack_zone_clear(&gw->zone);
			if (msg_decode(gw->frame, flen, m, &gw->zone, err, sizeof err) < 0)
				return UCGW_E_PROTOCOL;
			if (m->type != MSG_REPLY)
				continue;
			if (want && m->seq == want)
				return UCGW_OK;
			for (struct pending **pp = &gw->pending; *pp; pp = &(*pp)->next)
				if ((*pp)->seq == m->seq) {
					struct pending *p = *pp;
					*pp = p->next;
					struct ucgw_outcome out;
					fill_outcome(m, &out);
					if (!m->ok)
						snprintf(gw->last_error, sizeof gw->last_error, "%s", out.error);
					p->cb(gw, p->seq, status_of(m, &out), &out, p->arg);
					free(p);
					break;
				}
		}
		struct pollfd pf = { gw->fd, POLLIN, 0 };
		int r = poll(&pf, 1, block ? -1 : 0);
		if (r == 0)
			return UCGW_OK;
		if (r < 0 && errno == EINTR)
			continue;
		if (gw->cap - gw->len < 65536) {
			size_t cap = gw->cap ? gw->cap * 2 : 131072;
			char *b = realloc(gw->buf, cap);
			if (!b)
				return UCGW_E_NOMEM;
			gw->buf = b;
			gw->cap = cap;
		}
		ssize_t n = recv(gw->fd, gw->buf + gw->len, gw->cap - gw->len, 0);
		if (n <= 0)
			return UCGW_E_IO;
		gw->len += (size_t)n;
	}
}

static int call(ucgw_t *gw, const char *name, const msgpack_sbuffer *args, int fd, struct ucgw_outcome *out,
		char **json)
{
	uint64_t seq;
	struct msg m;
	int rc = send_request(gw, name, args, fd, &seq);
	if (rc == UCGW_OK)
		rc = pump(gw, seq, &m, true);
	if (rc != UCGW_OK)
		return rc;
	struct ucgw_outcome tmp;
	out = out ? out : &tmp;
	fill_outcome(&m, out);
	if (!m.ok)
		snprintf(gw->last_error, sizeof gw->last_error, "%s", out->error);
	if (json && m.ok && m.body) {
		size_t len;
		FILE *f = open_memstream(json, &len);
		json_print(f, m.body);
		fclose(f);
	}
	return status_of(&m, out);
}

/* ---- the API ---- */

static int send_common(ucgw_t *gw, const void *data, size_t len, const struct ucgw_send_opts *o,
		       msgpack_sbuffer *sb)
{
	if (!gw || !data || !len)
		return UCGW_E_ARG;
	msgpack_packer pk;
	msgpack_sbuffer_init(sb);
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	pack_opts(&pk, o, 1, false);
	pk_key(&pk, "data");
	msgpack_pack_bin(&pk, len);
	msgpack_pack_bin_body(&pk, data, len);
	return UCGW_OK;
}

int ucgw_send(ucgw_t *gw, const void *data, size_t len, const struct ucgw_send_opts *o, struct ucgw_outcome *out)
{
	msgpack_sbuffer sb;
	int rc = send_common(gw, data, len, o, &sb);
	if (rc != UCGW_OK)
		return rc;
	pthread_mutex_lock(&gw->lock);
	rc = call(gw, "send", &sb, -1, out, NULL);
	pthread_mutex_unlock(&gw->lock);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

int ucgw_send_async(ucgw_t *gw, const void *data, size_t len, const struct ucgw_send_opts *o, ucgw_callback cb,
		    void *arg, uint64_t *request)
{
	msgpack_sbuffer sb;
	if (!cb)
		return UCGW_E_ARG;
	int rc = send_common(gw, data, len, o, &sb);
	if (rc != UCGW_OK)
		return rc;
	struct pending *p = calloc(1, sizeof *p);
	if (!p) {
		msgpack_sbuffer_destroy(&sb);
		return UCGW_E_NOMEM;
	}
	pthread_mutex_lock(&gw->lock);
	uint64_t seq = 0;
	rc = send_request(gw, "send", &sb, -1, &seq);
	if (rc == UCGW_OK) {
		p->seq = seq;
		p->cb = cb;
		p->arg = arg;
		p->next = gw->pending;
		gw->pending = p;
		if (request)
			*request = seq;
	} else {
		free(p);
	}
	pthread_mutex_unlock(&gw->lock);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

int ucgw_process(ucgw_t *gw)
{
	if (!gw)
		return UCGW_E_ARG;
	struct msg m;
	pthread_mutex_lock(&gw->lock);
	int rc = pump(gw, 0, &m, false);
	pthread_mutex_unlock(&gw->lock);
	return rc;
}

int ucgw_send_file(ucgw_t *gw, const char *path, const struct ucgw_send_opts *o, struct ucgw_outcome *out)
{
	if (!gw || !path)
		return UCGW_E_ARG;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		snprintf(gw->last_error, sizeof gw->last_error, "cannot open %s: %s", path, strerror(errno));
		if (out) {
			memset(out, 0, sizeof *out);
			snprintf(out->error, sizeof out->error, "%s", gw->last_error);
		}
		return UCGW_E_ARG;
	}
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	pack_opts(&pk, o, 2, true);
	char *abs = realpath(path, NULL);
	pk_kv_str(&pk, "path", abs ? abs : path);
	pk_kv_bool(&pk, "fd", true);
	free(abs);
	pthread_mutex_lock(&gw->lock);
	int rc = call(gw, "send-file", &sb, fd, out, NULL);
	pthread_mutex_unlock(&gw->lock);
	msgpack_sbuffer_destroy(&sb);
	close(fd);
	return rc;
}

int ucgw_stats_json(ucgw_t *gw, char **json)
{
	if (!gw || !json)
		return UCGW_E_ARG;
	*json = NULL;
	pthread_mutex_lock(&gw->lock);
	int rc = call(gw, "stats", NULL, -1, NULL, json);
	pthread_mutex_unlock(&gw->lock);
	return rc;
}
