#include "proto/proto.h"

#include <stdio.h>
#include <string.h>

#include "common/log.h"

enum ftype { FT_U64, FT_STR, FT_BIN, FT_BOOL, FT_OBJ };

static const struct field {
	const char *key;
	size_t klen;
	enum ftype type;
	size_t off;  /* of the value in struct msg */
	size_t loff; /* of the length, for FT_BIN */
} fields[FLD_COUNT] = {
#define U(f, k, m) [f] = { k, sizeof k - 1, FT_U64, offsetof(struct msg, m), 0 }
#define S(f, k, m) [f] = { k, sizeof k - 1, FT_STR, offsetof(struct msg, m), 0 }
#define B(f, k, m) [f] = { k, sizeof k - 1, FT_BOOL, offsetof(struct msg, m), 0 }
	U(FLD_VERSION, "v", version), U(FLD_PID, "pid", pid), U(FLD_SEQ, "seq", seq),
	U(FLD_KIND, "kind", kind), U(FLD_SIZE, "size", size), U(FLD_STATUS, "status", status),
	U(FLD_RETRY_AFTER, "retry_after_ms", retry_after_ms), U(FLD_DONE, "done", done),
	U(FLD_RTT, "rtt_us", rtt_us), U(FLD_LOG_LEVEL, "log_level", log_level),
	U(FLD_MAX_FRAME, "max_frame", max_frame), U(FLD_PRIORITY, "priority", priority),
	U(FLD_ATTEMPT, "attempt", attempt), U(FLD_WIRE, "wire_bytes", wire_bytes), U(FLD_CODE, "code", code),
	U(FLD_ACCEPTED, "accepted_ms", accepted_ms),
	B(FLD_CLOCK_CORRECTED, "clock_corrected", clock_corrected),
	S(FLD_NAME, "name", name), S(FLD_ID, "id", id), S(FLD_TOPIC, "topic", topic),
	S(FLD_ENDPOINT, "endpoint", endpoint), S(FLD_REMOTE_NAME, "remote_name", remote_name),
	S(FLD_ERROR, "error", error), S(FLD_DETAIL, "detail", detail),
	S(FLD_DEVICE_ID, "device_id", device_id), S(FLD_AUTH, "auth", auth),
	[FLD_PAYLOAD] = { "payload", 7, FT_BIN, offsetof(struct msg, payload), offsetof(struct msg, payload_len) },
	[FLD_SECTION] = { "section", 7, FT_BIN, offsetof(struct msg, section), offsetof(struct msg, section_len) },
	B(FLD_HAS_FD, "has_fd", has_fd), B(FLD_CONNECTED, "connected", connected), B(FLD_OK, "ok", ok),
	[FLD_BODY] = { "body", 4, FT_OBJ, offsetof(struct msg, body), offsetof(struct msg, body_raw_len) },
#undef U
#undef S
#undef B
};

#define BIT(f) (1ull << (f))
_Static_assert(FLD_COUNT <= 64, "a message's fields are bits of a uint64_t");

