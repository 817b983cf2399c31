/* One file per abnormal worker exit under crash_dir/<worker>/, newest N kept. */
#ifndef UCGW_CRASHLOG_H
#define UCGW_CRASHLOG_H

#include <stdbool.h>
#include <stdio.h>

struct proc;

/* Writes the crash log; returns its path (caller frees) or NULL on failure. */
char *crashlog_write(const struct proc *p, int wstatus, const char *reason);

/* The newest crash log of a worker, for the dashboard: its file name, when, and
 * one line of what it says (exit, reason, jobs held, the last stderr line).
 * Read from disk once, and again after each crash. false: the worker has none. */
struct crash_summary {
	char file[128];
	char time[40];
	char summary[400];
};
bool crashlog_newest(const char *worker, struct crash_summary *out);

#endif
