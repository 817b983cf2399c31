#ifndef UCGW_JSONCHECK_H
#define UCGW_JSONCHECK_H
#include <stdbool.h>
#include <stddef.h>
/* Is buf one complete JSON value (RFC 8259)? On false, err says what and where.
 * Hand-written because the supervisor only needs a yes/no and a reason, and no
 * library on our list validates JSON without also building a tree. */
bool json_check(const char *buf, size_t len, char *err, size_t errlen);
#endif
