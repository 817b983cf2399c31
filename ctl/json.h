#ifndef UCGW_JSON_H
#define UCGW_JSON_H
#include <msgpack.h>
#include <stdio.h>
/* Print a msgpack object as JSON (bin as base64 text, non-string keys as text). */
void json_print(FILE *out, const msgpack_object *o);
void json_print_str(FILE *out, const char *s, size_t n);
#endif
