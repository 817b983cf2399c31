/* The control commands' arguments: one table per command (each argument's
 * name, type, whether it is required, its range or choices), and one strict
 * reader of a request's body against it. From control protocol version 2 an
 * unknown key is refused, naming it (and the known one nearest to it); with
 * version 1 it is ignored, as version 1 did. A wrong type, a value out of range,
 * a missing required argument: refused in both, naming the key and what was
 * expected. docs/control-protocol.md shows the same tables. */
#ifndef UCGW_CTLARGS_H
#define UCGW_CTLARGS_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/ctl.h"

enum ctlargs_type {
	CTLARGS_STR,  /* a msgpack str: no NUL, length in [min, max] bytes, one of choices when given */
	CTLARGS_UINT, /* a non-negative integer in [min, max] */
	CTLARGS_BOOL,
	CTLARGS_DATA, /* bin or str, any bytes (a message's payload) */
};

/* A further rule on a string argument: 0, or an error code with err said
 * (without the command's name, which the reader puts before it). */
typedef int (*ctlargs_check_fn)(const char *s, size_t n, char *err, size_t errlen);

struct ctlargs_arg {
	const char *name;
	enum ctlargs_type type;
	bool required;
	uint64_t min, max;       /* UINT: the values allowed; STR: the length in bytes (max: must be set) */
	const char *choices;     /* STR: the values allowed, separated by '|', or NULL */
	const char *what;        /* the value expected, in words, for the errors ("seconds from 0 ...") */
	const char *missing;     /* required: the error when it is missing (default "KEY is required: WHAT") */
	ctlargs_check_fn check;  /* STR: a further rule, or NULL */
};

#define CTLARGS_MAX 12 /* arguments of one command, at most */

struct ctlargs_cmd {
	const char *name;
	const struct ctlargs_arg *args;
	unsigned nargs;
};

/* Every command, as commands.c dispatches them. */
extern const struct ctlargs_cmd ctlargs_commands[];
extern const size_t ctlargs_ncommands;
const struct ctlargs_cmd *ctlargs_command(const char *name); /* NULL when unknown */
/* "status, workers, ..." for an unknown command's error. */
void ctlargs_command_names(char *buf, size_t len);

/* A read argument: valid until the request's zone is cleared. */
struct ctlargs_val {
	bool present;
	const char *s; /* STR, DATA */
	size_t len;
	uint64_t u;
	bool b;
};

struct ctlargs {
	const struct ctlargs_cmd *cmd;
	struct ctlargs_val v[CTLARGS_MAX];
};

/* Read body (may be NULL: no arguments) into out against cmd's table; version
 * is the request's (1 ignores unknown keys). 0, or an error code (enum
 * ctl_code) with err saying "COMMAND: ..." with the key's name. */
int ctlargs_read(const struct ctlargs_cmd *cmd, const msgpack_object *body, unsigned version, struct ctlargs *out,
		 char *err, size_t errlen);

/* The argument named name (one in cmd's table: a programming error otherwise). */
const struct ctlargs_val *ctlargs_get(const struct ctlargs *a, const char *name);
static inline bool ctlargs_has(const struct ctlargs *a, const char *name) { return ctlargs_get(a, name)->present; }
/* A string argument copied into buf (its table's max is below len); false when absent. */
bool ctlargs_str(const struct ctlargs *a, const char *name, char *buf, size_t len);
/* A number or a flag, when given; *out untouched otherwise. */
bool ctlargs_u64(const struct ctlargs *a, const char *name, uint64_t *out);
bool ctlargs_bool(const struct ctlargs *a, const char *name, bool *out);

/* The rules some arguments share, for handlers that check a value of their own. */
int ctlargs_check_ulid(const char *s, size_t n, char *err, size_t errlen);

#endif