/* Which fields each type allows, and which of those it requires. */
static const struct {
	const char *name;
	uint64_t allow, require;
} types[MSG_TYPE_MAX] = {
	[MSG_HELLO] = { "hello", BIT(FLD_VERSION) | BIT(FLD_NAME) | BIT(FLD_PID),
			BIT(FLD_VERSION) | BIT(FLD_NAME) | BIT(FLD_PID) },
	/* body (optional): {"sandbox": bool, "files": {key: bin contents | str why unreadable}} */
	[MSG_CONFIG] = { "config", BIT(FLD_VERSION) | BIT(FLD_DEVICE_ID) | BIT(FLD_SECTION) | BIT(FLD_MAX_FRAME) | BIT(FLD_LOG_LEVEL) |
					   BIT(FLD_BODY),
			 BIT(FLD_VERSION) | BIT(FLD_DEVICE_ID) | BIT(FLD_SECTION) | BIT(FLD_MAX_FRAME) | BIT(FLD_LOG_LEVEL) },
	[MSG_READY] = { "ready", BIT(FLD_DETAIL), 0 },
	[MSG_PING] = { "ping", BIT(FLD_SEQ), BIT(FLD_SEQ) },
	[MSG_PONG] = { "pong", BIT(FLD_SEQ), BIT(FLD_SEQ) },
	[MSG_JOB] = { "job",
		      BIT(FLD_SEQ) | BIT(FLD_ID) | BIT(FLD_KIND) | BIT(FLD_PAYLOAD) | BIT(FLD_TOPIC) | BIT(FLD_ENDPOINT) |
			      BIT(FLD_REMOTE_NAME) | BIT(FLD_SIZE) | BIT(FLD_HAS_FD) | BIT(FLD_PRIORITY) | BIT(FLD_ATTEMPT) |
			      BIT(FLD_ACCEPTED) | BIT(FLD_CLOCK_CORRECTED),
		      BIT(FLD_SEQ) | BIT(FLD_ID) | BIT(FLD_KIND) },
	[MSG_RESULT] = { "result", BIT(FLD_SEQ) | BIT(FLD_ID) | BIT(FLD_STATUS) | BIT(FLD_ERROR) | BIT(FLD_RETRY_AFTER) | BIT(FLD_RTT),
			 BIT(FLD_SEQ) | BIT(FLD_ID) | BIT(FLD_STATUS) },
	/* wire_bytes: a count of bytes on the wire (workers/wire.c), the rest repeating the last report;
	 * body (optional): {"servers": [{"url", "tried", "up", "active", "rtt_us", "delivered", "failed", "downs", "detail"}]} */
	[MSG_HEALTH] = { "health", BIT(FLD_CONNECTED) | BIT(FLD_DETAIL) | BIT(FLD_RTT) | BIT(FLD_WIRE) | BIT(FLD_BODY), BIT(FLD_CONNECTED) },
	[MSG_PROGRESS] = { "progress", BIT(FLD_SEQ) | BIT(FLD_ID) | BIT(FLD_DONE) | BIT(FLD_SIZE),
			   BIT(FLD_SEQ) | BIT(FLD_DONE) },
	[MSG_SHUTDOWN] = { "shutdown", 0, 0 },
	[MSG_REQUEST] = { "request", BIT(FLD_VERSION) | BIT(FLD_SEQ) | BIT(FLD_NAME) | BIT(FLD_BODY) | BIT(FLD_AUTH),
			  BIT(FLD_VERSION) | BIT(FLD_SEQ) | BIT(FLD_NAME) },
	/* code: from control version 2, on every error reply (not sent to a version 1 client) */
	[MSG_REPLY] = { "reply", BIT(FLD_VERSION) | BIT(FLD_SEQ) | BIT(FLD_OK) | BIT(FLD_ERROR) | BIT(FLD_CODE) | BIT(FLD_BODY),
			BIT(FLD_VERSION) | BIT(FLD_SEQ) | BIT(FLD_OK) },
	[MSG_EVENT] = { "event", BIT(FLD_SEQ) | BIT(FLD_NAME) | BIT(FLD_BODY), BIT(FLD_SEQ) | BIT(FLD_NAME) },
};

static bool type_known(uint64_t t) { return t > 0 && t < MSG_TYPE_MAX && types[t].name; }

const char *msg_type_str(enum msg_type t) { return type_known(t) ? types[t].name : "unknown"; }

static const char *const status_names[] = { "ok", "retry", "permfail" };
static const char *const prio_names[] = { "high", "normal", "low" };

static int name_index(const char *const *names, int n, const char *s)
{
	for (int i = 0; s && i < n; i++)
		if (strcmp(names[i], s) == 0)
			return i;
	return -1;
}

const char *job_status_str(enum job_status s) { return (unsigned)s < 3 ? status_names[s] : "unknown"; }
int job_status_parse(const char *s) { return name_index(status_names, 3, s); }
const char *priority_str(enum priority p) { return (unsigned)p < 3 ? prio_names[p] : "unknown"; }
int priority_parse(const char *s) { return name_index(prio_names, 3, s); }

void pk_grow(msgpack_sbuffer *sb, size_t len)
{
	size_t cap = sb->alloc ? sb->alloc : 512;
	while (cap - sb->size < len) {
		if (cap > SIZE_MAX / 2)
			fatalx("pk_write: a buffer of %zu bytes", sb->size + len);
		cap *= 2;
	}
	sb->data = xrealloc(sb->data, cap);
	sb->alloc = cap;
}

