/* Memory back to the system after a backlog drains. glibc keeps what is
 * freed in its heap for reuse and returns only the top of it on its own: the
 * messages of a long outage (200,000 of them: 310 MB) are freed in no
 * particular order, so the supervisor stayed at its peak after they were all
 * delivered. malloc_trim(0) hands every free page back (madvise), which is
 * what a camera with little memory needs; the next outage costs the page
 * faults again, nothing else. A trim on the way down (a quarter of the peak
 * left) is followed by one more when the backlog is gone: what the last
 * quarter held is given back too. A compacting index or an arena per spool
 * segment would also do, at the price of the router's data structures. */
#include <malloc.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"
#include "supervisor/memtrim.h"
#include "supervisor/router.h"
#include "supervisor/sup.h"

#define TRIM_CHECK_MS 1000 /* the backlog is sampled: one shorter than this may go unseen */
#define TRIM_BACKLOG 1000 /* messages (about 1.5 MB): below, a trim is not worth its page faults */

static uv_timer_t tick;
static uint64_t peak; /* the largest backlog since the last trim */

static void trim(uint64_t from, uint64_t to)
{
	struct mallinfo2 before = mallinfo2();
	malloc_trim(0);
	size_t idx = router_release_empty_index();
	struct mallinfo2 after = mallinfo2();
	log_info("backlog down from %llu to %llu messages: up to %.1f MB of free heap and %.1f MB of empty index "
		 "returned to the system (%.1f MB still in use)",
		 (unsigned long long)from, (unsigned long long)to, (double)before.fordblks / 1048576.0,
		 (double)idx / 1048576.0, (double)after.uordblks / 1048576.0);
}

static void on_tick(uv_timer_t *t)
{
	(void)t;
	static bool again_when_empty; /* trimmed on the way down: once more when it is all gone */
	struct router_counts rc;
	router_counts(&rc);
	uint64_t now = rc.depth;
	if (now > peak)
		peak = now;
	if (now == 0 && again_when_empty) {
		again_when_empty = false;
		trim(peak, 0);
		peak = 0;
		return;
	}
	if (peak < TRIM_BACKLOG || now > peak / 4)
		return;
	trim(peak, now);
	again_when_empty = now > 0;
	peak = now;
}

void memtrim_start(void)
{
	uv_timer_init(sup.loop, &tick);
	uv_timer_start(&tick, on_tick, TRIM_CHECK_MS, TRIM_CHECK_MS);
	uv_unref((uv_handle_t *)&tick); /* never what keeps the loop running */
}
