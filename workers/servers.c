/* A protocol's servers and the policy between them (servers.h). */
#include "workers/servers.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "proto/proto.h"
#include "workers/worker.h"

#define REPORT_EVERY_MS 1000

struct server {
	const char *url;
	char shown[256];           /* the URL without user:password@ */
	bool up, known;            /* known: tried at least once */
	uint64_t down_since_ms;    /* when it last failed (0: never) */
	uint64_t rtt_us;           /* the recent mean */
	uint64_t rtt_sum, rtt_n;
	uint64_t delivered, failed, downs;
	char why[200];
};

static struct {
	struct server s[SERVERS_MAX];
	size_t n, current, turn;
	bool spread;
	uint64_t failback_ms, since_ms; /* since_ms: when failover left the first server */
	bool dirty;
	uint64_t reported_ms;
} S;

/* "scheme://user:pw@host/..." without "user:pw@": what may be shown. */
static void hide_userinfo(const char *url, char *out, size_t len)
{
	const char *h = strstr(url, "://");
	h = h ? h + 3 : url;
	const char *at = strchr(h, '@'), *slash = strchr(h, '/');
	if (at && (!slash || at < slash))
		snprintf(out, len, "%.*s%s", (int)(h - url), url, at + 1);
	else
		snprintf(out, len, "%s", url);
}

int servers_init(const struct cfg_section *cfg, const char *key, char *err, size_t errlen)
{
	size_t n;
	char *const *urls = cfg_servers(cfg, key, &n);
	if (n == 0 || n > SERVERS_MAX) {
		snprintf(err, errlen, "%s.%s: %zu servers, expected 1 to %d", cfg->schema->name, key, n, SERVERS_MAX);
		return -1;
	}
	memset(&S, 0, sizeof S);
	for (size_t i = 0; i < n; i++) {
		S.s[i].url = urls[i];
		hide_userinfo(urls[i], S.s[i].shown, sizeof S.s[i].shown);
	}
	S.n = n;
	S.spread = strcmp(cfg_str(cfg, "servers_policy"), "spread") == 0;
	S.failback_ms = (uint64_t)cfg_int(cfg, "failback_s") * 1000;
	return 0;
}

size_t servers_count(void) { return S.n; }
const char *servers_url(size_t i) { return S.s[i].url; }
bool servers_failover(void) { return !S.spread; }
bool servers_is_up(size_t i) { return S.s[i].up; }

/* Left out: failed within failback_s (spread), or failed and not yet back (failover). */
static bool resting(size_t i, uint64_t now)
{
	return S.s[i].down_since_ms && !S.s[i].up && now - S.s[i].down_since_ms < S.failback_ms;
}

size_t servers_pick(void)
{
	if (!S.spread || S.n == 1)
		return S.current;
	uint64_t now = now_ms();
	for (size_t k = 0; k < S.n; k++) {
		size_t i = (S.turn + k) % S.n;
		if (!resting(i, now)) {
			S.turn = i + 1;
			return i;
		}
	}
	size_t oldest = 0; /* every one failed lately: the one that failed longest ago */
	for (size_t i = 1; i < S.n; i++)
		if (S.s[i].down_since_ms < S.s[oldest].down_since_ms)
			oldest = i;
	return oldest;
}

size_t servers_next(size_t i)
{
	uint64_t now = now_ms();
	for (size_t k = 1; k < S.n; k++) {
		size_t j = (i + k) % S.n;
		if (!resting(j, now) || !S.s[j].known)
			return j;
	}
	return S.n > 1 ? (i + 1) % S.n : i;
}

void servers_up(size_t i, uint64_t rtt_us)
{
	struct server *s = &S.s[i];
	if (!s->up || !s->known) {
		log_info("server %zu of %zu (%s) is up", i + 1, S.n, s->shown);
		S.dirty = true;
	}
	s->up = s->known = true;
	s->why[0] = '\0';
	if (rtt_us) {
		s->rtt_sum += rtt_us;
		s->rtt_n++;
	}
}

void servers_down(size_t i, const char *why)
{
	struct server *s = &S.s[i];
	if (s->up || !s->known || strcmp(s->why, why) != 0)
		S.dirty = true;
	if (s->up || !s->known)
		s->downs++;
	if (s->up && S.n > 1)
		log_warnx("server %zu of %zu (%s) is down: %s", i + 1, S.n, s->shown, why);
	s->up = false;
	s->known = true;
	s->down_since_ms = now_ms();
	snprintf(s->why, sizeof s->why, "%s", why);
	if (!S.spread && i == S.current && S.n > 1) {
		S.current = servers_next(i);
		S.since_ms = now_ms();
		log_info("failover: server %zu of %zu (%s) is next", S.current + 1, S.n, S.s[S.current].shown);
	}
}

