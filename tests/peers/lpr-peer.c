/* lpr-peer: a stand-in for the LPR server in tests and benchmarks, on
 * libwebsockets: HTTP/1.1 keep-alive POSTs and WebSocket messages on one port,
 * each recorded as one JSON line (one write() each), answered as the current
 * mode says. See --help. */
#include <fcntl.h>
#include <getopt.h>
#include <libwebsockets.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/compress.h"

enum mode { M_200, M_400, M_401, M_429, M_503, M_STALL, M_DROP };
static const char *const mode_names[] = { "200", "400", "401", "429", "503", "stall", "drop" };

static struct {
	int record_fd;
	enum mode mode, after;   /* after: the mode once `left` requests have passed */
	long left;               /* -1: no limit */
	bool ws_ack, no_deflate;
	long delay_us;            /* HTTP answers (not /_control/ ones) leave this long after the request */
	unsigned long http, ws, ws_conns;
	struct lws_context *ctx;
	volatile int stop;
	char *record_path;
} P = { .record_fd = -1, .left = -1, .ws_ack = true };

struct pss {                  /* per connection (HTTP request or WebSocket) */
	char path[256], id[80], ua[128], ct[80], auth[256], apikey[256];
	char ce[64];               /* HTTP: Content-Encoding; WebSocket: the extensions the client offered */
	size_t wire_len;           /* HTTP: the body's length as it came, before decoding */
	char *body;
	size_t len, cap;
	int status;
	bool control, stall;
	char *resp;
	size_t resp_len;
	char **acks;               /* WebSocket: replies waiting to be written */
	size_t nacks, capacks;
};

/* ---- modes ---- */

static enum mode take_mode(void)
{
	enum mode m = P.mode;
	if (P.left > 0 && --P.left == 0) {
		P.mode = P.after;
		P.left = -1;
	}
	return m;
}

static int set_mode(const char *s)
{
	char word[16];
	long n = -1;
	snprintf(word, sizeof word, "%s", s);
	char *x = strchr(word, 'x');
	if (x) {
		*x = '\0';
		n = strtol(x + 1, NULL, 10);
	}
	word[strcspn(word, " \r\n")] = '\0';
	for (int i = 0; i <= M_DROP; i++)
		if (strcmp(word, mode_names[i]) == 0) {
			if (n > 0) {
				P.after = P.left > 0 ? P.after : P.mode;
				P.left = n;
			} else {
				P.left = -1;
			}
			P.mode = (enum mode)i;
			return 0;
		}
	return -1;
}

static int status_of(enum mode m)
{
	static const int codes[] = { 200, 400, 401, 429, 503, 0, 0 };
	return codes[m];
}

/* ---- recording ---- */

static void json_str(char **o, size_t *n, size_t *cap, const char *s, size_t len)
{
	if (*n + len * 6 + 8 > *cap) {
		*cap = (*n + len * 6 + 8) * 2;
		*o = realloc(*o, *cap);
	}
	char *p = *o + *n;
	*p++ = '"';
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			*p++ = '\\';
			*p++ = (char)c;
		} else if (c < 0x20) {
			p += sprintf(p, "\\u%04x", c);
		} else {
			*p++ = (char)c;
		}
	}
	*p++ = '"';
	*n = (size_t)(p - *o);
}

static void add(char **o, size_t *n, size_t *cap, const char *fmt, const char *v)
{
	char tmp[600];
	int len = snprintf(tmp, sizeof tmp, fmt, v);
	if (*n + (size_t)len + 1 > *cap) {
		*cap = (*n + (size_t)len + 1) * 2;
		*o = realloc(*o, *cap);
	}
	memcpy(*o + *n, tmp, (size_t)len);
	*n += (size_t)len;
}

static void field(char **o, size_t *n, size_t *cap, const char *key, const char *v)
{
	add(o, n, cap, ",\"%s\":", key);
	if (v && *v)
		json_str(o, n, cap, v, strlen(v));
	else
		add(o, n, cap, "%snull", "");
}

static bool valid_utf8(const char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)s[i];
		size_t need = c < 0x80 ? 0 : c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc2 ? 1 : 9;
		if (need == 9 || i + need >= n + (need ? 0 : 1))
			return need == 0;
		for (size_t k = 1; k <= need; k++)
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
		i += need + 1;
	}
	return true;
}

