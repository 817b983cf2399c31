/* Every message that crosses a process boundary: one enum, one flat struct, one
 * table that says which fields each type carries. Both the worker socketpairs and
 * the control socket speak it. Bump UCGW_PROTO_VERSION (the worker protocol) or
 * UCGW_CTL_VERSION (the control protocol, proto/ctl.h) on every change to the
 * messages each carries. */
#ifndef UCGW_PROTO_H
#define UCGW_PROTO_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proto/ctl.h"

#define UCGW_PROTO_VERSION 2 /* supervisor <-> workers; the control socket's: UCGW_CTL_VERSION */
#define FRAME_HDR 4 /* big-endian length of the msgpack object that follows */
/* A frame's bytes besides the message it carries: the other fields of a send
 * request (an auth token of up to 8 KiB, topic, endpoint...) or of a job. The
 * loader wants gateway.max_frame_bytes to hold gateway.max_message_bytes plus this. */
#define FRAME_ENVELOPE_MAX 16384
/* The control command queue: its actions, as an unknown one's error lists them,
 * and how many messages list and dead return when the request gives no limit. */
#define QUEUE_ACTIONS "list, dead, retry ID|all, purge ID, requeue ID|all"
#define QUEUE_LIMIT_DEFAULT 1000

enum msg_type {
	/* supervisor <-> worker */
	MSG_HELLO = 1,  /* worker: name, version, pid */
	MSG_CONFIG,     /* supervisor: device_id, section, max_frame, log_level, body: sandbox, files */
	MSG_READY,      /* worker: set up, accepting jobs */
	MSG_PING,       /* supervisor: seq */
	MSG_PONG,       /* worker: seq */
	MSG_JOB,        /* supervisor: a message or file to deliver */
	MSG_RESULT,     /* worker: the outcome of a job */
	MSG_HEALTH,     /* worker: connected to its server or not, and why; or bytes on the wire since the last count; body: each server's state */
	MSG_PROGRESS,   /* worker: bytes of a file job delivered so far */
	MSG_SHUTDOWN,   /* supervisor: finish the jobs in hand and exit */
	/* control client <-> supervisor */
	MSG_REQUEST = 32, /* client: version, seq (request id), name (command), body (args), auth */
	MSG_REPLY,      /* supervisor: seq, ok, error, code (enum ctl_code, from version 2), body (data) */
	MSG_EVENT,      /* supervisor: seq, name (event), body: progress of a waited request */
	MSG_TYPE_MAX
};

enum job_kind { JOB_META = 0, JOB_FILE = 1 };
enum job_status { JOB_OK = 0, JOB_RETRY = 1, JOB_PERMFAIL = 2 };
enum priority { PRIO_HIGH = 0, PRIO_NORMAL = 1, PRIO_LOW = 2 };

/* One flat struct for every type; the table in proto.c says which fields a type
 * allows and requires. Decoded strings and blobs live in the zone given to
 * msg_decode and are valid until it is cleared. */
struct msg {
	enum msg_type type;
	uint64_t version, pid, seq, kind, size, status, retry_after_ms, done, rtt_us,
		 log_level, max_frame, priority, attempt, code,
		 wire_bytes; /* HEALTH: bytes the worker put on the wire (both directions) since its last report */
	uint64_t accepted_ms;  /* JOB: when the gateway accepted it (wall clock, ms since the epoch) */
	bool clock_corrected;  /* JOB: accepted_ms was corrected after the clock was set (clock.c) */
	const char *name, *id, *topic, *endpoint, *remote_name, *error, *detail, *device_id;
	const char *auth; /* REQUEST: an API key, or a JWT (it has two dots) */
	const void *payload;
	size_t payload_len;
	const void *section;
	size_t section_len;
	bool has_fd, connected, ok;
	/* REQUEST args / REPLY and EVENT data: raw msgpack to encode, an object when decoded */
	const void *body_raw;
	size_t body_raw_len;
	const msgpack_object *body;
	uint64_t present; /* decoded: bit (1 << field) for each field found */
};

