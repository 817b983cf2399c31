/* A clock not yet set: a camera often boots before NTP has set its clock, and
 * what it accepts meanwhile is stamped with a wrong wall time. Each message
 * keeps, with its wall time, the boot clock (CLOCK_BOOTTIME) and whether the
 * clock was known set; once it is (the kernel says synchronised, or the wall
 * clock jumps against the boot clock), the messages of this boot still in the
 * spool that were stamped before get their time corrected and are marked so.
 * A message whose time cannot be placed (stamped before the clock was set in
 * an earlier boot, or before CLOCK_FLOOR_MS) keeps its time, but its expiry
 * counts again from when ucgwd read it back: nothing expires on the time base
 * of a clock that was not set. The payload is never changed: only the time the
 * gateway adds. */
#ifndef UCGW_CLOCK_H
#define UCGW_CLOCK_H

#include <stdbool.h>
#include <stdint.h>

struct smsg;

/* 2026-01-01T00:00:00Z: no clock that was set reads earlier (ucgwd did not
 * exist). A time before it was taken by a clock not set. */
#define CLOCK_FLOOR_MS 1767225600000ull

/* At start, after the spool was read back: is the clock set (the kernel says
 * so, or a message of this boot read back shows the wall clock moved against
 * the boot clock since)? If so, correct what was read back of this boot. A
 * message whose time cannot be placed gets its expiry counted from now. */
void clock_init(void);
/* Is the wall clock known set? (Before clock_init: does the kernel say so.) */
bool clock_known_set(void);
/* Once a second (the router's tick): set now, or jumped? Then correct. */
void clock_check(void);
/* A new message: its boot clock, and whether the wall clock was known set. */
void clock_stamp(struct smsg *m);
/* This boot's id (/proc/sys/kernel/random/boot_id), "" if unknown. */
const char *clock_boot_id(void);
uint64_t clock_boot_ms(void);

#endif
