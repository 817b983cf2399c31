/* unsetclock.so: an LD_PRELOAD stand-in for a camera whose clock NTP has not
 * set yet. While the file named by UCGW_CLOCK_UNSET_FILE exists, the wall clock
 * (clock_gettime of CLOCK_REALTIME and its coarse form, gettimeofday, time)
 * reads UCGW_CLOCK_SHIFT_S seconds (default 20 years) behind the real one, and
 * adjtimex, ntp_adjtime and clock_adjtime report STA_UNSYNC. Once the file is
 * removed the clock is "set": the real time, and the status without STA_UNSYNC
 * (synchronised), as chrony or systemd-timesyncd leave it; with
 * UCGW_CLOCK_NO_NTP set, the status stays unsynchronised (no NTP client: the
 * clock set by hand, `date -s`). The monotonic and boot clocks are never
 * touched. With UCGW_BOOT_ID_FILE, the boot id
 * (/proc/sys/kernel/random/boot_id) is read from that file instead: writing
 * another id there is the camera rebooted. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_NEXT */
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/timex.h>
#include <time.h>

static long shift_s(void)
{
	const char *f = getenv("UCGW_CLOCK_UNSET_FILE");
	struct stat st;
	if (!f || !*f || stat(f, &st) != 0)
		return 0;
	const char *s = getenv("UCGW_CLOCK_SHIFT_S");
	return s && *s ? atol(s) : 631152000L;
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
	static int (*real)(clockid_t, struct timespec *);
	if (!real)
		real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
	if (!real) {
		errno = ENOSYS;
		return -1;
	}
	int rc = real(id, ts);
	if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
		ts->tv_sec -= shift_s();
	return rc;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
		return -1;
	struct timeval *volatile out = tv; /* declared nonnull, passed NULL by some callers all the same */
	if (out) {
		out->tv_sec = ts.tv_sec;
		out->tv_usec = ts.tv_nsec / 1000;
	}
	(void)tz;
	return 0;
}

time_t time(time_t *t)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
		return (time_t)-1;
	if (t)
		*t = ts.tv_sec;
	return ts.tv_sec;
}

static int status(int rc, struct timex *tx)
{
	if (rc < 0)
		return rc;
	const char *no_ntp = getenv("UCGW_CLOCK_NO_NTP");
	if (shift_s() || (no_ntp && *no_ntp)) {
		tx->status |= STA_UNSYNC;
		return TIME_ERROR;
	}
	tx->status &= ~STA_UNSYNC;
	return rc == TIME_ERROR ? TIME_OK : rc;
}

int adjtimex(struct timex *tx)
{
	static int (*real)(struct timex *);
	if (!real)
		real = (int (*)(struct timex *))dlsym(RTLD_NEXT, "adjtimex");
	return real ? status(real(tx), tx) : (errno = ENOSYS, -1);
}

int ntp_adjtime(struct timex *tx)
{
	static int (*real)(struct timex *);
	if (!real)
		real = (int (*)(struct timex *))dlsym(RTLD_NEXT, "ntp_adjtime");
	return real ? status(real(tx), tx) : (errno = ENOSYS, -1);
}

int clock_adjtime(clockid_t id, struct timex *tx)
{
	static int (*real)(clockid_t, struct timex *);
	if (!real)
		real = (int (*)(clockid_t, struct timex *))dlsym(RTLD_NEXT, "clock_adjtime");
	return real ? status(real(id, tx), tx) : (errno = ENOSYS, -1);
}

static const char *boot_id_path(const char *path)
{
	const char *f = getenv("UCGW_BOOT_ID_FILE");
	return f && *f && path && strcmp(path, "/proc/sys/kernel/random/boot_id") == 0 ? f : path;
}

FILE *fopen(const char *restrict path, const char *restrict mode)
{
	static FILE *(*real)(const char *, const char *);
	if (!real)
		real = (FILE * (*)(const char *, const char *)) dlsym(RTLD_NEXT, "fopen");
	return real ? real(boot_id_path(path), mode) : (errno = ENOSYS, NULL);
}

FILE *fopen64(const char *restrict path, const char *restrict mode)
{
	static FILE *(*real)(const char *, const char *);
	if (!real)
		real = (FILE * (*)(const char *, const char *)) dlsym(RTLD_NEXT, "fopen64");
	return real ? real(boot_id_path(path), mode) : (errno = ENOSYS, NULL);
}
