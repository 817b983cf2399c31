/* The dashboard's memory of the last minutes: one sample per protocol per
 * second (attempts by result, latency quantiles of that second), in a ring of
 * HISTORY_SECONDS, so that a page opened now draws the last five minutes. */
#ifndef UCGW_HISTORY_H
#define UCGW_HISTORY_H

#include <stdint.h>

#define HISTORY_SECONDS 300

struct history_sample {
	uint32_t ok, retry, fail;    /* attempts answered in that second */
	uint32_t p50_us, p99_us;     /* of the attempts that succeeded in it */
};

/* Take the sample of the second that just ended (call about once a second;
 * a late call still makes one sample per whole second passed, the gap as zero). */
void history_tick(void);
/* Samples kept (at most HISTORY_SECONDS), and the wall-clock second of the newest. */
unsigned history_len(void);
uint64_t history_end_s(void);
/* The i-th sample of protocol index idx, oldest first (i < history_len()). */
const struct history_sample *history_get(int idx, unsigned i);
/* Sums over the newest `seconds` samples of protocol idx. */
void history_sum(int idx, unsigned seconds, uint64_t *ok, uint64_t *retry, uint64_t *fail);

#endif
