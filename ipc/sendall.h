/* Blocking send of a whole frame, with a descriptor riding on its first byte
 * (SCM_RIGHTS) when fd >= 0: what ucgwctl needs. */
#ifndef UCGW_SENDALL_H
#define UCGW_SENDALL_H

#include <stddef.h>

/* 0, or -1 with errno. */
int send_all_fd(int sock, const void *buf, size_t len, int fd);

#endif
