/* One file per abnormal worker exit under crash_dir/<worker>/, newest N kept. */
#ifndef UCGW_CRASHLOG_H
#define UCGW_CRASHLOG_H

#include <stdio.h>

struct proc;

/* Writes the crash log; returns its path (caller frees) or NULL on failure. */
char *crashlog_write(const struct proc *p, int wstatus, const char *reason);

#endif