enum msg_field {
	FLD_VERSION, FLD_PID, FLD_SEQ, FLD_KIND, FLD_SIZE, FLD_STATUS, FLD_RETRY_AFTER, FLD_DONE, FLD_RTT,
	FLD_LOG_LEVEL, FLD_MAX_FRAME, FLD_PRIORITY, FLD_ATTEMPT, FLD_WIRE,
	FLD_NAME, FLD_ID, FLD_TOPIC, FLD_ENDPOINT, FLD_REMOTE_NAME, FLD_ERROR, FLD_DETAIL, FLD_DEVICE_ID,
	FLD_PAYLOAD, FLD_SECTION, FLD_HAS_FD, FLD_CONNECTED, FLD_OK, FLD_BODY, FLD_AUTH, FLD_CODE,
	FLD_ACCEPTED, FLD_CLOCK_CORRECTED,
	FLD_COUNT
};
#define MSG_HAS(m, f) (((m)->present >> (f)) & 1u)

const char *msg_type_str(enum msg_type t);
const char *job_status_str(enum job_status s);
int job_status_parse(const char *s);
const char *priority_str(enum priority p);
int priority_parse(const char *s);

/* Append one frame (header + object) to out. Optional fields left NULL/0 are
 * omitted; required ones must be set (a programming error otherwise: panic). */
void msg_encode(const struct msg *m, msgpack_sbuffer *out);

/* Strictly decode one frame body (without the header): the type must be known,
 * every field allowed for that type and of the right msgpack type, every required
 * field present, no duplicate, nothing left over. Returns 0, or -1 with err. */
int msg_decode(const void *buf, size_t len, struct msg *m, msgpack_zone *zone,
	       char *err, size_t errlen);

/* The write callback for a packer into a msgpack_sbuffer, in place of
 * msgpack_sbuffer_write. msgpack-c's packer hands it every item separately
 * (a map header, a key, a small integer: mostly 1 to 9 bytes), and
 * msgpack_sbuffer_write copies each with a call to memcpy and starts a buffer
 * at 8 KiB: this one copies small items inline and starts at 512 bytes, which
 * malloc serves from its per-thread cache. The buffer is msgpack-c's own
 * (msgpack_sbuffer_destroy frees it). Written by hand: it is the hot half of
 * every frame and spool record the supervisor packs. */
int pk_write(void *data, const char *buf, size_t len);

/* Packing straight into a msgpack_sbuffer, for what is packed for every
 * message (frames, outcome replies): msgpack-c's packer makes a call of its
 * write callback for each item. The same bytes as msgpack-c's packer for the
 * same items (it too takes the shortest encoding). Inline, so that a literal
 * key's length is known when compiling. */
void pk_grow(msgpack_sbuffer *sb, size_t len);
/* The buffer a packer set up with pk_write packs into (a programming error otherwise). */
msgpack_sbuffer *pk_sbuffer(msgpack_packer *pk);
static inline unsigned char *mpw(msgpack_sbuffer *sb, size_t n)
{
	if (sb->alloc - sb->size < n)
		pk_grow(sb, n);
	unsigned char *p = (unsigned char *)sb->data + sb->size;
	sb->size += n;
	return p;
}
static inline void mpw_be(unsigned char *p, uint64_t v, int n)
{
	for (int i = n - 1; i >= 0; i--, v >>= 8)
		p[i] = (unsigned char)v;
}
/* A header: fix is the one-byte form's base (it holds n below fixmax), then
 * the 8/16/32-bit forms' type bytes (0 where a form does not exist). */
