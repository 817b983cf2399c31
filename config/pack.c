/* Protocol sections travel to their worker as msgpack: a map of every key in
 * schema order, unset keys as nil. The same configuration always packs to the
 * same bytes, so a reload finds the workers whose section changed by comparing
 * bytes. The worker reads them back with the small strict reader below rather
 * than msgpack-c's unpacker, which reserves memory for whatever count a header
 * claims before it has seen the elements. */
#include <msgpack.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "config/internal.h"

/* ---- packing ---- */

static void pack_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void pack_list(msgpack_packer *pk, const struct cfg_value *v)
{
	msgpack_pack_array(pk, v->nitems);
	for (size_t i = 0; i < v->nitems; i++)
		pack_str(pk, v->items[i]);
}

static void pack_map(msgpack_packer *pk, const struct cfg_key *k, const struct cfg_value *v)
{
	msgpack_pack_map(pk, v->nitems);
	for (size_t i = 0; i < v->nitems; i++) {
		pack_str(pk, v->items[i]);
		if (k->type == CFG_STRMAP)
			pack_str(pk, v->vals[i]);
		else
			pack_list(pk, &v->sub[i]);
	}
}

static void pack_value(msgpack_packer *pk, const struct cfg_key *k, const struct cfg_value *v)
{
	if (!v->set) {
		msgpack_pack_nil(pk);
		return;
	}
	switch (k->type) {
	case CFG_STR:
	case CFG_ENUM: pack_str(pk, v->s); break;
	case CFG_INT: msgpack_pack_int64(pk, v->i); break;
	case CFG_NUM: msgpack_pack_double(pk, v->d); break;
	case CFG_BOOL: v->b ? msgpack_pack_true(pk) : msgpack_pack_false(pk); break;
	case CFG_STRLIST: pack_list(pk, v); break;
	case CFG_STRMAP:
	case CFG_LISTMAP: pack_map(pk, k, v); break;
	}
}

void cfg_section_pack(struct cfg_section *sec)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, sec->schema->nkeys);
	for (size_t i = 0; i < sec->schema->nkeys; i++) {
		pack_str(&pk, sec->schema->keys[i].key);
		pack_value(&pk, &sec->schema->keys[i], &sec->values[i]);
	}
	free(sec->packed);
	sec->packed = sb.data; /* the sbuffer's malloc'd bytes, freed with the section */
	sec->packed_len = sb.size;
}

bool cfg_section_equal(const struct cfg_section *a, const struct cfg_section *b)
{
	return a->packed_len == b->packed_len && (a->packed_len == 0 || memcmp(a->packed, b->packed, a->packed_len) == 0);
}

/* ---- reading: every length is checked against the bytes left ---- */

struct reader {
	const unsigned char *p, *end;
	bool short_; /* ran out of bytes (as opposed to a wrong type) */
};

static bool have(struct reader *r, uint64_t n)
{
	if ((uint64_t)(r->end - r->p) >= n)
		return true;
	r->short_ = true;
	return false;
}

/* A big-endian unsigned number of n bytes. */
static bool rd_be(struct reader *r, size_t n, uint64_t *out)
{
	if (!have(r, n))
		return false;
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++)
		v = v << 8 | r->p[i];
	r->p += n;
	*out = v;
	return true;
}

static int rd_tag(struct reader *r)
{
	if (!have(r, 1))
		return -1;
	return *r->p++;
}

static bool rd_str(struct reader *r, char **out)
{
	int c = rd_tag(r);
	uint64_t n;
	if (c >= 0xa0 && c <= 0xbf)
		n = (uint64_t)c & 0x1f;
	else if (c < 0xd9 || c > 0xdb || !rd_be(r, (size_t)1 << (c - 0xd9), &n))
		return false; /* str8, str16, str32 have 1, 2, 4 length bytes */
	if (!have(r, n) || memchr(r->p, 0, n))
		return false;
	*out = xstrndup((const char *)r->p, n);
	r->p += n;
	return true;
}

