/* unsetclock.so: an LD_PRELOAD stand-in for a camera whose clock NTP has not
 * set yet. While the file named by UCGW_CLOCK_UNSET_FILE exists, the wall clock
 * (clock_gettime of CLOCK_REALTIME and its coarse form, gettimeofday, time)
 * reads UCGW_CLOCK_SHIFT_S seconds (default 20 years) behind the real one, and
 * adjtimex, ntp_adjtime and clock_adjtime report STA_UNSYNC. Once the file is
 * removed the clock is "set": the real time, and the status without STA_UNSYNC
 * (synchronised), as chrony or systemd-timesyncd leave it. The monotonic and
 * boot clocks are never touched. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_NEXT */
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
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
	if (shift_s()) {
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
