/* Inside libucgw: what ucgw.c and json.c share. Nothing here is exported
 * (the shared library exports ucgw_* only; the static one is localised too). */
#ifndef UCGW_INT_H
#define UCGW_INT_H

#include <msgpack.h>

#include "ucgw.h"

/* A msgpack object as JSON text (malloc'd in *out): bin as base64, non-string
 * keys as text, NaN and infinities as null. 0, or -1 when out of memory. */
int uc_json(const msgpack_object *o, char **out);
/* The stats command's answer as an array. 0, or -1 when out of memory (or the
 * answer is not a map of maps: -2). */
int uc_stats_parse(const msgpack_object *body, struct ucgw_stats **list, size_t *count);

#endif