static void record(const char *proto, struct pss *s, const char *body, size_t len)
{
	if (P.record_fd < 0)
		return;
	size_t n = 0, cap = len * 2 + 1024;
	char *o = malloc(cap);
	struct timeval tv;
	gettimeofday(&tv, NULL);
	char head[64];
	snprintf(head, sizeof head, "{\"proto\":\"%s\"", proto);
	add(&o, &n, &cap, "%s", head);
	field(&o, &n, &cap, "path", s->path);
	field(&o, &n, &cap, "id", s->id);
	char num[64];
	snprintf(num, sizeof num, ",\"status\":%d,\"len\":%zu,\"t\":%lld", s->status, len,
		 (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000);
	add(&o, &n, &cap, "%s", num);
	field(&o, &n, &cap, "ct", s->ct);
	field(&o, &n, &cap, "ua", s->ua);
	field(&o, &n, &cap, "auth", s->auth);
	field(&o, &n, &cap, "xapikey", s->apikey);
	bool ws = strcmp(proto, "ws") == 0;
	field(&o, &n, &cap, ws ? "ext" : "ce", s->ce);
	if (!ws) {
		snprintf(num, sizeof num, ",\"wire_len\":%zu", s->wire_len ? s->wire_len : len);
		add(&o, &n, &cap, "%s", num);
	}
	if (valid_utf8(body, len)) {
		add(&o, &n, &cap, ",\"body\":%s", "");
		json_str(&o, &n, &cap, body, len);
	} else {
		size_t b64 = len * 4 / 3 + 8;
		char *enc = malloc(b64);
		lws_b64_encode_string(body, (int)len, enc, (int)b64);
		add(&o, &n, &cap, ",\"body_b64\":\"%s", "");
		add(&o, &n, &cap, "%s\"", enc);
		free(enc);
	}
	add(&o, &n, &cap, "%s}\n", "");
	if (write(P.record_fd, o, n) != (ssize_t)n)
		perror("lpr-peer: record");
	free(o);
}

/* ---- HTTP ---- */

static void copy_custom(struct lws *wsi, const char *name, char *out, size_t len)
{
	out[0] = '\0';
	int n = lws_hdr_custom_copy(wsi, out, (int)len, name, (int)strlen(name));
	if (n < 0)
		out[0] = '\0';
}

static void read_headers(struct lws *wsi, struct pss *s)
{
	lws_hdr_copy(wsi, s->ua, sizeof s->ua, WSI_TOKEN_HTTP_USER_AGENT);
	lws_hdr_copy(wsi, s->ct, sizeof s->ct, WSI_TOKEN_HTTP_CONTENT_TYPE);
	lws_hdr_copy(wsi, s->auth, sizeof s->auth, WSI_TOKEN_HTTP_AUTHORIZATION);
	if (lws_hdr_copy(wsi, s->ce, sizeof s->ce, WSI_TOKEN_HTTP_CONTENT_ENCODING) < 0)
		s->ce[0] = '\0';
	copy_custom(wsi, "idempotency-key:", s->id, sizeof s->id);
	copy_custom(wsi, "x-api-key:", s->apikey, sizeof s->apikey);
}

static int respond(struct lws *wsi, struct pss *s, int status, const char *body, bool retry_after)
{
	unsigned char buf[LWS_PRE + 1024], *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
	size_t blen = strlen(body);
	if (lws_add_http_common_headers(wsi, (unsigned)status, "application/json", (lws_filepos_t)blen, &p, end))
		return 1;
	if (retry_after && lws_add_http_header_by_name(wsi, (const unsigned char *)"retry-after:",
						       (const unsigned char *)"1", 1, &p, end))
		return 1;
	if (lws_finalize_write_http_header(wsi, start, &p, end))
		return 1;
	s->resp = strdup(body);
	s->resp_len = blen;
	if (P.delay_us > 0 && !s->control)
		lws_set_timer_usecs(wsi, P.delay_us); /* LWS_CALLBACK_TIMER asks to write then */
	else
		lws_callback_on_writable(wsi);
	return 0;
}

static int set_delay(const char *s)
{
	char *end;
	double ms = strtod(s, &end);
	while (*end == ' ' || *end == '\r' || *end == '\n')
		end++;
	if (end == s || *end || !(ms >= 0 && ms <= 60000))
		return -1;
	P.delay_us = (long)(ms * 1000);
	return 0;
}

static int control_request(struct lws *wsi, struct pss *s)
{
	char out[256];
	if (strcmp(s->path, "/_control/mode") == 0) {
		if (s->len) {
			s->body[s->len] = '\0';
			if (set_mode(s->body) < 0)
				return respond(wsi, s, 400, "{\"error\":\"unknown mode\"}", false);
		}
		snprintf(out, sizeof out, "{\"mode\":\"%s\",\"left\":%ld}", mode_names[P.mode], P.left);
	} else if (strcmp(s->path, "/_control/delay") == 0) {
		if (s->len) {
			s->body[s->len] = '\0';
			if (set_delay(s->body) < 0)
				return respond(wsi, s, 400, "{\"error\":\"delay: milliseconds from 0 to 60000\"}", false);
		}
		snprintf(out, sizeof out, "{\"delay_ms\":%.3f}", (double)P.delay_us / 1000);
	} else if (strcmp(s->path, "/_control/stats") == 0) {
		snprintf(out, sizeof out, "{\"http\":%lu,\"ws\":%lu,\"ws_connections\":%lu,\"mode\":\"%s\"}", P.http, P.ws,
			 P.ws_conns, mode_names[P.mode]);
	} else if (strcmp(s->path, "/_control/reset") == 0) {
		P.http = P.ws = 0;
		if (P.record_fd >= 0 && ftruncate(P.record_fd, 0) < 0)
			perror("ftruncate");
		snprintf(out, sizeof out, "{\"reset\":true}");
	} else {
		return respond(wsi, s, 404, "{\"error\":\"no such control\"}", false);
	}
	return respond(wsi, s, 200, out, false);
}

/* Content-Encoding gzip or zstd: the body as it was before, as a server that
 * decodes it would see it; wire_len keeps what came. */
static int decode_body(struct lws *wsi, struct pss *s)
{
	s->wire_len = 0;
	if (!s->ce[0] || strcmp(s->ce, "identity") == 0)
		return 0;
	int alg = compress_alg_parse(s->ce);
	if (alg <= COMPRESS_NONE)
		return respond(wsi, s, 415, "{\"error\":\"unsupported Content-Encoding\"}", false) ? -1 : 1;
	char err[200], out[300];
	size_t n;
	unsigned char *d = decompress_buf((enum compress_alg)alg, s->body, s->len, 64 << 20, &n, err, sizeof err);
	if (!d) {
		snprintf(out, sizeof out, "{\"error\":\"%s\"}", err);
		return respond(wsi, s, 400, out, false) ? -1 : 1;
	}
	free(s->body);
	s->wire_len = s->len;
	s->body = (char *)d;
	s->len = n;
	s->cap = n + 1;
	return 0;
}

static int lpr_record(struct lws *wsi, struct pss *s)
{
	int dec = decode_body(wsi, s);
	if (dec)
		return dec < 0 ? -1 : 0;
	enum mode m = take_mode();
	P.http++;
	s->status = status_of(m);
	if (m == M_STALL) {
		s->stall = true; /* never answered: the client must time out */
		return 0;
	}
	record("http", s, s->body ? s->body : "", s->len);
	if (m == M_DROP)
		return -1;
	static const char *const bodies[] = { NULL, "{\"error\":\"bad record: plate missing\"}",
					      "{\"error\":\"unauthorized\"}", "{\"error\":\"slow down\"}",
					      "{\"error\":\"service unavailable\"}" };
	if (m == M_200) {
		char ok[160];
		snprintf(ok, sizeof ok, "{\"ok\":true,\"id\":\"%s\"}", s->id);
		return respond(wsi, s, 200, ok, false);
	}
	return respond(wsi, s, s->status, bodies[m], m == M_429);
}

static void reset_pss(struct pss *s)
{
	if (!s)
		return;
	free(s->body);
	free(s->resp);
	s->body = s->resp = NULL;
	s->len = s->cap = s->resp_len = 0;
}

static int http_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	struct pss *s = user;
	if (!s && reason != LWS_CALLBACK_CLOSED_HTTP)
		return lws_callback_http_dummy(wsi, reason, user, in, len);
	switch (reason) {
	case LWS_CALLBACK_HTTP:
		reset_pss(s);
		snprintf(s->path, sizeof s->path, "%s", (const char *)in);
		s->control = strncmp(s->path, "/_control/", 10) == 0;
		read_headers(wsi, s);
		if (lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI))
			return 0; /* the body follows */
		if (s->control)
			return control_request(wsi, s);
		return respond(wsi, s, 405, "{\"error\":\"POST records here\"}", false);
	case LWS_CALLBACK_HTTP_BODY:
		if (s->len + len + 1 > s->cap) {
			s->cap = (s->len + len + 1) * 2;
			s->body = realloc(s->body, s->cap);
		}
		memcpy(s->body + s->len, in, len);
		s->len += len;
		return 0;
	case LWS_CALLBACK_HTTP_BODY_COMPLETION:
		return s->control ? control_request(wsi, s) : lpr_record(wsi, s);
	case LWS_CALLBACK_HTTP_WRITEABLE: {
		if (!s->resp)
			return 0;
		unsigned char *buf = malloc(LWS_PRE + s->resp_len + 1);
		memcpy(buf + LWS_PRE, s->resp, s->resp_len);
		int w = lws_write(wsi, buf + LWS_PRE, s->resp_len, LWS_WRITE_HTTP_FINAL);
		free(buf);
		free(s->resp);
		s->resp = NULL;
		if (w < 0)
			return -1;
		return lws_http_transaction_completed(wsi) ? -1 : 0;
	}
	case LWS_CALLBACK_TIMER: /* --delay-ms is over */
		if (s->resp)
			lws_callback_on_writable(wsi);
		return 0;
	case LWS_CALLBACK_CLOSED_HTTP:
	case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
		reset_pss(s);
		return 0;
	default:
		return lws_callback_http_dummy(wsi, reason, user, in, len);
	}
}