msgpack_sbuffer *pk_sbuffer(msgpack_packer *pk)
{
	if (pk->callback != pk_write)
		panic("pk_sbuffer: a packer not set up with pk_write");
	return pk->data;
}

int pk_write(void *data, const char *buf, size_t len)
{
	msgpack_sbuffer *sb = data;
	if (sb->alloc - sb->size < len)
		pk_grow(sb, len);
	char *d = sb->data + sb->size;
	/* Two overlapping fixed-size copies cover any length in their range,
	 * and a fixed-size memcpy compiles to plain moves. */
	if (len >= 8 && len <= 16) {
		uint64_t a, b;
		memcpy(&a, buf, 8);
		memcpy(&b, buf + len - 8, 8);
		memcpy(d, &a, 8);
		memcpy(d + len - 8, &b, 8);
	} else if (len >= 4 && len < 8) {
		uint32_t a, b;
		memcpy(&a, buf, 4);
		memcpy(&b, buf + len - 4, 4);
		memcpy(d, &a, 4);
		memcpy(d + len - 4, &b, 4);
	} else if (len > 0 && len < 4) {
		d[0] = buf[0];
		d[len / 2] = buf[len / 2];
		d[len - 1] = buf[len - 1];
	} else if (len) {
		memcpy(d, buf, len);
	}
	sb->size += len;
	return 0;
}

static bool field_set(const struct msg *m, int f)
{
	const char *base = (const char *)m;
	switch (fields[f].type) {
	case FT_U64: return *(const uint64_t *)(base + fields[f].off) != 0;
	case FT_STR: return *(const char *const *)(base + fields[f].off) != NULL;
	case FT_BIN: return *(const void *const *)(base + fields[f].off) != NULL;
	case FT_BOOL: return *(const bool *)(base + fields[f].off);
	case FT_OBJ: return m->body_raw != NULL;
	}
	return false;
}

static void pack_field(msgpack_sbuffer *sb, const struct msg *m, int f)
{
	const char *base = (const char *)m;
	mpw_strn(sb, fields[f].key, fields[f].klen);
	switch (fields[f].type) {
	case FT_U64: mpw_u64(sb, *(const uint64_t *)(base + fields[f].off)); break;
	case FT_STR: mpw_str(sb, *(const char *const *)(base + fields[f].off)); break;
	case FT_BOOL: mpw_bool(sb, *(const bool *)(base + fields[f].off)); break;
	case FT_BIN:
		mpw_bin(sb, *(const void *const *)(base + fields[f].off), *(const size_t *)(base + fields[f].loff));
		break;
	case FT_OBJ: /* already-packed msgpack: splice its bytes in */
		if (m->body_raw_len)
			memcpy(mpw(sb, m->body_raw_len), m->body_raw, m->body_raw_len);
		break;
	}
}

void msg_encode(const struct msg *m, msgpack_sbuffer *out)
{
	if (!type_known(m->type))
		panic("msg_encode: unknown type %d", m->type);
	uint64_t allow = types[m->type].allow, req = types[m->type].require;
	uint64_t emit = 0;
	for (uint64_t left = allow; left; left &= left - 1) {
		int f = __builtin_ctzll(left);
		/* Booleans and numbers that are required go out even when false/zero. */
		if ((req & BIT(f)) || field_set(m, f))
			emit |= BIT(f);
	}
	size_t start = out->size;
	mpw(out, FRAME_HDR);
	mpw_map(out, 1 + (uint32_t)__builtin_popcountll(emit));
	mpw_kv_u64(out, "t", m->type);
	for (uint64_t left = emit; left; left &= left - 1)
		pack_field(out, m, __builtin_ctzll(left));
	uint32_t len = (uint32_t)(out->size - start - FRAME_HDR);
	mpw_be((unsigned char *)out->data + start, len, 4);
}

/* Called for every key against every field name (find_field): a mismatch is
 * seen at the first differing byte, without measuring s first. */
