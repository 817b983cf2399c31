/* The spool on disk.
 *
 *   DIR/seg/NNNNNNNNNNNNNNNNNNNN.log   append-only segments of records
 *   DIR/files/ID                       the spool's snapshot of each file (a reflink or a copy)
 *   DIR/corrupt/                       segments that failed their checksums or could not be read, moved aside
 *
 * A record is: u32 body length, u32 CRC-32C of type+body, u8 type, body (a msgpack
 * map). ADD carries the whole message (metadata payload included, and for one
 * accepted before the wall clock was known set "boot", "boot_ms" and
 * "clock_unset": the boot it was accepted in and its boot clock then, for the
 * clock's correction; a reader before them skips unknown keys, and a record
 * without them is a message whose time stays as it is, unless before
 * CLOCK_FLOOR_MS; a record of another boot, or with "boot" "", is one whose
 * expiry counts again from when it is read back: clock.c); DONE, DEAD and
 * REQUEUE carry its id (DONE also how it left, DEAD why). Recovery replays the segments in order; a torn tail of the
 * newest segment is cut at the last good record. Segments are deleted oldest first
 * once nothing in them is live (a DONE in a newer segment must not outlive the ADD
 * it cancels), and a nearly empty oldest segment is compacted by copying its live
 * records forward (looked at whenever a segment is opened: a dead letter pins no
 * segment for long); it goes once the copies are durable (synced off the loop),
 * and a replay that finds both takes the later ADD of an id as the message. A
 * segment that cannot be read at start is never taken for an empty one: it is
 * moved aside, none of it deleted. After replay, copies in DIR/files that no
 * live message names are removed, unless a record may be missing. */
#include "supervisor/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uv.h>

#include "common/log.h"
#include "ipc/channel.h"
#include "supervisor/admission.h"
#include "supervisor/clock.h"
#include "supervisor/router.h"
#include "supervisor/sup.h"

enum rec_type { REC_ADD = 1, REC_DONE = 2, REC_DEAD = 3, REC_REQUEUE = 4 };
#define REC_HDR 9
#define MAX_RECORD (300u << 20)

struct seg {
	uint64_t num;
	int rfd;            /* opened for reading on demand */
	uint64_t live;      /* ADD records not yet cancelled */
	uint64_t size;
	bool corrupt;       /* failed a checksum before its end, or unreadable: to be moved aside */
	bool unreadable;    /* ... could not be opened or mapped at start: none of it replayed */
};

struct pending {
	void (*cb)(const char *, void *);
	void *arg;
};

/* A live record of the oldest segment, copied forward by a compaction: the
 * message moves there once the copy is durable. */
struct moved {
	char id[UCGW_ID_LEN + 1];
	uint64_t seg, off;
	uint32_t reclen;
};

/* Ids of delivered files: their copies wait for their DONE records. */
struct idlist {
	char (*v)[UCGW_ID_LEN + 1];
	size_t n, cap;
};

/* A new message whose ADD record waits in spool_state.out for the write of this loop turn. */
struct unwritten {
	struct smsg *m;
	void (*written)(struct smsg *, const char *, void *);
	void (*durable)(const char *, void *);
	void *arg;
	bool failed;
	int synced_fd;      /* its file's descriptor waiting in spool_state.linked for the sync, or -1 */
};

static struct {
	char *dir, *segdir, *filedir;
	enum { FS_ALWAYS, FS_BATCH, FS_NEVER } fsync;
	uint64_t interval_ms, seg_max;
	struct seg *segs;   /* oldest first; the last one is the one appended to */
	size_t nsegs;
	int wfd;
	uint64_t woff;
	struct pending *batch, *flight; /* waiting for the next fsync; in the one running */
	size_t nbatch, capbatch, nflight;
	bool syncing, files_dirty;
	uv_timer_t timer;
	uv_work_t work;     /* the group commit's sync, in libuv's thread pool */
	/* What the running group commit syncs, taken from the loop's lists when it
	 * started (the pool thread reads it, the loop does not touch it meanwhile):
	 * files snapshotted in, their directory, full segments left, the segment written. */
	struct {
		int *files;
		size_t nfiles;
		bool dir;
		int *segs;
		size_t nsegs;
		int wfd;
		uint64_t woff;  /* how far the segment written was when it started */
		uint64_t syncs;   /* fsync and fdatasync calls it made: added to spool_state.st.fsyncs when it ends */
		int err;          /* errno of the first failure (in the order synced), or 0 */
		const char *what; /* ... and what failed: "a file", the files' directory, "a full segment", "" */
	} job;
	msgpack_sbuffer sb;
	msgpack_sbuffer out;    /* records not yet written: see write_out() */
	struct unwritten *adds; /* the new messages among them, in order */
	size_t nadds, capadds;
	uint64_t adds_bytes;
	char out_err[200];      /* why the last write of spool_state.out failed */
	bool out_full;          /* ... and it was for want of space */
	int *linked;            /* files copied in since the last sync: their contents to sync */
	size_t nlinked, caplinked;
	/* Delivered files whose copies wait for their DONE records: in spool_state.out (not
	 * written yet), written but not yet synced, in the sync running. */
	struct idlist gone, unsynced, gone_flight;
	int *close_after_sync;  /* a full segment left while the running sync covers all of it */
	size_t nclose_after_sync;
	int *left;              /* full segments left since the last sync started: the next one syncs them */
	size_t nleft;
	unsigned write_failures; /* writes of spool_state.out that failed: did one since then? */
	/* A compaction whose copies wait for their sync (see compact_oldest). */
	bool compacting;
	bool gc_due;            /* a segment was opened: look at the oldest at the end of this turn */
	uint64_t compact_from;
	struct moved *moved;
	size_t nmoved;
	uv_prepare_t prep;
	/* Snapshots of files being taken (see snapshot): waiting their turn, in
	 * the pool; how many in all and their bytes (counted as unwritten). */
	struct snap *snapq, *snapq_tail, *snaps;
	unsigned nsnaps, nsnaps_running;
	uint64_t snaps_bytes;
	msgpack_zone zone;
	struct spool_stats st;
	/* The spool's own index of its live records (accepted, no DONE yet),
	 * oldest first: what a compaction copies and how old the oldest is, with
	 * no look into the router's lists. Linked through the messages. */
	struct smsg *live_head, *live_tail;
	void (*recovered)(struct smsg *m); /* who takes the messages read back at start */
} spool_state;

static void live_add(struct smsg *m)
{
	m->snext = NULL;
	m->sprev = spool_state.live_tail;
	if (spool_state.live_tail)
		spool_state.live_tail->snext = m;
	else
		spool_state.live_head = m;
	spool_state.live_tail = m;
	m->spooled = true;
}

static void live_del(struct smsg *m)
{
	if (!m->spooled)
		return;
	if (m->sprev)
		m->sprev->snext = m->snext;
	else
		spool_state.live_head = m->snext;
	if (m->snext)
		m->snext->sprev = m->sprev;
	else
		spool_state.live_tail = m->sprev;
	m->snext = m->sprev = NULL;
	m->spooled = false;
}

/* A message read back at start: live, then the router's. */
static void hand_recovered(struct smsg *m)
{
	live_add(m);
	spool_state.recovered(m);
}

/* CRC-32C (Castagnoli), table-driven: no library on the list offers it, and
 * tables need no CPU extension (the device may be an ARM board). Eight tables
 * ("slicing by 8") take eight bytes per step: a 400-byte record costs about a
 * fifth of the one-byte-a-step loop. */
static uint32_t crc_table[8][256];

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

#if defined(__x86_64__) && defined(__GNUC__)
/* On x86-64 with SSE4.2 the CPU's crc32 instruction computes the same CRC-32C
 * eight bytes per instruction (about six times the tables' speed on a record). */
#include <nmmintrin.h>
__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t crc, const unsigned char *p, size_t n)
{
	uint64_t c = ~crc;
	for (; n >= 8; n -= 8, p += 8) {
		uint64_t w;
		memcpy(&w, p, 8); /* x86 is little-endian: the bytes in order */
		c = _mm_crc32_u64(c, w);
	}
	uint32_t c32 = (uint32_t)c;
	while (n--)
		c32 = _mm_crc32_u8(c32, *p++);
	return ~c32;
}
#define HAVE_CRC32C_HW 1
#endif

static uint32_t crc32c(uint32_t crc, const void *buf, size_t n)
{
	const unsigned char *p = buf;
#ifdef HAVE_CRC32C_HW
	static int hw = -1;
	if (hw < 0)
		hw = __builtin_cpu_supports("sse4.2");
	if (hw)
		return crc32c_sse42(crc, p, n);
#endif
	crc = ~crc;
	for (; n >= 8; n -= 8, p += 8) { /* bytes in order: the same on any endianness */
		uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
		crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^ crc_table[5][(lo >> 16) & 0xff] ^
		      crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^ crc_table[2][p[5]] ^ crc_table[1][p[6]] ^
		      crc_table[0][p[7]];
	}
	while (n--)
		crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
	return ~crc;
}

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static char *seg_path(uint64_t num) { return xasprintf("%s/%020llu.log", spool_state.segdir, (unsigned long long)num); }

static struct seg *seg_find(uint64_t num)
{
	for (size_t i = 0; i < spool_state.nsegs; i++)
		if (spool_state.segs[i].num == num)
			return &spool_state.segs[i];
	return NULL;
}

static void keep_files(struct idlist *l, const char *why);
static void forget_files(struct idlist *l);

/* The segment being written is full. The group commit syncs the segment being
 * written, so what waits for durability in this one (new messages not yet
 * answered accepted, DONE records whose files' copies wait, a compaction's
 * copies) must be synced too: it goes on spool_state.left, which the next group commit
 * syncs (in the pool, with the segment written then) and closes after. One that
 * the running sync covers to its end (nothing written to it since that sync
 * started) is closed once that sync ends. A descriptor is never closed while a
 * sync of it runs. With spool.fsync never nothing is synced: closed at once. */
