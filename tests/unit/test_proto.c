/* The codec: every message type round-trips; every malformed frame is refused. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "proto/proto.h"

static msgpack_zone zone;

static int decode_frame(const msgpack_sbuffer *sb, struct msg *m, char *err)
{
	msgpack_zone_clear(&zone);
	return msg_decode(sb->data + FRAME_HDR, sb->size - FRAME_HDR, m, &zone, err, 256);
}

static bool same_str(const char *a, const char *b) { return a ? b && strcmp(a, b) == 0 : b == NULL; }

static bool same_bytes(const void *a, size_t alen, const void *b, size_t blen)
{
	return alen == blen && (alen == 0 || (a && b && memcmp(a, b, alen) == 0));
}

/* The decoded body, packed again, is the bytes the sample carried. */
static bool same_body(const struct msg *s, const struct msg *m)
{
	if (!s->body_raw)
		return m->body == NULL;
	if (!m->body)
		return false;
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	msgpack_packer pk;
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_object(&pk, *m->body);
	bool same = same_bytes(sb.data, sb.size, s->body_raw, s->body_raw_len);
	msgpack_sbuffer_destroy(&sb);
	return same;
}

/* Every field of struct msg, one CHECK each, so a failure names the field; and
 * every field the sample set is marked present. */
static void check_same(const char *type, const struct msg *s, const struct msg *m)
{
	int before = check_failures;
#define SAME_U64(f, bit) CHECK(m->f == s->f && (!s->f || MSG_HAS(m, bit)))
#define SAME_BOOL(f, bit) CHECK(m->f == s->f && (!s->f || MSG_HAS(m, bit)))
#define SAME_STR(f, bit) CHECK(same_str(s->f, m->f) && (!s->f || MSG_HAS(m, bit)))
	CHECK(m->type == s->type);
	SAME_U64(version, FLD_VERSION);
	SAME_U64(pid, FLD_PID);
	SAME_U64(seq, FLD_SEQ);
	SAME_U64(kind, FLD_KIND);
	SAME_U64(size, FLD_SIZE);
	SAME_U64(status, FLD_STATUS);
	SAME_U64(retry_after_ms, FLD_RETRY_AFTER);
	SAME_U64(done, FLD_DONE);
	SAME_U64(rtt_us, FLD_RTT);
	SAME_U64(log_level, FLD_LOG_LEVEL);
	SAME_U64(max_frame, FLD_MAX_FRAME);
	SAME_U64(priority, FLD_PRIORITY);
	SAME_U64(attempt, FLD_ATTEMPT);
	SAME_STR(name, FLD_NAME);
	SAME_STR(id, FLD_ID);
	SAME_STR(topic, FLD_TOPIC);
	SAME_STR(endpoint, FLD_ENDPOINT);
	SAME_STR(remote_name, FLD_REMOTE_NAME);
	SAME_STR(error, FLD_ERROR);
	SAME_STR(detail, FLD_DETAIL);
	SAME_STR(device_id, FLD_DEVICE_ID);
	SAME_STR(auth, FLD_AUTH);
	CHECK(same_bytes(s->payload, s->payload_len, m->payload, m->payload_len) &&
	      (!s->payload || MSG_HAS(m, FLD_PAYLOAD)));
	CHECK(same_bytes(s->section, s->section_len, m->section, m->section_len) &&
	      (!s->section || MSG_HAS(m, FLD_SECTION)));
	SAME_BOOL(has_fd, FLD_HAS_FD);
	SAME_BOOL(connected, FLD_CONNECTED);
	SAME_BOOL(ok, FLD_OK);
	CHECK(same_body(s, m) && (!s->body_raw || MSG_HAS(m, FLD_BODY)));
#undef SAME_U64
#undef SAME_BOOL
#undef SAME_STR
	if (check_failures != before)
		fprintf(stderr, "  (in the %s sample)\n", type);
}

/* One sample per type (two for reply: ok and not), each with every field its
 * type allows set to a value other than the default. */