static bool key_is(const msgpack_object *k, const char *s)
{
	if (k->type != MSGPACK_OBJECT_STR)
		return false;
	const char *p = k->via.str.ptr;
	size_t n = k->via.str.size;
	for (size_t i = 0; i < n; i++)
		if (s[i] != p[i] || !s[i])
			return false;
	return s[n] == '\0';
}

/* Every decoded key is looked up: no two field names share their length and
 * first letter, so those two pick the one candidate (the table is built before
 * main; a field name added that breaks this stops every program at once). */
#define BY_LEN 16
static signed char by_first[BY_LEN][32]; /* field + 1, or 0 */

__attribute__((constructor)) static void build_by_first(void)
{
	for (int f = 0; f < FLD_COUNT; f++) {
		size_t n = fields[f].klen;
		unsigned c = (unsigned char)fields[f].key[0] & 31;
		if (n >= BY_LEN || by_first[n][c])
			panic("proto: field '%s' shares its length and first letter with another", fields[f].key);
		by_first[n][c] = (signed char)(f + 1);
	}
}

static int find_field(const msgpack_object *k)
{
	if (k->type != MSGPACK_OBJECT_STR || k->via.str.size == 0)
		return -1;
	size_t n = k->via.str.size;
	const char *p = k->via.str.ptr;
	int f = n < BY_LEN ? by_first[n][(unsigned char)p[0] & 31] - 1 : -1;
	return f >= 0 && memcmp(fields[f].key, p, n) == 0 ? f : -1;
}

static char *zone_strdup(msgpack_zone *z, const char *p, size_t n)
{
	char *s = msgpack_zone_malloc(z, n + 1);
	if (!s)
		fatal("msgpack_zone_malloc");
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

static int decode_field(struct msg *m, int f, const msgpack_object *v, msgpack_zone *z)
{
	char *base = (char *)m;
	switch (fields[f].type) {
	case FT_U64:
		if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
			return -1;
		*(uint64_t *)(base + fields[f].off) = v->via.u64;
		return 0;
	case FT_STR:
		if (v->type == MSGPACK_OBJECT_NIL)
			return 0;
		if (v->type != MSGPACK_OBJECT_STR || memchr(v->via.str.ptr, '\0', v->via.str.size))
			return -1;
		*(char **)(base + fields[f].off) = zone_strdup(z, v->via.str.ptr, v->via.str.size);
		return 0;
	case FT_BOOL:
		if (v->type != MSGPACK_OBJECT_BOOLEAN)
			return -1;
		*(bool *)(base + fields[f].off) = v->via.boolean;
		return 0;
	case FT_BIN:
		if (v->type != MSGPACK_OBJECT_BIN)
			return -1;
		/* A zero-length blob still needs a non-NULL pointer: "present, empty". */
		*(const void **)(base + fields[f].off) = v->via.bin.size ? v->via.bin.ptr : (const void *)"";
		*(size_t *)(base + fields[f].loff) = v->via.bin.size;
		return 0;
	case FT_OBJ: {
		msgpack_object *o = msgpack_zone_malloc(z, sizeof *o);
		if (!o)
			fatal("msgpack_zone_malloc");
		*o = *v;
		m->body = o;
		return 0;
	}
	}
	return -1;
}

/* Walk the msgpack bytes once and check that every declared length and count
 * fits in what is left, before msgpack-c sees them: its unpacker reserves memory
 * for a container's declared count up front, so a 5-byte frame claiming four
 * billion elements would otherwise ask for tens of gigabytes. Hand-written
 * because msgpack-c has no such check. Returns false on anything inconsistent. */
static bool mp_skip(const unsigned char **pp, const unsigned char *end, int depth)
{
	const unsigned char *p = *pp;
	if (p >= end || depth > 64)
		return false;
	unsigned c = *p++;
	uint64_t n = 0, items = 0; /* n: bytes of payload; items: nested objects */
	size_t lenbytes = 0;
	if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
		/* fixint, nil, bool */
	} else if (c >= 0x80 && c <= 0x8f) {
		items = 2u * (c & 0x0f);
	} else if (c >= 0x90 && c <= 0x9f) {
		items = c & 0x0f;
	} else if (c >= 0xa0 && c <= 0xbf) {
		n = c & 0x1f;
	} else {
		switch (c) {
		case 0xc4: case 0xd9: lenbytes = 1; break;             /* bin8, str8 */
		case 0xc5: case 0xda: lenbytes = 2; break;             /* bin16, str16 */
		case 0xc6: case 0xdb: lenbytes = 4; break;             /* bin32, str32 */
		case 0xc7: lenbytes = 1; n = 1; break;                 /* ext8: +type */
		case 0xc8: lenbytes = 2; n = 1; break;
		case 0xc9: lenbytes = 4; n = 1; break;
		case 0xca: n = 4; break;
		case 0xcb: n = 8; break;
		case 0xcc: case 0xd0: n = 1; break;
		case 0xcd: case 0xd1: n = 2; break;
		case 0xce: case 0xd2: n = 4; break;
		case 0xcf: case 0xd3: n = 8; break;
		case 0xd4: n = 2; break;
		case 0xd5: n = 3; break;
		case 0xd6: n = 5; break;
		case 0xd7: n = 9; break;
		case 0xd8: n = 17; break;
		case 0xdc: lenbytes = 2; items = 1; break;             /* array16 */
		case 0xdd: lenbytes = 4; items = 1; break;             /* array32 */
		case 0xde: lenbytes = 2; items = 2; break;             /* map16 */
		case 0xdf: lenbytes = 4; items = 2; break;             /* map32 */
		default: return false;                                 /* 0xc1: never used */
		}
	}
	if (lenbytes) {
		if ((size_t)(end - p) < lenbytes)
			return false;
		uint64_t v = 0;
		for (size_t i = 0; i < lenbytes; i++)
			v = v << 8 | *p++;
		if (items)
			items *= v;
		else
			n += v;
	}
	if ((uint64_t)(end - p) < n || items > (uint64_t)(end - p))
		return false;
	p += n;
	for (uint64_t i = 0; i < items; i++)
		if (!mp_skip(&p, end, depth + 1))
			return false;
	*pp = p;
	return true;
}