static void leave_segment(void)
{
	if (spool_state.fsync == FS_NEVER) {
		close(spool_state.wfd);
		return;
	}
	if (spool_state.syncing && spool_state.job.wfd == spool_state.wfd && spool_state.job.woff == spool_state.woff) {
		spool_state.close_after_sync = xrealloc(spool_state.close_after_sync, (spool_state.nclose_after_sync + 1) * sizeof *spool_state.close_after_sync);
		spool_state.close_after_sync[spool_state.nclose_after_sync++] = spool_state.wfd;
		return;
	}
	spool_state.left = xrealloc(spool_state.left, (spool_state.nleft + 1) * sizeof *spool_state.left);
	spool_state.left[spool_state.nleft++] = spool_state.wfd;
}

static int seg_open_new(char *err, size_t errlen)
{
	uint64_t num = spool_state.nsegs ? spool_state.segs[spool_state.nsegs - 1].num + 1 : 1;
	char *path = seg_path(num);
	/* O_EXCL: a segment by that name is one the listing missed; never append to it. */
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0640);
	if (fd < 0) {
		snprintf(err, errlen, "cannot create spool segment %s: %s", path, strerror(errno));
		free(path);
		return -1;
	}
	free(path);
	if (spool_state.wfd >= 0)
		leave_segment();
	spool_state.wfd = fd;
	spool_state.woff = 0;
	spool_state.segs = xrealloc(spool_state.segs, (spool_state.nsegs + 1) * sizeof *spool_state.segs);
	spool_state.segs[spool_state.nsegs++] = (struct seg){ .num = num, .rfd = -1 };
	spool_state.st.segments = spool_state.nsegs;
	/* The spool grew by a segment: one more may make a pinned oldest one worth
	 * compacting (see seg_gc). Not from here: this runs inside append_record,
	 * whose record waits in spool_state.sb, and a compaction appends records (and may
	 * finish a segment itself) and deleting the oldest moves spool_state.segs. */
	spool_state.gc_due = true;
	return 0;
}

/* ---- encoding records ---- */

static void pack_add(msgpack_packer *pk, const struct smsg *m, const void *payload, size_t len)
{
	msgpack_sbuffer *sb = pk_sbuffer(pk); /* packed straight in: one for every message */
	bool unset = m->clock_unset || m->expiry_unset;
	mpw_map(sb, unset ? 15 : 12);
	mpw_kv_str(sb, "id", m->id);
	mpw_kv_u64(sb, "kind", m->kind);
	mpw_kv_u64(sb, "prio", m->priority);
	mpw_kv_str(sb, "proto", m->protocol);
	mpw_kv_str(sb, "topic", m->topic);
	mpw_kv_str(sb, "endpoint", m->endpoint);
	mpw_kv_str(sb, "remote_name", m->remote_name);
	mpw_str(sb, "encrypt");
	mpw_bool(sb, m->encrypt);
	mpw_kv_u64(sb, "created", m->created_wall_ms);
	mpw_kv_u64(sb, "expires", m->expires_wall_ms);
	mpw_kv_u64(sb, "size", m->size);
	if (unset) { /* what a correction needs (clock.c); a time taken by a set clock needs none */
		mpw_kv_str(sb, "boot", m->clock_unset ? clock_boot_id() : ""); /* "": an expiry to count again */
		mpw_kv_u64(sb, "boot_ms", m->boot_ms);
		mpw_str(sb, "clock_unset");
		mpw_bool(sb, true);
	}
	mpw_str(sb, "payload");
	mpw_bin(sb, payload, payload ? len : 0);
}

/* Fill in the header of the record framed in spool_state.sb (after REC_HDR reserved bytes). */
static void seal_record(enum rec_type type)
{
	unsigned char *h = (unsigned char *)spool_state.sb.data;
	size_t body = spool_state.sb.size - REC_HDR;
	h[8] = (unsigned char)type;
	put32(h, (uint32_t)body);
	put32(h + 4, crc32c(0, h + 8, body + 1));
}

/* Records are not written one by one: each goes to spool_state.out, and everything
 * appended in one turn of the loop is written in one write() at its end (a
 * prepare handle), before the loop polls again. Nothing is answered before
 * that: a new message is routed and its client told "accepted" only once its
 * ADD record is written (and, per spool.fsync, durable), and replies leave
 * only when the loop next polls. At full rate this is one write() for many
 * messages instead of one each. DONE records ride along: one lost in a crash
 * means a message delivered once more, which the idempotency key covers. For
 * that a file message needs its file: the spool's copy of a delivered file is
 * removed only once the DONE that cancels its ADD is written (removed at once,
 * a crash before this write left an ADD with no DONE and no file, and the next
 * start made a dead letter of a file that had arrived) and, unless
 * spool.fsync is never, synced (for a power cut: see remove_gone). */
static void remove_gone(bool written);

static int write_out(void)
{
	if (!spool_state.out.size || spool_state.wfd < 0)
		return spool_state.out.size ? -1 : 0;
	ssize_t n = write(spool_state.wfd, spool_state.out.data, spool_state.out.size);
	if (n != (ssize_t)spool_state.out.size) {
		int e = n < 0 ? errno : ENOSPC;
		if (n > 0 && ftruncate(spool_state.wfd, (off_t)spool_state.woff) < 0)
			log_warn("spool: cannot cut a short write");
		spool_state.out_full = e == ENOSPC || e == EDQUOT;
		if (spool_state.out_full)
			snprintf(spool_state.out_err, sizeof spool_state.out_err, "spool full: the file system of %s has no room (%s); "
				 "try again later", spool_state.segdir, strerror(e));
		else
			snprintf(spool_state.out_err, sizeof spool_state.out_err, "spool: cannot write to %s: %s", spool_state.segdir, strerror(e));
		log_warnx("%s (%zu bytes: %zu new messages not accepted; messages delivered meanwhile may be "
			  "delivered again after a restart)", spool_state.out_err, spool_state.out.size, spool_state.nadds);
		for (size_t i = 0; i < spool_state.nadds; i++)
			spool_state.adds[i].failed = true;
		spool_state.out.size = 0;
		spool_state.write_failures++;
		remove_gone(false);
		return -1;
	}
	spool_state.woff += (uint64_t)n;
	spool_state.segs[spool_state.nsegs - 1].size = spool_state.woff;
	spool_state.st.written_bytes += (uint64_t)n;
	spool_state.out.size = 0;
	remove_gone(true);
	return 0;
}

static char *file_path(const char *id) { return xasprintf("%s/%s", spool_state.filedir, id); }

static void forget_file(const char *id);

static void idlist_push(struct idlist *l, const char *id)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 16;
		l->v = xrealloc(l->v, l->cap * sizeof *l->v);
	}
	memcpy(l->v[l->n++], id, sizeof l->v[0]);
}

static void idlist_free(struct idlist *l)
{
	free(l->v);
	*l = (struct idlist){ 0 };
}

/* The copies of these files go: their DONE records are written and, unless
 * spool.fsync is never, synced. */
static bool id_taken_again(const char *id);
static void forget_files(struct idlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		if (!id_taken_again(l->v[i]))
			forget_file(l->v[i]);
	l->n = 0;
}

/* The copies of these files stay: their DONE records may be lost. */
static void keep_files(struct idlist *l, const char *why)
{
	if (l->n)
		log_warnx("spool: kept the copies of %zu delivered files whose DONE records %s; "
			  "they are delivered again after a restart", l->n, why);
	l->n = 0;
}

/* The DONE records of spool_state.out are written (or lost with it). Lost, the copies of
 * the files they cancel stay for the delivery once more that the next start
 * makes. Written, they go once the DONE is durable: with spool.fsync never at
 * once, else with the next sync of the segment (one per loop turn with
 * always, the group commit with batch; see finish_out). Removed before that, a
 * power cut could keep the ADD on disk and lose the DONE and the copy, and the
 * next start dead-lettered a file that had arrived. */
static void remove_gone(bool written)
{
	if (!written) {
		keep_files(&spool_state.gone, "could not be written");
		return;
	}
	if (spool_state.fsync == FS_NEVER) {
		forget_files(&spool_state.gone);
		return;
	}
	for (size_t i = 0; i < spool_state.gone.n; i++)
		idlist_push(&spool_state.unsynced, spool_state.gone.v[i]);
	spool_state.gone.n = 0;
}

/* Remove the spool's copy of a delivered file once the DONE record queued in
 * spool_state.out, which cancels its ADD, is written and durable. */
static void forget_file_when_written(const char *id) { idlist_push(&spool_state.gone, id); }

/* The spool's copy of a file is no longer wanted (delivered, or never accepted). */
static void forget_file(const char *id)
{
	char *p = file_path(id);
	unlink(p);
	free(p);
}

static void when_durable(void (*cb)(const char *, void *), void *arg);
static void start_sync(void);
static void on_batch_timer(uv_timer_t *t);
static void unsync_file(int fd);

/* Write spool_state.out, then tell the owner of each new message in it how it went. A
 * callback may append again (a DONE, a message read back): the list is taken
 * first, and what they add goes out with the next turn. */
static void finish_out(void)
{
	write_out();
	struct unwritten *list = spool_state.adds;
	size_t n = spool_state.nadds;
	spool_state.adds = NULL;
	spool_state.nadds = spool_state.capadds = 0;
	spool_state.adds_bytes = 0;
	for (size_t i = 0; i < n; i++) {
		struct unwritten *u = &list[i];
		if (u->failed) {
			if (u->m->kind == JOB_FILE) {
				forget_file(u->m->id);
				unsync_file(u->synced_fd);
			}
			spool_state.st.messages--;
			spool_state.st.bytes -= u->m->size;
			if (spool_state.out_full)
				router_count_rejected();
			u->written(u->m, spool_state.out_err, u->arg);
			continue;
		}
		seg_find(u->m->seg)->live++;
		live_add(u->m);
		u->written(u->m, NULL, u->arg);
		when_durable(u->durable, u->arg);
	}
	free(list);
	/* One fdatasync for the whole turn (group commit), for its new messages,
	 * for the DONE records whose files' copies wait for it and for the copies
	 * a compaction wrote (spool_state.batch). */
	if ((n || spool_state.unsynced.n || spool_state.nbatch || spool_state.nleft) && spool_state.fsync == FS_ALWAYS)
		start_sync();
	else if ((spool_state.unsynced.n || spool_state.nleft) && spool_state.fsync == FS_BATCH && !uv_is_active((uv_handle_t *)&spool_state.timer))
		uv_timer_start(&spool_state.timer, on_batch_timer, spool_state.interval_ms, 0);
}

