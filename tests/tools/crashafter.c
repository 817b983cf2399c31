/* crashafter.so: an LD_PRELOAD stand-in for a crash at one exact instant.
 * When the process removes a file whose path contains UCGW_CRASH_AFTER_UNLINK
 * (say "/spool/files/"), it is killed with SIGKILL right after the unlink
 * returns, as a kill -9 or a power cut landing there would leave it. Without
 * the variable, or for every other path, unlink is the real one. The tests use
 * it to show that the spool removes its copy of a delivered file only once the
 * DONE record that says so is written. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_NEXT */
#endif
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

typedef int (*unlink_fn)(const char *);

int unlink(const char *path)
{
	unlink_fn real = (unlink_fn)dlsym(RTLD_NEXT, "unlink");
	if (!real) {
		errno = ENOSYS;
		return -1;
	}
	int rc = real(path);
	const char *pat = getenv("UCGW_CRASH_AFTER_UNLINK");
	if (rc == 0 && pat && *pat && strstr(path, pat))
		raise(SIGKILL);
	return rc;
}
