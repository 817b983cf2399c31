/* The spool on disk.
 *
 *   DIR/seg/NNNNNNNNNNNNNNNNNNNN.log   append-only segments of records
 *   DIR/files/ID                       the spool's snapshot of each file (a reflink or a copy)
 *   DIR/corrupt/                       segments that failed their checksums or could not be read, moved aside
 *
 * A record is: u32 body length, u32 CRC-32C of type+body, u8 type, body (a msgpack
 * map). ADD carries the whole message (metadata payload included); DONE, DEAD and
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

/* A new message whose ADD record waits in S.out for the write of this loop turn. */
struct unwritten {
	struct smsg *m;
	void (*written)(struct smsg *, const char *, void *);
	void (*durable)(const char *, void *);
	void *arg;
	bool failed;
	int synced_fd;      /* its file's descriptor waiting in S.linked for the sync, or -1 */
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
		uint64_t syncs;   /* fsync and fdatasync calls it made: added to S.st.fsyncs when it ends */
		int err;          /* errno of the first failure (in the order synced), or 0 */
		const char *what; /* ... and what failed: "a file", the files' directory, "a full segment", "" */
	} job;
	msgpack_sbuffer sb;
	msgpack_sbuffer out;    /* records not yet written: see write_out() */
	struct unwritten *adds; /* the new messages among them, in order */
	size_t nadds, capadds;
	uint64_t adds_bytes;
	char out_err[200];      /* why the last write of S.out failed */
	bool out_full;          /* ... and it was for want of space */
	int *linked;            /* files copied in since the last sync: their contents to sync */
	size_t nlinked, caplinked;
	/* Delivered files whose copies wait for their DONE records: in S.out (not
	 * written yet), written but not yet synced, in the sync running. */
	struct idlist gone, unsynced, gone_flight;
	int *close_after_sync;  /* a full segment left while the running sync covers all of it */
	size_t nclose_after_sync;
	int *left;              /* full segments left since the last sync started: the next one syncs them */
	size_t nleft;
	unsigned write_failures; /* writes of S.out that failed: did one since then? */
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
} S;

static void live_add(struct smsg *m)
{
	m->snext = NULL;
	m->sprev = S.live_tail;
	if (S.live_tail)
		S.live_tail->snext = m;
	else
		S.live_head = m;
	S.live_tail = m;
	m->spooled = true;
}

static void live_del(struct smsg *m)
{
	if (!m->spooled)
		return;
	if (m->sprev)
		m->sprev->snext = m->snext;
	else
		S.live_head = m->snext;
	if (m->snext)
		m->snext->sprev = m->sprev;
	else
		S.live_tail = m->sprev;
	m->snext = m->sprev = NULL;
	m->spooled = false;
}

/* A message read back at start: live, then the router's. */
static void hand_recovered(struct smsg *m)
{
	live_add(m);
	S.recovered(m);
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

static char *seg_path(uint64_t num) { return xasprintf("%s/%020llu.log", S.segdir, (unsigned long long)num); }

static struct seg *seg_find(uint64_t num)
{
	for (size_t i = 0; i < S.nsegs; i++)
		if (S.segs[i].num == num)
			return &S.segs[i];
	return NULL;
}

static void keep_files(struct idlist *l, const char *why);
static void forget_files(struct idlist *l);

/* The segment being written is full. The group commit syncs the segment being
 * written, so what waits for durability in this one (new messages not yet
 * answered accepted, DONE records whose files' copies wait, a compaction's
 * copies) must be synced too: it goes on S.left, which the next group commit
 * syncs (in the pool, with the segment written then) and closes after. One that
 * the running sync covers to its end (nothing written to it since that sync
 * started) is closed once that sync ends. A descriptor is never closed while a
 * sync of it runs. With spool.fsync never nothing is synced: closed at once. */
static void leave_segment(void)
{
	if (S.fsync == FS_NEVER) {
		close(S.wfd);
		return;
	}
	if (S.syncing && S.job.wfd == S.wfd && S.job.woff == S.woff) {
		S.close_after_sync = xrealloc(S.close_after_sync, (S.nclose_after_sync + 1) * sizeof *S.close_after_sync);
		S.close_after_sync[S.nclose_after_sync++] = S.wfd;
		return;
	}
	S.left = xrealloc(S.left, (S.nleft + 1) * sizeof *S.left);
	S.left[S.nleft++] = S.wfd;
}

static int seg_open_new(char *err, size_t errlen)
{
	uint64_t num = S.nsegs ? S.segs[S.nsegs - 1].num + 1 : 1;
	char *path = seg_path(num);
	/* O_EXCL: a segment by that name is one the listing missed; never append to it. */
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0640);
	if (fd < 0) {
		snprintf(err, errlen, "cannot create spool segment %s: %s", path, strerror(errno));
		free(path);
		return -1;
	}
	free(path);
	if (S.wfd >= 0)
		leave_segment();
	S.wfd = fd;
	S.woff = 0;
	S.segs = xrealloc(S.segs, (S.nsegs + 1) * sizeof *S.segs);
	S.segs[S.nsegs++] = (struct seg){ .num = num, .rfd = -1 };
	S.st.segments = S.nsegs;
	/* The spool grew by a segment: one more may make a pinned oldest one worth
	 * compacting (see seg_gc). Not from here: this runs inside append_record,
	 * whose record waits in S.sb, and a compaction appends records (and may
	 * finish a segment itself) and deleting the oldest moves S.segs. */
	S.gc_due = true;
	return 0;
}