static void seg_gc(void);

static void on_prepare(uv_prepare_t *h)
{
	/* First, so that what a compaction appends (and with spool.fsync always,
	 * its sync) goes with this turn's write. */
	if (spool_state.gc_due) {
		spool_state.gc_due = false;
		seg_gc();
	}
	finish_out();
	channel_flush_pending(); /* the jobs and answers finish_out() queued: before the loop blocks */
}

/* Seal the record framed in spool_state.sb and queue it in spool_state.out, in the segment being
 * written (a full one is finished first). Where it will be is known now. */
static int append_record(enum rec_type type, uint64_t *seg, uint64_t *off, uint32_t *reclen, char *err,
			 size_t errlen)
{
	seal_record(type);
	if (spool_state.woff + spool_state.out.size >= spool_state.seg_max) {
		/* What waits belongs to the segment that is full. finish_out() also
		 * routes the new messages among it, and one that fails at once (its
		 * file or its key unreadable) is dead-lettered then: a DEAD framed in
		 * spool_state.sb and written to a new segment. This record waits aside meanwhile
		 * (left in spool_state.sb it became a copy of that DEAD, and its message was lost
		 * at the next start), and a new segment is opened only if none was. */
		msgpack_sbuffer rec = spool_state.sb;
		msgpack_sbuffer_init(&spool_state.sb);
		finish_out();
		msgpack_sbuffer_destroy(&spool_state.sb);
		spool_state.sb = rec;
		if (spool_state.woff + spool_state.out.size >= spool_state.seg_max && seg_open_new(err, errlen) < 0)
			return -1;
	}
	if (seg)
		*seg = spool_state.segs[spool_state.nsegs - 1].num;
	if (off)
		*off = spool_state.woff + spool_state.out.size;
	if (reclen)
		*reclen = (uint32_t)spool_state.sb.size;
	msgpack_sbuffer_write(&spool_state.out, spool_state.sb.data, spool_state.sb.size);
	spool_state.st.written_records++;
	return 0;
}

/* The same, written at once: for the rare records whose writer wants to know. */
static int append_now(enum rec_type type, uint64_t *seg, uint64_t *off, uint32_t *reclen, char *err,
		      size_t errlen)
{
	if (append_record(type, seg, off, reclen, err, errlen) < 0)
		return -1;
	if (write_out() < 0) {
		snprintf(err, errlen, "%s", spool_state.out_err);
		return -1;
	}
	return 0;
}

static void begin_record(msgpack_packer *pk)
{
	spool_state.sb.size = 0;
	static const char zero[REC_HDR];
	msgpack_sbuffer_write(&spool_state.sb, zero, REC_HDR);
	msgpack_packer_init(pk, &spool_state.sb, pk_write);
}

/* Frame in spool_state.sb a record that names a message (DONE, DEAD, REQUEUE). */
static void frame_id_record(const char *id, const char *reason)
{
	msgpack_packer pk;
	begin_record(&pk);
	msgpack_sbuffer *sb = pk_sbuffer(&pk);
	mpw_map(sb, reason ? 2 : 1);
	mpw_kv_str(sb, "id", id);
	if (reason)
		mpw_kv_str(sb, "reason", reason);
}

static int write_id_record(enum rec_type type, const struct smsg *m, const char *reason)
{
	char err[256];
	frame_id_record(m->id, reason);
	int rc = type == REC_DONE ? append_record(type, NULL, NULL, NULL, err, sizeof err)
				  : append_now(type, NULL, NULL, NULL, err, sizeof err);
	if (rc < 0) {
		log_warnx("%s", err);
		return -1;
	}
	return 0;
}

/* ---- group commit ---- */

/* fdatasync (fsync for a directory), counted where it runs: in the pool into
 * spool_state.job.syncs, on the loop straight into spool_state.st.fsyncs. */
static int counted_sync(int fd, bool dir, uint64_t *count)
{
	(*count)++;
	return dir ? fsync(fd) : fdatasync(fd);
}

/* In a thread of libuv's pool: the contents of files snapshotted into
 * the spool since the last sync (a copy was only just written), their
 * directory entries, the full
 * segments left since, the segment written. Only spool_state.job is touched (and
 * spool_state.filedir, which does not change). */
static void sync_failed(const char *what)
{
	if (!spool_state.job.err) {
		spool_state.job.err = errno;
		spool_state.job.what = what;
	}
}

static void sync_work(uv_work_t *w)
{
	(void)w;
	for (size_t i = 0; i < spool_state.job.nfiles; i++)
		if (counted_sync(spool_state.job.files[i], false, &spool_state.job.syncs) < 0)
			sync_failed("a file");
	if (spool_state.job.dir) {
		int dfd = open(spool_state.filedir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0 || counted_sync(dfd, true, &spool_state.job.syncs) < 0)
			sync_failed(spool_state.filedir);
		if (dfd >= 0)
			close(dfd);
	}
	for (size_t i = 0; i < spool_state.job.nsegs; i++)
		if (counted_sync(spool_state.job.segs[i], false, &spool_state.job.syncs) < 0)
			sync_failed("a full segment");
	if (counted_sync(spool_state.job.wfd, false, &spool_state.job.syncs) < 0)
		sync_failed("");
}

/* Back on the loop. */
static void sync_done(uv_work_t *w, int status)
{
	(void)w;
	char why[200] = "";
	if (status < 0)
		snprintf(why, sizeof why, "spool: fdatasync failed: %s", uv_strerror(status));
	else if (spool_state.job.err)
		snprintf(why, sizeof why, "spool: fdatasync failed: %s%s%s", spool_state.job.what, *spool_state.job.what ? ": " : "",
			 strerror(spool_state.job.err));
	if (why[0])
		log_warnx("%s (%zu messages not answered accepted)", why, spool_state.nflight);
	for (size_t i = 0; i < spool_state.job.nfiles; i++)
		close(spool_state.job.files[i]);
	for (size_t i = 0; i < spool_state.job.nsegs; i++)
		close(spool_state.job.segs[i]);
	free(spool_state.job.files);
	free(spool_state.job.segs);
	spool_state.job.files = spool_state.job.segs = NULL;
	spool_state.job.nfiles = spool_state.job.nsegs = 0;
	spool_state.job.wfd = -1;
	spool_state.syncing = false;
	spool_state.st.fsyncs += spool_state.job.syncs;
	/* The DONE records written before this sync are durable: their files' copies
	 * may go. Before the callbacks: one may append records and, with a full
	 * segment, finish it and start the next sync, which takes over gone_flight. */
	if (why[0])
		keep_files(&spool_state.gone_flight, "may not have reached the disk (the sync failed)");
	else
		forget_files(&spool_state.gone_flight);
	for (size_t i = 0; i < spool_state.nclose_after_sync; i++)
		close(spool_state.close_after_sync[i]);
	spool_state.nclose_after_sync = 0;
	struct pending *done = spool_state.flight;
	size_t n = spool_state.nflight;
	spool_state.flight = NULL;
	spool_state.nflight = 0;
	for (size_t i = 0; i < n; i++)
		done[i].cb(why[0] ? why : NULL, done[i].arg);
	free(done);
	/* What came in meanwhile: its timer may have fired while this sync ran
	 * (start_sync then did nothing), and no later message may come to start
	 * another; it must not wait for ever. */
	bool more = spool_state.nbatch || spool_state.unsynced.n || spool_state.nleft;
	if (more && spool_state.fsync == FS_ALWAYS)
		start_sync();
	else if (more && !uv_is_active((uv_handle_t *)&spool_state.timer))
		uv_timer_start(&spool_state.timer, on_batch_timer, spool_state.interval_ms, 0);
}

static void start_sync(void)
{
	if (spool_state.syncing || (!spool_state.nbatch && !spool_state.unsynced.n && !spool_state.nleft))
		return;
	spool_state.syncing = true;
	write_out();
	spool_state.flight = spool_state.batch;
	spool_state.nflight = spool_state.nbatch;
	spool_state.batch = NULL;
	spool_state.nbatch = spool_state.capbatch = 0;
	struct idlist t = spool_state.gone_flight; /* empty: no sync runs */
	spool_state.gone_flight = spool_state.unsynced;
	spool_state.unsynced = t;
	spool_state.job.files = spool_state.linked;
	spool_state.job.nfiles = spool_state.nlinked;
	spool_state.linked = NULL;
	spool_state.nlinked = spool_state.caplinked = 0;
	spool_state.job.dir = spool_state.files_dirty;
	spool_state.files_dirty = false;
	spool_state.job.segs = spool_state.left;
	spool_state.job.nsegs = spool_state.nleft;
	spool_state.left = NULL;
	spool_state.nleft = 0;
	spool_state.job.wfd = spool_state.wfd;
	spool_state.job.woff = spool_state.woff;
	spool_state.job.syncs = 0;
	spool_state.job.err = 0;
	int rc = uv_queue_work(sup.loop, &spool_state.work, sync_work, sync_done);
	if (rc < 0) /* cannot happen with a valid loop and callback; never leave the batch waiting */
		sync_done(&spool_state.work, rc);
}

static void on_batch_timer(uv_timer_t *t) { start_sync(); }

