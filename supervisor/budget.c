/* Byte budgets and the shared rate cap of a metered link (the `link` section).
 *
 * Counting: every worker reports the bytes its connections carried, both
 * directions, as the kernel counts them (workers/wire.c; rsync: its protocol's
 * bytes through ssh). They add to the day and the month in progress, in local
 * time, the month starting on link.budget_month_start_day. The counts are
 * written to state_dir/link-budget (a temporary file, synced, renamed over the
 * old one) every SAVE_MS when they changed, off the loop, and at shutdown, so
 * a restart does not reset them; a crash loses at most SAVE_MS of counting.
 * Periods go only forward: a clock that reads before the period in progress
 * (not set yet: a camera that boots before NTP) counts into it. A period begun
 * while the clock was not known set (clock.c) is provisional (kept in the file
 * too): once the clock is known set, its count is the count of the period the
 * clock then reads, and a known-set clock that reads before the period in
 * progress moves the count back to its own period the same way (that period
 * was begun by a wrong clock).
 *
 * Holding: from link.budget_warn_percent of a budget used, link.budget_policy
 * names what waits: files (hold_files), everything but priority high
 * (hold_all_but_high), or nothing (warn). A held message waits in the spool
 * with its reason as its last error ("held: daily byte budget 95% used ...");
 * it is never dropped or dead-lettered for it, and goes again as soon as the
 * budget allows: a new period, or a reload that raises the budget or changes
 * the policy (the tick lets every held message go when what is held changes).
 *
 * The rate cap: link.max_bytes_per_s, one token bucket for every worker. A
 * job is handed out only while there is room, and its size comes off at once;
 * what the workers report on top of that (headers, TLS, retransmissions) comes
 * off when they report it, and what they carried less (compression) goes back
 * at the first report after the job ended: over time the cap is charged the
 * bytes on the wire. Metadata and priority high are measured against a
 * bucket of their own, so they may use the whole cap; files and the rest go
 * only while the shared bucket (everyone's bytes) has room: they take what the
 * detections leave. */
#include "supervisor/budget.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "supervisor/clock.h"
#include "supervisor/http.h"
#include "supervisor/router_int.h"
#include "supervisor/sup.h"

#define STATE_FILE "link-budget"
#define STATE_MAGIC "ucgw link budget 1"
#define SAVE_MS 5000         /* counts written at most this often (and at shutdown) */
#define RATE_WINDOW_S 60     /* the forecast's current rate: the bytes of the last minute */
#define HOLD_RECHECK_MS 60000 /* a held message looks again this often even if nothing changed */
#define HELD_PREFIX "held: "

enum policy { POL_HOLD_FILES, POL_HOLD_ALL_BUT_HIGH, POL_WARN };

struct period {
	const char *name;      /* "daily", "monthly" */
	const char *key_name;  /* the config key of its budget */
	uint64_t key;          /* which period (budget_day_key / budget_month_key) */
	uint64_t used;
	bool warned, exhausted; /* logged in this period */
	bool provisional;       /* begun while the clock was not known set */
	bool behind;            /* ... the clock reads before it: logged */
};

static struct {
	struct period day, month;
	uint64_t proto_wire[MAX_PROTOS]; /* since start, per protocol */
	uint64_t total;                  /* since start */
	uint64_t second[RATE_WINDOW_S];  /* bytes per second, a ring */
	unsigned sec_pos, sec_filled;
	/* the rate cap */
	int64_t shared, first;           /* tokens: every job's bytes; metadata and high priority's */
	uint64_t refill_ms;
	uint64_t pending[MAX_PROTOS];    /* bytes taken off at hand-out, not yet reported by the worker */
	uint64_t rate_waits;             /* jobs that waited for the cap */
	/* holding */
	int hold_sig;                    /* what is held now (see hold_signature); -1 before the first tick */
	/* persistence */
	bool dirty, saving, inited;
	uint64_t saved_ms;
	char path[4096];
	uv_timer_t tick;
	uv_work_t work;
	char buf[256], err[256];
} B = { .day = { "daily", "budget_bytes_per_day" }, .month = { "monthly", "budget_bytes_per_month" } };

/* The section as it is in force, read again after each reload: the router
 * asks for every job. */
