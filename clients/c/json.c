/* libucgw: the daemon's msgpack answers as JSON text, and the stats answer as
 * an array of structs. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ucgw_int.h"

static void put_str(FILE *f, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	fputc('"', f);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		switch (c) {
		case '"': fputs("\\\"", f); break;
		case '\\': fputs("\\\\", f); break;
		case '\n': fputs("\\n", f); break;
		case '\r': fputs("\\r", f); break;
		case '\t': fputs("\\t", f); break;
		default:
			if (c < 0x20 || c == 0x7f) {
				fputs("\\u00", f);
				fputc(hex[c >> 4], f);
				fputc(hex[c & 15], f);
			} else {
				fputc(c, f);
			}
		}
	}
	fputc('"', f);
}

static void put_b64(FILE *f, const unsigned char *p, size_t n)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	fputc('"', f);
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
		fputc(t[v >> 18 & 63], f);
		fputc(t[v >> 12 & 63], f);
		fputc(i + 1 < n ? t[v >> 6 & 63] : '=', f);
		fputc(i + 2 < n ? t[v & 63] : '=', f);
	}
	fputc('"', f);
}

static void put_double(FILE *f, double d)
{
	if (!isfinite(d)) {
		fputs("null", f);
		return;
	}
	char buf[40];
	snprintf(buf, sizeof buf, "%.15g", d);
	if (strcmp(buf, "-0") == 0)
		snprintf(buf, sizeof buf, "0");
	fputs(buf, f);
}

static void put(FILE *f, const msgpack_object *o);

/* A key that is not a string: its JSON text, as a string. */
static void put_key(FILE *f, const msgpack_object *k)
{
	if (k->type == MSGPACK_OBJECT_STR) {
		put_str(f, k->via.str.ptr, k->via.str.size);
		return;
	}
	char *text = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&text, &len);
	if (m) {
		put(m, k);
		fclose(m);
	}
	put_str(f, text ? text : "", text ? len : 0);
	free(text);
}

static void put(FILE *f, const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL: fputs("null", f); break;
	case MSGPACK_OBJECT_BOOLEAN: fputs(o->via.boolean ? "true" : "false", f); break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER: fprintf(f, "%" PRIu64, o->via.u64); break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: fprintf(f, "%" PRId64, o->via.i64); break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: put_double(f, o->via.f64); break;
	case MSGPACK_OBJECT_STR: put_str(f, o->via.str.ptr, o->via.str.size); break;
	case MSGPACK_OBJECT_BIN: put_b64(f, (const unsigned char *)o->via.bin.ptr, o->via.bin.size); break;
	case MSGPACK_OBJECT_ARRAY:
		fputc('[', f);
		for (uint32_t i = 0; i < o->via.array.size; i++) {
			if (i)
				fputc(',', f);
			put(f, &o->via.array.ptr[i]);
		}
		fputc(']', f);
		break;
	case MSGPACK_OBJECT_MAP:
		fputc('{', f);
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			if (i)
				fputc(',', f);
			put_key(f, &o->via.map.ptr[i].key);
			fputc(':', f);
			put(f, &o->via.map.ptr[i].val);
		}
		fputc('}', f);
		break;
	default: fputs("null", f); break; /* ext */
	}
}

int uc_json(const msgpack_object *o, char **out)
{
	size_t len = 0;
	*out = NULL;
	FILE *f = open_memstream(out, &len);
	if (!f)
		return -1;
	if (o)
		put(f, o);
	else
		fputs("null", f);
	if (fclose(f) != 0 || !*out) {
		free(*out);
		*out = NULL;
		return -1;
	}
	return 0;
}

static const msgpack_object *field(const msgpack_object *map, const char *key)
{
	size_t n = strlen(key);
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object *k = &map->via.map.ptr[i].key;
		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && memcmp(k->via.str.ptr, key, n) == 0)
			return &map->via.map.ptr[i].val;
	}
	return NULL;
}

static uint64_t u64_of(const msgpack_object *map, const char *key)
{
	const msgpack_object *v = field(map, key);
	if (!v)
		return 0;
	if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		return v->via.u64;
	if ((v->type == MSGPACK_OBJECT_FLOAT64 || v->type == MSGPACK_OBJECT_FLOAT32) && v->via.f64 > 0)
		return (uint64_t)v->via.f64;
	return 0;
}

static double f64_of(const msgpack_object *map, const char *key)
{
	const msgpack_object *v = field(map, key);
	if (!v)
		return 0;
	switch (v->type) {
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: return v->via.f64;
	case MSGPACK_OBJECT_POSITIVE_INTEGER: return (double)v->via.u64;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: return (double)v->via.i64;
	default: return 0;
	}
}

int uc_stats_parse(const msgpack_object *body, struct ucgw_stats **list, size_t *count)
{
	*list = NULL;
	*count = 0;
	if (!body || body->type != MSGPACK_OBJECT_MAP)
		return -2;
	uint32_t n = body->via.map.size;
	struct ucgw_stats *s = calloc(n ? n : 1, sizeof *s);
	if (!s)
		return -1;
	size_t k = 0;
	for (uint32_t i = 0; i < n; i++) {
		const msgpack_object *key = &body->via.map.ptr[i].key, *v = &body->via.map.ptr[i].val;
		if (key->type != MSGPACK_OBJECT_STR || v->type != MSGPACK_OBJECT_MAP)
			continue;
		struct ucgw_stats *p = &s[k++];
		size_t len = key->via.str.size < sizeof p->protocol ? key->via.str.size : sizeof p->protocol - 1;
		memcpy(p->protocol, key->via.str.ptr, len);
		const msgpack_object *en = field(v, "enabled");
		p->enabled = en && en->type == MSGPACK_OBJECT_BOOLEAN && en->via.boolean;
		p->success = u64_of(v, "success");
		p->failure = u64_of(v, "failure");
		p->retries = u64_of(v, "retries");
		p->fallback_out = u64_of(v, "fallback_out");
		p->fallback_in = u64_of(v, "fallback_in");
		p->bytes = u64_of(v, "bytes");
		p->dropped = u64_of(v, "dropped");
		p->expired = u64_of(v, "expired");
		p->dead = u64_of(v, "dead");
		p->queued = u64_of(v, "queued");
		p->inflight = u64_of(v, "inflight");
		p->success_rate = f64_of(v, "success_rate");
		p->p50_ms = f64_of(v, "p50_ms");
		p->p90_ms = f64_of(v, "p90_ms");
		p->p99_ms = f64_of(v, "p99_ms");
		p->max_ms = f64_of(v, "max_ms");
	}
	*list = s;
	*count = k;
	return 0;
}