static void when_durable(void (*cb)(const char *, void *), void *arg)
{
	if (spool_state.fsync == FS_NEVER) {
		cb(NULL, arg);
		return;
	}
	if (spool_state.nbatch == spool_state.capbatch) {
		spool_state.capbatch = spool_state.capbatch ? spool_state.capbatch * 2 : 64;
		spool_state.batch = xrealloc(spool_state.batch, spool_state.capbatch * sizeof *spool_state.batch);
	}
	spool_state.batch[spool_state.nbatch++] = (struct pending){ cb, arg };
	if (spool_state.fsync == FS_BATCH && !uv_is_active((uv_handle_t *)&spool_state.timer))
		uv_timer_start(&spool_state.timer, on_batch_timer, spool_state.interval_ms, 0);
}

/* ---- files ---- */


/* A file now in spool/files whose contents the next group commit syncs
 * (before its directory and the segment with its ADD), and then closes. */
static void sync_with_next_commit(int fd)
{
	if (spool_state.nlinked == spool_state.caplinked) {
		spool_state.caplinked = spool_state.caplinked ? spool_state.caplinked * 2 : 16;
		spool_state.linked = xrealloc(spool_state.linked, spool_state.caplinked * sizeof *spool_state.linked);
	}
	spool_state.linked[spool_state.nlinked++] = fd;
}

/* The copy of a file not accepted after all (its ADD could not be written),
 * removed: its descriptor leaves spool_state.linked and is closed now, or its blocks
 * would stay taken until a sync that may never come (a full spool stays
 * full). One a running sync already took is closed when that sync ends. */
static void unsync_file(int fd)
{
	for (size_t i = 0; fd >= 0 && i < spool_state.nlinked; i++)
		if (spool_state.linked[i] == fd) {
			spool_state.linked[i] = spool_state.linked[--spool_state.nlinked];
			close(fd);
			return;
		}
}

/* ---- snapshots: what is delivered is what was accepted ----
 *
 * A file is never linked into the spool: the camera may truncate, rewrite or
 * append to its file after it was accepted, and a link would deliver that (an
 * rsync of 1,000 bytes of a 300,000-byte file answered ok). The spool takes a
 * snapshot of its own instead: a reflink (FICLONE) where the file system
 * shares blocks (btrfs, XFS), else a copy (copy_file_range, in the kernel; a
 * read/write loop where that cannot cross file systems). It is taken in
 * libuv's pool, never on the loop (a large file takes long on flash), at most
 * SNAP_MAX at a time so the group commit's sync always finds a thread free;
 * the rest wait their turn in spool_state.snapq. The copy is not synced there: the
 * group commit syncs it with the ADD that names it, and nothing is answered
 * accepted before. It is renamed to its name before its ADD is written:
 * killed before, the copy is a stray that the next start removes; the .tmp
 * name is for a copy cut short. */
#define SNAP_MAX 2

struct snap {
	uv_work_t work;
	struct snap *next;  /* in spool_state.snapq, or in spool_state.snaps once in the pool */
	struct smsg *m;
	int src, out;       /* the caller's file (a duplicate); the copy, kept for the sync */
	char *tmp, *dst;
	uint64_t copied;
	bool reflinked;
	int err;            /* errno of the failure, or 0 */
	void (*written)(struct smsg *, const char *, void *);
	void (*durable)(const char *, void *);
	void *arg;
};

/* A plain copy, where copy_file_range cannot cross file systems (tmpfs, memfd). */
static int copy_by_read(int in, off_t off, int out)
{
	char buf[65536];
	for (;;) {
		ssize_t n = pread(in, buf, sizeof buf, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -1 : 0;
		for (ssize_t w = 0; w < n;) {
			ssize_t k = write(out, buf + w, (size_t)(n - w));
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0)
				return -1;
			w += k;
		}
		off += n;
	}
}

static int copy_whole(int in, int out)
{
	off_t inoff = 0;
	for (;;) {
		ssize_t n = copy_file_range(in, &inoff, out, NULL, 1 << 30, 0);
		if (n == 0)
			return 0;
		if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP))
			return copy_by_read(in, inoff, out);
		if (n < 0 && errno != EINTR)
			return -1;
	}
}

/* In a thread of libuv's pool: only s is touched. */
static void snap_work(uv_work_t *w)
{
	struct snap *s = (struct snap *)w;
	struct stat st;
	s->out = open(s->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	int rc = s->out < 0 ? -1 : 0;
	if (rc == 0)
		s->reflinked = ioctl(s->out, FICLONE, s->src) == 0;
	if (rc == 0 && !s->reflinked)
		rc = copy_whole(s->src, s->out);
	if (rc == 0 && fstat(s->out, &st) < 0)
		rc = -1;
	if (rc == 0)
		s->copied = (uint64_t)st.st_size;
	if (rc == 0 && rename(s->tmp, s->dst) < 0)
		rc = -1;
	if (rc < 0) {
		s->err = errno;
		unlink(s->tmp);
	}
}

static void snap_free(struct snap *s)
{
	if (s->src >= 0)
		close(s->src);
	free(s->tmp);
	free(s->dst);
	free(s);
}

static int add_record(struct smsg *m, const void *payload, size_t len, int synced_fd,
		      void (*written)(struct smsg *, const char *, void *), void (*durable)(const char *, void *),
		      void *arg, char *err, size_t errlen);
static void snap_next(void);

/* Why the snapshot failed, in words for the client. */
static void snap_why(const struct snap *s, char *err, size_t errlen)
{
	if (!s->err) /* the camera still writes it, or cut it meanwhile */
		snprintf(err, errlen, "the file changed while it was being accepted (%llu bytes when sent, %llu when "
			 "copied into the spool): send it once it is written whole",
			 (unsigned long long)s->m->size, (unsigned long long)s->copied);
	else if (s->err == ENOSPC || s->err == EDQUOT)
		snprintf(err, errlen, "spool full: the file system of %s has no room for a copy of the file (%s); "
			 "try again later", spool_state.filedir, strerror(s->err));
	else
		snprintf(err, errlen, "spool: cannot keep a copy of the file in %s: %s", spool_state.filedir, strerror(s->err));
}

/* Back on the loop: the snapshot is in spool/files (or not); its ADD goes
 * with this turn's records. */
static void snap_done(uv_work_t *w, int status)
{
	struct snap *s = (struct snap *)w, **pp = &spool_state.snaps;
	while (*pp != s)
		pp = &(*pp)->next;
	*pp = s->next;
	spool_state.nsnaps--;
	spool_state.nsnaps_running--;
	spool_state.snaps_bytes -= s->m->size;
	char err[300];
	bool ok = status == 0 && !s->err && s->copied == s->m->size;
	if (s->reflinked)
		spool_state.st.reflinks++;
	if (ok) {
		spool_state.files_dirty = true;
		int keep = spool_state.fsync == FS_NEVER ? -1 : s->out;
		if (keep >= 0)
			sync_with_next_commit(keep);
		else
			close(s->out);
		s->out = -1;
		if (add_record(s->m, NULL, 0, keep, s->written, s->durable, s->arg, err, sizeof err) < 0) {
			forget_file(s->m->id);
			unsync_file(keep);
			ok = false;
		}
	} else {
		snap_why(s, err, sizeof err);
		if (s->err == ENOSPC || s->err == EDQUOT)
			router_count_rejected();
		if (!s->err) /* copied, but not what was sent */
			forget_file(s->m->id);
		if (s->out >= 0)
			close(s->out);
	}
	if (!ok)
		s->written(s->m, err, s->arg);
	snap_free(s);
	snap_next();
}

/* Start the snapshots that wait, while fewer than SNAP_MAX run. */
static void snap_next(void)
{
	while (spool_state.snapq && spool_state.nsnaps_running < SNAP_MAX) {
		struct snap *s = spool_state.snapq;
		spool_state.snapq = s->next;
		if (!spool_state.snapq)
			spool_state.snapq_tail = NULL;
		s->next = spool_state.snaps;
		spool_state.snaps = s;
		spool_state.nsnaps_running++;
		if (uv_queue_work(sup.loop, &s->work, snap_work, snap_done) < 0) { /* cannot happen on a valid loop */
			s->err = EAGAIN;
			snap_done(&s->work, 0);
		}
	}
}

/* Is a message of this id on its way in again, or live? A copy whose removal
 * waited for its DONE to be durable has the same name as the copy of a later
 * message sent with the same id (a client's resend after "not accepted"):
 * that copy is the later message's now, and stays. */
static bool id_taken_again(const char *id)
{
	if (router_find(id))
		return true;
	for (struct snap *s = spool_state.snapq; s; s = s->next)
		if (strcmp(s->m->id, id) == 0)
			return true;
	for (struct snap *s = spool_state.snaps; s; s = s->next)
		if (strcmp(s->m->id, id) == 0)
			return true;
	for (size_t i = 0; i < spool_state.nadds; i++)
		if (strcmp(spool_state.adds[i].m->id, id) == 0)
			return true;
	return false;
}

/* Queue a snapshot of the caller's open file for message m; written() runs
 * when it is taken and its ADD written, or with why not. */
static int snapshot(struct smsg *m, int fd, void (*written)(struct smsg *, const char *, void *),
		    void (*durable)(const char *, void *), void *arg, char *err, size_t errlen)
{
	int src = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (src < 0) {
		snprintf(err, errlen, "spool: cannot keep the file open: %s", strerror(errno));
		return -1;
	}
	struct snap *s = xcalloc(1, sizeof *s);
	*s = (struct snap){ .m = m, .src = src, .out = -1, .written = written, .durable = durable, .arg = arg };
	s->dst = file_path(m->id);
	s->tmp = xasprintf("%s.tmp", s->dst);
	if (spool_state.snapq_tail)
		spool_state.snapq_tail->next = s;
	else
		spool_state.snapq = s;
	spool_state.snapq_tail = s;
	spool_state.nsnaps++;
	spool_state.snaps_bytes += m->size;
	snap_next();
	return 0;
}

/* The snapshot is the spool's own, but a hand in spool/files (or a disk that
 * lost part of it) may still change it: one whose size is not the one
 * accepted is refused with both, and becomes a dead letter, never sent. */
int spool_open_file(const struct smsg *m, char *err, size_t errlen)
{
	char *p = file_path(m->id);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd >= 0 && fstat(fd, &st) < 0) {
		int e = errno;
		close(fd);
		fd = -1;
		errno = e;
	}
	if (fd < 0) {
		int e = errno; /* the router tells a want of descriptors (EMFILE) from a lost file by it */
		snprintf(err, errlen, "cannot open the spool's copy of the file (%s): %s", p, strerror(e));
		log_warnx("spool: %s", err);
		errno = e;
	} else if ((uint64_t)st.st_size != m->size) {
		snprintf(err, errlen, "changed after it was accepted: %llu bytes then %llu bytes (the spool's copy %s)",
			 (unsigned long long)m->size, (unsigned long long)st.st_size, p);
		close(fd);
		fd = -1;
	}
	free(p);
	return fd;
}