static struct {
	uint64_t reloads; /* sup.reloads + 1 when read (0: not yet) */
	int64_t per_day, per_month, start_day, warn_percent, max_bytes_per_s;
	enum policy policy;
} C;

static void cfg(void)
{
	if (C.reloads == sup.reloads + 1)
		return;
	C.reloads = sup.reloads + 1;
	C.per_day = config_int(sup.cfg, "link", "budget_bytes_per_day");
	C.per_month = config_int(sup.cfg, "link", "budget_bytes_per_month");
	C.start_day = config_int(sup.cfg, "link", "budget_month_start_day");
	C.warn_percent = config_int(sup.cfg, "link", "budget_warn_percent");
	C.max_bytes_per_s = config_int(sup.cfg, "link", "max_bytes_per_s");
	const char *p = config_str(sup.cfg, "link", "budget_policy");
	C.policy = strcmp(p, "warn") == 0 ? POL_WARN : strcmp(p, "hold_all_but_high") == 0 ? POL_HOLD_ALL_BUT_HIGH : POL_HOLD_FILES;
}

static int64_t link_int(const char *key)
{
	cfg();
	return strcmp(key, "budget_bytes_per_day") == 0 ? C.per_day : strcmp(key, "budget_bytes_per_month") == 0 ? C.per_month :
	       strcmp(key, "budget_month_start_day") == 0 ? C.start_day : strcmp(key, "budget_warn_percent") == 0 ? C.warn_percent :
	       C.max_bytes_per_s;
}

static enum policy policy(void)
{
	cfg();
	return C.policy;
}

/* ---- periods, in local time ---- */

static struct tm local(uint64_t wall)
{
	time_t t = (time_t)(wall / 1000);
	struct tm tm;
	localtime_r(&t, &tm);
	return tm;
}

uint64_t budget_day_key(uint64_t wall)
{
	struct tm tm = local(wall);
	return (uint64_t)(tm.tm_year + 1900) * 10000 + (uint64_t)(tm.tm_mon + 1) * 100 + (uint64_t)tm.tm_mday;
}

uint64_t budget_month_key(uint64_t wall, int start_day)
{
	struct tm tm = local(wall);
	int y = tm.tm_year + 1900, m = tm.tm_mon + 1;
	if (tm.tm_mday < start_day && --m == 0) { /* still in the period that began last month */
		m = 12;
		y--;
	}
	return (uint64_t)y * 100 + (uint64_t)m;
}

/* Start and end (wall ms) of the period p is in now. */
static void bounds(const struct period *p, uint64_t now, uint64_t *start, uint64_t *end)
{
	struct tm tm = local(now), a = { .tm_isdst = -1 }, b;
	if (p == &B.day) {
		a.tm_year = tm.tm_year;
		a.tm_mon = tm.tm_mon;
		a.tm_mday = tm.tm_mday;
		b = a;
		b.tm_mday++;
	} else {
		uint64_t k = budget_month_key(now, (int)link_int("budget_month_start_day"));
		a.tm_year = (int)(k / 100) - 1900;
		a.tm_mon = (int)(k % 100) - 1;
		a.tm_mday = (int)link_int("budget_month_start_day");
		b = a;
		b.tm_mon++;
	}
	*start = (uint64_t)mktime(&a) * 1000; /* mktime normalises a day or month past the end */
	*end = (uint64_t)mktime(&b) * 1000;
}

static uint64_t period_key(const struct period *p, uint64_t now)
{
	return p == &B.day ? budget_day_key(now) : budget_month_key(now, (int)link_int("budget_month_start_day"));
}

/* A new period: its count starts at 0; only forward, and not on a clock not
 * known set (see the top). */
