/* Bytes on the wire, for link.budget_bytes_per_day/_month and link.max_bytes_per_s
 * (supervisor/budget.c): what the worker's TCP connections carried, both
 * directions, as the kernel counts it (TCP_INFO: tcpi_bytes_sent, which has
 * the retransmissions, and tcpi_bytes_received), so TLS records, HTTP headers,
 * MQTT and SSH framing, pings and reconnects are all in it; the IP and TCP
 * headers are not. The sockets are the libraries' (libcurl, libwebsockets,
 * libmosquitto, libssh2), so none of them needs to report: every
 * WIRE_SAMPLE_MS the framework looks at each open descriptor that is a TCP
 * socket and adds what it carried since the last look. What a connection
 * carried between the last look and its close is not counted (at most
 * WIRE_SAMPLE_MS of traffic per connection that closes) unless the worker
 * looks just before (worker_wire_sample, from any thread: rest does in
 * libcurl's close callback, sftp on its upload thread). A worker whose
 * connections belong to other processes (rsync: its ssh) reports its own
 * count with worker_wire_add(). */
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/tcp.h> /* struct tcp_info with tcpi_bytes_sent (glibc's netinet/tcp.h stops short of it) */

#include "common/log.h"
#include "workers/sandbox.h"
#include "workers/wire.h"

#define WIRE_FDS_MAX 4096 /* descriptors looked at: far above any worker's connections */

static struct {
	pthread_mutex_t lock; /* the sftp worker samples from its upload thread too */
	bool on;
	unsigned nfds;
	struct pollfd *pfd;
	struct sock {
		ino_t ino;     /* 0: no TCP socket at this descriptor at the last look */
		uint64_t seen; /* its bytes, both directions, at the last look */
	} *socks;
	uint64_t pending;  /* counted, not yet reported */
} wire = { .lock = PTHREAD_MUTEX_INITIALIZER };

void wire_init(const char *worker)
{
	wire.on = sandbox_network(worker);
	if (!wire.on)
		return;
	long max = sysconf(_SC_OPEN_MAX);
	wire.nfds = max > 0 && max < WIRE_FDS_MAX ? (unsigned)max : WIRE_FDS_MAX;
	wire.pfd = xcalloc(wire.nfds, sizeof *wire.pfd);
	wire.socks = xcalloc(wire.nfds, sizeof *wire.socks);
	for (unsigned i = 0; i < wire.nfds; i++)
		wire.pfd[i].fd = (int)i;
}

void worker_wire_add(uint64_t bytes)
{
	pthread_mutex_lock(&wire.lock);
	wire.pending += bytes;
	pthread_mutex_unlock(&wire.lock);
}

/* One poll() says which descriptors are open (POLLNVAL for the others); only
 * those are asked for TCP_INFO, which a socket that is not TCP refuses. */
void worker_wire_sample(void)
{
	if (!wire.on)
		return;
	pthread_mutex_lock(&wire.lock);
	if (poll(wire.pfd, wire.nfds, 0) < 0) {
		pthread_mutex_unlock(&wire.lock);
		return;
	}
	for (unsigned i = 0; i < wire.nfds; i++) {
		struct sock *s = &wire.socks[i];
		struct tcp_info ti;
		socklen_t len = sizeof ti;
		struct stat st;
		if ((wire.pfd[i].revents & POLLNVAL) || fstat((int)i, &st) < 0 || !S_ISSOCK(st.st_mode) ||
		    getsockopt((int)i, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 ||
		    len < offsetof(struct tcp_info, tcpi_bytes_sent) + sizeof ti.tcpi_bytes_sent) {
			s->ino = 0;
			continue;
		}
		uint64_t now = ti.tcpi_bytes_sent + ti.tcpi_bytes_received;
		if (s->ino != st.st_ino) { /* a new connection at this descriptor: all it carried is new */
			s->ino = st.st_ino;
			s->seen = 0;
		}
		if (now > s->seen)
			wire.pending += now - s->seen;
		s->seen = now;
	}
	pthread_mutex_unlock(&wire.lock);
}

uint64_t wire_take(void)
{
	pthread_mutex_lock(&wire.lock);
	uint64_t n = wire.pending;
	wire.pending = 0;
	pthread_mutex_unlock(&wire.lock);
	return n;
}
