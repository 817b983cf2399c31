/* libFuzzer: every message decoder (proto/ msg_decode, all types through the one
 * table). Besides "no crash, no leak, no UB": whatever decodes must encode and
 * decode again to the same message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

static void same_str(const char *a, const char *b)
{
	if ((a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0))
		abort();
}

static void same(const struct msg *a, const struct msg *b)
{
	if (a->type != b->type || a->version != b->version || a->pid != b->pid || a->seq != b->seq ||
	    a->kind != b->kind || a->size != b->size || a->status != b->status ||
	    a->retry_after_ms != b->retry_after_ms || a->done != b->done || a->rtt_us != b->rtt_us ||
	    a->log_level != b->log_level || a->max_frame != b->max_frame || a->priority != b->priority ||
	    a->attempt != b->attempt || a->has_fd != b->has_fd || a->connected != b->connected || a->ok != b->ok ||
	    a->code != b->code || a->wire_bytes != b->wire_bytes || a->accepted_ms != b->accepted_ms ||
	    a->clock_corrected != b->clock_corrected)
		abort();
	same_str(a->name, b->name);
	same_str(a->id, b->id);
	same_str(a->topic, b->topic);
	same_str(a->endpoint, b->endpoint);
	same_str(a->remote_name, b->remote_name);
	same_str(a->error, b->error);
	same_str(a->detail, b->detail);
	same_str(a->device_id, b->device_id);
	same_str(a->auth, b->auth);
	if ((a->payload == NULL) != (b->payload == NULL) || a->payload_len != b->payload_len ||
	    (a->payload_len && memcmp(a->payload, b->payload, a->payload_len) != 0))
		abort();
	if ((a->section == NULL) != (b->section == NULL) || a->section_len != b->section_len ||
	    (a->section_len && memcmp(a->section, b->section, a->section_len) != 0))
		abort();
	if ((a->body == NULL) != (b->body == NULL))
		abort();
	if (a->body) { /* compared as packed bytes: a NaN in a body is not equal to itself */
		msgpack_sbuffer pa, pb;
		msgpack_sbuffer_init(&pa);
		msgpack_sbuffer_init(&pb);
		msgpack_packer pk;
		msgpack_packer_init(&pk, &pa, msgpack_sbuffer_write);
		msgpack_pack_object(&pk, *a->body);
		msgpack_packer_init(&pk, &pb, msgpack_sbuffer_write);
		msgpack_pack_object(&pk, *b->body);
		if (pa.size != pb.size || memcmp(pa.data, pb.data, pa.size) != 0)
			abort();
		msgpack_sbuffer_destroy(&pa);
		msgpack_sbuffer_destroy(&pb);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	msgpack_zone z1, z2;
	msgpack_zone_init(&z1, 4096);
	msgpack_zone_init(&z2, 4096);
	struct msg m, back;
	char err[256];
	if (msg_decode(data, size, &m, &z1, err, sizeof err) == 0) {
		msgpack_sbuffer body, frame;
		msgpack_sbuffer_init(&body);
		msgpack_sbuffer_init(&frame);
		if (m.body) { /* decoded bodies are objects; encoding wants the packed bytes */
			msgpack_packer pk;
			msgpack_packer_init(&pk, &body, msgpack_sbuffer_write);
			msgpack_pack_object(&pk, *m.body);
			m.body_raw = body.data;
			m.body_raw_len = body.size;
		}
		msg_encode(&m, &frame);
		if (frame.size < FRAME_HDR ||
		    msg_decode(frame.data + FRAME_HDR, frame.size - FRAME_HDR, &back, &z2, err, sizeof err) != 0)
			abort();
		same(&m, &back);
		msgpack_sbuffer_destroy(&body);
		msgpack_sbuffer_destroy(&frame);
	}
	msgpack_zone_destroy(&z1);
	msgpack_zone_destroy(&z2);
	return 0;
}
