#include "common/util.h"

#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

static uint64_t clock_us(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t now_ms(void) { return clock_us(CLOCK_MONOTONIC) / 1000u; }
uint64_t now_us(void) { return clock_us(CLOCK_MONOTONIC); }
uint64_t wall_ms(void) { return clock_us(CLOCK_REALTIME) / 1000u; }

void fmt_rfc3339_ms(uint64_t ms, char out[RFC3339_MS_LEN])
{
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
	char day[24];
	if (!gmtime_r(&secs, &tm) || !strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm))
		snprintf(day, sizeof day, "1970-01-01T00:00:00");
	snprintf(out, RFC3339_MS_LEN, "%s.%03uZ", day, (unsigned)(ms % 1000));
}

uint64_t rand_u64(void)
{
	uint64_t v = 0;
	if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v)
		v = now_ms() * 6364136223846793005ull + 1442695040888963407ull;
	return v;
}

static const char b32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/* The random part of ids, drawn from the kernel 1 KiB at a time: one getrandom
 * per message was a tenth of the supervisor's system calls at full rate. A pool
 * filled before a fork would hand the same bytes to both processes, so a child
 * starts with an empty one (pthread_atfork). Not thread-safe: ids are made on
 * the supervisor's loop only. */
static unsigned char id_pool[1024];
static size_t id_left;

static void id_pool_forget(void)
{
	memset(id_pool, 0, sizeof id_pool);
	id_left = 0;
}

static void id_random(unsigned char *r, size_t n)
{
	static bool registered;
	if (!registered) {
		pthread_atfork(NULL, NULL, id_pool_forget);
		registered = true;
	}
	if (id_left < n) {
		if (getrandom(id_pool, sizeof id_pool, 0) != (ssize_t)sizeof id_pool) {
			for (size_t i = 0; i < n; i++)
				r[i] = (unsigned char)rand_u64();
			return;
		}
		id_left = sizeof id_pool;
	}
	unsigned char *p = id_pool + sizeof id_pool - id_left;
	memcpy(r, p, n);
	memset(p, 0, n); /* used once */
	id_left -= n;
}

uint32_t id_hash32(const char *id)
{
	uint32_t h = 2166136261u;
	for (; *id; id++)
		h = (h ^ (unsigned char)*id) * 16777619u;
	return h;
}

void id_new(char out[UCGW_ID_LEN + 1])
{
	/* ULIDs sort by creation time, which gives the spool its age order for free. */
	uint64_t t = wall_ms();
	unsigned char r[10];
	id_random(r, sizeof r);
	for (int i = 9; i >= 0; i--) {
		out[i] = b32[t & 31];
		t >>= 5;
	}
	/* 80 random bits -> 16 base32 digits */
	unsigned acc = 0, bits = 0, j = 10;
	for (int i = 0; i < 10; i++) {
		acc = (acc << 8) | r[i];
		bits += 8;
		while (bits >= 5) {
			out[j++] = b32[(acc >> (bits - 5)) & 31];
			bits -= 5;
		}
	}
	out[UCGW_ID_LEN] = '\0';
}

bool id_valid(const char *s)
{
	if (!s || strlen(s) != UCGW_ID_LEN)
		return false;
	for (const char *p = s; *p; p++)
		if (!strchr(b32, *p))
			return false;
	return true;
}

uint64_t id_time_ms(const char *id)
{
	uint64_t t = 0;
	for (int i = 0; i < 10 && id[i]; i++) {
		const char *p = strchr(b32, id[i]);
		t = (t << 5) | (uint64_t)(p ? p - b32 : 0);
	}
	return t;
}

void wait_status_str(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exit status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "killed by signal %d (SIG%s)%s%s", WTERMSIG(status),
			 sigabbrev_np(WTERMSIG(status)) ? sigabbrev_np(WTERMSIG(status)) : "?",
			 WTERMSIG(status) == SIGSYS ? " (bad system call: the seccomp filter refused a call)" : "",
			 WCOREDUMP(status) ? ", core dumped" : "");
	else
		snprintf(buf, len, "unknown wait status 0x%x", status);
}

int mkdir_p(const char *path, unsigned mode)
{
	size_t n = strlen(path);
	char tmp[4096];
	if (n == 0 || n >= sizeof tmp) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(tmp, path, n + 1);
	for (char *s = tmp + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(tmp, mode) < 0 && errno != EEXIST)
			return -1;
		*s = '/';
	}
	return mkdir(tmp, mode) < 0 && errno != EEXIST ? -1 : 0;
}

void euid_str(char *buf, size_t len)
{
	uid_t uid = geteuid();
	struct passwd pwd, *pw = NULL;
	char pwbuf[1024]; /* getpwuid_r: a reload checks files in the thread pool */
	if (getpwuid_r(uid, &pwd, pwbuf, sizeof pwbuf, &pw) == 0 && pw)
		snprintf(buf, len, "user %s (uid %u)", pw->pw_name, (unsigned)uid);
	else
		snprintf(buf, len, "uid %u", (unsigned)uid);
}

void str_copy(char *dst, size_t size, const char *src)
{
	size_t n = strnlen(src, size - 1);
	memcpy(dst, src, n);
	dst[n] = '\0';
}