/* ---- encoding records ---- */

static void pack_add(msgpack_packer *pk, const struct smsg *m, const void *payload, size_t len)
{
	msgpack_sbuffer *sb = pk_sbuffer(pk); /* packed straight in: one for every message */
	mpw_map(sb, 12);
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
	mpw_str(sb, "payload");
	mpw_bin(sb, payload, payload ? len : 0);
}

/* Fill in the header of the record framed in S.sb (after REC_HDR reserved bytes). */
static void seal_record(enum rec_type type)
{
	unsigned char *h = (unsigned char *)S.sb.data;
	size_t body = S.sb.size - REC_HDR;
	h[8] = (unsigned char)type;
	put32(h, (uint32_t)body);
	put32(h + 4, crc32c(0, h + 8, body + 1));
}

/* Records are not written one by one: each goes to S.out, and everything
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
	if (!S.out.size || S.wfd < 0)
		return S.out.size ? -1 : 0;
	ssize_t n = write(S.wfd, S.out.data, S.out.size);
	if (n != (ssize_t)S.out.size) {
		int e = n < 0 ? errno : ENOSPC;
		if (n > 0 && ftruncate(S.wfd, (off_t)S.woff) < 0)
			log_warn("spool: cannot cut a short write");
		S.out_full = e == ENOSPC || e == EDQUOT;
		if (S.out_full)
			snprintf(S.out_err, sizeof S.out_err, "spool full: the file system of %s has no room (%s); "
				 "try again later", S.segdir, strerror(e));
		else
			snprintf(S.out_err, sizeof S.out_err, "spool: cannot write to %s: %s", S.segdir, strerror(e));
		log_warnx("%s (%zu bytes: %zu new messages not accepted; messages delivered meanwhile may be "
			  "delivered again after a restart)", S.out_err, S.out.size, S.nadds);
		for (size_t i = 0; i < S.nadds; i++)
			S.adds[i].failed = true;
		S.out.size = 0;
		S.write_failures++;
		remove_gone(false);
		return -1;
	}
	S.woff += (uint64_t)n;
	S.segs[S.nsegs - 1].size = S.woff;
	S.st.written_bytes += (uint64_t)n;
	S.out.size = 0;
	remove_gone(true);
	return 0;
}

static char *file_path(const char *id) { return xasprintf("%s/%s", S.filedir, id); }

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

/* The DONE records of S.out are written (or lost with it). Lost, the copies of
 * the files they cancel stay for the delivery once more that the next start
 * makes. Written, they go once the DONE is durable: with spool.fsync never at
 * once, else with the next sync of the segment (one per loop turn with
 * always, the group commit with batch; see finish_out). Removed before that, a
 * power cut could keep the ADD on disk and lose the DONE and the copy, and the
 * next start dead-lettered a file that had arrived. */
static void remove_gone(bool written)
{
	if (!written) {
		keep_files(&S.gone, "could not be written");
		return;
	}
	if (S.fsync == FS_NEVER) {
		forget_files(&S.gone);
		return;
	}
	for (size_t i = 0; i < S.gone.n; i++)
		idlist_push(&S.unsynced, S.gone.v[i]);
	S.gone.n = 0;
}

/* Remove the spool's copy of a delivered file once the DONE record queued in
 * S.out, which cancels its ADD, is written and durable. */
static void forget_file_when_written(const char *id) { idlist_push(&S.gone, id); }

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

/* Write S.out, then tell the owner of each new message in it how it went. A
 * callback may append again (a DONE, a message read back): the list is taken
 * first, and what they add goes out with the next turn. */