static bool roll(struct period *p, uint64_t now)
{
	uint64_t k = period_key(p, now);
	bool set = clock_known_set();
	if (k == p->key) {
		p->behind = false;
		if (set && p->provisional) {
			p->provisional = false;
			B.dirty = true;
		}
		return false;
	}
	if (p->key && (k < p->key || p->provisional) && set) { /* the key came from a clock that was wrong */
		log_info("link: the clock is set: the %s byte budget's count (%llu bytes, kept as period %llu) is "
			 "period %llu's", p->name, (unsigned long long)p->used, (unsigned long long)p->key,
			 (unsigned long long)k);
		p->key = k;
		p->provisional = p->behind = false;
		B.dirty = true;
		return false;
	}
	if (p->key && k < p->key) {
		if (!p->behind)
			log_info("link: the clock (not known set) reads period %llu, before the %s byte budget's period %llu: "
				 "counting into %llu", (unsigned long long)k, p->name, (unsigned long long)p->key,
				 (unsigned long long)p->key);
		p->behind = true;
		return false;
	}
	if (p->key && p->used)
		log_info("link: the %s byte budget's period %llu ended with %llu bytes used; %llu starts", p->name,
			 (unsigned long long)p->key, (unsigned long long)p->used, (unsigned long long)k);
	p->key = k;
	p->used = 0;
	p->warned = p->exhausted = p->behind = false;
	p->provisional = !set;
	B.dirty = true;
	return true;
}

/* ---- persistence ---- */

static int write_state(const char *path, const char *text, char *err, size_t errlen)
{
	char tmp[4200];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
		return -1;
	}
	size_t len = strlen(text);
	ssize_t n = write(fd, text, len);
	if (n != (ssize_t)len || fsync(fd) < 0) {
		snprintf(err, errlen, "cannot write %s: %s", tmp, n < 0 || (size_t)n == len ? strerror(errno) : "short write");
		close(fd);
		unlink(tmp);
		return -1;
	}
	close(fd);
	if (rename(tmp, path) < 0) {
		snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	char dir[4096];
	str_copy(dir, sizeof dir, path);
	char *slash = strrchr(dir, '/');
	if (slash) {
		*slash = '\0';
		int dfd = open(dir[0] ? dir : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			fsync(dfd); /* the rename itself: best effort */
			close(dfd);
		}
	}
	return 0;
}

static void format_state(char *buf, size_t len)
{
	/* "provisional": a line a reader before it does not look at */
	snprintf(buf, len, STATE_MAGIC "\nday %llu %llu\nmonth %llu %llu\nprovisional %d %d\n", (unsigned long long)B.day.key,
		 (unsigned long long)B.day.used, (unsigned long long)B.month.key, (unsigned long long)B.month.used,
		 B.day.provisional, B.month.provisional);
}

/* The tick's write (in the thread pool) and the one at shutdown may overlap:
 * one at a time, and never an older count over a newer one. */
static uv_mutex_t save_lock;
static uint64_t save_seq, saved_seq;

static int write_latest(uint64_t seq, const char *text, char *err, size_t errlen)
{
	uv_mutex_lock(&save_lock);
	int rc = seq > saved_seq ? write_state(B.path, text, err, errlen) : 0;
	if (rc == 0 && seq > saved_seq)
		saved_seq = seq;
	uv_mutex_unlock(&save_lock);
	return rc;
}

static uint64_t buf_seq; /* the sequence number of what B.buf holds */

static void save_work(uv_work_t *w)
{
	B.err[0] = '\0';
	write_latest(buf_seq, B.buf, B.err, sizeof B.err);
}

static void save_done(uv_work_t *w, int status)
{
	static bool complained;
	B.saving = false;
	if (B.err[0] && !complained)
		log_warnx("link: the byte counts cannot be kept across a restart: %s", B.err);
	complained = B.err[0] != '\0';
}

static void save_async(void)
{
	if (B.saving || !B.dirty)
		return;
	format_state(B.buf, sizeof B.buf);
	buf_seq = ++save_seq;
	B.dirty = false;
	B.saving = true;
	B.saved_ms = now_ms();
	uv_queue_work(sup.loop, &B.work, save_work, save_done);
}

