/* Small helpers shared by every process: clocks, message ids, wait statuses. */
#ifndef UCGW_UTIL_H
#define UCGW_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UCGW_ID_LEN 26 /* a ULID: 48-bit milliseconds + 80 random bits, Crockford base32 */

uint64_t now_ms(void);      /* CLOCK_MONOTONIC */
uint64_t now_us(void);      /* CLOCK_MONOTONIC, microseconds: latencies */
uint64_t wall_ms(void);     /* CLOCK_REALTIME */
/* ms since the epoch as RFC 3339 in UTC with milliseconds: 2026-12-07T18:30:00.123Z */
#define RFC3339_MS_LEN 32
void fmt_rfc3339_ms(uint64_t ms, char out[RFC3339_MS_LEN]);
void id_new(char out[UCGW_ID_LEN + 1]);
/* FNV-1a of a message id (or any string), for hash tables keyed by id. */
uint32_t id_hash32(const char *id);
bool id_valid(const char *s);
uint64_t id_time_ms(const char *id);
uint64_t rand_u64(void);
/* One function turns a wait status into words, so every exit is logged the same way. */
void wait_status_str(int status, char *buf, size_t len);
/* Copy src into dst of size bytes (size > 0), cut to fit and always ended:
 * snprintf(dst, size, "%s", src) without the format parser (glibc has no
 * strlcpy before 2.38), for names copied on every message. */
void str_copy(char *dst, size_t size, const char *src);
/* Exit code of a worker that found its configuration unusable: never restarted. */
#define UCGW_EXIT_CONFIG 2

/* mkdir -p; 0 or -1 with errno. */
int mkdir_p(const char *path, unsigned mode);
/* "user ucgw (uid 999)": whom this process reads files as (its effective uid). */
void euid_str(char *buf, size_t len);

#endif