/* ---- WebSocket ---- */

static void find_id(const char *msg, size_t len, char *out, size_t outlen)
{
	out[0] = '\0';
	/* Only a top-level "id": skip over nested objects and strings. */
	int depth = 0;
	for (size_t i = 0; i < len; i++) {
		char c = msg[i];
		if (c == '{' || c == '[') {
			depth++;
		} else if (c == '}' || c == ']') {
			depth--;
		} else if (c == '"') {
			size_t j = i + 1;
			while (j < len && msg[j] != '"')
				j += msg[j] == '\\' ? 2 : 1;
			if (depth == 1 && j - i - 1 == 2 && strncmp(msg + i + 1, "id", 2) == 0) {
				size_t k = j + 1;
				while (k < len && (msg[k] == ' ' || msg[k] == ':'))
					k++;
				if (k < len && msg[k] == '"') {
					size_t e = k + 1;
					while (e < len && msg[e] != '"')
						e++;
					if (e - k - 1 < outlen) {
						memcpy(out, msg + k + 1, e - k - 1);
						out[e - k - 1] = '\0';
					}
					return;
				}
			}
			i = j;
		}
	}
}

static void queue_reply(struct lws *wsi, struct pss *s, char *reply)
{
	if (s->nacks == s->capacks) {
		s->capacks = s->capacks ? s->capacks * 2 : 64;
		s->acks = realloc(s->acks, s->capacks * sizeof *s->acks);
	}
	s->acks[s->nacks++] = reply;
	lws_callback_on_writable(wsi);
}

