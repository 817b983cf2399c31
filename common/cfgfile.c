#include "common/cfgfile.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

const char *cf_kind(mode_t m)
{
	return S_ISREG(m) ? "a regular file" : S_ISDIR(m) ? "a directory" : S_ISFIFO(m) ? "a FIFO"
		: S_ISCHR(m) ? "a character device" : S_ISBLK(m) ? "a block device" : S_ISSOCK(m) ? "a socket"
		: S_ISLNK(m) ? "a symbolic link" : "of an unknown kind";
}

static void name(char *buf, size_t len, const char *what, const char *path)
{
	snprintf(buf, len, "%s%s%s", what ? what : "", what ? " " : "", path);
}

static int open_failed(const char *what, const char *path, int flags, char *err, size_t errlen)
{
	int e = errno;
	char who[96] = "", n[600];
	struct stat st;
	name(n, sizeof n, what, path);
	/* A FIFO opened for writing with no reader fails ENXIO, a link under
	 * O_NOFOLLOW ELOOP: say what is there rather than the errno's words. */
	if ((e == ENXIO || ((flags & O_NOFOLLOW) && e == ELOOP)) && lstat(path, &st) == 0)
		snprintf(err, errlen, "%s is %s, expected a regular file", n, cf_kind(st.st_mode));
	else {
		if (e == EACCES)
			euid_str(who, sizeof who);
		snprintf(err, errlen, "cannot %s %s: %s%s%s%s", what ? "read" : "open", n, strerror(e),
			 e == ELOOP ? " (a loop of symbolic links)" : "", who[0] ? "; it is read as " : "", who);
	}
	errno = e;
	return -1;
}

static int open_now(const char *what, const char *path, int flags, unsigned kinds, uint64_t max, struct stat *st,
		    char *err, size_t errlen)
{
	int fd = open(path, flags | O_NONBLOCK | O_CLOEXEC | O_NOCTTY, 0600);
	if (fd < 0)
		return open_failed(what, path, flags, err, errlen);
	char n[600];
	name(n, sizeof n, what, path);
	int e = 0;
	if (fstat(fd, st) < 0) {
		e = errno;
		snprintf(err, errlen, "cannot read %s: %s", n, strerror(e));
	} else if (!(S_ISREG(st->st_mode) && (kinds & CF_REG)) && !(S_ISDIR(st->st_mode) && (kinds & CF_DIR)) &&
		   !(S_ISCHR(st->st_mode) && (kinds & CF_CHR))) {
		e = S_ISDIR(st->st_mode) ? EISDIR : kinds == CF_DIR ? ENOTDIR : EINVAL;
		snprintf(err, errlen, "%s is not %s (it is %s)", n, kinds & CF_REG ? "a regular file" : "a directory",
			 cf_kind(st->st_mode));
	} else if (S_ISREG(st->st_mode) && max && (uint64_t)st->st_size > max) {
		e = EFBIG;
		snprintf(err, errlen, "%s has %lld bytes, expected at most %llu", n, (long long)st->st_size,
			 (unsigned long long)max);
	}
	if (!e)
		return fd;
	close(fd);
	errno = e;
	return -1;
}

static char *read_now(const char *what, const char *path, size_t max, size_t *len, struct stat *st, char *err,
		       size_t errlen)
{
	int fd = open_now(what, path, O_RDONLY, CF_REG, max, st, err, errlen);
	if (fd < 0)
		return NULL;
	/* One byte more than fstat said, to see a file that grew: what was read
	 * must be what was checked. */
	size_t cap = (size_t)st->st_size + 1, n = 0;
	char *buf = xmalloc(cap + 1);
	int e = 0;
	for (;;) {
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			e = r < 0 ? errno : 0;
			break;
		}
		if ((n += (size_t)r) == cap) {
			e = EFBIG;
			break;
		}
	}
	close(fd);
	if (e) {
		char nm[600];
		name(nm, sizeof nm, what, path);
		if (e == EFBIG)
			snprintf(err, errlen, "%s changed while it was read", nm);
		else
			snprintf(err, errlen, "cannot read %s: %s", nm, strerror(e));
		explicit_bzero(buf, cap + 1); /* it may be a key */
		free(buf);
		errno = e;
		return NULL;
	}
	buf[n] = '\0';
	*len = n;
	return buf;
}

/* ---- the time limit ----
 *
 * O_NONBLOCK keeps a FIFO or a device from holding an open, but not a hung
 * NFS or FUSE mount: there open(), fstat() and read() wait in the kernel for
 * as long as the server is away. So each open or read runs in a thread of its
 * own, and the caller waits for it CF_TIME_LIMIT_MS at most. A thread that
 * overruns is left to finish on its own (it closes and frees what it got);
 * until it does, its path is "hung" and is refused at once, so that a loop
 * that tries again does not wait again. */

struct job {
	char *what;
	char *path;
	int flags;
	unsigned kinds;
	uint64_t max;
	bool whole; /* read it all (cf_read), or open it (cf_open) */
	int fd, err;
	char *buf;
	size_t len;
	struct stat st;
	char msg[1024];
	bool done, abandoned;
	pthread_cond_t cv;
};