static void load(void)
{
	FILE *f = fopen(B.path, "re");
	if (!f) {
		if (errno != ENOENT)
			log_warnx("link: cannot read %s: %s; the byte counts start at 0", B.path, strerror(errno));
		return;
	}
	char magic[64] = "";
	unsigned long long dk = 0, du = 0, mk = 0, mu = 0;
	int dp = 0, mp = 0;
	bool ok = fgets(magic, sizeof magic, f) && strncmp(magic, STATE_MAGIC "\n", sizeof STATE_MAGIC) == 0 &&
		  fscanf(f, "day %llu %llu\nmonth %llu %llu\n", &dk, &du, &mk, &mu) == 4;
	if (ok && fscanf(f, "provisional %d %d", &dp, &mp) != 2) /* a file written before it: a key before 2026 was */
		dp = mp = -1;
	fclose(f);
	if (!ok) {
		log_warnx("link: %s is not a byte count this ucgwd wrote; the counts start at 0", B.path);
		return;
	}
	uint64_t now = wall_ms();
	/* a count of a period that is over stays over: roll() starts the new one */
	B.day.key = dk;
	B.day.used = du;
	B.month.key = mk;
	B.month.used = mu;
	B.day.provisional = dp < 0 ? dk < period_key(&B.day, CLOCK_FLOOR_MS) : dp != 0;
	B.month.provisional = mp < 0 ? mk < period_key(&B.month, CLOCK_FLOOR_MS) : mp != 0;
	roll(&B.day, now);
	roll(&B.month, now);
	log_info("link: %llu bytes used today, %llu this month (from %s)", (unsigned long long)B.day.used,
		 (unsigned long long)B.month.used, B.path);
}

/* ---- holding ---- */

/* How much of a budget is used, in hundredths of a percent (0: no budget). */
static uint64_t used_bp(const struct period *p)
{
	int64_t budget = link_int(p->key_name);
	if (budget <= 0)
		return 0;
	long double r = (long double)p->used * 10000.0L / (long double)budget;
	return r > 1e15L ? (uint64_t)1e15 : (uint64_t)r;
}

/* The budget nearest its end, if it is past the warning threshold. */
static const struct period *over(void)
{
	uint64_t warn = (uint64_t)link_int("budget_warn_percent") * 100, d = used_bp(&B.day), m = used_bp(&B.month);
	const struct period *p = d >= m ? &B.day : &B.month;
	uint64_t bp = d >= m ? d : m;
	return bp && bp >= warn ? p : NULL;
}

/* What is held now: -1 nothing, else the policy. Any change lets every held
 * message go round again, to be held again or not by the new rule. */
static int hold_signature(void)
{
	enum policy pol = policy();
	return pol == POL_WARN || !over() ? -1 : (int)pol;
}

static bool holds(enum policy pol, const struct smsg *m)
{
	switch (pol) {
	case POL_HOLD_FILES: return m->kind == JOB_FILE;
	case POL_HOLD_ALL_BUT_HIGH: return m->priority != PRIO_HIGH;
	case POL_WARN: return false;
	}
	return false;
}

bool budget_hold(const struct smsg *m, char *why, size_t whylen, uint64_t *recheck_ms)
{
	enum policy pol = policy();
	const struct period *p;
	if (pol == POL_WARN || !holds(pol, m) || !(p = over()))
		return false;
	snprintf(why, whylen, HELD_PREFIX "%s byte budget %llu%% used (%llu of %llu bytes; link.budget_policy %s)",
		 p->name, (unsigned long long)(used_bp(p) / 100), (unsigned long long)p->used,
		 (unsigned long long)link_int(p->key_name), config_str(sup.cfg, "link", "budget_policy"));
	*recheck_ms = HOLD_RECHECK_MS;
	B.hold_sig = (int)pol; /* the tick lets it go when this changes */
	return true;
}

bool budget_is_held(const struct smsg *m)
{
	return m->state == SM_WAITING && strncmp(m->last_error, HELD_PREFIX, strlen(HELD_PREFIX)) == 0;
}

static uint64_t held_now(uint64_t *bytes)
{
	uint64_t n = 0, b = 0;
	for (struct smsg *m = router_state.waiting.head; m; m = m->qnext)
		if (budget_is_held(m)) {
			n++;
			b += m->size;
		}
	if (bytes)
		*bytes = b;
	return n;
}

/* What the budget held goes round now (router_sweep_waiting takes it). */
static void release(void)
{
	uint64_t n = 0;
	for (struct smsg *m = router_state.waiting.head; m; m = m->qnext)
		if (budget_is_held(m)) {
			m->next_try_ms = 0;
			n++;
		}
	if (n)
		log_info("link: %llu held message%s go%s round again (the byte budget or its policy changed)",
			 (unsigned long long)n, n == 1 ? "" : "s", n == 1 ? "es" : "");
}

