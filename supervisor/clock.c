/* The wall clock's state and the correction of what was stamped before it was
 * set (clock.h). "Set" is either of:
 * - adjtimex() reports no STA_UNSYNC: an NTP client (chrony, systemd-timesyncd,
 *   ntpd) synchronised the clock;
 * - the wall clock jumped against CLOCK_BOOTTIME by more than CLOCK_JUMP_MS
 *   (someone or something stepped it: `date -s`, an RTC read late, an NTP
 *   client that does not set the kernel's status).
 * Once set, it stays set for the life of ucgwd. A message accepted in this boot
 * before then gets the wall time that its boot clock reading stands for now:
 * wall_now - (boot_now - boot_then); its expiry moves with it. A message from
 * an earlier boot cannot be placed (the boot clock started again) and keeps its
 * time. A correction below CORRECT_MIN_MS is the clock's own drift, not a
 * setting: the time is kept and not marked. Nothing is written to the spool:
 * a restart in the same boot computes the same correction from the record. */
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

void clock_stamp(struct smsg *m)
{
	m->boot_ms = clock_boot_ms();
	m->clock_unset = !C.set;
}

/* Every live message stamped in this boot before the clock was set. */
static void correct_all(const char *why)
{
	uint64_t wall = wall_ms(), boot = clock_boot_ms(), n = 0;
	int64_t shift = 0;
	for (struct smsg *m = router_state.all.head; m; m = m->anext) {
		if (!m->clock_unset)
			continue;
		m->clock_unset = false;
		if (m->boot_ms > boot || boot - m->boot_ms > wall)
			continue;
		uint64_t fixed = wall - (boot - m->boot_ms);
		int64_t delta = (int64_t)(fixed - m->created_wall_ms);
		if (llabs(delta) < CORRECT_MIN_MS)
			continue;
		if (m->expires_wall_ms)
			m->expires_wall_ms = (uint64_t)((int64_t)m->expires_wall_ms + delta);
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
}

void clock_init(void)
{
	clock_boot_id();
	C.offset_ms = (int64_t)wall_ms() - (int64_t)clock_boot_ms();
	C.have_offset = true;
	C.set = kernel_synced();
	if (!C.set)
		log_info("the clock is not known to be set (adjtimex: unsynchronised): times are corrected once it is");
	else if (router_state.all.head)
		correct_all("synchronised at start");
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
