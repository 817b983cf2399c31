/* hangread.so: an LD_PRELOAD stand-in for a file on a hung NFS or FUSE mount.
 * While the file named by UCGW_HANG_FILE exists, read() of a descriptor that
 * was opened on the path UCGW_HANG_PATH (compared as given to open) waits, as
 * a read from a server that went away does; once the trigger file is gone the
 * read goes on. Every other call is the real one. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_NEXT */
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_FD 4096
static atomic_bool marked[MAX_FD];

static int hung_path(const char *path)
{
	const char *v = getenv("UCGW_HANG_PATH");
	return v && *v && path && strcmp(v, path) == 0;
}

static void wait_while_triggered(void)
{
	const char *trigger = getenv("UCGW_HANG_FILE");
	struct stat st;
	struct timespec ts = { 0, 50 * 1000 * 1000 };
	while (trigger && *trigger && stat(trigger, &st) == 0)
		nanosleep(&ts, NULL);
}

typedef int (*open_fn)(const char *, int, ...);

static int via(const char *name, const char *path, int flags, mode_t mode)
{
	open_fn real = (open_fn)dlsym(RTLD_NEXT, name);
	if (!real) {
		errno = ENOSYS;
		return -1;
	}
	int fd = real(path, flags, mode);
	if (fd >= 0 && fd < MAX_FD)
		atomic_store(&marked[fd], hung_path(path));
	return fd;
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

ssize_t read(int fd, void *buf, size_t n)
{
	if (fd >= 0 && fd < MAX_FD && atomic_load(&marked[fd]))
		wait_while_triggered();
	ssize_t (*real)(int, void *, size_t) = (ssize_t(*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");
	return real(fd, buf, n);
}

int close(int fd)
{
	if (fd >= 0 && fd < MAX_FD)
		atomic_store(&marked[fd], false);
	int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "close");
	return real(fd);
}
