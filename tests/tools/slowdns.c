/* slowdns.so: an LD_PRELOAD stand-in for a DNS server that does not answer.
 * getaddrinfo() of the name "slowdns.test" sleeps UCGW_SLOWDNS_MS (default
 * 6000) milliseconds, as glibc does while it waits for an unreachable server,
 * then fails with EAI_AGAIN; every other name goes to the real getaddrinfo.
 * The tests use it to show that no worker's loop waits for DNS. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_NEXT */
#endif
#include <dlfcn.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
	if (node && strcmp(node, "slowdns.test") == 0) {
		const char *ms = getenv("UCGW_SLOWDNS_MS");
		long wait = ms ? atol(ms) : 6000;
		struct timespec ts = { wait / 1000, (wait % 1000) * 1000000L };
		while (nanosleep(&ts, &ts) != 0)
			;
		return EAI_AGAIN;
	}
	gai_fn real = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");
	return real ? real(node, service, hints, res) : EAI_SYSTEM;
}
