/* The wall clock's state and the correction of what was stamped before it was
 * set (clock.h). "Set" is either of:
 * - adjtimex() reports no STA_UNSYNC: an NTP client (chrony, systemd-timesyncd,
 *   ntpd) synchronised the clock;
 * - the wall clock jumped against CLOCK_BOOTTIME by more than CLOCK_JUMP_MS
 *   (someone or something stepped it: `date -s`, an RTC read late, an NTP
 *   client that does not set the kernel's status).
 * Once set, it stays set for the life of ucgwd. A message accepted in this boot
 * before then gets the wall time that its boot clock reading stands for now:
 * wall_now - (boot_now - boot_then); its expiry moves with it. A correction
 * below CORRECT_MIN_MS is the clock's own drift, not a setting: the time is
 * kept and not marked. Nothing is written to the spool: a restart in the same
 * boot computes the same correction from the record; and if the clock was set
 * while ucgwd was down (or set by hand, the kernel still unsynchronised), the
 * records show it: their wall - boot clock differs from the one now by more
 * than CLOCK_JUMP_MS, which counts as a jump seen.
 *
 * A message stamped before the clock was set in an earlier boot cannot be
 * placed (the boot clock started again), nor can one stamped before
 * CLOCK_FLOOR_MS (a record older than the clock fields): it keeps its time,
 * but its expiry, which that time is the base of, is counted again from when
 * ucgwd read it back (now + its time to live), and it is marked
 * (expiry_rebased, shown by `trace`). If this boot's clock is not set either,
 * that new expiry is moved with the correction like any other. */
#include "supervisor/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timex.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"
#include "supervisor/router_int.h"

#define CLOCK_JUMP_MS 10000
#define CORRECT_MIN_MS 1000

static struct {
	char boot_id[40];
	bool boot_read, set, have_offset;
	int64_t offset_ms; /* wall - boot clock at the last look */
} C;

const char *clock_boot_id(void)
{
	if (!C.boot_read) {
		C.boot_read = true;
		FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
		if (f) {
			if (!fgets(C.boot_id, sizeof C.boot_id, f))
				C.boot_id[0] = '\0';
			C.boot_id[strcspn(C.boot_id, "\n")] = '\0';
			fclose(f);
		} else {
			log_warnx("cannot read /proc/sys/kernel/random/boot_id: times accepted before the clock is set "
				  "are corrected only until ucgwd restarts");
		}
	}
	return C.boot_id;
}

uint64_t clock_boot_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static bool kernel_synced(void)
{
	struct timex tx = { 0 };
	return adjtimex(&tx) >= 0 && !(tx.status & STA_UNSYNC);
}

bool clock_known_set(void)
{
	return C.have_offset ? C.set : kernel_synced();
}

void clock_stamp(struct smsg *m)
{
	m->boot_ms = clock_boot_ms();
	m->clock_unset = !C.set;
}

/* Every live message stamped in this boot before the clock was set, and
 * every expiry rebased (clock_init) before it was. */
static void correct_all(const char *why)
{
	uint64_t wall = wall_ms(), boot = clock_boot_ms(), n = 0, nr = 0;
	int64_t shift = 0;
	for (struct smsg *m = router_state.all.head; m; m = m->anext) {
		if (!m->clock_unset && !m->expiry_unset)
			continue;
		bool rebased = m->expiry_unset;
		m->clock_unset = m->expiry_unset = false;
		if (m->boot_ms > boot || boot - m->boot_ms > wall)
			continue;
		uint64_t fixed = wall - (boot - m->boot_ms);
		int64_t delta = (int64_t)(fixed - (rebased ? m->rebased_wall_ms : m->created_wall_ms));
		if (llabs(delta) < CORRECT_MIN_MS)
			continue;
		if (m->expires_wall_ms)
			m->expires_wall_ms = (uint64_t)((int64_t)m->expires_wall_ms + delta);
		if (rebased) { /* its accepted time cannot be placed: only the expiry moves */
			m->rebased_wall_ms = fixed;
			nr++;
			continue;
		}
		m->created_wall_ms = fixed;
		m->clock_corrected = true;
		shift = delta;
		n++;
	}
	if (n)
		log_info("the clock is set (%s): %llu message%s accepted before had %s time corrected by %+.0f s", why,
			 (unsigned long long)n, n == 1 ? "" : "s", n == 1 ? "its" : "their", (double)shift / 1000);
	else
		log_info("the clock is set (%s): no message to correct", why);
	if (nr)
		log_info("the clock is set: %llu message%s from an earlier boot had %s expiry moved with it", (unsigned long long)nr,
			 nr == 1 ? "" : "s", nr == 1 ? "its" : "their");
}

/* Messages whose time cannot be placed (spool.c marks them expiry_rebased):
 * their expiry counts from now, on this boot's clock. */
static void rebase(uint64_t wall, uint64_t boot)
{
	uint64_t n = 0;
	for (struct smsg *m = router_state.all.head; m; m = m->anext) {
		if (!m->expiry_rebased)
			continue;
		if (m->expires_wall_ms) {
			uint64_t ttl = m->expires_wall_ms > m->created_wall_ms ? m->expires_wall_ms - m->created_wall_ms : 0;
			m->expires_wall_ms = wall + ttl;
		}
		m->rebased_wall_ms = wall;
		m->boot_ms = boot;
		m->expiry_unset = !C.set; /* moved by the correction once the clock is set */
		n++;
	}
	if (n)
		log_info("%llu message%s read back %s stamped before the clock was set in an earlier boot (or before 2026): "
			 "%s time cannot be corrected; %s expiry counts from now",
			 (unsigned long long)n, n == 1 ? "" : "s", n == 1 ? "was" : "were", n == 1 ? "its" : "their",
			 n == 1 ? "its" : "their");
}

/* Not known set at start: does a message of this boot read back show that the
 * wall clock moved against the boot clock since it was stamped? */
static bool moved_since(int64_t off, char *why, size_t whylen)
{
	for (struct smsg *m = router_state.all.head; m; m = m->anext) {
		if (!m->clock_unset)
			continue;
		int64_t then = (int64_t)m->created_wall_ms - (int64_t)m->boot_ms;
		if (llabs(off - then) > CLOCK_JUMP_MS) {
			snprintf(why, whylen, "the wall clock moved by %.0f s while ucgwd was down", (double)(off - then) / 1000);
			return true;
		}
	}
	return false;
}

void clock_init(void)
{
	clock_boot_id();
	uint64_t wall = wall_ms(), boot = clock_boot_ms();
	C.offset_ms = (int64_t)wall - (int64_t)boot;
	C.have_offset = true;
	C.set = kernel_synced();
	char why[80] = "synchronised at start";
	if (!C.set && moved_since(C.offset_ms, why, sizeof why))
		C.set = true;
	rebase(wall, boot);
	if (!C.set)
		log_info("the clock is not known to be set (adjtimex: unsynchronised): times are corrected once it is");
	else if (router_state.all.head)
		correct_all(why);
}

void clock_check(void)
{
	int64_t off = (int64_t)wall_ms() - (int64_t)clock_boot_ms();
	int64_t jump = C.have_offset ? off - C.offset_ms : 0;
	C.offset_ms = off;
	C.have_offset = true;
	if (C.set)
		return;
	bool jumped = llabs(jump) > CLOCK_JUMP_MS;
	if (!jumped && !kernel_synced())
		return;
	C.set = true;
	char why[80];
	if (jumped)
		snprintf(why, sizeof why, "the wall clock jumped by %.0f s", (double)jump / 1000);
	else
		snprintf(why, sizeof why, "the kernel says it is synchronised");
	correct_all(why);
}