/* ---- the interface ---- */

/* Frame the ADD of m and queue it with this turn's records; written() runs at
 * the turn's end. synced_fd: its file's copy, waiting in spool_state.linked for the sync. */
static int add_record(struct smsg *m, const void *payload, size_t len, int synced_fd,
		      void (*written)(struct smsg *, const char *, void *), void (*durable)(const char *, void *),
		      void *arg, char *err, size_t errlen)
{
	msgpack_packer pk;
	begin_record(&pk);
	pack_add(&pk, m, payload, len);
	if (append_record(REC_ADD, &m->seg, &m->off, &m->reclen, err, errlen) < 0)
		return -1;
	if (spool_state.nadds == spool_state.capadds) {
		spool_state.capadds = spool_state.capadds ? spool_state.capadds * 2 : 64;
		spool_state.adds = xrealloc(spool_state.adds, spool_state.capadds * sizeof *spool_state.adds);
	}
	spool_state.adds[spool_state.nadds++] = (struct unwritten){ m, written, durable, arg, false, synced_fd };
	spool_state.adds_bytes += m->size;
	spool_state.st.messages++;
	spool_state.st.bytes += m->size;
	return 0;
}

int spool_add(struct smsg *m, const void *payload, size_t len, int file_fd,
	      void (*written)(struct smsg *m, const char *err, void *arg),
	      void (*durable)(const char *err, void *arg),
	      void *arg, char *err, size_t errlen)
{
	if (file_fd >= 0)
		return snapshot(m, file_fd, written, durable, arg, err, errlen);
	return add_record(m, payload, len, -1, written, durable, arg, err, errlen);
}

void spool_unwritten(uint64_t *n, uint64_t *bytes)
{
	*n = spool_state.nadds + spool_state.nsnaps;
	*bytes = spool_state.adds_bytes + spool_state.snaps_bytes;
}

static void seg_unref(uint64_t num);

void spool_done(struct smsg *m, const char *state)
{
	/* With no DONE recorded the message comes back after a restart, and needs its file. */
	if (write_id_record(REC_DONE, m, state) == 0 && m->kind == JOB_FILE)
		forget_file_when_written(m->id);
	if (spool_state.st.messages)
		spool_state.st.messages--;
	spool_state.st.bytes -= m->size <= spool_state.st.bytes ? m->size : spool_state.st.bytes;
	if (m->state == SM_DEAD && spool_state.st.dead)
		spool_state.st.dead--;
	seg_unref(m->seg);
	live_del(m);
}

void spool_dead(struct smsg *m, const char *reason)
{
	write_id_record(REC_DEAD, m, reason);
	spool_state.st.dead++;
}

void spool_requeue(struct smsg *m)
{
	write_id_record(REC_REQUEUE, m, NULL);
	if (spool_state.st.dead)
		spool_state.st.dead--;
}

static int read_record(uint64_t segnum, uint64_t off, uint32_t reclen, char **out)
{
	struct seg *s = seg_find(segnum);
	if (!s)
		return -1;
	if (s->rfd < 0) {
		char *p = seg_path(segnum);
		s->rfd = open(p, O_RDONLY | O_CLOEXEC);
		free(p);
		if (s->rfd < 0)
			return -1;
	}
	char *buf = xmalloc(reclen);
	if (pread(s->rfd, buf, reclen, (off_t)off) != (ssize_t)reclen ||
	    get32((unsigned char *)buf + 4) != crc32c(0, buf + 8, reclen - 8)) {
		free(buf);
		return -1;
	}
	*out = buf;
	return 0;
}

int spool_load_payload(struct smsg *m)
{
	char *rec;
	if (read_record(m->seg, m->off, m->reclen, &rec) < 0) {
		log_warnx("spool: cannot read message %s back from segment %llu", m->id, (unsigned long long)m->seg);
		return -1;
	}
	msgpack_object o;
	size_t off = 0;
	msgpack_zone_clear(&spool_state.zone);
	int rc = -1;
	if (msgpack_unpack(rec + REC_HDR, m->reclen - REC_HDR, &off, &spool_state.zone, &o) == MSGPACK_UNPACK_SUCCESS) {
		const msgpack_object *p = obj_get(&o, "payload");
		if (p && p->type == MSGPACK_OBJECT_BIN) {
			m->payload = xmalloc(p->via.bin.size + 1);
			memcpy(m->payload, p->via.bin.ptr, p->via.bin.size);
			m->payload[p->via.bin.size] = '\0';
			rc = 0;
		}
	}
	free(rec);
	return rc;
}

void spool_stats(struct spool_stats *st)
{
	*st = spool_state.st;
	st->segments = spool_state.nsegs;
	st->disk_bytes = 0;
	for (size_t i = 0; i < spool_state.nsegs; i++)
		st->disk_bytes += spool_state.segs[i].size;
	st->oldest_wall_ms = spool_state.live_head ? spool_state.live_head->created_wall_ms : 0;
}

/* ---- segment life: delete oldest-first, compact a nearly empty oldest one ---- */

static void seg_delete_oldest(void)
{
	struct seg *s = &spool_state.segs[0];
	char *p = seg_path(s->num);
	if (s->rfd >= 0)
		close(s->rfd);
	unlink(p);
	free(p);
	memmove(spool_state.segs, spool_state.segs + 1, --spool_state.nsegs * sizeof *spool_state.segs);
	spool_state.st.segments = spool_state.nsegs;
}

/* The copies a compaction wrote are durable (or, with spool.fsync never, written):
 * each message still in the old segment moves to its copy. One delivered (or
 * dropped, purged) meanwhile is left alone: its DONE, written after the copy,
 * cancels the copy too at the next start. */
static void compact_apply(const struct moved *v, size_t n, uint64_t from)
{
	for (size_t i = 0; i < n; i++) {
		struct smsg *m = router_find(v[i].id);
		struct seg *old = seg_find(from), *to = seg_find(v[i].seg);
		if (!m || m->seg != from || !to)
			continue;
		if (old && old->live)
			old->live--;
		to->live++;
		m->seg = v[i].seg;
		m->off = v[i].off;
		m->reclen = v[i].reclen;
	}
}

static void compact_durable(const char *err, void *arg)
{
	struct moved *v = spool_state.moved;
	size_t n = spool_state.nmoved;
	uint64_t from = spool_state.compact_from;
	spool_state.moved = NULL;
	spool_state.nmoved = 0;
	spool_state.compacting = false;
	if (err) {
		/* The messages stay where they are. The copies are duplicates on disk:
		 * the next start takes a later ADD of a live id as its copy. */
		log_warnx("spool: segment %llu is kept: the copies of its %zu live records may not have reached the "
			  "disk (%s)", (unsigned long long)from, n, err);
		free(v);
		return;
	}
	compact_apply(v, n, from);
	free(v);
	seg_gc();
}

/* Copy the live records of the oldest segment to the newest, so it can go. The
 * old segment may go only once the copies are durable: until then the messages
 * stay where they are (their live counts with them), and the sync is the group
 * commit's, in libuv's thread pool: the loop does not wait for the disk. Returns
 * true when done at once (spool.fsync never: nothing to wait for). */
static bool compact_oldest(void)
{
	uint64_t from = spool_state.segs[0].num;
	size_t n = 0;
	for (struct smsg *m = spool_state.live_head; m; m = m->snext)
		n += m->seg == from;
	if (!n)
		return false;
	/* Their ids first: appending may finish a full segment, which routes the
	 * new messages of this turn and may change the lists. */
	struct moved *v = xcalloc(n, sizeof *v);
	size_t k = 0;
	for (struct smsg *m = spool_state.live_head; m && k < n; m = m->snext)
		if (m->seg == from)
			memcpy(v[k++].id, m->id, sizeof v[0].id);
	spool_state.compacting = true;
	unsigned failures = spool_state.write_failures;
	size_t copied = 0;
	for (size_t i = 0; i < k; i++) {
		struct smsg *m = router_find(v[i].id);
		char *rec, err[256];
		if (!m || m->seg != from || read_record(m->seg, m->off, m->reclen, &rec) < 0)
			continue; /* gone meanwhile, or unreadable: it stays, and so does the segment */
		spool_state.sb.size = 0;
		msgpack_sbuffer_write(&spool_state.sb, rec, m->reclen);
		free(rec);
		/* m is not looked at again: a full segment's end runs the router */
		bool dead = m->state == SM_DEAD;
		char why[sizeof m->last_error];
		memcpy(why, m->last_error, sizeof why);
		struct moved to = v[i];
		if (append_record(REC_ADD, &to.seg, &to.off, &to.reclen, err, sizeof err) < 0) {
			log_warnx("spool: compaction of segment %llu stopped: %s", (unsigned long long)from, err);
			break;
		}
		if (dead) {
			frame_id_record(to.id, why);
			if (append_record(REC_DEAD, NULL, NULL, NULL, err, sizeof err) < 0) {
				log_warnx("spool: compaction of segment %llu stopped: %s", (unsigned long long)from, err);
				break;
			}
		}
		v[copied++] = to;
	}
	/* One write for all of them. */
	if (write_out() < 0 || spool_state.write_failures != failures || !copied) {
		if (copied)
			log_warnx("spool: compaction of segment %llu failed: its records could not be written",
				  (unsigned long long)from);
		free(v);
		spool_state.compacting = false;
		return false;
	}
	if (spool_state.fsync == FS_NEVER) {
		compact_apply(v, copied, from);
		free(v);
		spool_state.compacting = false;
		return true;
	}
	spool_state.moved = v;
	spool_state.nmoved = copied;
	spool_state.compact_from = from;
	when_durable(compact_durable, NULL); /* batch: with the next group commit; always: at this turn's end */
	return false;
}