static void test_round_trips(void)
{
	msgpack_sbuffer body;
	msgpack_sbuffer_init(&body);
	msgpack_packer pk;
	msgpack_packer_init(&pk, &body, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	pk_kv_str(&pk, "name", "mqtt");
	pk_kv_u64(&pk, "limit", 10);
	msgpack_sbuffer config_body;
	msgpack_sbuffer_init(&config_body);
	msgpack_packer_init(&pk, &config_body, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	pk_kv_bool(&pk, "sandbox", true);
	pk_key(&pk, "files");
	msgpack_pack_map(&pk, 1);
	pk_key(&pk, "ca_file");
	msgpack_pack_bin(&pk, 3);
	msgpack_pack_bin_body(&pk, "PEM", 3);
	static const char jwt[] = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYW0ifQ.c2ln";
	struct msg samples[] = {
		{ .type = MSG_HELLO, .version = UCGW_PROTO_VERSION, .name = "mqtt", .pid = 42 },
		{ .type = MSG_CONFIG, .version = 1, .device_id = "cam-1", .section = "\x81\xa1k\x01", .section_len = 4,
		  .max_frame = 4096, .log_level = 6, .body_raw = config_body.data, .body_raw_len = config_body.size },
		{ .type = MSG_READY, .detail = "MQTT 5, TLS" },
		{ .type = MSG_PING, .seq = 7 },
		{ .type = MSG_PONG, .seq = 7 },
		{ .type = MSG_JOB, .seq = 9, .id = "01J0000000000000000000000A", .kind = JOB_FILE, .payload = "{}",
		  .payload_len = 2, .topic = "lpr/x", .endpoint = "/e", .remote_name = "a.jpg", .size = 1234,
		  .has_fd = true, .priority = PRIO_LOW, .attempt = 2 },
		{ .type = MSG_RESULT, .seq = 9, .id = "x", .status = JOB_RETRY, .error = "503", .retry_after_ms = 1000,
		  .rtt_us = 5 },
		{ .type = MSG_HEALTH, .connected = true, .detail = "ok", .rtt_us = 100 },
		/* a worker with a list of servers: each one's state in the body */
		{ .type = MSG_HEALTH, .connected = true, .detail = "ok", .body_raw = body.data, .body_raw_len = body.size },
		{ .type = MSG_PROGRESS, .seq = 9, .id = "x", .done = 10, .size = 20 },
		{ .type = MSG_SHUTDOWN },
		{ .type = MSG_REQUEST, .version = 1, .seq = 3, .name = "restart", .body_raw = body.data,
		  .body_raw_len = body.size, .auth = jwt },
		{ .type = MSG_REPLY, .version = 1, .seq = 3, .ok = false, .error = "no such worker", .body_raw = body.data,
		  .body_raw_len = body.size },
		{ .type = MSG_REPLY, .version = 1, .seq = 4, .ok = true, .body_raw = body.data, .body_raw_len = body.size },
		{ .type = MSG_EVENT, .seq = 3, .name = "progress", .body_raw = body.data, .body_raw_len = body.size },
	};
	for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
		msgpack_sbuffer sb;
		msgpack_sbuffer_init(&sb);
		msg_encode(&samples[i], &sb);
		struct msg m;
		char err[256] = "";
		int rc = decode_frame(&sb, &m, err);
		if (rc != 0)
			fprintf(stderr, "%s: %s\n", msg_type_str(samples[i].type), err);
		CHECK(rc == 0);
		if (rc == 0)
			check_same(msg_type_str(samples[i].type), &samples[i], &m);
		msgpack_sbuffer_destroy(&sb);
	}
	msgpack_sbuffer_destroy(&body);
	msgpack_sbuffer_destroy(&config_body);
}

/* Pack a map from alternating key/value pairs: values are u64 unless the key
 * starts with '$' (then a string). */
static void pack_raw(msgpack_sbuffer *sb, int n, const char *const *kv, const uint64_t *vals)
{
	msgpack_packer pk;
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, (size_t)n);
	for (int i = 0; i < n; i++) {
		if (kv[i][0] == '$') {
			pk_key(&pk, kv[i] + 1);
			pk_str(&pk, "text");
		} else {
			pk_kv_u64(&pk, kv[i], vals[i]);
		}
	}
}

static int decode_raw(const msgpack_sbuffer *sb, char *err)
{
	struct msg m;
	msgpack_zone_clear(&zone);
	return msg_decode(sb->data, sb->size, &m, &zone, err, 256);
}