static void warn_once(struct period *p)
{
	uint64_t bp = used_bp(p);
	if (!bp)
		return;
	if (bp >= 10000 && !p->exhausted) {
		p->exhausted = p->warned = true;
		log_warnx("link: the %s byte budget is used up: %llu of %llu bytes (link.%s; policy %s)", p->name,
			  (unsigned long long)p->used, (unsigned long long)link_int(p->key_name), p->key_name,
			  config_str(sup.cfg, "link", "budget_policy"));
	} else if (bp >= (uint64_t)link_int("budget_warn_percent") * 100 && !p->warned) {
		p->warned = true;
		log_warnx("link: %llu%% of the %s byte budget used: %llu of %llu bytes (link.%s); policy %s",
			  (unsigned long long)(bp / 100), p->name, (unsigned long long)p->used,
			  (unsigned long long)link_int(p->key_name), p->key_name, config_str(sup.cfg, "link", "budget_policy"));
	}
}

/* ---- counting ---- */

void budget_wire(const char *worker, uint64_t bytes)
{
	struct rproto *rp = rproto_by_name(worker);
	uint64_t now = wall_ms();
	roll(&B.day, now);
	roll(&B.month, now);
	B.day.used += bytes;
	B.month.used += bytes;
	B.total += bytes;
	B.second[B.sec_pos] += bytes;
	B.dirty = true;
	if (!rp)
		return;
	B.proto_wire[rp->idx] += bytes;
	/* what the hand-out took off already (budget_sent) is not taken twice;
	 * an estimate of jobs no longer in flight is no longer owed: what the
	 * wire did not carry of it (a compressed payload, a message the server
	 * had already) goes back to the buckets, so that the cap is charged the
	 * bytes on the wire, not the payloads' sizes */
	uint64_t inflight = 0;
	for (struct smsg *m = rp->inflight.head; m; m = m->qnext)
		inflight += m->size;
	uint64_t *pend = &B.pending[rp->idx], matched = bytes < *pend ? bytes : *pend, extra = bytes - matched;
	*pend -= matched;
	int64_t credit = 0;
	if (*pend > inflight) {
		credit = (int64_t)(*pend - inflight);
		*pend = inflight;
	}
	int64_t cap = link_int("max_bytes_per_s");
	B.shared = B.shared - (int64_t)extra + credit;
	if (rp->meta && !rp->files)
		B.first = B.first - (int64_t)extra + credit;
	if (cap > 0) { /* at most a second's worth saved up, as refill() keeps it */
		B.shared = B.shared > cap ? cap : B.shared;
		B.first = B.first > cap ? cap : B.first;
	}
}

/* ---- the rate cap ---- */

static bool first_class(const struct smsg *m) { return m->kind == JOB_META || m->priority == PRIO_HIGH; }

static void refill(int64_t cap)
{
	uint64_t now = now_ms(), dt = now - B.refill_ms;
	B.refill_ms = now;
	int64_t add = cap * (int64_t)(dt > 10000 ? 10000 : dt) / 1000;
	B.shared = B.shared + add > cap ? cap : B.shared + add; /* at most a second's worth saved up */
	B.first = B.first + add > cap ? cap : B.first + add;
}

bool budget_rate_capped(void)
{
	cfg();
	return C.max_bytes_per_s > 0;
}

bool budget_rate_ok(const struct smsg *m)
{
	cfg();
	int64_t cap = C.max_bytes_per_s;
	if (cap <= 0)
		return true;
	refill(cap);
	bool ok = first_class(m) ? B.first > 0 : B.shared > 0;
	B.rate_waits += !ok;
	return ok;
}

void budget_sent(int proto, const struct smsg *m)
{
	cfg();
	if (C.max_bytes_per_s <= 0)
		return;
	B.shared -= (int64_t)m->size;
	if (first_class(m))
		B.first -= (int64_t)m->size;
	if (proto >= 0 && proto < MAX_PROTOS)
		B.pending[proto] += m->size;
}

/* ---- the tick ---- */