/* Delete the oldest segments while nothing in them is live, and compact one
 * pinned by a few. Looked at when the oldest one's last message leaves
 * (seg_unref), when a compaction's copies are durable, at start, and each time
 * a segment is opened (deferred to on_prepare): a dead letter in the oldest
 * segment leaves it live for ever, and without the last the spool grew by a
 * segment at each change until a restart. */
static void seg_gc(void)
{
	while (spool_state.nsegs > 1) {
		if (spool_state.segs[0].live == 0) {
			seg_delete_oldest();
			continue;
		}
		/* An old segment pinned by a few long-waiting messages (dead letters, a
		 * long outage) is compacted once the spool has grown past a few
		 * segments; one compaction at a time. */
		if (!spool_state.compacting && spool_state.nsegs > 4 && spool_state.segs[0].live * 64 < spool_state.segs[0].size / 64 && compact_oldest() &&
		    spool_state.segs[0].live == 0)
			continue;
		break;
	}
}

static void seg_unref(uint64_t num)
{
	struct seg *s = seg_find(num);
	if (s && s->live)
		s->live--;
	if (spool_state.nsegs > 1 && spool_state.segs[0].live == 0)
		seg_gc();
}

/* ---- recovery ---- */

static char *obj_dup_str(const msgpack_object *map, const char *key)
{
	const msgpack_object *v = obj_get(map, key);
	if (!v || v->type != MSGPACK_OBJECT_STR)
		return NULL;
	return xstrndup(v->via.str.ptr, v->via.str.size);
}

static struct smsg *smsg_from_add(const msgpack_object *o)
{
	char id[UCGW_ID_LEN + 2], proto[16];
	uint64_t kind = 0, prio = 1;
	if (!obj_get_str(o, "id", id, sizeof id) || !id_valid(id) || !obj_get_str(o, "proto", proto, sizeof proto))
		return NULL;
	struct smsg *m = xcalloc(1, sizeof *m);
	snprintf(m->id, sizeof m->id, "%s", id);
	snprintf(m->protocol, sizeof m->protocol, "%s", proto);
	obj_get_u64(o, "kind", &kind);
	obj_get_u64(o, "prio", &prio);
	m->kind = kind == JOB_FILE ? JOB_FILE : JOB_META;
	m->priority = prio <= PRIO_LOW ? (enum priority)prio : PRIO_NORMAL;
	m->topic = obj_dup_str(o, "topic");
	m->endpoint = obj_dup_str(o, "endpoint");
	m->remote_name = obj_dup_str(o, "remote_name");
	obj_get_bool(o, "encrypt", &m->encrypt);
	obj_get_u64(o, "created", &m->created_wall_ms);
	obj_get_u64(o, "expires", &m->expires_wall_ms);
	obj_get_u64(o, "size", &m->size);
	/* Its time can be corrected only in the boot it was accepted in; one that
	 * cannot be placed gets its expiry counted again (clock.c). */
	char boot[40];
	obj_get_u64(o, "boot_ms", &m->boot_ms);
	obj_get_bool(o, "clock_unset", &m->clock_unset);
	if (m->clock_unset && (!obj_get_str(o, "boot", boot, sizeof boot) || !boot[0] || strcmp(boot, clock_boot_id()) != 0)) {
		m->clock_unset = false;
		m->expiry_rebased = true;
	} else if (!m->clock_unset && m->created_wall_ms < CLOCK_FLOOR_MS)
		m->expiry_rebased = true;
	return m;
}

struct recovery {
	struct smsg **by_order; /* ADDs in order, NULL once cancelled */
	size_t *next;           /* by_order index -> the next one in its hash chain, or NONE */
	size_t n, cap;
	size_t *heads, nb;      /* hash chains by id, newest first */
	bool damaged;           /* a segment was not read to its end: records may be missing */
};
#define NONE ((size_t)-1)

/* Recovery is a one-time pass before the router's index exists; a hash of its
 * own keeps it linear in the records however far a DONE is from its ADD. */
static void recovery_chain(struct recovery *rv, size_t i)
{
	size_t b = id_hash32(rv->by_order[i]->id) & (rv->nb - 1);
	rv->next[i] = rv->heads[b];
	rv->heads[b] = i;
}

static void recovery_rehash(struct recovery *rv)
{
	free(rv->heads);
	rv->nb = rv->nb ? rv->nb * 2 : 4096;
	rv->heads = xmalloc(rv->nb * sizeof *rv->heads);
	for (size_t i = 0; i < rv->nb; i++)
		rv->heads[i] = NONE;
	for (size_t i = 0; i < rv->n; i++)
		if (rv->by_order[i]) /* a cancelled one is found by nobody */
			recovery_chain(rv, i);
}

static size_t recovery_find(struct recovery *rv, const char *id)
{
	if (!rv->nb)
		return NONE;
	for (size_t i = rv->heads[id_hash32(id) & (rv->nb - 1)]; i != NONE; i = rv->next[i])
		if (rv->by_order[i] && strcmp(rv->by_order[i]->id, id) == 0)
			return i;
	return NONE;
}

static void apply_record(struct recovery *rv, struct seg *s, enum rec_type type, const msgpack_object *o,
			 uint64_t off, uint32_t reclen)
{
	char id[UCGW_ID_LEN + 2] = "";
	obj_get_str(o, "id", id, sizeof id);
	if (type == REC_ADD) {
		struct smsg *m = smsg_from_add(o);
		if (!m)
			return;
		m->seg = s->num;
		m->off = off;
		m->reclen = reclen;
		m->state = SM_LIMBO;
		s->live++;
		size_t prev = recovery_find(rv, m->id);
		if (prev != NONE) {
			/* A second ADD of a live message is a copy (a compaction, a rescue)
			 * whose original was not deleted yet: a crash came between. The
			 * copy is the message now, in the original's place in the order;
			 * its state (a dead letter) goes with it, should a record after the
			 * copy be lost. */
			struct smsg *old = rv->by_order[prev];
			struct seg *os = seg_find(old->seg);
			if (os && os->live)
				os->live--;
			m->state = old->state;
			memcpy(m->last_error, old->last_error, sizeof m->last_error);
			rv->by_order[prev] = m;
			smsg_free(old);
			return;
		}
		if (rv->n == rv->cap) {
			rv->cap = rv->cap ? rv->cap * 2 : 1024;
			rv->by_order = xrealloc(rv->by_order, rv->cap * sizeof *rv->by_order);
			rv->next = xrealloc(rv->next, rv->cap * sizeof *rv->next);
		}
		rv->by_order[rv->n++] = m;
		if (rv->n > rv->nb)
			recovery_rehash(rv);
		else
			recovery_chain(rv, rv->n - 1);
		return;
	}
	/* A send again of a finished message's id is answered with how it left
	 * (its ADD may be in a segment gone since). */
	if (type == REC_DONE && id_valid(id)) {
		char *state = obj_dup_str(o, "reason");
		admission_replayed_done(id, state);
		free(state);
	}
	size_t i = recovery_find(rv, id);
	if (i == NONE)
		return;
	struct smsg *m = rv->by_order[i];
	if (type == REC_DONE) {
		struct seg *ms = seg_find(m->seg);
		if (ms && ms->live)
			ms->live--;
		rv->by_order[i] = NULL;
		smsg_free(m);
	} else if (type == REC_DEAD) {
		m->state = SM_DEAD;
		char *why = obj_dup_str(o, "reason");
		snprintf(m->last_error, sizeof m->last_error, "%s", why ? why : "dead");
		free(why);
	} else if (type == REC_REQUEUE) {
		m->state = SM_LIMBO;
	}
}

/* Is there a record at p (of n bytes left) whose checksum holds? */
static bool good_record_at(const unsigned char *p, size_t n)
{
	if (n < REC_HDR + 1 || p[8] < REC_ADD || p[8] > REC_REQUEUE)
		return false;
	uint32_t len = get32(p);
	if (len == 0 || len > MAX_RECORD || len > n - REC_HDR || (p[REC_HDR] & 0xf0) != 0x80)
		return false; /* every body is a small msgpack map */
	return crc32c(0, p + 8, len + 1) == get32(p + 4);
}

/* Replay one segment; returns the offset of the end of its last good record and
 * whether it ended cleanly. A damaged stretch in the middle is skipped to the
 * next record whose checksum holds (the records after it are not lost with
 * it); what was skipped is counted and logged, and the segment is marked
 * corrupt. A damaged stretch with no good record after it is a torn tail. */