static void expect_reject(int n, const char *const *kv, const uint64_t *vals, const char *words)
{
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	pack_raw(&sb, n, kv, vals);
	char err[256] = "";
	int rc = decode_raw(&sb, err);
	CHECK(rc == -1);
	CHECK(strstr(err, words) != NULL);
	if (!strstr(err, words))
		fprintf(stderr, "  got '%s', wanted '%s'\n", err, words);
	msgpack_sbuffer_destroy(&sb);
}

static void test_rejects(void)
{
	expect_reject(1, (const char *[]){ "seq" }, (uint64_t[]){ 1 }, "missing or unknown message type");
	expect_reject(2, (const char *[]){ "t", "seq" }, (uint64_t[]){ 99, 1 }, "unknown message type");
	expect_reject(1, (const char *[]){ "t" }, (uint64_t[]){ MSG_PING }, "missing field 'seq'");
	expect_reject(3, (const char *[]){ "t", "seq", "bogus" }, (uint64_t[]){ MSG_PING, 1, 1 },
		      "unexpected field 'bogus'");
	expect_reject(3, (const char *[]){ "t", "seq", "pid" }, (uint64_t[]){ MSG_PING, 1, 1 },
		      "unexpected field 'pid'");
	expect_reject(3, (const char *[]){ "t", "seq", "seq" }, (uint64_t[]){ MSG_PING, 1, 2 }, "duplicate field");
	expect_reject(2, (const char *[]){ "t", "$seq" }, (uint64_t[]){ MSG_PING, 0 }, "wrong type");
	expect_reject(4, (const char *[]){ "t", "seq", "id", "status" }, (uint64_t[]){ MSG_RESULT, 1, 5, 0 },
		      "wrong type");

	char err[256];
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	msgpack_packer pk;
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 0);
	CHECK(decode_raw(&sb, err) == -1 && strstr(err, "not a map"));
	sb.size = 0;
	pack_raw(&sb, 2, (const char *[]){ "t", "seq" }, (uint64_t[]){ MSG_PING, 1 });
	size_t good = sb.size;
	msgpack_pack_nil(&pk); /* trailing bytes */
	CHECK(decode_raw(&sb, err) == -1 && strstr(err, "left over"));
	sb.size = good - 1; /* truncated */
	CHECK(decode_raw(&sb, err) == -1 && strstr(err, "truncated"));
	sb.size = 0;
	msgpack_sbuffer_write(&sb, "\xc1", 1); /* never-used msgpack byte */
	CHECK(decode_raw(&sb, err) == -1);
	/* A string with an embedded NUL would be cut short in C: refused. */
	sb.size = 0;
	msgpack_pack_map(&pk, 3);
	pk_kv_u64(&pk, "t", MSG_HELLO);
	pk_kv_u64(&pk, "v", 1);
	pk_key(&pk, "name");
	msgpack_pack_str(&pk, 3);
	msgpack_pack_str_body(&pk, "a\0b", 3);
	CHECK(decode_raw(&sb, err) == -1);
	msgpack_sbuffer_destroy(&sb);

	/* Random bytes: never a crash. */
	unsigned seed = 1;
	for (int i = 0; i < 20000; i++) {
		unsigned char buf[64];
		size_t n = (size_t)(rand_r(&seed) % 64) + 1;
		for (size_t j = 0; j < n; j++)
			buf[j] = (unsigned char)rand_r(&seed);
		if (i % 2)
			buf[0] = 0x80 | (buf[0] & 0x0f); /* a map, to reach deeper */
		struct msg m;
		msgpack_zone_clear(&zone);
		(void)msg_decode(buf, n, &m, &zone, err, sizeof err);
	}
}

/* The decoder reads flat frames itself and leaves the unusual to msgpack-c:
 * both ways must agree on what a frame means. */