static bool rd_int(struct reader *r, int64_t *out)
{
	int c = rd_tag(r);
	uint64_t u;
	if (c < 0)
		return false;
	if (c <= 0x7f || c >= 0xe0) { /* positive and negative fixint */
		*out = (int8_t)(uint8_t)c;
		return true;
	}
	if (c >= 0xcc && c <= 0xcf) { /* uint8..uint64 */
		if (!rd_be(r, (size_t)1 << (c - 0xcc), &u) || u > INT64_MAX)
			return false;
		*out = (int64_t)u;
		return true;
	}
	if (c >= 0xd0 && c <= 0xd3) { /* int8..int64: sign-extend from the width read */
		size_t n = (size_t)1 << (c - 0xd0);
		if (!rd_be(r, n, &u))
			return false;
		*out = n == 1 ? (int8_t)u : n == 2 ? (int16_t)u : n == 4 ? (int32_t)u : (int64_t)u;
		return true;
	}
	return false;
}

static bool rd_num(struct reader *r, double *out)
{
	int c = rd_tag(r);
	uint64_t u;
	if (c == 0xcb && rd_be(r, 8, &u)) {
		memcpy(out, &u, sizeof *out);
		return true;
	}
	if (c == 0xca && rd_be(r, 4, &u)) {
		uint32_t w = (uint32_t)u;
		float f;
		memcpy(&f, &w, sizeof f);
		*out = f;
		return true;
	}
	return false;
}

static bool rd_bool(struct reader *r, bool *out)
{
	int c = rd_tag(r);
	if (c != 0xc2 && c != 0xc3)
		return false;
	*out = c == 0xc3;
	return true;
}

/* An array or map header; the count must fit in the bytes left (every element
 * takes at least one byte), which bounds what a bad count can make us allocate. */
static bool rd_count(struct reader *r, bool map, uint32_t *out)
{
	int c = rd_tag(r);
	int fix = map ? 0x80 : 0x90, c16 = map ? 0xde : 0xdc;
	uint64_t n;
	if (c >= fix && c <= fix + 15)
		n = (uint64_t)(c - fix);
	else if ((c != c16 && c != c16 + 1) || !rd_be(r, c == c16 ? 2 : 4, &n))
		return false;
	if (!have(r, map ? 2 * n : n))
		return false;
	*out = (uint32_t)n;
	return true;
}

static bool rd_list(struct reader *r, struct cfg_value *v)
{
	uint32_t n;
	if (!rd_count(r, false, &n))
		return false;
	for (uint32_t i = 0; i < n; i++) {
		char *s;
		if (!rd_str(r, &s))
			return false;
		cfg_value_push(v, s);
		free(s);
	}
	return true;
}

static bool rd_map(struct reader *r, const struct cfg_key *k, struct cfg_value *v)
{
	uint32_t n;
	if (!rd_count(r, true, &n))
		return false;
	for (uint32_t i = 0; i < n; i++) {
		char *name, *val = NULL;
		if (!rd_str(r, &name))
			return false;
		bool ok = !cfg_value_has_name(v, name);
		if (ok && k->type == CFG_STRMAP && (ok = rd_str(r, &val)))
			cfg_value_push_pair(v, name, val);
		else if (ok && k->type == CFG_LISTMAP)
			ok = rd_list(r, cfg_value_push_list(v, name));
		free(name);
		free(val);
		if (!ok)
			return false;
	}
	return true;
}

static bool rd_value(struct reader *r, const struct cfg_key *k, struct cfg_value *v)
{
	if (have(r, 1) && *r->p == 0xc0) { /* nil: unset */
		r->p++;
		return true;
	}
	v->set = true;
	bool ok = false;
	switch (k->type) {
	case CFG_STR:
	case CFG_ENUM: ok = rd_str(r, &v->s); break;
	case CFG_INT: ok = rd_int(r, &v->i); break;
	case CFG_NUM: ok = rd_num(r, &v->d); break;
	case CFG_BOOL: ok = rd_bool(r, &v->b); break;
	case CFG_STRLIST: ok = rd_list(r, v); break;
	case CFG_STRMAP:
	case CFG_LISTMAP: ok = rd_map(r, k, v); break;
	}
	return ok && cfg_value_valid(k, v);
}

