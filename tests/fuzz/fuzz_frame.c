/* libFuzzer: the frame decoders, fed a byte stream over a real socket: the
 * supervisor's channel (ipc/channel.c: length prefix, max frame, partial frames,
 * many frames per read), with each frame decoded as the control socket does and
 * answered, and ucgwctl's reader (ctl/conn.c) on the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ctl/conn.h"
#include "ipc/channel.h"

static uv_loop_t *loop;
static msgpack_zone zone;

static void on_frame(struct channel *ch, const char *buf, size_t len, void *arg)
{
	struct msg m;
	char err[256];
	msgpack_zone_clear(&zone);
	if (msg_decode(buf, len, &m, &zone, err, sizeof err) < 0 || m.type != MSG_REQUEST) {
		struct msg r = { .type = MSG_REPLY, .version = UCGW_CTL_VERSION, .error = err };
		channel_send(ch, &r, -1);
		channel_close(ch); /* as the control socket drops a client that sent garbage */
		return;
	}
	struct msg r = { .type = MSG_REPLY, .version = UCGW_CTL_VERSION, .seq = m.seq, .ok = true };
	channel_send(ch, &r, -1);
}

static void on_error(struct channel *ch, const char *why, void *arg) { *(int *)arg = 1; }

static void feed(int fd, const uint8_t *data, size_t size)
{
	while (size) {
		ssize_t n = write(fd, data, size);
		if (n <= 0)
			abort(); /* the input is smaller than a socket buffer */
		data += n;
		size -= (size_t)n;
	}
}

static void channel_side(const uint8_t *data, size_t size)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	feed(sv[1], data, size);
	shutdown(sv[1], SHUT_WR);
	static const struct channel_ops ops = { .on_frame = on_frame, .on_error = on_error };
	int failed = 0;
	channel_new(loop, sv[0], 1u << 20, &ops, &failed);
	uv_run(loop, UV_RUN_DEFAULT); /* until the channel is closed and freed */
	close(sv[1]);
}

static void ctl_side(const uint8_t *data, size_t size)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	feed(sv[1], data, size);
	close(sv[1]);
	struct conn c;
	memset(&c, 0, sizeof c);
	c.fd = sv[0];
	msgpack_zone_init(&c.zone, 4096);
	struct msg m;
	char err[256];
	for (int i = 0; i < 10000; i++)
		if (conn_read(&c, &m, 0, err, sizeof err) < 0 && strncmp(err, "ucgwd closed", 12) == 0)
			break;
	conn_close(&c);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	loop = uv_default_loop();
	msgpack_zone_init(&zone, 4096);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 65536)
		return 0;
	channel_side(data, size);
	ctl_side(data, size);
	return 0;
}
