/* The descriptors ucgwd may hold at once, by what holds them (docs/operations.md,
 * "Limits"), and RLIMIT_NOFILE raised to cover them where the hard limit allows. */
#ifndef UCGW_FDBUDGET_H
#define UCGW_FDBUDGET_H

#include "config/config.h"

#define FD_MARGIN 128 /* the spool, logs, libraries, a reload's files, accept's spare */

unsigned fdbudget(const struct config *cfg);
/* Raise the soft limit towards the budget; a warning when it stays below. */
void fdbudget_apply(const struct config *cfg);

#endif