struct hung {
	char *path;
	struct hung *next;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct hung *hung_list;
static unsigned hung_count;

#define HUNG_MAX 16 /* threads left waiting at most; beyond, every read is refused at once */

static bool is_hung(const char *path)
{
	for (struct hung *h = hung_list; h; h = h->next)
		if (strcmp(h->path, path) == 0)
			return true;
	return false;
}

static void hung_remove(const char *path)
{
	for (struct hung **pp = &hung_list; *pp; pp = &(*pp)->next)
		if (strcmp((*pp)->path, path) == 0) {
			struct hung *h = *pp;
			*pp = h->next;
			free(h->path);
			free(h);
			hung_count--;
			return;
		}
}

static void job_free(struct job *j)
{
	pthread_cond_destroy(&j->cv);
	free(j->what);
	free(j->path);
	free(j);
}

static void discard(int fd, char *buf, size_t len)
{
	if (fd >= 0)
		close(fd);
	if (buf) {
		explicit_bzero(buf, len); /* it may be a key */
		free(buf);
	}
}

static void *job_run(void *arg)
{
	struct job *j = arg;
	struct stat st;
	char msg[sizeof j->msg] = "";
	size_t len = 0;
	char *buf = NULL;
	int fd = -1, err = 0;
	if (j->whole) {
		if (!(buf = read_now(j->what, j->path, (size_t)j->max, &len, &st, msg, sizeof msg)))
			err = errno;
	} else if ((fd = open_now(j->what, j->path, j->flags, j->kinds, j->max, &st, msg, sizeof msg)) < 0) {
		err = errno;
	}
	pthread_mutex_lock(&mu);
	if (j->abandoned) { /* the caller went on without it */
		hung_remove(j->path);
		pthread_mutex_unlock(&mu);
		discard(fd, buf, len);
		job_free(j);
		return NULL;
	}
	j->fd = fd;
	j->buf = buf;
	j->len = len;
	j->st = st;
	j->err = err;
	memcpy(j->msg, msg, sizeof msg);
	j->done = true;
	pthread_cond_signal(&j->cv);
	pthread_mutex_unlock(&mu);
	return NULL;
}

static void overran(const struct job *j, bool before, char *err, size_t errlen)
{
	char n[600];
	if (j->what)
		snprintf(n, sizeof n, "%s (%s)", j->what, j->path);
	else
		snprintf(n, sizeof n, "%s", j->path);
	if (before)
		snprintf(err, errlen, "reading %s: an earlier read of it has not come back after more than %d s "
				      "(is its file system hung?)", n, CF_TIME_LIMIT_MS / 1000);
	else
		snprintf(err, errlen, "reading %s took longer than %d s (is its file system hung?); not waiting for it",
			 n, CF_TIME_LIMIT_MS / 1000);
	errno = ETIMEDOUT;
}

/* Run j in its own thread, wait for it CF_TIME_LIMIT_MS at most: 0 (the
 * results in j, which the caller frees), or -1 with err (j is gone). */
static int job_wait(struct job *j, char *err, size_t errlen)
{
	pthread_mutex_lock(&mu);
	bool refuse = is_hung(j->path) || hung_count >= HUNG_MAX;
	pthread_mutex_unlock(&mu);
	if (refuse) {
		overran(j, true, err, errlen);
		job_free(j);
		return -1;
	}
	pthread_attr_t attr;
	pthread_t t;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	int rc = pthread_create(&t, &attr, job_run, j);
	pthread_attr_destroy(&attr);
	if (rc != 0) { /* no thread to be had (a process limit): read without the limit */
		job_run(j);
		return 0;
	}
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += CF_TIME_LIMIT_MS / 1000;
	dl.tv_nsec += (long)(CF_TIME_LIMIT_MS % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&mu);
	while (!j->done && pthread_cond_timedwait(&j->cv, &mu, &dl) != ETIMEDOUT) {
	}
	if (!j->done) {
		j->abandoned = true; /* job_run frees it */
		struct hung *h = xcalloc(1, sizeof *h);
		h->path = xstrdup(j->path);
		h->next = hung_list;
		hung_list = h;
		hung_count++;
		overran(j, false, err, errlen);
		pthread_mutex_unlock(&mu);
		return -1;
	}
	pthread_mutex_unlock(&mu);
	return 0;
}

static struct job *job_new(const char *what, const char *path, int flags, unsigned kinds, uint64_t max, bool whole)
{
	struct job *j = xcalloc(1, sizeof *j);
	j->what = what ? xstrdup(what) : NULL; /* the thread may outlive the caller's buffers */
	j->path = xstrdup(path);
	j->flags = flags;
	j->kinds = kinds;
	j->max = max;
	j->whole = whole;
	j->fd = -1;
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&j->cv, &ca);
	pthread_condattr_destroy(&ca);
	return j;
}

int cf_open(const char *what, const char *path, int flags, unsigned kinds, uint64_t max, struct stat *st, char *err,
	    size_t errlen)
{
	struct job *j = job_new(what, path, flags, kinds, max, false);
	if (job_wait(j, err, errlen) < 0)
		return -1;
	int fd = j->fd, e = j->err;
	if (fd >= 0)
		*st = j->st;
	else
		snprintf(err, errlen, "%s", j->msg);
	job_free(j);
	errno = e;
	return fd;
}

char *cf_read(const char *what, const char *path, size_t max, size_t *len, struct stat *st, char *err, size_t errlen)
{
	struct job *j = job_new(what, path, O_RDONLY, CF_REG, max, true);
	if (job_wait(j, err, errlen) < 0)
		return NULL;
	char *buf = j->buf;
	int e = j->err;
	if (buf) {
		*len = j->len;
		*st = j->st;
	} else {
		snprintf(err, errlen, "%s", j->msg);
	}
	job_free(j);
	errno = e;
	return buf;
}
