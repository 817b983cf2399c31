/* nofds.so: an LD_PRELOAD stand-in for a process out of descriptors. While the
 * file named by UCGW_NOFDS_FILE exists, socketpair() and pipe2() in ucgwd
 * (only there: its workers inherit the preload) fail with EMFILE, as they do
 * when RLIMIT_NOFILE is reached, and so does open() of a path that starts with
 * UCGW_NOFDS_OPEN_PREFIX when that is set. Without the trigger file they are
 * the real ones. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_NEXT */
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
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

static bool refused_open(const char *path)
{
	const char *prefix = getenv("UCGW_NOFDS_OPEN_PREFIX");
	return prefix && *prefix && path && strncmp(path, prefix, strlen(prefix)) == 0 && out_of_fds();
}

typedef int (*open_fn)(const char *, int, ...);

static int via(const char *name, const char *path, int flags, mode_t mode)
{
	if (refused_open(path)) {
		errno = EMFILE;
		return -1;
	}
	open_fn real = (open_fn)dlsym(RTLD_NEXT, name);
	return real(path, flags, mode);
}

static mode_t mode_arg(int flags, va_list ap)
{
	return flags & (O_CREAT | O_TMPFILE) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	return via("open", path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	return via("open64", path, flags, mode);
}

/* What _FORTIFY_SOURCE makes of an open() whose flags are not a constant. */
int __open_2(const char *path, int flags) { return via("open", path, flags, 0); }
int __open64_2(const char *path, int flags) { return via("open64", path, flags, 0); }