static int ws_message(struct lws *wsi, struct pss *s)
{
	enum mode m = take_mode();
	P.ws++;
	find_id(s->body ? s->body : "", s->len, s->id, sizeof s->id);
	s->status = status_of(m);
	record("ws", s, s->body ? s->body : "", s->len);
	s->len = 0;
	if (m == M_DROP)
		return -1;
	if (!P.ws_ack || !s->id[0] || m == M_STALL)
		return 0;
	char *reply = malloc(400);
	if (m == M_200)
		snprintf(reply, 400, "{\"ack\":\"%s\"}", s->id);
	else
		snprintf(reply, 400, "{\"nack\":\"%s\",\"status\":%d,\"error\":\"%s\"}", s->id, s->status,
			 m == M_400 ? "bad record: plate missing" : m == M_401 ? "unauthorized" : "unavailable");
	queue_reply(wsi, s, reply);
	return 0;
}

static int ws_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	struct pss *s = user;
	if (!s)
		return 0;
	switch (reason) {
	case LWS_CALLBACK_ESTABLISHED:
		memset(s, 0, sizeof *s);
		lws_hdr_copy(wsi, s->path, sizeof s->path, WSI_TOKEN_GET_URI);
		lws_hdr_copy(wsi, s->ua, sizeof s->ua, WSI_TOKEN_HTTP_USER_AGENT);
		lws_hdr_copy(wsi, s->auth, sizeof s->auth, WSI_TOKEN_HTTP_AUTHORIZATION);
		if (lws_hdr_copy(wsi, s->ce, sizeof s->ce, WSI_TOKEN_EXTENSIONS) < 0)
			s->ce[0] = '\0';
		copy_custom(wsi, "x-api-key:", s->apikey, sizeof s->apikey);
		P.ws_conns++;
		return 0;
	case LWS_CALLBACK_RECEIVE:
		if (s->len + len + 1 > s->cap) {
			s->cap = (s->len + len + 1) * 2;
			s->body = realloc(s->body, s->cap);
		}
		memcpy(s->body + s->len, in, len);
		s->len += len;
		if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi))
			return ws_message(wsi, s);
		return 0;
	case LWS_CALLBACK_SERVER_WRITEABLE: {
		size_t i = 0;
		for (; i < s->nacks && !lws_send_pipe_choked(wsi); i++) {
			size_t n = strlen(s->acks[i]);
			unsigned char *buf = malloc(LWS_PRE + n);
			memcpy(buf + LWS_PRE, s->acks[i], n);
			int w = lws_write(wsi, buf + LWS_PRE, n, LWS_WRITE_TEXT);
			free(buf);
			free(s->acks[i]);
			if (w < (int)n) {
				s->nacks = 0;
				return -1;
			}
		}
		if (i) {
			memmove(s->acks, s->acks + i, (s->nacks - i) * sizeof *s->acks);
			s->nacks -= i;
		}
		if (s->nacks)
			lws_callback_on_writable(wsi);
		return 0;
	}
	case LWS_CALLBACK_CLOSED:
		for (size_t i = 0; i < s->nacks; i++)
			free(s->acks[i]);
		free(s->acks);
		free(s->body);
		s->acks = NULL;
		s->body = NULL;
		s->nacks = s->capacks = 0;
		if (P.ws_conns)
			P.ws_conns--;
		return 0;
	default:
		return 0;
	}
}

