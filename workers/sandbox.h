/* The seccomp allow-list of each worker (libseccomp). The framework installs it
 * once the worker's libraries are initialised, just before the worker says
 * ready; a system call outside the list kills the worker with SIGSYS, after a
 * line on stderr (kept in its crash log) that names the call. */
#ifndef UCGW_SANDBOX_H
#define UCGW_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>

/* Install the filter for this worker ("rest", "mqtt"...). Returns 0, or -1
 * with a reason in err (the worker then exits with the bad-configuration code:
 * it never runs unfiltered when the sandbox is on). UCGW_SECCOMP_PERMISSIVE=1
 * in the environment logs instead of killing (SCMP_ACT_LOG), to find what a new
 * library version needs with strace; never in production. */
int sandbox_install(const char *worker, char *err, size_t errlen);
/* Does the worker open network connections itself (its allow-list has the
 * socket calls: getsockopt among them)? rsync's connections are its children's. */
bool sandbox_network(const char *worker);

#endif