static uint64_t replay_segment(struct recovery *rv, struct seg *s, bool *clean)
{
	char *path = seg_path(s->num);
	*clean = true;
	s->size = 0;
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC); /* O_NONBLOCK: a FIFO in its place must not hang us */
	struct stat st;
	bool opened = fd >= 0 && fstat(fd, &st) == 0;
	if (opened && !S_ISREG(st.st_mode)) { /* not a file the spool wrote */
		errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
		opened = false;
	}
	if (opened && st.st_size == 0) { /* created, nothing written to it yet: it goes */
		close(fd);
		free(path);
		return 0;
	}
	const unsigned char *map = opened ? mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
	if (map == MAP_FAILED) {
		/* Never taken for empty: whatever it holds (ADD records of messages
		 * accepted, the DONEs of some delivered) is unknown. It is moved aside
		 * with the corrupt ones (see recover), and counts as a segment not read
		 * to its end: no copy in spool/files is removed as a stray. */
		log_warn("spool: cannot read segment %s (none of its records replayed)", path);
		if (fd >= 0)
			close(fd);
		free(path);
		rv->damaged = true;
		*clean = false;
		s->corrupt = s->unreadable = true;
		return 0;
	}
	size_t size = (size_t)st.st_size;
	close(fd);
	uint64_t off = 0, good_end = 0;
	while (off < size) {
		if (!good_record_at(map + off, size - off)) {
			uint64_t bad = off;
			while (++off < size && !good_record_at(map + off, size - off))
				;
			*clean = false;
			if (off >= size)
				break; /* nothing good after it: a torn tail */
			s->corrupt = true;
			spool_state.st.corrupt_records++;
			log_warnx("spool: %s: %llu damaged bytes at offset %llu skipped; replay goes on at the next "
				  "good record (a message recorded there is lost)",
				  path, (unsigned long long)(off - bad), (unsigned long long)bad);
		}
		uint32_t len = get32(map + off);
		msgpack_object o;
		size_t used = 0;
		msgpack_zone_clear(&spool_state.zone);
		if (msgpack_unpack((const char *)map + off + REC_HDR, len, &used, &spool_state.zone, &o) == MSGPACK_UNPACK_SUCCESS)
			apply_record(rv, s, (enum rec_type)map[off + 8], &o, off, REC_HDR + len);
		off += REC_HDR + len;
		good_end = off;
	}
	munmap((void *)map, size);
	free(path);
	s->size = good_end;
	if (!*clean)
		rv->damaged = true;
	return good_end;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* A listing that fails is no empty spool: its segments would be taken for
 * none, and every copy in spool/files for a stray. -1 with errno. */
static int list_segments(void)
{
	DIR *d = opendir(spool_state.segdir);
	if (!d)
		return -1;
	uint64_t *nums = NULL;
	size_t n = 0;
	struct dirent *e;
	for (errno = 0; (e = readdir(d)); errno = 0) {
		char *end;
		unsigned long long v = strtoull(e->d_name, &end, 10);
		if (end != e->d_name && strcmp(end, ".log") == 0) {
			nums = xrealloc(nums, (n + 1) * sizeof *nums);
			nums[n++] = v;
		}
	}
	int e_read = errno;
	closedir(d);
	if (e_read) {
		free(nums);
		errno = e_read;
		return -1;
	}
	if (n)
		qsort(nums, n, sizeof *nums, cmp_u64);
	spool_state.segs = xcalloc(n ? n : 1, sizeof *spool_state.segs);
	for (size_t i = 0; i < n; i++)
		spool_state.segs[i] = (struct seg){ .num = nums[i], .rfd = -1 };
	spool_state.nsegs = n;
	free(nums);
	return 0;
}

/* Out of the way of replay and of the deletion of empty segments, kept for an
 * operator to look at. If even that fails it stays where it is, out of spool_state.segs
 * (nothing deletes it, nothing is appended to it) and is replayed again at
 * the next start. */
static void move_aside(struct seg *s)
{
	char *from = seg_path(s->num);
	char *dir = xasprintf("%s/corrupt", spool_state.dir);
	char *to = xasprintf("%s/%020llu-%llu.log", dir, (unsigned long long)s->num, (unsigned long long)wall_ms());
	const char *what = s->unreadable ? "cannot be read" : "is corrupt in the middle";
	mkdir_p(dir, 0750);
	if (rename(from, to) == 0)
		log_warnx("spool: segment %s %s; moved aside to %s", from, what, to);
	else
		log_warn("spool: segment %s %s, and cannot be moved aside to %s: kept where it is, out of use "
			 "until the next start reads it again", from, what, dir);
	spool_state.st.corrupt_segments++;
	free(from);
	free(to);
	free(dir);
}

/* Copy a live record out of a segment that is about to be moved aside. */
static void rescue(struct smsg *m)
{
	char *rec, err[256];
	if (read_record(m->seg, m->off, m->reclen, &rec) < 0) {
		log_warnx("spool: message %s in a corrupt segment cannot be read back", m->id);
		return;
	}
	spool_state.sb.size = 0;
	msgpack_sbuffer_write(&spool_state.sb, rec, m->reclen);
	free(rec);
	uint64_t seg, off;
	uint32_t len;
	if (append_now(REC_ADD, &seg, &off, &len, err, sizeof err) == 0) {
		if (m->state == SM_DEAD)
			write_id_record(REC_DEAD, m, m->last_error);
		m->seg = seg;
		m->off = off;
		m->reclen = len;
		seg_find(seg)->live++;
	}
}

/* A file message's copy, at start: whole, or the message is a dead letter.
 * Its ADD may have reached the disk without the copy's contents only when the
 * power went between the ADD's write and the group commit's sync (the copy is
 * synced first, and nothing is answered accepted before both are durable), or
 * when someone removed or cut the file in spool/files: sent as it is, a short
 * image would be delivered, and answered ok, as if whole. A dead letter keeps
 * the record for the operator, and says why, and nothing wrong goes out. */
static void check_copy(struct smsg *m)
{
	if (m->kind != JOB_FILE || m->state == SM_DEAD)
		return;
	char *p = file_path(m->id);
	struct stat st;
	char why[sizeof m->last_error];
	int rc = stat(p, &st);
	if (rc < 0 && errno != ENOENT) {
		/* It may be there, whole: a passing fault is no verdict. The message
		 * stays; a worker that cannot open the copy says so in its turn. */
		log_warn("spool: cannot check the copy of message %s (%s)", m->id, p);
		why[0] = '\0';
	} else if (rc < 0) {
		snprintf(why, sizeof why, "the spool's copy of the file is missing");
	} else if ((uint64_t)st.st_size < m->size) {
		snprintf(why, sizeof why, "the spool's copy of the file is %llu of its %llu bytes (cut short)",
			 (unsigned long long)st.st_size, (unsigned long long)m->size);
	} else {
		why[0] = '\0';
	}
	if (why[0]) {
		log_warnx("spool: message %s (%s) is dead-lettered: %s", m->id, p, why);
		str_copy(m->last_error, sizeof m->last_error, why);
		m->state = SM_DEAD;
		write_id_record(REC_DEAD, m, why);
	}
	free(p);
}

/* Does DIR/corrupt hold a segment moved aside? */
static bool corrupt_segments_kept(void)
{
	char *dir = xasprintf("%s/corrupt", spool_state.dir);
	DIR *d = opendir(dir);
	free(dir);
	bool any = false;
	struct dirent *e;
	while (d && !any && (e = readdir(d)))
		any = strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
	if (d)
		closedir(d);
	return any;
}

/* Make the records replayed durable before a copy goes because of them: the
 * DONE that cancels a copy's ADD may be in the page cache only (ucgwd killed
 * before its group commit), and a power cut after the copy is removed would
 * then keep the ADD and lose both (the rule of remove_gone). */
static int sync_replayed(void)
{
	int rc = 0;
	for (size_t i = 0; i < spool_state.nsegs && rc == 0; i++) {
		char *p = seg_path(spool_state.segs[i].num);
		int fd = open(p, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || counted_sync(fd, false, &spool_state.st.fsyncs) < 0) {
			log_warn("spool: cannot sync segment %s", p);
			rc = -1;
		}
		if (fd >= 0)
			close(fd);
		free(p);
	}
	int dfd = rc == 0 ? open(spool_state.segdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (rc == 0 && (dfd < 0 || counted_sync(dfd, true, &spool_state.st.fsyncs) < 0)) {
		log_warn("spool: cannot sync %s", spool_state.segdir);
		rc = -1;
	}
	if (dfd >= 0)
		close(dfd);
	return rc;
}

/* After replay: remove every entry of the file area that no live message
 * (queued, waiting or dead) names. Such a stray is the copy of a delivered
 * file whose DONE reached the disk while its removal did not (a crash, a
 * failed sync between the two), or of a file never accepted (a crash before
 * its ADD was written; a .tmp of a copy cut short). Nothing is removed when
 * a record may be missing, since it might be the ADD of a message whose copy
 * is all that is left of it: a segment not read to its end at this start (a
 * damaged stretch, a torn tail, a segment that cannot be read), or one moved
 * aside to DIR/corrupt earlier (until an operator clears that directory). */
static void sweep_files(struct recovery *rv)
{
	DIR *d = opendir(spool_state.filedir);
	if (!d) {
		log_warn("spool: cannot read %s", spool_state.filedir);
		return;
	}
	struct stray {
		char *name;
		uint64_t size;
	} *strays = NULL;
	size_t n = 0, cap = 0;
	uint64_t bytes = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 || recovery_find(rv, e->d_name) != NONE)
			continue;
		struct stat st;
		if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || S_ISDIR(st.st_mode))
			continue; /* not ours: the spool makes no directories there */
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			strays = xrealloc(strays, cap * sizeof *strays);
		}
		strays[n++] = (struct stray){ xstrdup(e->d_name), (uint64_t)st.st_size };
		bytes += (uint64_t)st.st_size;
	}
	const char *why = NULL;
	if (n && rv->damaged)
		why = "a segment could not be read to its end at this start";
	else if (n && corrupt_segments_kept())
		why = "segments moved aside to spool/corrupt may name them (remove those once inspected)";
	else if (n && spool_state.fsync != FS_NEVER && sync_replayed() < 0)
		why = "the records that cancel them could not be made durable";
	if (why)
		log_warnx("spool: kept %zu files (%llu bytes) in %s that no message in the spool refers to: %s", n,
			  (unsigned long long)bytes, spool_state.filedir, why);
	size_t removed = 0;
	uint64_t freed = 0;
	for (size_t i = 0; i < n; i++) {
		if (!why && unlinkat(dirfd(d), strays[i].name, 0) == 0) {
			removed++;
			freed += strays[i].size; /* nothing writes to a stray: its size from the listing */
		} else if (!why) {
			log_warn("spool: cannot remove %s/%s", spool_state.filedir, strays[i].name);
		}
		free(strays[i].name);
	}
	free(strays);
	closedir(d);
	if (removed)
		log_info("spool: removed %zu stray files (%llu bytes) from %s: copies no message in the spool refers "
			 "to (delivered, their removal cut short; or never accepted)",
			 removed, (unsigned long long)freed, spool_state.filedir);
	spool_state.st.stray_files_removed += removed;
	spool_state.st.stray_bytes_removed += freed;
}