static void on_tick(uv_timer_t *t)
{
	uint64_t now = wall_ms();
	roll(&B.day, now);
	roll(&B.month, now);
	warn_once(&B.day);
	warn_once(&B.month);
	int sig = hold_signature();
	if (sig != B.hold_sig) {
		if (B.hold_sig != -1 || sig != -1)
			log_info("link: %s", sig == -1 ? "the byte budget holds nothing now" : sig == POL_HOLD_FILES ?
				 "the byte budget holds files now" : "the byte budget holds everything but priority high now");
		B.hold_sig = sig;
		release();
	}
	B.sec_pos = (B.sec_pos + 1) % RATE_WINDOW_S;
	B.second[B.sec_pos] = 0;
	if (B.sec_filled < RATE_WINDOW_S)
		B.sec_filled++;
	if (now_ms() - B.saved_ms >= SAVE_MS)
		save_async();
}

void budget_init(void)
{
	const char *dir = config_str(sup.cfg, "gateway", "state_dir");
	if (mkdir(dir, 0750) < 0 && errno != EEXIST)
		log_warnx("link: cannot make %s: %s", dir, strerror(errno));
	snprintf(B.path, sizeof B.path, "%s/%s", dir, STATE_FILE);
	if (uv_mutex_init(&save_lock) != 0)
		fatalx("link: cannot make a mutex");
	load();
	uint64_t now = wall_ms();
	roll(&B.day, now);
	roll(&B.month, now);
	B.hold_sig = -1;
	B.refill_ms = now_ms();
	B.shared = B.first = link_int("max_bytes_per_s");
	B.saved_ms = now_ms();
	uv_timer_init(sup.loop, &B.tick);
	uv_timer_start(&B.tick, on_tick, 1000, 1000);
	uv_unref((uv_handle_t *)&B.tick);
	B.inited = true;
}

void budget_close(void)
{
	if (!B.inited)
		return;
	uv_timer_stop(&B.tick);
	char buf[sizeof B.buf], err[256];
	format_state(buf, sizeof buf);
	if (write_latest(++save_seq, buf, err, sizeof err) < 0)
		log_warnx("link: the byte counts cannot be kept across a restart: %s", err);
}

/* ---- what users see ---- */

struct forecast {
	int64_t budget;
	uint64_t used, start, end, projected;
	double rate; /* bytes/s over the last minute */
};

static double current_rate(void)
{
	uint64_t sum = 0;
	unsigned n = B.sec_filled ? B.sec_filled : 1;
	for (unsigned i = 0; i < RATE_WINDOW_S; i++)
		sum += B.second[i];
	return (double)sum / n;
}

static struct forecast forecast(const struct period *p)
{
	struct forecast f = { .budget = link_int(p->key_name), .used = p->used, .rate = current_rate() };
	uint64_t now = wall_ms();
	bounds(p, now, &f.start, &f.end);
	f.projected = p->used + (uint64_t)(f.rate * (double)(f.end > now ? f.end - now : 0) / 1000.0);
	return f;
}

void budget_pack(msgpack_packer *pk)
{
	uint64_t held_bytes, held = held_now(&held_bytes);
	msgpack_pack_map(pk, 11);
	static struct period *const ps[] = { &B.day, &B.month };
	for (int i = 0; i < 2; i++) {
		struct forecast f = forecast(ps[i]);
		pk_key(pk, i ? "month" : "day");
		msgpack_pack_map(pk, 6);
		pk_kv_u64(pk, "used_bytes", f.used);
		pk_kv_u64(pk, "budget_bytes", (uint64_t)f.budget); /* 0: none */
		pk_kv_f64(pk, "used_percent", f.budget > 0 ? (double)used_bp(ps[i]) / 100.0 : 0.0);
		pk_kv_u64(pk, "projected_bytes", f.projected); /* at the period's end, at the current rate */
		pk_kv_u64(pk, "period_start_ms", f.start);
		pk_kv_u64(pk, "period_end_ms", f.end);
	}
	pk_kv_str(pk, "policy", config_str(sup.cfg, "link", "budget_policy"));
	pk_kv_u64(pk, "warn_percent", (uint64_t)link_int("budget_warn_percent"));
	const struct period *o = over();
	pk_kv_str(pk, "holding", hold_signature() == -1 ? NULL : o->name); /* which budget holds messages now */
	pk_kv_u64(pk, "held", held);
	pk_kv_u64(pk, "held_bytes", held_bytes);
	pk_kv_f64(pk, "rate_bytes_per_s", current_rate());
	pk_kv_u64(pk, "max_bytes_per_s", (uint64_t)link_int("max_bytes_per_s"));
	pk_kv_u64(pk, "rate_waits", B.rate_waits);
	pk_key(pk, "wire_bytes"); /* since start, per protocol */
	unsigned n = 0;
	for (int i = 0; i < router_state.nprotos; i++)
		n += rproto_enabled(&router_state.protos[i]);
	msgpack_pack_map(pk, n);
	for (int i = 0; i < router_state.nprotos; i++)
		if (rproto_enabled(&router_state.protos[i]))
			pk_kv_u64(pk, router_state.protos[i].name, B.proto_wire[i]);
}

