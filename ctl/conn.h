/* A blocking connection to ucgwd's control socket, for ucgwctl. */
#ifndef UCGW_CONN_H
#define UCGW_CONN_H

#include <msgpack.h>
#include <stdbool.h>

#include "proto/proto.h"

struct conn {
	int fd;
	uint64_t seq;
	char *buf;
	size_t len, cap, pending;
	msgpack_zone zone;
};

/* 0, or CONN_DOWN (nobody listening, no socket) or CONN_DENIED (EACCES, EPERM), with err said. */
enum { CONN_DOWN = -1, CONN_DENIED = -2 };
int conn_open(struct conn *c, const char *path, char *err, size_t errlen);
void conn_close(struct conn *c);
/* Send a request whose args are the packed map in args (may be NULL); returns its seq. */
uint64_t conn_request(struct conn *c, const char *name, const msgpack_sbuffer *args);
/* The same, passing an open descriptor with the request (fd < 0: none). */
uint64_t conn_request_fd(struct conn *c, const char *name, const msgpack_sbuffer *args, int fd);
/* Read the next frame into m (reply or event). 0, or -1 with err. timeout_ms < 0: forever. */
int conn_read(struct conn *c, struct msg *m, int timeout_ms, char *err, size_t errlen);

#endif
