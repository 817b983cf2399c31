/* The adaptive window: how many jobs the router lets each metadata worker
 * hold, grown while that buys throughput, shrunk when latency says the path
 * (link, server) is queueing or the server refuses. router.c asks
 * window_limit() where it checks the in-flight count and tells
 * window_result() the end of every attempt. */
#ifndef UCGW_WINDOW_H
#define UCGW_WINDOW_H

#include <msgpack.h>
#include <stdint.h>

#include "proto/proto.h"

struct rproto;

unsigned window_limit(struct rproto *rp);
/* An attempt ended after us microseconds in the worker's hands; inflight is
 * the protocol's count with this job still in it; size its payload's bytes. */
void window_result(struct rproto *rp, enum job_status st, uint64_t us, uint64_t inflight, uint64_t size);
/* "window", "window_max", "window_phase" of a protocol, for stats. */
void window_pack(msgpack_packer *pk, const struct rproto *rp);
unsigned window_now(const struct rproto *rp);
const char *window_phase(const struct rproto *rp);

#endif
