/* nofds.so: an LD_PRELOAD stand-in for a process out of descriptors. While the
 * file named by UCGW_NOFDS_FILE exists, socketpair() and pipe2() in ucgwd
 * (only there: its workers inherit the preload) fail with EMFILE, as they do
 * when RLIMIT_NOFILE is reached. Without the trigger file they are the real
 * ones. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_NEXT */
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static bool out_of_fds(void)
{
	const char *trigger = getenv("UCGW_NOFDS_FILE");
	struct stat st;
	if (!trigger || !*trigger || stat(trigger, &st) != 0)
		return false;
	char exe[4096];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n < 0)
		return false;
	exe[n] = '\0';
	const char *base = strrchr(exe, '/');
	return base && strcmp(base + 1, "ucgwd") == 0;
}

int socketpair(int domain, int type, int protocol, int sv[2])
{
	if (out_of_fds()) {
		errno = EMFILE;
		return -1;
	}
	int (*real)(int, int, int, int[2]) = (int (*)(int, int, int, int[2]))dlsym(RTLD_NEXT, "socketpair");
	return real(domain, type, protocol, sv);
}

int pipe2(int fds[2], int flags)
{
	if (out_of_fds()) {
		errno = EMFILE;
		return -1;
	}
	int (*real)(int[2], int) = (int (*)(int[2], int))dlsym(RTLD_NEXT, "pipe2");
	return real(fds, flags);
}