/* The end of a recovery: each message recovered goes to each (the router, or
 * smsg_free when the spool cannot open), then the tables go. */
static void recovery_free(struct recovery *rv, void (*each)(struct smsg *m))
{
	for (size_t i = 0; i < rv->n; i++)
		if (rv->by_order[i])
			each(rv->by_order[i]);
	free(rv->by_order);
	free(rv->next);
	free(rv->heads);
}

static int recover(void (*recovered)(struct smsg *m), char *err, size_t errlen)
{
	struct recovery rv = { 0 };
	if (list_segments() < 0) {
		snprintf(err, errlen, "cannot list the spool's segments in %s: %s", spool_state.segdir, strerror(errno));
		return -1;
	}
	for (size_t i = 0; i < spool_state.nsegs; i++) {
		bool clean;
		uint64_t good = replay_segment(&rv, &spool_state.segs[i], &clean);
		if (clean || spool_state.segs[i].corrupt)
			continue;
		if (i == spool_state.nsegs - 1) { /* the newest: a write cut short by a crash */
			char *p = seg_path(spool_state.segs[i].num);
			if (truncate(p, (off_t)good) == 0)
				log_warnx("spool: cut a torn tail of %s at byte %llu", p, (unsigned long long)good);
			free(p);
			spool_state.st.torn_tails++;
		} else {
			spool_state.segs[i].corrupt = true;
		}
	}
	if (seg_open_new(err, errlen) < 0) { /* never append to a recovered segment */
		recovery_free(&rv, smsg_free);
		return -1;
	}
	size_t live = 0;
	for (size_t i = 0; i < rv.n; i++) {
		struct smsg *m = rv.by_order[i];
		if (!m)
			continue;
		struct seg *s = seg_find(m->seg);
		if (s && s->corrupt)
			rescue(m);
		check_copy(m);
		live++;
		spool_state.st.messages++;
		spool_state.st.bytes += m->size;
		if (m->state == SM_DEAD)
			spool_state.st.dead++;
	}
	size_t w = 0;
	for (size_t i = 0; i < spool_state.nsegs; i++) {
		if (!spool_state.segs[i].corrupt) {
			spool_state.segs[w++] = spool_state.segs[i];
			continue;
		}
		if (spool_state.segs[i].rfd >= 0)
			close(spool_state.segs[i].rfd);
		move_aside(&spool_state.segs[i]);
	}
	spool_state.nsegs = w;
	write_out();
	/* The rescued copies, before the loop runs: the segments they filled and
	 * left (spool_state.left), then the one written now. */
	for (size_t i = 0; i < spool_state.nleft; i++) {
		counted_sync(spool_state.left[i], false, &spool_state.st.fsyncs);
		close(spool_state.left[i]);
	}
	spool_state.nleft = 0;
	if (spool_state.fsync != FS_NEVER)
		counted_sync(spool_state.wfd, false, &spool_state.st.fsyncs);
	sweep_files(&rv);
	spool_state.recovered = recovered;
	recovery_free(&rv, hand_recovered); /* the router takes the messages */
	if (live)
		log_info("spool: recovered %zu undelivered messages from %zu segments", live, spool_state.nsegs);
	seg_gc();
	return 0;
}

int spool_open(char *err, size_t errlen, void (*recovered)(struct smsg *m))
{
	crc_init();
	const char *dir = config_str(sup.cfg, "spool", "dir");
	spool_state.dir = dir ? xstrdup(dir) : xasprintf("%s/spool", config_str(sup.cfg, "gateway", "state_dir"));
	spool_state.segdir = xasprintf("%s/seg", spool_state.dir);
	spool_state.filedir = xasprintf("%s/files", spool_state.dir);
	if (mkdir_p(spool_state.segdir, 0750) < 0 || mkdir_p(spool_state.filedir, 0750) < 0) {
		snprintf(err, errlen, "cannot create the spool in %s: %s", spool_state.dir, strerror(errno));
		return -1;
	}
	const char *fs = config_str(sup.cfg, "spool", "fsync");
	spool_state.fsync = strcmp(fs, "always") == 0 ? FS_ALWAYS : strcmp(fs, "never") == 0 ? FS_NEVER : FS_BATCH;
	spool_state.interval_ms = (uint64_t)config_int(sup.cfg, "spool", "fsync_interval_ms");
	spool_state.seg_max = (uint64_t)config_int(sup.cfg, "spool", "segment_bytes");
	spool_state.wfd = -1;
	msgpack_sbuffer_init(&spool_state.sb);
	msgpack_sbuffer_init(&spool_state.out);
	msgpack_zone_init(&spool_state.zone, 4096);
	uv_timer_init(sup.loop, &spool_state.timer);
	uv_prepare_init(sup.loop, &spool_state.prep);
	uv_prepare_start(&spool_state.prep, on_prepare);
	uv_unref((uv_handle_t *)&spool_state.prep); /* never what keeps the loop running */
	if (recover(recovered, err, errlen) < 0)
		return -1;
	log_info("spool in %s (fsync %s)", spool_state.dir, fs);
	return 0;
}

/* The files snapshotted in whose group commit never ran (spool_state.linked) or
 * may not have ended (spool_state.job.files): the segments synced next make their ADDs
 * durable, which must not name a file the disk holds only part of. A second
 * sync beside the running one is harmless. */
static void sync_files_at_close(void)
{
	if (spool_state.fsync == FS_NEVER) /* nothing kept for it, nothing synced */
		return;
	int e = 0;
	for (size_t i = 0; i < spool_state.nlinked; i++) {
		if (counted_sync(spool_state.linked[i], false, &spool_state.st.fsyncs) < 0 && !e)
			e = errno;
		close(spool_state.linked[i]);
	}
	for (size_t i = 0; spool_state.syncing && i < spool_state.job.nfiles; i++)
		if (counted_sync(spool_state.job.files[i], false, &spool_state.st.fsyncs) < 0 && !e)
			e = errno;
	if (spool_state.files_dirty || (spool_state.syncing && spool_state.job.dir)) {
		int dfd = open(spool_state.filedir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if ((dfd < 0 || counted_sync(dfd, true, &spool_state.st.fsyncs) < 0) && !e)
			e = errno;
		if (dfd >= 0)
			close(dfd);
	}
	spool_state.nlinked = 0;
	spool_state.files_dirty = false;
	if (e) {
		errno = e;
		log_warn("spool: cannot sync the files in %s (their messages go out after the next start, maybe "
			 "incomplete)", spool_state.filedir);
	}
}

void spool_close(void)
{
	/* Written, not answered: a client that had no "accepted" yet gets none, and
	 * the message goes out after the next start. */
	write_out();
	remove_gone(false); /* write_out() had nothing to write (no segment): nothing removed */
	free(spool_state.adds);
	spool_state.adds = NULL;
	spool_state.nadds = spool_state.capadds = 0;
	if (spool_state.wfd >= 0) {
		/* Every DONE is in this segment, in one left since the last sync
		 * started (spool_state.left), or in one left before that the running sync
		 * covers (spool_state.job.segs: that sync may not have ended, the loop is not
		 * run again; a second fdatasync of it beside it is harmless). Nothing
		 * is synced with spool.fsync never. */
		sync_files_at_close();
		bool ok = true;
		for (size_t i = 0; i < spool_state.nleft; i++) {
			if (spool_state.fsync != FS_NEVER && counted_sync(spool_state.left[i], false, &spool_state.st.fsyncs) < 0)
				ok = false;
			close(spool_state.left[i]);
		}
		spool_state.nleft = 0;
		for (size_t i = 0; spool_state.syncing && i < spool_state.job.nsegs; i++)
			if (counted_sync(spool_state.job.segs[i], false, &spool_state.st.fsyncs) < 0)
				ok = false;
		if (spool_state.fsync != FS_NEVER && counted_sync(spool_state.wfd, false, &spool_state.st.fsyncs) < 0)
			ok = false;
		if (!ok) {
			keep_files(&spool_state.unsynced, "may not have reached the disk (the sync failed)");
			keep_files(&spool_state.gone_flight, "may not have reached the disk (the sync failed)");
		}
		forget_files(&spool_state.unsynced);
		forget_files(&spool_state.gone_flight);
		if (!spool_state.syncing) /* else the running sync may still use it */
			close(spool_state.wfd);
		spool_state.wfd = -1;
	}
	free(spool_state.left);
	spool_state.left = NULL;
	free(spool_state.linked);
	spool_state.linked = NULL;
	spool_state.nlinked = spool_state.caplinked = 0;
	free(spool_state.moved); /* a compaction whose sync did not end: the next start takes the copies */
	spool_state.moved = NULL;
	spool_state.nmoved = 0;
	idlist_free(&spool_state.gone);
	idlist_free(&spool_state.unsynced);
	idlist_free(&spool_state.gone_flight);
	free(spool_state.close_after_sync);
	spool_state.close_after_sync = NULL;
	spool_state.nclose_after_sync = 0;
	for (size_t i = 0; i < spool_state.nsegs; i++)
		if (spool_state.segs[i].rfd >= 0)
			close(spool_state.segs[i].rfd);
}