/* One protocol serves both: a WebSocket client that names no subprotocol gets
 * the first one, so WebSocket reasons and HTTP reasons share this callback. */
static int peer_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	switch (reason) {
	case LWS_CALLBACK_ESTABLISHED:
	case LWS_CALLBACK_RECEIVE:
	case LWS_CALLBACK_SERVER_WRITEABLE:
	case LWS_CALLBACK_CLOSED:
		return ws_cb(wsi, reason, user, in, len);
	default:
		return http_cb(wsi, reason, user, in, len);
	}
}

static struct lws_protocols protocols[] = {
	{ "lpr", peer_cb, sizeof(struct pss), 65536, 0, NULL, 0 },
	{ NULL, NULL, 0, 0, 0, NULL, 0 },
};

/* permessage-deflate for WebSocket clients that offer it (not with --no-deflate). */
static const struct lws_extension extensions[] = {
	{ "permessage-deflate", lws_extension_callback_pm_deflate, "permessage-deflate" },
	{ NULL, NULL, NULL },
};

static void usage(FILE *out)
{
	fprintf(out, "usage: lpr-peer --port N [--host 127.0.0.1] [--record FILE] [--tls-cert C --tls-key K]\n"
		     "                [--mode 200|400|401|429|503|stall|drop] [--ws-ack message|none] [--delay-ms MS]\n"
		     "                [--no-deflate]\n\n"
		     "A stand-in LPR server for ucgw's tests: HTTP POSTs and WebSocket messages on one port,\n"
		     "each recorded as a JSON line in FILE. Port 0 picks a free port; prints 'listening on PORT'.\n"
		     "POST /_control/mode with a mode (or e.g. 503x3: the next 3 requests) changes the answers;\n"
		     "--delay-ms (or POST /_control/delay with MS) answers each HTTP record MS milliseconds after it\n"
		     "arrived, as a server across a network would (a round trip plus its own time; default 0).\n"
		     "GET /_control/stats counts; POST /_control/reset empties the record.\n"
		     "A POST with Content-Encoding gzip or zstd is decoded (recorded: ce, and wire_len, the length\n"
		     "that came; 415 for another encoding, 400 for a damaged body). WebSocket clients that offer\n"
		     "permessage-deflate get it (recorded: ext, what the client offered), unless --no-deflate.\n");
}

