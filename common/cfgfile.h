/* Files named by the configuration (keys, certificates, known_hosts, secrets,
 * the configuration itself, the audit log, the spool's and the crash logs'
 * directories): opened by one function so that whatever is put in their place
 * (a FIFO, a device such as /dev/zero, a directory, a loop of symbolic links,
 * a huge file) can neither hang nor flood the daemon, and is refused with one
 * text that names the key and the path. */
#ifndef UCGW_CFGFILE_H
#define UCGW_CFGFILE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

/* An open or a read that takes longer fails (ETIMEDOUT): "reading WHAT
 * (PATH) took longer than 2 s (is its file system hung?)"; the thread doing it
 * is left to finish, and until it has, the path is refused at once. */
#define CF_TIME_LIMIT_MS 2000

/* What may be found at the path. */
#define CF_REG 0x1u /* a regular file */
#define CF_DIR 0x2u /* a directory */
#define CF_CHR 0x4u /* a character device: /dev/null as a log to throw away */

/* Open path with flags (O_RDONLY, or O_WRONLY | O_APPEND | O_CREAT ...; add
 * O_NOFOLLOW where a link must not be followed) plus O_NONBLOCK, O_CLOEXEC and
 * O_NOCTTY: opening a FIFO or a device never waits. Then fstat: it must be one
 * of kinds, and a regular file at most max bytes (0: any size). O_CREAT
 * creates it 0600. Returns the descriptor (with *st), or -1 with errno and err:
 * "cannot read WHAT PATH: why" (what NULL: "cannot open PATH: why"), "WHAT
 * PATH is not a regular file (it is a FIFO)", "WHAT PATH has N bytes,
 * expected at most M". */
int cf_open(const char *what, const char *path, int flags, unsigned kinds, uint64_t max, struct stat *st, char *err,
	    size_t errlen);

/* The whole of a regular file (cf_open, then reads bounded by max: a file that
 * grows while it is read is refused), malloc'd with a NUL after its len bytes;
 * NULL with errno and err. */
char *cf_read(const char *what, const char *path, size_t max, size_t *len, struct stat *st, char *err,
	      size_t errlen);

/* "a FIFO", "a directory", "a character device"... for messages. */
const char *cf_kind(mode_t mode);

#endif