static inline void mpw_head(msgpack_sbuffer *sb, uint64_t n, unsigned fix, uint64_t fixmax, unsigned t8, unsigned t16,
			    unsigned t32)
{
	unsigned char *p;
	if (n < fixmax) {
		*mpw(sb, 1) = (unsigned char)(fix | n);
	} else if (t8 && n < 256) {
		p = mpw(sb, 2);
		p[0] = (unsigned char)t8;
		p[1] = (unsigned char)n;
	} else if (n < 65536) {
		p = mpw(sb, 3);
		p[0] = (unsigned char)t16;
		mpw_be(p + 1, n, 2);
	} else {
		p = mpw(sb, 5);
		p[0] = (unsigned char)t32;
		mpw_be(p + 1, n, 4);
	}
}
static inline void mpw_map(msgpack_sbuffer *sb, uint32_t n) { mpw_head(sb, n, 0x80, 16, 0, 0xde, 0xdf); }
static inline void mpw_array(msgpack_sbuffer *sb, uint32_t n) { mpw_head(sb, n, 0x90, 16, 0, 0xdc, 0xdd); }
static inline void mpw_nil(msgpack_sbuffer *sb) { *mpw(sb, 1) = 0xc0; }
static inline void mpw_bool(msgpack_sbuffer *sb, bool v) { *mpw(sb, 1) = v ? 0xc3 : 0xc2; }
static inline void mpw_u64(msgpack_sbuffer *sb, uint64_t v)
{
	if (v < 128) {
		*mpw(sb, 1) = (unsigned char)v;
		return;
	}
	int n = v < 256 ? 1 : v < 65536 ? 2 : v < (1ull << 32) ? 4 : 8;
	unsigned char *p = mpw(sb, 1 + (size_t)n);
	p[0] = (unsigned char)(n == 1 ? 0xcc : n == 2 ? 0xcd : n == 4 ? 0xce : 0xcf);
	mpw_be(p + 1, v, n);
}
static inline void mpw_strn(msgpack_sbuffer *sb, const char *s, size_t n)
{
	mpw_head(sb, n, 0xa0, 32, 0xd9, 0xda, 0xdb);
	if (n)
		memcpy(mpw(sb, n), s, n);
}
static inline __attribute__((always_inline)) void mpw_str(msgpack_sbuffer *sb, const char *s) /* nil for NULL */
{
	if (s)
		mpw_strn(sb, s, strlen(s));
	else
		mpw_nil(sb);
}
static inline void mpw_bin(msgpack_sbuffer *sb, const void *b, size_t n)
{
	mpw_head(sb, n, 0, 0, 0xc4, 0xc5, 0xc6);
	if (n)
		memcpy(mpw(sb, n), b, n);
}
static inline __attribute__((always_inline)) void mpw_kv_str(msgpack_sbuffer *sb, const char *k, const char *v)
{
	mpw_str(sb, k);
	mpw_str(sb, v);
}
static inline __attribute__((always_inline)) void mpw_kv_u64(msgpack_sbuffer *sb, const char *k, uint64_t v)
{
	mpw_str(sb, k);
	mpw_u64(sb, v);
}

/* Helpers for building bodies and reading decoded ones. Inline, so that the
 * length of a literal key is known when compiling, and a key or short string
 * (header and bytes together) is one call of the write callback, not two. */
static inline __attribute__((always_inline)) void pk_key_n(msgpack_packer *pk, const char *k, size_t n)
{
	if (n < 32) {
		char b[32];
		b[0] = (char)(0xa0 | n); /* fixstr */
		memcpy(b + 1, k, n);
		pk->callback(pk->data, b, n + 1);
	} else {
		msgpack_pack_str(pk, n);
		msgpack_pack_str_body(pk, k, n);
	}
}
static inline __attribute__((always_inline)) void pk_key(msgpack_packer *pk, const char *k)
{
	pk_key_n(pk, k, strlen(k));
}
static inline void pk_str(msgpack_packer *pk, const char *s) /* nil for NULL */
{
	if (s)
		pk_key(pk, s);
	else
		msgpack_pack_nil(pk);
}
static inline void pk_kv_str(msgpack_packer *pk, const char *k, const char *v) { pk_key(pk, k); pk_str(pk, v); }
static inline void pk_kv_u64(msgpack_packer *pk, const char *k, uint64_t v) { pk_key(pk, k); msgpack_pack_uint64(pk, v); }
static inline void pk_kv_i64(msgpack_packer *pk, const char *k, int64_t v) { pk_key(pk, k); msgpack_pack_int64(pk, v); }
static inline void pk_kv_f64(msgpack_packer *pk, const char *k, double v) { pk_key(pk, k); msgpack_pack_double(pk, v); }
static inline void pk_kv_bool(msgpack_packer *pk, const char *k, bool v)
{
	pk_key(pk, k);
	if (v)
		msgpack_pack_true(pk);
	else
		msgpack_pack_false(pk);
}
const msgpack_object *obj_get(const msgpack_object *map, const char *key); /* NULL if absent or not a map */
/* A string field of a map copied into buf; false when absent or not a string. */
bool obj_get_str(const msgpack_object *map, const char *key, char *buf, size_t len);
bool obj_get_u64(const msgpack_object *map, const char *key, uint64_t *out);
bool obj_get_bool(const msgpack_object *map, const char *key, bool *out);

#endif
