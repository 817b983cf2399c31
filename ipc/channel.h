/* A non-blocking channel of frames over a unix stream socket (a worker's
 * socketpair or a control connection), driven by libuv.
 *
 * Written by hand because libuv's pipes can pass only libuv handles, not the open
 * regular files that file jobs carry (SCM_RIGHTS), and because reading many frames
 * per read and writing through one queue is what keeps the per-message cost low. */
#ifndef UCGW_CHANNEL_H
#define UCGW_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "proto/proto.h"

struct channel;

struct channel_ops {
	/* One complete frame body (header stripped). buf is valid during the call only. */
	void (*on_frame)(struct channel *ch, const char *buf, size_t len, void *arg);
	/* The peer closed, an I/O error, or a malformed frame (empty or over the
	 * limit): the channel is already closed when this runs; it is called once. */
	void (*on_error)(struct channel *ch, const char *why, void *arg);
	/* Optional. A frame whose length prefix is 0 or over the limit arrived: runs
	 * before the channel closes, while it can still carry an answer (queue it
	 * and channel_flush it here), then the channel closes and on_error follows
	 * with the same why. The callback must not close the channel itself. */
	void (*on_bad_frame)(struct channel *ch, const char *why, void *arg);
	/* The write queue fell back below the low watermark after being congested. */
	void (*on_drain)(struct channel *ch, void *arg);
};

struct channel *channel_new(uv_loop_t *loop, int fd, size_t max_frame,
			    const struct channel_ops *ops, void *arg);
/* Queue a frame (header included, as msg_encode writes it). When fd >= 0 it
 * travels with the frame's first byte; the channel dups it, the caller keeps its
 * own. Returns -1 when the channel is closed. */
int channel_write(struct channel *ch, const void *frame, size_t len, int fd);
/* Encode and queue a message. */
int channel_send(struct channel *ch, const struct msg *m, int fd);
/* The oldest descriptor received and not yet taken, or -1. The caller owns it. */
int channel_take_fd(struct channel *ch);
bool channel_congested(const struct channel *ch);
size_t channel_queued(const struct channel *ch);
/* Try to write the queue out now (used before exiting). Blocks up to timeout_ms. */
void channel_flush(struct channel *ch, int timeout_ms);
/* Write what every channel has queued now, rather than at the end of this
 * phase of the loop: for a prepare callback that queues frames (the loop may
 * run the channels' own prepare handle before it). */
void channel_flush_pending(void);
/* Close the socket and free the channel once libuv lets go of it. No callback
 * runs after this. Safe to call from inside a callback. */
void channel_close(struct channel *ch);
void *channel_arg(const struct channel *ch);
/* The largest frame body accepted from now on (a larger one fails the channel). */
void channel_set_max_frame(struct channel *ch, size_t max_frame);
/* In on_bad_frame: the length its prefix gave (over max_frame, or 0). */
size_t channel_refused_len(const struct channel *ch);
void channel_set_arg(struct channel *ch, void *arg);
/* Backpressure for a peer that writes requests faster than it reads replies:
 * while more than bytes wait to be written to it, the channel neither reads nor
 * delivers its frames (they wait in the socket, then in the peer's own writes);
 * once it has taken the queue down to half, reading resumes. 0: no limit. */
void channel_set_read_limit(struct channel *ch, size_t bytes);
/* Bytes the socket has taken so far: whether the peer reads at all. */
uint64_t channel_bytes_written(const struct channel *ch);

#define CHANNEL_HIGH_WATER (8u << 20)
#define CHANNEL_LOW_WATER  (1u << 20)

#endif
