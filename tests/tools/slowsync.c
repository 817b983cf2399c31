/* slowsync.so: an LD_PRELOAD stand-in for a slow disk. While the file named by
 * UCGW_SLOW_SYNC_FILE exists, every fdatasync() and fsync() first sleeps
 * UCGW_SLOW_SYNC_MS milliseconds (default 500); with UCGW_SLOW_SYNC_LOG set,
 * each such call appends a line to that file: "main" when the process's main
 * thread made it (for ucgwd: its event loop, which then answers nobody
 * meanwhile), "pool" for any other thread (libuv's thread pool). With
 * UCGW_SLOW_SYNC_ERRNO set (a number, e.g. 5 for EIO) each such call then
 * fails with that errno instead of syncing: a disk that lost the writes.
 * Without the trigger file they are the real ones, at their speed. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_NEXT */
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef int (*sync_fn)(int);

static int slow(const char *name, int fd)
{
	sync_fn real = (sync_fn)dlsym(RTLD_NEXT, name);
	if (!real) {
		errno = ENOSYS;
		return -1;
	}
	const char *trigger = getenv("UCGW_SLOW_SYNC_FILE");
	struct stat st;
	if (trigger && *trigger && stat(trigger, &st) == 0) {
		const char *ms = getenv("UCGW_SLOW_SYNC_MS");
		long n = ms && *ms ? atol(ms) : 500;
		const char *log = getenv("UCGW_SLOW_SYNC_LOG");
		if (log && *log) {
			int lfd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
			if (lfd >= 0) {
				const char *line = syscall(SYS_gettid) == getpid() ? "main\n" : "pool\n";
				ssize_t w = write(lfd, line, strlen(line));
				(void)w;
				close(lfd);
			}
		}
		struct timespec ts = { n / 1000, (n % 1000) * 1000000L };
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
		const char *fail = getenv("UCGW_SLOW_SYNC_ERRNO");
		if (fail && *fail) {
			errno = atoi(fail);
			return -1;
		}
	}
	return real(fd);
}

int fdatasync(int fd) { return slow("fdatasync", fd); }
int fsync(int fd) { return slow("fsync", fd); }