static void on_signal(int sig) { P.stop = 1; lws_cancel_service(P.ctx); }

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "port", required_argument, NULL, 'p' },     { "host", required_argument, NULL, 'H' },
		{ "record", required_argument, NULL, 'r' },   { "tls-cert", required_argument, NULL, 'c' },
		{ "tls-key", required_argument, NULL, 'k' },  { "mode", required_argument, NULL, 'm' },
		{ "ws-ack", required_argument, NULL, 'a' },   { "quiet", no_argument, NULL, 'q' },
		{ "delay-ms", required_argument, NULL, 'd' }, { "no-deflate", no_argument, NULL, 'D' },
		{ "help", no_argument, NULL, 'h' },           { NULL, 0, NULL, 0 },
	};
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof info);
	info.port = -1;
	const char *host = "127.0.0.1";
	int ch;
	while ((ch = getopt_long(argc, argv, "p:H:r:c:k:m:a:d:qh", lo, NULL)) != -1) {
		switch (ch) {
		case 'p': info.port = atoi(optarg); break;
		case 'H': host = optarg; break;
		case 'r': P.record_path = optarg; break;
		case 'c': info.ssl_cert_filepath = optarg; break;
		case 'k': info.ssl_private_key_filepath = optarg; break;
		case 'm':
			if (set_mode(optarg) < 0) {
				fprintf(stderr, "lpr-peer: unknown mode %s\n", optarg);
				return 2;
			}
			break;
		case 'a': P.ws_ack = strcmp(optarg, "none") != 0; break;
		case 'd':
			if (set_delay(optarg) < 0) {
				fprintf(stderr, "lpr-peer: --delay-ms: milliseconds from 0 to 60000, not %s\n", optarg);
				return 2;
			}
			break;
		case 'q': break;
		case 'D': P.no_deflate = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (info.port < 0) {
		usage(stderr);
		return 2;
	}
	if (P.record_path && (P.record_fd = open(P.record_path, O_WRONLY | O_CREAT | O_APPEND, 0644)) < 0) {
		perror(P.record_path);
		return 1;
	}
	lws_set_log_level(LLL_ERR, NULL);
	info.iface = host;
	info.protocols = protocols;
	if (!P.no_deflate)
		info.extensions = extensions;
	info.options = LWS_SERVER_OPTION_VALIDATE_UTF8 | (info.ssl_cert_filepath ? LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT : 0);
	info.pt_serv_buf_size = 65536;
	info.keepalive_timeout = 60;
	P.ctx = lws_create_context(&info);
	if (!P.ctx) {
		fprintf(stderr, "lpr-peer: cannot listen on %s:%d\n", host, info.port);
		return 1;
	}
	struct lws_vhost *vh = lws_get_vhost_by_name(P.ctx, "default");
	printf("listening on %d\n", vh ? lws_get_vhost_listen_port(vh) : info.port);
	fflush(stdout);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	signal(SIGPIPE, SIG_IGN);
	while (!P.stop && lws_service(P.ctx, 0) >= 0) {
	}
	lws_context_destroy(P.ctx);
	return 0;
}
