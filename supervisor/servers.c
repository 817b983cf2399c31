/* Each worker's servers, as it reports them (supervisor/servers.h). */
#include "supervisor/servers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "proto/proto.h"
#include "supervisor/http.h"
#include "supervisor/proctab.h"

#define SERVERS_SHOWN 16

static bool key_is(const msgpack_object *k, const char *name)
{
	size_t n = strlen(name);
	return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && memcmp(k->via.str.ptr, name, n) == 0;
}

static void copy_str(char *dst, size_t len, const msgpack_object *v)
{
	if (v->type != MSGPACK_OBJECT_STR) {
		dst[0] = '\0';
		return;
	}
	snprintf(dst, len, "%.*s", (int)v->via.str.size, v->via.str.ptr);
}

static uint64_t u64(const msgpack_object *v) { return v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? v->via.u64 : 0; }
static bool boolean(const msgpack_object *v) { return v->type == MSGPACK_OBJECT_BOOLEAN && v->via.boolean; }

static bool one_server(const msgpack_object *o, struct server_state *s)
{
	if (o->type != MSGPACK_OBJECT_MAP)
		return false;
	memset(s, 0, sizeof *s);
	for (uint32_t i = 0; i < o->via.map.size; i++) {
		const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
		if (key_is(k, "url"))
			copy_str(s->url, sizeof s->url, v);
		else if (key_is(k, "tried"))
			s->tried = boolean(v);
		else if (key_is(k, "up"))
			s->up = boolean(v);
		else if (key_is(k, "active"))
			s->active = boolean(v);
		else if (key_is(k, "rtt_us"))
			s->rtt_us = u64(v);
		else if (key_is(k, "delivered"))
			s->delivered = u64(v);
		else if (key_is(k, "failed"))
			s->failed = u64(v);
		else if (key_is(k, "downs"))
			s->downs = u64(v);
		else if (key_is(k, "detail"))
			copy_str(s->detail, sizeof s->detail, v);
	}
	return s->url[0] != '\0';
}

void servers_update(struct proc *p, const msgpack_object *body)
{
	const msgpack_object *list = NULL;
	if (body->type == MSGPACK_OBJECT_MAP)
		for (uint32_t i = 0; i < body->via.map.size; i++)
			if (key_is(&body->via.map.ptr[i].key, "servers"))
				list = &body->via.map.ptr[i].val;
	if (!list || list->type != MSGPACK_OBJECT_ARRAY || list->via.array.size > SERVERS_SHOWN) {
		log_warnx("worker %s: a health report whose servers are not a list of up to %d, ignored", p->name,
			  SERVERS_SHOWN);
		return;
	}
	uint32_t n = list->via.array.size;
	struct server_state *s = xcalloc(n ? n : 1, sizeof *s);
	for (uint32_t i = 0; i < n; i++)
		if (!one_server(&list->via.array.ptr[i], &s[i])) {
			log_warnx("worker %s: server %u of its health report has no url, ignored", p->name, i + 1);
			free(s);
			return;
		}
	free(p->servers);
	p->servers = s;
	p->nservers = n;
}

void servers_forget(struct proc *p)
{
	free(p->servers);
	p->servers = NULL;
	p->nservers = 0;
}

void servers_pack(msgpack_packer *pk, const struct proc *p)
{
	pk_key(pk, "servers");
	msgpack_pack_array(pk, p ? p->nservers : 0);
	for (unsigned i = 0; p && i < p->nservers; i++) {
		const struct server_state *s = &p->servers[i];
		msgpack_pack_map(pk, 9);
		pk_kv_str(pk, "url", s->url);
		pk_kv_bool(pk, "tried", s->tried);
		pk_kv_bool(pk, "up", s->up);
		pk_kv_bool(pk, "active", s->active);
		pk_kv_u64(pk, "rtt_us", s->rtt_us);
		pk_kv_u64(pk, "delivered", s->delivered);
		pk_kv_u64(pk, "failed", s->failed);
		pk_kv_u64(pk, "downs", s->downs);
		pk_kv_str(pk, "detail", s->detail);
	}
}

/* A label value: '\\', '"' and newlines escaped (the Prometheus text format). */
static void label(char *out, size_t len, const char *s)
{
	size_t o = 0;
	for (; *s && o + 3 < len; s++) {
		if (*s == '\\' || *s == '"' || *s == '\n') {
			out[o++] = '\\';
			out[o++] = *s == '\n' ? 'n' : *s;
		} else {
			out[o++] = *s;
		}
	}
	out[o] = '\0';
}

enum field { F_UP, F_ACTIVE, F_RTT, F_DELIVERED, F_FAILED, F_DOWNS };

static void family(struct strbuf *b, const char *name, const char *type, const char *help, enum field f)
{
	http_sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
	for (struct proc *p = proctab_first(); p; p = p->next)
		for (unsigned i = 0; i < p->nservers; i++) {
			const struct server_state *s = &p->servers[i];
			char url[600];
			label(url, sizeof url, s->url);
			http_sb_printf(b, "%s{protocol=\"%s\",server=\"%s\"} ", name, p->name, url);
			switch (f) {
			case F_UP: http_sb_printf(b, "%d\n", s->up); break;
			case F_ACTIVE: http_sb_printf(b, "%d\n", s->active); break;
			case F_RTT: http_sb_printf(b, "%.6f\n", (double)s->rtt_us / 1e6); break;
			case F_DELIVERED: http_sb_printf(b, "%llu\n", (unsigned long long)s->delivered); break;
			case F_FAILED: http_sb_printf(b, "%llu\n", (unsigned long long)s->failed); break;
			case F_DOWNS: http_sb_printf(b, "%llu\n", (unsigned long long)s->downs); break;
			}
		}
}

void servers_metrics(struct strbuf *b)
{
	family(b, "ucgw_server_up", "gauge", "1 while the worker reaches this server of its list.", F_UP);
	family(b, "ucgw_server_active", "gauge", "1 for the server(s) the worker sends to now (servers_policy).",
	       F_ACTIVE);
	family(b, "ucgw_server_rtt_seconds", "gauge", "Recent mean round trip to this server, as its worker measures it.",
	       F_RTT);
	family(b, "ucgw_server_delivered_total", "counter",
	       "Messages this server acknowledged (since the worker started).", F_DELIVERED);
	family(b, "ucgw_server_failed_total", "counter",
	       "Attempts that failed on this server (since the worker started); a failed attempt goes to the next server.",
	       F_FAILED);
	family(b, "ucgw_server_downs_total", "counter", "Times this server was found down (since the worker started).",
	       F_DOWNS);
}

void servers_json(struct strbuf *b, const struct proc *p)
{
	http_sb_printf(b, ",\"servers\":[");
	for (unsigned i = 0; i < p->nservers; i++) {
		const struct server_state *s = &p->servers[i];
		http_sb_printf(b, "%s{\"url\":", i ? "," : "");
		http_sb_json_str(b, s->url);
		http_sb_printf(b, ",\"tried\":%s,\"up\":%s,\"active\":%s,\"rtt_ms\":%.3f,\"delivered\":%llu,\"failed\":%llu,\"downs\":%llu,"
			       "\"detail\":",
			       s->tried ? "true" : "false", s->up ? "true" : "false", s->active ? "true" : "false",
			       (double)s->rtt_us / 1000,
			       (unsigned long long)s->delivered, (unsigned long long)s->failed, (unsigned long long)s->downs);
		http_sb_json_str(b, s->detail);
		http_sb_printf(b, "}");
	}
	http_sb_printf(b, "]");
}
