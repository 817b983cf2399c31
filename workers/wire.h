/* Bytes on the wire (workers/wire.c), for the link's byte budgets and rate
 * cap: counted every WIRE_SAMPLE_MS from the worker's TCP sockets and reported
 * to the supervisor. Apart from worker.h because the kernel's struct tcp_info,
 * which wire.c needs, cannot share a file with libuv's headers. */
#ifndef UCGW_WIRE_H
#define UCGW_WIRE_H

#include <stdint.h>

#define WIRE_SAMPLE_MS 250
/* Count now: a worker calls it just before it closes a connection of its own
 * (else what the connection carried since the last sample is lost); from any
 * thread. */
void worker_wire_sample(void);
/* A worker whose connections are another process's (rsync's ssh) adds what it
 * learns of them. */
void worker_wire_add(uint64_t bytes);
/* The framework's side: set up for this worker; what was counted since the last call. */
void wire_init(const char *worker);
uint64_t wire_take(void);

#endif