/* The fast way to a frame's top-level map, in one pass over the bytes: its
 * keys and values are read here as msgpack-c would give them (a signed
 * encoding of a value >= 0 is a positive integer; strings and blobs point into
 * buf; maps and arrays are built in the zone), and only a float or an ext goes
 * through mp_skip and msgpack_unpack. msgpack-c's unpacker, which builds every
 * object through callbacks, and a checking pass over the whole frame before
 * it, were most of what decoding a frame cost. False at anything unusual (deep
 * nesting, a length past the end; bytes left over are the caller's to see):
 * msg_decode then takes the careful way, which finds the error and says it. */

static uint64_t be(const unsigned char *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

static void *zone_alloc(msgpack_zone *z, size_t n)
{
	void *p = msgpack_zone_malloc(z, n);
	if (!p)
		fatal("msgpack_zone_malloc");
	return p;
}

static bool fast_obj(const unsigned char **pp, const unsigned char *end, msgpack_zone *zone, msgpack_object *o,
		     int depth)
{
	const unsigned char *p = *pp;
	if (p >= end)
		return false;
	unsigned c = *p++;
	if (c <= 0x7f) {
		o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
		o->via.u64 = c;
	} else if (c >= 0xe0) {
		o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
		o->via.i64 = (int8_t)c;
	} else if (c >= 0xa0 && c <= 0xbf) {
		uint32_t n = c & 0x1f;
		if ((size_t)(end - p) < n)
			return false;
		o->type = MSGPACK_OBJECT_STR;
		o->via.str.size = n;
		o->via.str.ptr = (const char *)p;
		p += n;
	} else if (c == 0xc0) {
		o->type = MSGPACK_OBJECT_NIL;
	} else if (c == 0xc2 || c == 0xc3) {
		o->type = MSGPACK_OBJECT_BOOLEAN;
		o->via.boolean = c == 0xc3;
	} else if (c >= 0xcc && c <= 0xcf) {
		int n = 1 << (c - 0xcc);
		if (end - p < n)
			return false;
		o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
		o->via.u64 = be(p, n);
		p += n;
	} else if (c >= 0xd0 && c <= 0xd3) {
		int n = 1 << (c - 0xd0);
		if (end - p < n)
			return false;
		uint64_t u = be(p, n);
		p += n;
		int64_t v = n == 1 ? (int8_t)u : n == 2 ? (int16_t)u : n == 4 ? (int32_t)u : (int64_t)u;
		if (v >= 0) {
			o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
			o->via.u64 = (uint64_t)v;
		} else {
			o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
			o->via.i64 = v;
		}
	} else if ((c >= 0xc4 && c <= 0xc6) || (c >= 0xd9 && c <= 0xdb)) {
		int lb = 1 << (c >= 0xd9 ? c - 0xd9 : c - 0xc4);
		if (end - p < lb)
			return false;
		uint64_t n = be(p, lb);
		p += lb;
		if ((uint64_t)(end - p) < n)
			return false;
		if (c >= 0xd9) {
			o->type = MSGPACK_OBJECT_STR;
			o->via.str.size = (uint32_t)n;
			o->via.str.ptr = (const char *)p;
		} else {
			o->type = MSGPACK_OBJECT_BIN;
			o->via.bin.size = (uint32_t)n;
			o->via.bin.ptr = (const char *)p;
		}
		p += n;
	} else if ((c >= 0x80 && c <= 0x9f) || (c >= 0xdc && c <= 0xdf)) {
		/* A map or an array, built here as msgpack-c would (its elements in
		 * the zone). msgpack-c's unpacker fails past 32 levels where mp_skip
		 * allows 64: anything deep takes the careful way, to fail as always. */
		bool map = c <= 0x8f || c >= 0xde;
		uint64_t n = c & 0x0f;
		if (c >= 0xdc) {
			int lb = c == 0xdc || c == 0xde ? 2 : 4;
			if (end - p < lb)
				return false;
			n = be(p, lb);
			p += lb;
		}
		if (depth >= 15 || n > (uint64_t)(end - p) / (map ? 2 : 1)) /* every element takes a byte */
			return false;
		if (map) {
			msgpack_object_kv *kv = zone_alloc(zone, n * sizeof *kv + 1);
			for (uint64_t i = 0; i < n; i++)
				if (!fast_obj(&p, end, zone, &kv[i].key, depth + 1) ||
				    !fast_obj(&p, end, zone, &kv[i].val, depth + 1))
					return false;
			o->type = MSGPACK_OBJECT_MAP;
			o->via.map.size = (uint32_t)n;
			o->via.map.ptr = kv;
		} else {
			msgpack_object *el = zone_alloc(zone, n * sizeof *el + 1);
			for (uint64_t i = 0; i < n; i++)
				if (!fast_obj(&p, end, zone, &el[i], depth + 1))
					return false;
			o->type = MSGPACK_OBJECT_ARRAY;
			o->via.array.size = (uint32_t)n;
			o->via.array.ptr = el;
		}
	} else {
		/* A float or an ext (or a byte never used): checked, then built by msgpack-c. */
		const unsigned char *start = --p;
		if (!mp_skip(&p, end, depth))
			return false;
		size_t off = 0;
		if (msgpack_unpack((const char *)start, (size_t)(p - start), &off, zone, o) != MSGPACK_UNPACK_SUCCESS ||
		    off != (size_t)(p - start))
			return false;
	}
	*pp = p;
	return true;
}

static int decode_root(const msgpack_object *root, struct msg *m, msgpack_zone *zone, char *err, size_t errlen);

int msg_decode(const void *buf, size_t len, struct msg *m, msgpack_zone *zone, char *err, size_t errlen)
{
	memset(m, 0, sizeof *m);
	msgpack_object root;
	const unsigned char *p = buf;
	if (fast_obj(&p, p + len, zone, &root, 0) && p == (const unsigned char *)buf + len)
		return decode_root(&root, m, zone, err, errlen);
	p = buf;
	if (!mp_skip(&p, p + len, 0)) {
		snprintf(err, errlen, "not a msgpack object (truncated or inconsistent lengths)");
		return -1;
	}
	if (p != (const unsigned char *)buf + len) {
		snprintf(err, errlen, "%zu bytes left over after the message", len - (size_t)(p - (const unsigned char *)buf));
		return -1;
	}
	size_t off = 0;
	msgpack_unpack_return r = msgpack_unpack(buf, len, &off, zone, &root);
	if (r == MSGPACK_UNPACK_EXTRA_BYTES || (r == MSGPACK_UNPACK_SUCCESS && off != len)) {
		snprintf(err, errlen, "%zu bytes left over after the message", len - off);
		return -1;
	}
	if (r != MSGPACK_UNPACK_SUCCESS) {
		snprintf(err, errlen, "not a msgpack object (%s)", r == MSGPACK_UNPACK_CONTINUE ? "truncated" : "parse error");
		return -1;
	}
	return decode_root(&root, m, zone, err, errlen);
}

/* The checks of the fields, on the top-level object however it was built. */
static int decode_root(const msgpack_object *root, struct msg *m, msgpack_zone *zone, char *err, size_t errlen)
{
	if (root->type != MSGPACK_OBJECT_MAP) {
		snprintf(err, errlen, "message is not a map");
		return -1;
	}
	const msgpack_object_kv *kv = root->via.map.ptr;
	uint32_t n = root->via.map.size;
	const msgpack_object *t = NULL;
	for (uint32_t i = 0; i < n; i++)
		if (key_is(&kv[i].key, "t")) {
			if (t) {
				snprintf(err, errlen, "duplicate key 't'");
				return -1;
			}
			t = &kv[i].val;
		}
	if (!t || t->type != MSGPACK_OBJECT_POSITIVE_INTEGER || !type_known(t->via.u64)) {
		snprintf(err, errlen, "missing or unknown message type");
		return -1;
	}
	m->type = (enum msg_type)t->via.u64;
	uint64_t allow = types[m->type].allow;
	for (uint32_t i = 0; i < n; i++) {
		if (key_is(&kv[i].key, "t"))
			continue;
		int f = find_field(&kv[i].key);
		if (f < 0 || !(allow & BIT(f))) {
			snprintf(err, errlen, "%s: unexpected field '%.*s'", types[m->type].name,
				 kv[i].key.type == MSGPACK_OBJECT_STR ? (int)kv[i].key.via.str.size : 1,
				 kv[i].key.type == MSGPACK_OBJECT_STR ? kv[i].key.via.str.ptr : "?");
			return -1;
		}
		if (m->present & BIT(f)) {
			snprintf(err, errlen, "%s: duplicate field '%s'", types[m->type].name, fields[f].key);
			return -1;
		}
		if (decode_field(m, f, &kv[i].val, zone) < 0) {
			snprintf(err, errlen, "%s: field '%s' has the wrong type", types[m->type].name, fields[f].key);
			return -1;
		}
		m->present |= BIT(f);
	}
	uint64_t missing = types[m->type].require & ~m->present;
	if (missing) {
		snprintf(err, errlen, "%s: missing field '%s'", types[m->type].name, fields[__builtin_ctzll(missing)].key);
		return -1;
	}
	return 0;
}

const msgpack_object *obj_get(const msgpack_object *map, const char *key)
{
	if (!map || map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < map->via.map.size; i++)
		if (key_is(&map->via.map.ptr[i].key, key))
			return &map->via.map.ptr[i].val;
	return NULL;
}

bool obj_get_str(const msgpack_object *map, const char *key, char *buf, size_t len)
{
	const msgpack_object *v = obj_get(map, key);
	if (!v || v->type != MSGPACK_OBJECT_STR || v->via.str.size >= len)
		return false;
	memcpy(buf, v->via.str.ptr, v->via.str.size);
	buf[v->via.str.size] = '\0';
	return true;
}

bool obj_get_u64(const msgpack_object *map, const char *key, uint64_t *out)
{
	const msgpack_object *v = obj_get(map, key);
	if (!v || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return false;
	*out = v->via.u64;
	return true;
}

bool obj_get_bool(const msgpack_object *map, const char *key, bool *out)
{
	const msgpack_object *v = obj_get(map, key);
	if (!v || v->type != MSGPACK_OBJECT_BOOLEAN)
		return false;
	*out = v->via.boolean;
	return true;
}
