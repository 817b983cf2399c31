#include "common/cfgfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int cf_open(const char *what, const char *path, int flags, unsigned kinds, uint64_t max, struct stat *st, char *err,
	    size_t errlen)
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

char *cf_read(const char *what, const char *path, size_t max, size_t *len, struct stat *st, char *err, size_t errlen)
{
	int fd = cf_open(what, path, O_RDONLY, CF_REG, max, st, err, errlen);
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
