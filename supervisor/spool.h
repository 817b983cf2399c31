/* The store-and-forward spool: append-only segments of checksummed records
 * (ADD, DONE, DEAD, REQUEUE), group commit, a file area for images. A message
 * is accepted only once its ADD record is durable to the configured level, and
 * leaves only after a worker said ok (DONE). */
#ifndef UCGW_SPOOL_H
#define UCGW_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "supervisor/message.h"

struct spool_stats {
	uint64_t messages, bytes, dead, oldest_wall_ms;
	uint64_t segments, disk_bytes;
	uint64_t written_bytes, written_records;
	uint64_t reflinks; /* files snapshotted by a reflink (FICLONE) rather than copied */
	uint64_t fsyncs; /* fsync and fdatasync calls made: a group commit makes one per file, directory and segment it syncs */
	uint64_t dropped, expired, corrupt_segments, corrupt_records, torn_tails;
	uint64_t stray_files_removed, stray_bytes_removed; /* at start: copies no message referred to */
};

/* Open dir, recover what it holds: each live message is handed to recovered()
 * in segment order. -1 with err when the spool cannot be used at all. */
int spool_open(char *err, size_t errlen, void (*recovered)(struct smsg *m));
void spool_close(void);

/* Persist a new message: payload bytes, or for a file the caller's open
 * descriptor, of which the spool takes a snapshot of its own (a reflink, else
 * a copy; in libuv's pool, never on the loop): what is delivered is what was
 * accepted, whatever the caller does with its file afterwards. Its record is
 * written with the others of a loop turn, at the turn's end (a file's once
 * its snapshot is taken); then written() runs, with err NULL once it is in the
 * segment or with the reason it could not be taken (disk full, the file
 * changed while it was copied); after a success durable() follows once it is
 * as durable as spool.fsync asks (at once with fsync: never), err set if the
 * sync failed. durable() gets no message (find it by its id if it matters).
 * Returns -1 with err when the message cannot be taken at all (no segment);
 * the callbacks then never run. The bounds (max_bytes, max_messages) are the
 * router's to enforce, counting spool_unwritten(). */
int spool_add(struct smsg *m, const void *payload, size_t len, int file_fd,
	      void (*written)(struct smsg *m, const char *err, void *arg),
	      void (*durable)(const char *err, void *arg),
	      void *arg, char *err, size_t errlen);
/* New messages whose records wait for the end of this turn or for their
 * file's snapshot: count and bytes. */
void spool_unwritten(uint64_t *n, uint64_t *bytes);
/* The worker said ok, or an operator purged it: write DONE (with the router's
 * word for it: "delivered", "expired", ...) and forget the file. */
void spool_done(struct smsg *m, const char *state);
void spool_dead(struct smsg *m, const char *reason);
void spool_requeue(struct smsg *m);
/* Read a metadata payload back (after recovery, or when memory was trimmed). */
int spool_load_payload(struct smsg *m);
/* Open the spool's copy of a file job, read-only; -1 with why (a copy whose
 * size is not the one accepted is refused). */
int spool_open_file(const struct smsg *m, char *err, size_t errlen);
void spool_stats(struct spool_stats *st);

#endif
