#ifndef UCGW_JSONCHECK_H
#define UCGW_JSONCHECK_H
#include <stdbool.h>
#include <stddef.h>
/* Is buf one complete JSON value (RFC 8259)? On false, err says what and where.
 * Hand-written because the supervisor only needs a yes/no and a reason, and no
 * library on our list validates JSON without also building a tree. */
bool json_check(const char *buf, size_t len, char *err, size_t errlen);
/* Is it well-formed UTF-8 by RFC 3629 (no overlong forms, no surrogates,
 * nothing above U+10FFFF)? The same rule as inside JSON strings. */
bool utf8_valid(const char *s, size_t len);
#endif