static void finish_out(void)
{
	write_out();
	struct unwritten *list = S.adds;
	size_t n = S.nadds;
	S.adds = NULL;
	S.nadds = S.capadds = 0;
	S.adds_bytes = 0;
	for (size_t i = 0; i < n; i++) {
		struct unwritten *u = &list[i];
		if (u->failed) {
			if (u->m->kind == JOB_FILE) {
				forget_file(u->m->id);
				unsync_file(u->synced_fd);
			}
			S.st.messages--;
			S.st.bytes -= u->m->size;
			if (S.out_full)
				router_count_rejected();
			u->written(u->m, S.out_err, u->arg);
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
	 * a compaction wrote (S.batch). */
	if ((n || S.unsynced.n || S.nbatch || S.nleft) && S.fsync == FS_ALWAYS)
		start_sync();
	else if ((S.unsynced.n || S.nleft) && S.fsync == FS_BATCH && !uv_is_active((uv_handle_t *)&S.timer))
		uv_timer_start(&S.timer, on_batch_timer, S.interval_ms, 0);
}

static void seg_gc(void);

static void on_prepare(uv_prepare_t *h)
{
	/* First, so that what a compaction appends (and with spool.fsync always,
	 * its sync) goes with this turn's write. */
	if (S.gc_due) {
		S.gc_due = false;
		seg_gc();
	}
	finish_out();
	channel_flush_pending(); /* the jobs and answers finish_out() queued: before the loop blocks */
}

/* Seal the record framed in S.sb and queue it in S.out, in the segment being
 * written (a full one is finished first). Where it will be is known now. */
static int append_record(enum rec_type type, uint64_t *seg, uint64_t *off, uint32_t *reclen, char *err,
			 size_t errlen)
{
	seal_record(type);
	if (S.woff + S.out.size >= S.seg_max) {
		/* What waits belongs to the segment that is full. finish_out() also
		 * routes the new messages among it, and one that fails at once (its
		 * file or its key unreadable) is dead-lettered then: a DEAD framed in
		 * S.sb and written to a new segment. This record waits aside meanwhile
		 * (left in S.sb it became a copy of that DEAD, and its message was lost
		 * at the next start), and a new segment is opened only if none was. */
		msgpack_sbuffer rec = S.sb;
		msgpack_sbuffer_init(&S.sb);
		finish_out();
		msgpack_sbuffer_destroy(&S.sb);
		S.sb = rec;
		if (S.woff + S.out.size >= S.seg_max && seg_open_new(err, errlen) < 0)
			return -1;
	}
	if (seg)
		*seg = S.segs[S.nsegs - 1].num;
	if (off)
		*off = S.woff + S.out.size;
	if (reclen)
		*reclen = (uint32_t)S.sb.size;
	msgpack_sbuffer_write(&S.out, S.sb.data, S.sb.size);
	S.st.written_records++;
	return 0;
}

/* The same, written at once: for the rare records whose writer wants to know. */
static int append_now(enum rec_type type, uint64_t *seg, uint64_t *off, uint32_t *reclen, char *err,
		      size_t errlen)
{
	if (append_record(type, seg, off, reclen, err, errlen) < 0)
		return -1;
	if (write_out() < 0) {
		snprintf(err, errlen, "%s", S.out_err);
		return -1;
	}
	return 0;
}

static void begin_record(msgpack_packer *pk)
{
	S.sb.size = 0;
	static const char zero[REC_HDR];
	msgpack_sbuffer_write(&S.sb, zero, REC_HDR);
	msgpack_packer_init(pk, &S.sb, pk_write);
}

/* Frame in S.sb a record that names a message (DONE, DEAD, REQUEUE). */
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
 * S.job.syncs, on the loop straight into S.st.fsyncs. */
static int counted_sync(int fd, bool dir, uint64_t *count)
{
	(*count)++;
	return dir ? fsync(fd) : fdatasync(fd);
}

/* In a thread of libuv's pool: the contents of files snapshotted into
 * the spool since the last sync (a copy was only just written), their
 * directory entries, the full
 * segments left since, the segment written. Only S.job is touched (and
 * S.filedir, which does not change). */
static void sync_failed(const char *what)
{
	if (!S.job.err) {
		S.job.err = errno;
		S.job.what = what;
	}
}

static void sync_work(uv_work_t *w)
{
	(void)w;
	for (size_t i = 0; i < S.job.nfiles; i++)
		if (counted_sync(S.job.files[i], false, &S.job.syncs) < 0)
			sync_failed("a file");
	if (S.job.dir) {
		int dfd = open(S.filedir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0 || counted_sync(dfd, true, &S.job.syncs) < 0)
			sync_failed(S.filedir);
		if (dfd >= 0)
			close(dfd);
	}
	for (size_t i = 0; i < S.job.nsegs; i++)
		if (counted_sync(S.job.segs[i], false, &S.job.syncs) < 0)
			sync_failed("a full segment");
	if (counted_sync(S.job.wfd, false, &S.job.syncs) < 0)
		sync_failed("");
}

/* Back on the loop. */
static void sync_done(uv_work_t *w, int status)
{
	(void)w;
	char why[200] = "";
	if (status < 0)
		snprintf(why, sizeof why, "spool: fdatasync failed: %s", uv_strerror(status));
	else if (S.job.err)
		snprintf(why, sizeof why, "spool: fdatasync failed: %s%s%s", S.job.what, *S.job.what ? ": " : "",
			 strerror(S.job.err));
	if (why[0])
		log_warnx("%s (%zu messages not answered accepted)", why, S.nflight);
	for (size_t i = 0; i < S.job.nfiles; i++)
		close(S.job.files[i]);
	for (size_t i = 0; i < S.job.nsegs; i++)
		close(S.job.segs[i]);
	free(S.job.files);
	free(S.job.segs);
	S.job.files = S.job.segs = NULL;
	S.job.nfiles = S.job.nsegs = 0;
	S.job.wfd = -1;
	S.syncing = false;
	S.st.fsyncs += S.job.syncs;
	/* The DONE records written before this sync are durable: their files' copies
	 * may go. Before the callbacks: one may append records and, with a full
	 * segment, finish it and start the next sync, which takes over gone_flight. */
	if (why[0])
		keep_files(&S.gone_flight, "may not have reached the disk (the sync failed)");
	else
		forget_files(&S.gone_flight);
	for (size_t i = 0; i < S.nclose_after_sync; i++)
		close(S.close_after_sync[i]);
	S.nclose_after_sync = 0;
	struct pending *done = S.flight;
	size_t n = S.nflight;
	S.flight = NULL;
	S.nflight = 0;
	for (size_t i = 0; i < n; i++)
		done[i].cb(why[0] ? why : NULL, done[i].arg);
	free(done);
	/* What came in meanwhile: its timer may have fired while this sync ran
	 * (start_sync then did nothing), and no later message may come to start
	 * another; it must not wait for ever. */
	bool more = S.nbatch || S.unsynced.n || S.nleft;
	if (more && S.fsync == FS_ALWAYS)
		start_sync();
	else if (more && !uv_is_active((uv_handle_t *)&S.timer))
		uv_timer_start(&S.timer, on_batch_timer, S.interval_ms, 0);
}

static void start_sync(void)
{
	if (S.syncing || (!S.nbatch && !S.unsynced.n && !S.nleft))
		return;
	S.syncing = true;
	write_out();
	S.flight = S.batch;
	S.nflight = S.nbatch;
	S.batch = NULL;
	S.nbatch = S.capbatch = 0;
	struct idlist t = S.gone_flight; /* empty: no sync runs */
	S.gone_flight = S.unsynced;
	S.unsynced = t;
	S.job.files = S.linked;
	S.job.nfiles = S.nlinked;
	S.linked = NULL;
	S.nlinked = S.caplinked = 0;
	S.job.dir = S.files_dirty;
	S.files_dirty = false;
	S.job.segs = S.left;
	S.job.nsegs = S.nleft;
	S.left = NULL;
	S.nleft = 0;
	S.job.wfd = S.wfd;
	S.job.woff = S.woff;
	S.job.syncs = 0;
	S.job.err = 0;
	int rc = uv_queue_work(sup.loop, &S.work, sync_work, sync_done);
	if (rc < 0) /* cannot happen with a valid loop and callback; never leave the batch waiting */
		sync_done(&S.work, rc);
}

static void on_batch_timer(uv_timer_t *t) { start_sync(); }

static void when_durable(void (*cb)(const char *, void *), void *arg)
{
	if (S.fsync == FS_NEVER) {
		cb(NULL, arg);
		return;
	}
	if (S.nbatch == S.capbatch) {
		S.capbatch = S.capbatch ? S.capbatch * 2 : 64;
		S.batch = xrealloc(S.batch, S.capbatch * sizeof *S.batch);
	}
	S.batch[S.nbatch++] = (struct pending){ cb, arg };
	if (S.fsync == FS_BATCH && !uv_is_active((uv_handle_t *)&S.timer))
		uv_timer_start(&S.timer, on_batch_timer, S.interval_ms, 0);
}

/* ---- files ---- */


/* A file now in spool/files whose contents the next group commit syncs
 * (before its directory and the segment with its ADD), and then closes. */
static void sync_with_next_commit(int fd)
{
	if (S.nlinked == S.caplinked) {
		S.caplinked = S.caplinked ? S.caplinked * 2 : 16;
		S.linked = xrealloc(S.linked, S.caplinked * sizeof *S.linked);
	}
	S.linked[S.nlinked++] = fd;
}

/* The copy of a file not accepted after all (its ADD could not be written),
 * removed: its descriptor leaves S.linked and is closed now, or its blocks
 * would stay taken until a sync that may never come (a full spool stays
 * full). One a running sync already took is closed when that sync ends. */
static void unsync_file(int fd)
{
	for (size_t i = 0; fd >= 0 && i < S.nlinked; i++)
		if (S.linked[i] == fd) {
			S.linked[i] = S.linked[--S.nlinked];
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
 * the rest wait their turn in S.snapq. The copy is not synced there: the
 * group commit syncs it with the ADD that names it, and nothing is answered
 * accepted before. It is renamed to its name before its ADD is written:
 * killed before, the copy is a stray that the next start removes; the .tmp
 * name is for a copy cut short. */
#define SNAP_MAX 2

struct snap {
	uv_work_t work;
	struct snap *next;  /* in S.snapq, or in S.snaps once in the pool */
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
			 "try again later", S.filedir, strerror(s->err));
	else
		snprintf(err, errlen, "spool: cannot keep a copy of the file in %s: %s", S.filedir, strerror(s->err));
}

/* Back on the loop: the snapshot is in spool/files (or not); its ADD goes
 * with this turn's records. */
static void snap_done(uv_work_t *w, int status)
{
	struct snap *s = (struct snap *)w, **pp = &S.snaps;
	while (*pp != s)
		pp = &(*pp)->next;
	*pp = s->next;
	S.nsnaps--;
	S.nsnaps_running--;
	S.snaps_bytes -= s->m->size;
	char err[300];
	bool ok = status == 0 && !s->err && s->copied == s->m->size;
	if (s->reflinked)
		S.st.reflinks++;
	if (ok) {
		S.files_dirty = true;
		int keep = S.fsync == FS_NEVER ? -1 : s->out;
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
	while (S.snapq && S.nsnaps_running < SNAP_MAX) {
		struct snap *s = S.snapq;
		S.snapq = s->next;
		if (!S.snapq)
			S.snapq_tail = NULL;
		s->next = S.snaps;
		S.snaps = s;
		S.nsnaps_running++;
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
	for (struct snap *s = S.snapq; s; s = s->next)
		if (strcmp(s->m->id, id) == 0)
			return true;
	for (struct snap *s = S.snaps; s; s = s->next)
		if (strcmp(s->m->id, id) == 0)
			return true;
	for (size_t i = 0; i < S.nadds; i++)
		if (strcmp(S.adds[i].m->id, id) == 0)
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
	if (S.snapq_tail)
		S.snapq_tail->next = s;
	else
		S.snapq = s;
	S.snapq_tail = s;
	S.nsnaps++;
	S.snaps_bytes += m->size;
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
 * the turn's end. synced_fd: its file's copy, waiting in S.linked for the sync. */
static int add_record(struct smsg *m, const void *payload, size_t len, int synced_fd,
		      void (*written)(struct smsg *, const char *, void *), void (*durable)(const char *, void *),
		      void *arg, char *err, size_t errlen)
{
	msgpack_packer pk;
	begin_record(&pk);
	pack_add(&pk, m, payload, len);
	if (append_record(REC_ADD, &m->seg, &m->off, &m->reclen, err, errlen) < 0)
		return -1;
	if (S.nadds == S.capadds) {
		S.capadds = S.capadds ? S.capadds * 2 : 64;
		S.adds = xrealloc(S.adds, S.capadds * sizeof *S.adds);
	}
	S.adds[S.nadds++] = (struct unwritten){ m, written, durable, arg, false, synced_fd };
	S.adds_bytes += m->size;
	S.st.messages++;
	S.st.bytes += m->size;
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
	*n = S.nadds + S.nsnaps;
	*bytes = S.adds_bytes + S.snaps_bytes;
}

static void seg_unref(uint64_t num);

void spool_done(struct smsg *m, const char *state)
{
	/* With no DONE recorded the message comes back after a restart, and needs its file. */
	if (write_id_record(REC_DONE, m, state) == 0 && m->kind == JOB_FILE)
		forget_file_when_written(m->id);
	if (S.st.messages)
		S.st.messages--;
	S.st.bytes -= m->size <= S.st.bytes ? m->size : S.st.bytes;
	if (m->state == SM_DEAD && S.st.dead)
		S.st.dead--;
	seg_unref(m->seg);
	live_del(m);
}

void spool_dead(struct smsg *m, const char *reason)
{
	write_id_record(REC_DEAD, m, reason);
	S.st.dead++;
}

void spool_requeue(struct smsg *m)
{
	write_id_record(REC_REQUEUE, m, NULL);
	if (S.st.dead)
		S.st.dead--;
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
	msgpack_zone_clear(&S.zone);
	int rc = -1;
	if (msgpack_unpack(rec + REC_HDR, m->reclen - REC_HDR, &off, &S.zone, &o) == MSGPACK_UNPACK_SUCCESS) {
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
	*st = S.st;
	st->segments = S.nsegs;
	st->disk_bytes = 0;
	for (size_t i = 0; i < S.nsegs; i++)
		st->disk_bytes += S.segs[i].size;
	st->oldest_wall_ms = S.live_head ? S.live_head->created_wall_ms : 0;
}

/* ---- segment life: delete oldest-first, compact a nearly empty oldest one ---- */

static void seg_delete_oldest(void)
{
	struct seg *s = &S.segs[0];
	char *p = seg_path(s->num);
	if (s->rfd >= 0)
		close(s->rfd);
	unlink(p);
	free(p);
	memmove(S.segs, S.segs + 1, --S.nsegs * sizeof *S.segs);
	S.st.segments = S.nsegs;
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
	struct moved *v = S.moved;
	size_t n = S.nmoved;
	uint64_t from = S.compact_from;
	S.moved = NULL;
	S.nmoved = 0;
	S.compacting = false;
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
	uint64_t from = S.segs[0].num;
	size_t n = 0;
	for (struct smsg *m = S.live_head; m; m = m->snext)
		n += m->seg == from;
	if (!n)
		return false;
	/* Their ids first: appending may finish a full segment, which routes the
	 * new messages of this turn and may change the lists. */
	struct moved *v = xcalloc(n, sizeof *v);
	size_t k = 0;
	for (struct smsg *m = S.live_head; m && k < n; m = m->snext)
		if (m->seg == from)
			memcpy(v[k++].id, m->id, sizeof v[0].id);
	S.compacting = true;
	unsigned failures = S.write_failures;
	size_t copied = 0;
	for (size_t i = 0; i < k; i++) {
		struct smsg *m = router_find(v[i].id);
		char *rec, err[256];
		if (!m || m->seg != from || read_record(m->seg, m->off, m->reclen, &rec) < 0)
			continue; /* gone meanwhile, or unreadable: it stays, and so does the segment */
		S.sb.size = 0;
		msgpack_sbuffer_write(&S.sb, rec, m->reclen);
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
	if (write_out() < 0 || S.write_failures != failures || !copied) {
		if (copied)
			log_warnx("spool: compaction of segment %llu failed: its records could not be written",
				  (unsigned long long)from);
		free(v);
		S.compacting = false;
		return false;
	}
	if (S.fsync == FS_NEVER) {
		compact_apply(v, copied, from);
		free(v);
		S.compacting = false;
		return true;
	}
	S.moved = v;
	S.nmoved = copied;
	S.compact_from = from;
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
	while (S.nsegs > 1) {
		if (S.segs[0].live == 0) {
			seg_delete_oldest();
			continue;
		}
		/* An old segment pinned by a few long-waiting messages (dead letters, a
		 * long outage) is compacted once the spool has grown past a few
		 * segments; one compaction at a time. */
		if (!S.compacting && S.nsegs > 4 && S.segs[0].live * 64 < S.segs[0].size / 64 && compact_oldest() &&
		    S.segs[0].live == 0)
			continue;
		break;
	}
}

static void seg_unref(uint64_t num)
{
	struct seg *s = seg_find(num);
	if (s && s->live)
		s->live--;
	if (S.nsegs > 1 && S.segs[0].live == 0)
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
			S.st.corrupt_records++;
			log_warnx("spool: %s: %llu damaged bytes at offset %llu skipped; replay goes on at the next "
				  "good record (a message recorded there is lost)",
				  path, (unsigned long long)(off - bad), (unsigned long long)bad);
		}
		uint32_t len = get32(map + off);
		msgpack_object o;
		size_t used = 0;
		msgpack_zone_clear(&S.zone);
		if (msgpack_unpack((const char *)map + off + REC_HDR, len, &used, &S.zone, &o) == MSGPACK_UNPACK_SUCCESS)
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
	DIR *d = opendir(S.segdir);
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
	S.segs = xcalloc(n ? n : 1, sizeof *S.segs);
	for (size_t i = 0; i < n; i++)
		S.segs[i] = (struct seg){ .num = nums[i], .rfd = -1 };
	S.nsegs = n;
	free(nums);
	return 0;
}

/* Out of the way of replay and of the deletion of empty segments, kept for an
 * operator to look at. If even that fails it stays where it is, out of S.segs
 * (nothing deletes it, nothing is appended to it) and is replayed again at
 * the next start. */
static void move_aside(struct seg *s)
{
	char *from = seg_path(s->num);
	char *dir = xasprintf("%s/corrupt", S.dir);
	char *to = xasprintf("%s/%020llu-%llu.log", dir, (unsigned long long)s->num, (unsigned long long)wall_ms());
	const char *what = s->unreadable ? "cannot be read" : "is corrupt in the middle";
	mkdir_p(dir, 0750);
	if (rename(from, to) == 0)
		log_warnx("spool: segment %s %s; moved aside to %s", from, what, to);
	else
		log_warn("spool: segment %s %s, and cannot be moved aside to %s: kept where it is, out of use "
			 "until the next start reads it again", from, what, dir);
	S.st.corrupt_segments++;
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
	S.sb.size = 0;
	msgpack_sbuffer_write(&S.sb, rec, m->reclen);
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
	char *dir = xasprintf("%s/corrupt", S.dir);
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
	for (size_t i = 0; i < S.nsegs && rc == 0; i++) {
		char *p = seg_path(S.segs[i].num);
		int fd = open(p, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || counted_sync(fd, false, &S.st.fsyncs) < 0) {
			log_warn("spool: cannot sync segment %s", p);
			rc = -1;
		}
		if (fd >= 0)
			close(fd);
		free(p);
	}
	int dfd = rc == 0 ? open(S.segdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (rc == 0 && (dfd < 0 || counted_sync(dfd, true, &S.st.fsyncs) < 0)) {
		log_warn("spool: cannot sync %s", S.segdir);
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
	DIR *d = opendir(S.filedir);
	if (!d) {
		log_warn("spool: cannot read %s", S.filedir);
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
	else if (n && S.fsync != FS_NEVER && sync_replayed() < 0)
		why = "the records that cancel them could not be made durable";
	if (why)
		log_warnx("spool: kept %zu files (%llu bytes) in %s that no message in the spool refers to: %s", n,
			  (unsigned long long)bytes, S.filedir, why);
	size_t removed = 0;
	uint64_t freed = 0;
	for (size_t i = 0; i < n; i++) {
		if (!why && unlinkat(dirfd(d), strays[i].name, 0) == 0) {
			removed++;
			freed += strays[i].size; /* nothing writes to a stray: its size from the listing */
		} else if (!why) {
			log_warn("spool: cannot remove %s/%s", S.filedir, strays[i].name);
		}
		free(strays[i].name);
	}
	free(strays);
	closedir(d);
	if (removed)
		log_info("spool: removed %zu stray files (%llu bytes) from %s: copies no message in the spool refers "
			 "to (delivered, their removal cut short; or never accepted)",
			 removed, (unsigned long long)freed, S.filedir);
	S.st.stray_files_removed += removed;
	S.st.stray_bytes_removed += freed;
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
		snprintf(err, errlen, "cannot list the spool's segments in %s: %s", S.segdir, strerror(errno));
		return -1;
	}
	for (size_t i = 0; i < S.nsegs; i++) {
		bool clean;
		uint64_t good = replay_segment(&rv, &S.segs[i], &clean);
		if (clean || S.segs[i].corrupt)
			continue;
		if (i == S.nsegs - 1) { /* the newest: a write cut short by a crash */
			char *p = seg_path(S.segs[i].num);
			if (truncate(p, (off_t)good) == 0)
				log_warnx("spool: cut a torn tail of %s at byte %llu", p, (unsigned long long)good);
			free(p);
			S.st.torn_tails++;
		} else {
			S.segs[i].corrupt = true;
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
		S.st.messages++;
		S.st.bytes += m->size;
		if (m->state == SM_DEAD)
			S.st.dead++;
	}
	size_t w = 0;
	for (size_t i = 0; i < S.nsegs; i++) {
		if (!S.segs[i].corrupt) {
			S.segs[w++] = S.segs[i];
			continue;
		}
		if (S.segs[i].rfd >= 0)
			close(S.segs[i].rfd);
		move_aside(&S.segs[i]);
	}
	S.nsegs = w;
	write_out();
	/* The rescued copies, before the loop runs: the segments they filled and
	 * left (S.left), then the one written now. */
	for (size_t i = 0; i < S.nleft; i++) {
		counted_sync(S.left[i], false, &S.st.fsyncs);
		close(S.left[i]);
	}
	S.nleft = 0;
	if (S.fsync != FS_NEVER)
		counted_sync(S.wfd, false, &S.st.fsyncs);
	sweep_files(&rv);
	S.recovered = recovered;
	recovery_free(&rv, hand_recovered); /* the router takes the messages */
	if (live)
		log_info("spool: recovered %zu undelivered messages from %zu segments", live, S.nsegs);
	seg_gc();
	return 0;
}

int spool_open(char *err, size_t errlen, void (*recovered)(struct smsg *m))
{
	crc_init();
	const char *dir = config_str(sup.cfg, "spool", "dir");
	S.dir = dir ? xstrdup(dir) : xasprintf("%s/spool", config_str(sup.cfg, "gateway", "state_dir"));
	S.segdir = xasprintf("%s/seg", S.dir);
	S.filedir = xasprintf("%s/files", S.dir);
	if (mkdir_p(S.segdir, 0750) < 0 || mkdir_p(S.filedir, 0750) < 0) {
		snprintf(err, errlen, "cannot create the spool in %s: %s", S.dir, strerror(errno));
		return -1;
	}
	const char *fs = config_str(sup.cfg, "spool", "fsync");
	S.fsync = strcmp(fs, "always") == 0 ? FS_ALWAYS : strcmp(fs, "never") == 0 ? FS_NEVER : FS_BATCH;
	S.interval_ms = (uint64_t)config_int(sup.cfg, "spool", "fsync_interval_ms");
	S.seg_max = (uint64_t)config_int(sup.cfg, "spool", "segment_bytes");
	S.wfd = -1;
	msgpack_sbuffer_init(&S.sb);
	msgpack_sbuffer_init(&S.out);
	msgpack_zone_init(&S.zone, 4096);
	uv_timer_init(sup.loop, &S.timer);
	uv_prepare_init(sup.loop, &S.prep);
	uv_prepare_start(&S.prep, on_prepare);
	uv_unref((uv_handle_t *)&S.prep); /* never what keeps the loop running */
	if (recover(recovered, err, errlen) < 0)
		return -1;
	log_info("spool in %s (fsync %s)", S.dir, fs);
	return 0;
}

/* The files snapshotted in whose group commit never ran (S.linked) or
 * may not have ended (S.job.files): the segments synced next make their ADDs
 * durable, which must not name a file the disk holds only part of. A second
 * sync beside the running one is harmless. */
static void sync_files_at_close(void)
{
	if (S.fsync == FS_NEVER) /* nothing kept for it, nothing synced */
		return;
	int e = 0;
	for (size_t i = 0; i < S.nlinked; i++) {
		if (counted_sync(S.linked[i], false, &S.st.fsyncs) < 0 && !e)
			e = errno;
		close(S.linked[i]);
	}
	for (size_t i = 0; S.syncing && i < S.job.nfiles; i++)
		if (counted_sync(S.job.files[i], false, &S.st.fsyncs) < 0 && !e)
			e = errno;
	if (S.files_dirty || (S.syncing && S.job.dir)) {
		int dfd = open(S.filedir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if ((dfd < 0 || counted_sync(dfd, true, &S.st.fsyncs) < 0) && !e)
			e = errno;
		if (dfd >= 0)
			close(dfd);
	}
	S.nlinked = 0;
	S.files_dirty = false;
	if (e) {
		errno = e;
		log_warn("spool: cannot sync the files in %s (their messages go out after the next start, maybe "
			 "incomplete)", S.filedir);
	}
}

void spool_close(void)
{
	/* Written, not answered: a client that had no "accepted" yet gets none, and
	 * the message goes out after the next start. */
	write_out();
	remove_gone(false); /* write_out() had nothing to write (no segment): nothing removed */
	free(S.adds);
	S.adds = NULL;
	S.nadds = S.capadds = 0;
	if (S.wfd >= 0) {
		/* Every DONE is in this segment, in one left since the last sync
		 * started (S.left), or in one left before that the running sync
		 * covers (S.job.segs: that sync may not have ended, the loop is not
		 * run again; a second fdatasync of it beside it is harmless). Nothing
		 * is synced with spool.fsync never. */
		sync_files_at_close();
		bool ok = true;
		for (size_t i = 0; i < S.nleft; i++) {
			if (S.fsync != FS_NEVER && counted_sync(S.left[i], false, &S.st.fsyncs) < 0)
				ok = false;
			close(S.left[i]);
		}
		S.nleft = 0;
		for (size_t i = 0; S.syncing && i < S.job.nsegs; i++)
			if (counted_sync(S.job.segs[i], false, &S.st.fsyncs) < 0)
				ok = false;
		if (S.fsync != FS_NEVER && counted_sync(S.wfd, false, &S.st.fsyncs) < 0)
			ok = false;
		if (!ok) {
			keep_files(&S.unsynced, "may not have reached the disk (the sync failed)");
			keep_files(&S.gone_flight, "may not have reached the disk (the sync failed)");
		}
		forget_files(&S.unsynced);
		forget_files(&S.gone_flight);
		if (!S.syncing) /* else the running sync may still use it */
			close(S.wfd);
		S.wfd = -1;
	}
	free(S.left);
	S.left = NULL;
	free(S.linked);
	S.linked = NULL;
	S.nlinked = S.caplinked = 0;
	free(S.moved); /* a compaction whose sync did not end: the next start takes the copies */
	S.moved = NULL;
	S.nmoved = 0;
	idlist_free(&S.gone);
	idlist_free(&S.unsynced);
	idlist_free(&S.gone_flight);
	free(S.close_after_sync);
	S.close_after_sync = NULL;
	S.nclose_after_sync = 0;
	for (size_t i = 0; i < S.nsegs; i++)
		if (S.segs[i].rfd >= 0)
			close(S.segs[i].rfd);
}
