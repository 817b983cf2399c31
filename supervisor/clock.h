/* A clock not yet set: a camera often boots before NTP has set its clock, and
 * what it accepts meanwhile is stamped with a wrong wall time. Each message
 * keeps, with its wall time, the boot clock (CLOCK_BOOTTIME) and whether the
 * clock was known set; once it is (the kernel says synchronised, or the wall
 * clock jumps against the boot clock), the messages of this boot still in the
 * spool that were stamped before get their time corrected and are marked so.
 * The payload is never changed: only the time the gateway adds. */
#ifndef UCGW_CLOCK_H
#define UCGW_CLOCK_H

#include <stdbool.h>
#include <stdint.h>

struct smsg;

/* At start, after the spool was read back: is the clock set? If so, correct
 * what was read back of this boot. */
void clock_init(void);
/* Once a second (the router's tick): set now, or jumped? Then correct. */
void clock_check(void);
/* A new message: its boot clock, and whether the wall clock was known set. */
void clock_stamp(struct smsg *m);
/* This boot's id (/proc/sys/kernel/random/boot_id), "" if unknown. */
const char *clock_boot_id(void);
uint64_t clock_boot_ms(void);

#endif