/* ---- the worker side ---- */

static int unpack_fail(struct cfg_section *out, char *err, size_t errlen, const char *fmt, ...) PRINTF(4, 5);
static int unpack_fail(struct cfg_section *out, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (errlen)
		vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	cfg_section_free(out);
	return -1;
}

/* One key: its name, then its value. */
static int unpack_entry(struct reader *r, struct cfg_section *out, bool *seen, char *err, size_t errlen)
{
	const struct cfg_schema_section *sc = out->schema;
	char *key = NULL, want[300];
	if (!rd_str(r, &key))
		return unpack_fail(out, err, errlen, "section '%s': %s", sc->name,
				   r->short_ ? "the bytes end inside a key" : "a key that is not a string");
	int idx = cfg_key_index(sc, key);
	int rc = 0;
	if (idx < 0) {
		rc = unpack_fail(out, err, errlen, "section '%s': unknown key '%.60s'", sc->name, key);
	} else if (seen[idx]) {
		rc = unpack_fail(out, err, errlen, "section '%s': key '%s' twice", sc->name, key);
	} else {
		seen[idx] = true;
		if (!rd_value(r, &sc->keys[idx], &out->values[idx])) {
			cfg_expected(&sc->keys[idx], want, sizeof want);
			rc = r->short_ ? unpack_fail(out, err, errlen, "section '%s': the bytes end inside '%s'", sc->name, key)
				       : unpack_fail(out, err, errlen, "section '%s': bad value for '%s', %s", sc->name, key,
						     want);
		}
	}
	free(key);
	return rc;
}

static int unpack_all(struct reader *r, struct cfg_section *out, bool *seen, char *err, size_t errlen)
{
	const struct cfg_schema_section *sc = out->schema;
	uint32_t n;
	if (!rd_count(r, true, &n))
		return unpack_fail(out, err, errlen, "section '%s': %s", sc->name,
				   r->short_ ? "the bytes end inside the map header" : "not a msgpack map");
	for (uint32_t i = 0; i < n; i++)
		if (unpack_entry(r, out, seen, err, errlen) < 0)
			return -1;
	for (size_t i = 0; i < sc->nkeys; i++)
		if (!seen[i]) /* the supervisor packs every key: a missing one means other bytes */
			return unpack_fail(out, err, errlen, "section '%s': key '%s' missing", sc->name, sc->keys[i].key);
	if (r->p != r->end)
		return unpack_fail(out, err, errlen, "section '%s': %zu bytes left over after the map", sc->name,
				   (size_t)(r->end - r->p));
	return 0;
}

int cfg_section_unpack(const char *name, const void *buf, size_t len, struct cfg_section *out, char *err,
		       size_t errlen)
{
	memset(out, 0, sizeof *out);
	const struct cfg_schema_section *sc = cfg_schema_find(name);
	if (!sc)
		return unpack_fail(out, err, errlen, "no section '%s' in the schema", name);
	out->schema = sc;
	out->present = true;
	out->values = xcalloc(sc->nkeys + 1, sizeof *out->values);
	bool *seen = xcalloc(sc->nkeys + 1, sizeof *seen);
	struct reader r = { .p = buf, .end = (const unsigned char *)buf + len };
	int rc = buf ? unpack_all(&r, out, seen, err, errlen)
		     : unpack_fail(out, err, errlen, "section '%s': no bytes", sc->name);
	free(seen);
	if (rc < 0)
		return -1;
	out->packed = xmalloc(len);
	memcpy(out->packed, buf, len);
	out->packed_len = len;
	return 0;
}