void budget_metrics(struct strbuf *b)
{
	static const struct { struct period *p; const char *label; } ps[] = { { &B.day, "day" }, { &B.month, "month" } };
	http_sb_printf(b, "# HELP ucgw_link_used_bytes Bytes on the wire in the budget period in progress (both directions).\n"
			  "# TYPE ucgw_link_used_bytes gauge\n");
	for (int i = 0; i < 2; i++)
		http_sb_printf(b, "ucgw_link_used_bytes{period=\"%s\"} %llu\n", ps[i].label, (unsigned long long)ps[i].p->used);
	http_sb_printf(b, "# HELP ucgw_link_budget_bytes The byte budget of the period (0: none).\n"
			  "# TYPE ucgw_link_budget_bytes gauge\n");
	for (int i = 0; i < 2; i++)
		http_sb_printf(b, "ucgw_link_budget_bytes{period=\"%s\"} %lld\n", ps[i].label,
			       (long long)link_int(ps[i].p->key_name));
	http_sb_printf(b, "# HELP ucgw_link_projected_bytes Bytes the period will have used at its end, at the rate of the last minute.\n"
			  "# TYPE ucgw_link_projected_bytes gauge\n");
	for (int i = 0; i < 2; i++)
		http_sb_printf(b, "ucgw_link_projected_bytes{period=\"%s\"} %llu\n", ps[i].label,
			       (unsigned long long)forecast(ps[i].p).projected);
	http_sb_printf(b, "# HELP ucgw_link_held_messages Messages the byte budget holds in the spool.\n"
			  "# TYPE ucgw_link_held_messages gauge\nucgw_link_held_messages %llu\n",
		       (unsigned long long)held_now(NULL));
	http_sb_printf(b, "# HELP ucgw_link_rate_waits_total Times a job waited for room under link.max_bytes_per_s.\n"
			  "# TYPE ucgw_link_rate_waits_total counter\nucgw_link_rate_waits_total %llu\n",
		       (unsigned long long)B.rate_waits);
	http_sb_printf(b, "# HELP ucgw_wire_bytes_total Bytes the protocol's worker put on the wire, both directions, since ucgwd started.\n"
			  "# TYPE ucgw_wire_bytes_total counter\n");
	for (int i = 0; i < router_state.nprotos; i++)
		if (rproto_enabled(&router_state.protos[i]))
			http_sb_printf(b, "ucgw_wire_bytes_total{protocol=\"%s\"} %llu\n", router_state.protos[i].name,
				       (unsigned long long)B.proto_wire[i]);
}

void budget_dashboard_json(struct strbuf *b)
{
	static struct period *const ps[] = { &B.day, &B.month };
	http_sb_printf(b, ",\"link\":{");
	for (int i = 0; i < 2; i++) {
		struct forecast f = forecast(ps[i]);
		http_sb_printf(b, "\"%s\":{\"used\":%llu,\"budget\":%lld,\"projected\":%llu,\"end_ms\":%llu},",
			       i ? "month" : "day", (unsigned long long)f.used, (long long)f.budget,
			       (unsigned long long)f.projected, (unsigned long long)f.end);
	}
	const struct period *o = over();
	http_sb_printf(b, "\"policy\":\"%s\",\"warn_percent\":%lld,\"holding\":%s%s%s,\"held\":%llu,"
			  "\"rate_bytes_per_s\":%.1f,\"max_bytes_per_s\":%lld}",
		       config_str(sup.cfg, "link", "budget_policy"), (long long)link_int("budget_warn_percent"),
		       hold_signature() == -1 ? "" : "\"", hold_signature() == -1 ? "null" : o->name,
		       hold_signature() == -1 ? "" : "\"", (unsigned long long)held_now(NULL), current_rate(),
		       (long long)link_int("max_bytes_per_s"));
}