static void test_decoder_edges(void)
{
	char err[256];
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	msgpack_packer pk;
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	struct msg m;

	/* A number in a signed encoding is still a number when it is not negative
	 * (msgpack-c's rule), and a negative one is the wrong type. */
	msgpack_pack_map(&pk, 2);
	pk_kv_u64(&pk, "t", MSG_PING);
	pk_key(&pk, "seq");
	msgpack_sbuffer_write(&sb, "\xd2\x00\x01\x00\x00", 5); /* int32 65536 */
	msgpack_zone_clear(&zone);
	CHECK(msg_decode(sb.data, sb.size, &m, &zone, err, sizeof err) == 0 && m.seq == 65536);
	sb.size = 0;
	msgpack_pack_map(&pk, 2);
	pk_kv_u64(&pk, "t", MSG_PING);
	pk_kv_i64(&pk, "seq", -3);
	CHECK(decode_raw(&sb, err) == -1 && strstr(err, "wrong type"));

	/* A body nested deeper than msgpack-c's unpacker goes (32 levels) is
	 * refused as a parse error; one 12 levels deep is a body like any other. */
	for (int depth = 12; depth <= 40; depth += 28) {
		sb.size = 0;
		msgpack_pack_map(&pk, 5);
		pk_kv_u64(&pk, "t", MSG_REPLY);
		pk_kv_u64(&pk, "v", UCGW_PROTO_VERSION);
		pk_kv_u64(&pk, "seq", 7);
		pk_kv_bool(&pk, "ok", true);
		pk_key(&pk, "body");
		for (int d = 0; d < depth; d++)
			msgpack_pack_array(&pk, 1);
		msgpack_pack_uint64(&pk, 5);
		msgpack_zone_clear(&zone);
		int rc = msg_decode(sb.data, sb.size, &m, &zone, err, sizeof err);
		if (depth == 12) {
			CHECK(rc == 0 && m.body && m.body->type == MSGPACK_OBJECT_ARRAY && m.seq == 7 && m.ok);
		} else {
			CHECK(rc == -1 && strstr(err, "parse error"));
		}
	}

	/* More keys than the fast way holds: the same answer the other way. */
	sb.size = 0;
	msgpack_pack_map(&pk, 40);
	pk_kv_u64(&pk, "t", MSG_PING);
	for (int i = 0; i < 39; i++)
		pk_kv_u64(&pk, "seq", (uint64_t)i);
	CHECK(decode_raw(&sb, err) == -1 && strstr(err, "duplicate field 'seq'"));
	msgpack_sbuffer_destroy(&sb);
}

/* The direct packer writes what msgpack-c's packer writes, at every size
 * boundary of every form. */
static void test_direct_packer(void)
{
	static const uint64_t nums[] = { 0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295u, 4294967296u, UINT64_MAX };
	static const size_t lens[] = { 0, 1, 15, 16, 31, 32, 255, 256, 65535, 65536, 70000 };
	char *text = calloc(1, 70001);
	memset(text, 'x', 70000);
	msgpack_sbuffer a, b;
	msgpack_sbuffer_init(&a);
	msgpack_sbuffer_init(&b);
	msgpack_packer pk;
	msgpack_packer_init(&pk, &a, msgpack_sbuffer_write);
	for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
		msgpack_pack_uint64(&pk, nums[i]);
		mpw_u64(&b, nums[i]);
	}
	for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
		msgpack_pack_str(&pk, lens[i]);
		msgpack_pack_str_body(&pk, text, lens[i]);
		mpw_strn(&b, text, lens[i]);
		msgpack_pack_bin(&pk, lens[i]);
		msgpack_pack_bin_body(&pk, text, lens[i]);
		mpw_bin(&b, text, lens[i]);
		msgpack_pack_map(&pk, lens[i]);
		mpw_map(&b, (uint32_t)lens[i]);
		msgpack_pack_array(&pk, lens[i]);
		mpw_array(&b, (uint32_t)lens[i]);
	}
	msgpack_pack_nil(&pk);
	mpw_str(&b, NULL);
	msgpack_pack_true(&pk);
	mpw_bool(&b, true);
	msgpack_pack_false(&pk);
	mpw_bool(&b, false);
	CHECK(a.size == b.size && memcmp(a.data, b.data, a.size) == 0);
	msgpack_sbuffer_destroy(&a);
	msgpack_sbuffer_destroy(&b);
	free(text);
}

static void test_names(void)
{
	CHECK(strcmp(msg_type_str(MSG_JOB), "job") == 0);
	CHECK(strcmp(msg_type_str((enum msg_type)77), "unknown") == 0);
	CHECK(job_status_parse("permfail") == JOB_PERMFAIL && job_status_parse("x") == -1);
	CHECK(priority_parse("high") == PRIO_HIGH && priority_parse(NULL) == -1);
}

int main(void)
{
	msgpack_zone_init(&zone, 4096);
	test_round_trips();
	test_rejects();
	test_decoder_edges();
	test_direct_packer();
	test_names();
	msgpack_zone_destroy(&zone);
	return CHECK_DONE();
}
