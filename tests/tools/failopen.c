/* failopen.so: an LD_PRELOAD stand-in for a file the disk cannot give back.
 * open() of the path named by UCGW_FAIL_OPEN fails with EIO, and with
 * UCGW_FAIL_RENAME set, so does rename() of the path it names (as its source):
 * a spool segment that cannot be read, and cannot even be moved aside. Every
 * other call is the real one. Paths are compared as given, not resolved. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_NEXT */
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

static int refused(const char *var, const char *path)
{
	const char *v = getenv(var);
	return v && *v && path && strcmp(v, path) == 0;
}

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*rename_fn)(const char *, const char *);

static mode_t mode_arg(int flags, va_list ap)
{
	return flags & (O_CREAT | O_TMPFILE) ? (mode_t)va_arg(ap, int) : 0;
}

static int via(const char *name, const char *path, int flags, mode_t mode)
{
	if (refused("UCGW_FAIL_OPEN", path)) {
		errno = EIO;
		return -1;
	}
	open_fn real = (open_fn)dlsym(RTLD_NEXT, name);
	if (!real) {
		errno = ENOSYS;
		return -1;
	}
	return real(path, flags, mode);
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

int openat(int dfd, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	if (refused("UCGW_FAIL_OPEN", path)) {
		errno = EIO;
		return -1;
	}
	openat_fn real = (openat_fn)dlsym(RTLD_NEXT, "openat");
	if (!real) {
		errno = ENOSYS;
		return -1;
	}
	return real(dfd, path, flags, mode);
}

int rename(const char *from, const char *to)
{
	if (refused("UCGW_FAIL_RENAME", from)) {
		errno = EIO;
		return -1;
	}
	rename_fn real = (rename_fn)dlsym(RTLD_NEXT, "rename");
	if (!real) {
		errno = ENOSYS;
		return -1;
	}
	return real(from, to);
}
