#include "ipc/sendall.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

int send_all_fd(int sock, const void *buf, size_t len, int fd)
{
	for (size_t off = 0; off < len;) {
		struct iovec iov = { (char *)buf + off, len - off };
		union {
			char b[CMSG_SPACE(sizeof(int))];
			struct cmsghdr align;
		} cbuf;
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		if (fd >= 0 && off == 0) {
			memset(&cbuf, 0, sizeof cbuf);
			mh.msg_control = cbuf.b;
			mh.msg_controllen = sizeof cbuf.b;
			struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(c), &fd, sizeof fd);
		}
		ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		off += (size_t)n;
	}
	return 0;
}
