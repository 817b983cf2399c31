/* The codec: every message type round-trips; every malformed frame is refused. */
#include <string.h>

#include "check.h"
#include "proto/proto.h"

static msgpack_zone zone;

static int decode_frame(const msgpack_sbuffer *sb, struct msg *m, char *err)
{
	msgpack_zone_clear(&zone);
	return msg_decode(sb->data + FRAME_HDR, sb->size - FRAME_HDR, m, &zone, err, 256);
}

static void test_round_trips(void)
{
	msgpack_sbuffer body;
	msgpack_sbuffer_init(&body);
	msgpack_packer pk;
	msgpack_packer_init(&pk, &body, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1);
	pk_kv_str(&pk, "name", "mqtt");
	struct msg samples[] = {
		{ .type = MSG_HELLO, .version = UCGW_PROTO_VERSION, .name = "mqtt", .pid = 42 },
		{ .type = MSG_CONFIG, .version = 1, .device_id = "cam-1", .section = "\x80", .section_len = 1,
		  .max_frame = 4096, .log_level = 6 },
		{ .type = MSG_READY },
		{ .type = MSG_PING, .seq = 7 },
		{ .type = MSG_PONG, .seq = 7 },
		{ .type = MSG_JOB, .seq = 9, .id = "01J0000000000000000000000A", .kind = JOB_FILE, .payload = "{}",
		  .payload_len = 2, .topic = "lpr/x", .endpoint = "/e", .remote_name = "a.jpg", .size = 1234,
		  .has_fd = true, .priority = PRIO_LOW, .attempt = 2, .encrypt = true },
		{ .type = MSG_RESULT, .seq = 9, .id = "x", .status = JOB_RETRY, .error = "503", .retry_after_ms = 1000,
		  .rtt_us = 5 },
		{ .type = MSG_HEALTH, .connected = true, .detail = "ok", .rtt_us = 100 },
		{ .type = MSG_PROGRESS, .seq = 9, .id = "x", .done = 10, .size = 20 },
		{ .type = MSG_SHUTDOWN },
		{ .type = MSG_REQUEST, .version = 1, .seq = 3, .name = "restart", .body_raw = body.data,
		  .body_raw_len = body.size },
		{ .type = MSG_REPLY, .version = 1, .seq = 3, .ok = false, .error = "no such worker" },
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
		CHECK(m.type == samples[i].type);
		CHECK(m.seq == samples[i].seq && m.version == samples[i].version && m.pid == samples[i].pid);
		CHECK(m.status == samples[i].status && m.size == samples[i].size && m.done == samples[i].done);
		CHECK(m.has_fd == samples[i].has_fd && m.encrypt == samples[i].encrypt && m.ok == samples[i].ok);
		CHECK(!samples[i].name || (m.name && strcmp(m.name, samples[i].name) == 0));
		CHECK(!samples[i].id || (m.id && strcmp(m.id, samples[i].id) == 0));
		CHECK(!samples[i].error || (m.error && strcmp(m.error, samples[i].error) == 0));
		CHECK(m.payload_len == samples[i].payload_len);
		CHECK(!samples[i].payload || memcmp(m.payload, samples[i].payload, m.payload_len) == 0);
		if (samples[i].body_raw) {
			char name[16];
			CHECK(m.body && obj_get_str(m.body, "name", name, sizeof name) && strcmp(name, "mqtt") == 0);
		}
		msgpack_sbuffer_destroy(&sb);
	}
	msgpack_sbuffer_destroy(&body);
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
	test_names();
	msgpack_zone_destroy(&zone);
	return CHECK_DONE();
}