void servers_delivered(size_t i, uint64_t rtt_us)
{
	S.s[i].delivered++;
	S.dirty = true; /* reported at the next tick, once a second at most */
	servers_up(i, rtt_us);
}

void servers_failed(size_t i)
{
	S.s[i].failed++;
	S.dirty = true;
}

bool servers_failback_due(void)
{
	return !S.spread && S.current != 0 && now_ms() - S.since_ms >= S.failback_ms;
}

void servers_failback(void)
{
	log_info("failback: trying server 1 of %zu (%s) again after %llu s on server %zu", S.n, S.s[0].shown,
		 (unsigned long long)(S.failback_ms / 1000), S.current + 1);
	S.current = 0;
	S.since_ms = now_ms(); /* if it fails again, the next failback waits as long */
	S.dirty = true;
}

void servers_use(size_t i)
{
	if (S.spread || i == S.current || i >= S.n)
		return;
	if (S.current == 0)
		S.since_ms = now_ms(); /* failover leaves the first server: failback_s counts from here */
	S.current = i;
	S.dirty = true;
}

/* "host", "host:port", "[v6addr]" or "[v6addr]:port" (a bare IPv6 address
 * has no port). */
int servers_host_port(const char *s, int defport, const char *key, char *out, size_t outlen, int *outport, char *err,
		      size_t errlen)
{
	const char *host = s, *port = NULL;
	size_t hl = strlen(s);
	if (s[0] == '[') {
		const char *rb = strchr(s, ']');
		if (rb && rb[1] == ':')
			port = rb + 2;
		if (!rb || (rb[1] && rb[1] != ':')) {
			snprintf(err, errlen, "%s: '%s' is not [IPv6 address] or [IPv6 address]:port", key, s);
			return -1;
		}
		host = s + 1;
		hl = (size_t)(rb - host);
	} else {
		const char *c = strchr(s, ':');
		if (c && !strchr(c + 1, ':')) {
			hl = (size_t)(c - s);
			port = c + 1;
		}
	}
	if (hl == 0 || hl >= outlen) {
		snprintf(err, errlen, "%s: '%s' has no host name or one of more than %zu bytes", key, s, outlen - 1);
		return -1;
	}
	snprintf(out, outlen, "%.*s", (int)hl, host);
	*outport = defport;
	if (port) {
		char *end;
		long v = strtol(port, &end, 10);
		if (!*port || *end || v < 1 || v > 65535) {
			snprintf(err, errlen, "%s: the port in '%s' is not a number from 1 to 65535", key, s);
			return -1;
		}
		*outport = (int)v;
	}
	return 0;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

/* {"servers": [{"url", "tried", "up", "active", "rtt_us", "delivered", "failed", "downs", "detail"}...]} */
void servers_report(bool force)
{
	uint64_t now = now_ms();
	if (!force && !S.dirty)
		return;
	if (!force && now - S.reported_ms < REPORT_EVERY_MS)
		return;
	msgpack_sbuffer sb = { 0 };
	msgpack_packer pk;
	msgpack_packer_init(&pk, &sb, pk_write);
	msgpack_pack_map(&pk, 1);
	pack_str(&pk, "servers");
	msgpack_pack_array(&pk, S.n);
	for (size_t i = 0; i < S.n; i++) {
		struct server *s = &S.s[i];
		if (s->rtt_n)
			s->rtt_us = s->rtt_sum / s->rtt_n;
		s->rtt_sum = s->rtt_n = 0;
		bool active = S.spread ? s->up : i == S.current;
		msgpack_pack_map(&pk, 9);
		pack_str(&pk, "url");
		pack_str(&pk, s->shown);
		pack_str(&pk, "tried");
		s->known ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
		pack_str(&pk, "up");
		s->up ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
		pack_str(&pk, "active");
		active ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
		pack_str(&pk, "rtt_us");
		msgpack_pack_uint64(&pk, s->rtt_us);
		pack_str(&pk, "delivered");
		msgpack_pack_uint64(&pk, s->delivered);
		pack_str(&pk, "failed");
		msgpack_pack_uint64(&pk, s->failed);
		pack_str(&pk, "downs");
		msgpack_pack_uint64(&pk, s->downs);
		pack_str(&pk, "detail");
		pack_str(&pk, !s->known ? "not tried yet" : s->up ? "up" : s->why);
	}
	worker_health_body(sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	S.dirty = false;
	S.reported_ms = now;
}
