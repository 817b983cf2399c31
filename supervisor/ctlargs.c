/* The control commands' argument tables and their strict reader: see ctlargs.h. */
#include "supervisor/ctlargs.h"

#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "config/internal.h"
#include "proto/proto.h"
#include "supervisor/jsoncheck.h"

/* ---- the rules of some strings ---- */

/* Text from a client repeated in an error: one line of UTF-8 whatever it
 * holds (the reply is a msgpack str, which clients decode as UTF-8). */
static void shown_safe(char *s)
{
	bool utf8 = utf8_valid(s, strlen(s));
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f || (!utf8 && (unsigned char)*s >= 0x80))
			*s = '?';
}

/* What MQTT (3.1.1 and 5, section 4.7) refuses in a topic name: empty,
 * wildcards, NUL (refused by the reader), malformed UTF-8; control characters
 * it advises against and brokers may close the connection for. Empty levels
 * ("a//b", "/a") are valid topics. */
static int check_topic(const char *t, size_t n, char *err, size_t errlen)
{
	const char *bad = !n ? "is empty"
		: memchr(t, '+', n) || memchr(t, '#', n) ? "contains a wildcard (+ or #); a message is published to one topic"
		: !utf8_valid(t, n) ? "is not valid UTF-8"
		: NULL;
	for (size_t i = 0; !bad && i < n; i++)
		if ((unsigned char)t[i] < 0x20 || t[i] == 0x7f)
			bad = "contains a control character";
	if (!bad)
		return 0;
	snprintf(err, errlen, "MQTT topic '%.*s' %s", (int)n, t, bad);
	shown_safe(err);
	return CTL_E_BAD_REQUEST;
}

/* An endpoint is appended to rest.base_url: a path (and query), with only the
 * characters RFC 3986 allows there; CR, LF, a space or a control character
 * would make another request line or a URL the server refuses. */
static int check_endpoint(const char *e, size_t n, char *err, size_t errlen)
{
	static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
				 "-._~!$&'()*+,;=:@/?%";
	size_t bad = 0;
	while (bad < n && strchr(ok, e[bad]))
		bad++;
	if (n && e[0] == '/' && bad == n)
		return 0;
	if (!n || e[0] != '/')
		snprintf(err, errlen, "endpoint '%.*s' must be a path starting with '/'", (int)n, e);
	else
		snprintf(err, errlen, "endpoint '%.*s' has a character not allowed in a URL path (byte 0x%02x at %zu): "
				      "no space, CR, LF or control character; percent-encode others",
			 (int)n, e, (unsigned char)e[bad], bad);
	shown_safe(err);
	return CTL_E_BAD_REQUEST;
}

static int check_remote_name(const char *s, size_t n, char *err, size_t errlen)
{
	if (n && !memchr(s, '/', n) && !(n == 1 && s[0] == '.') && !(n == 2 && s[0] == '.' && s[1] == '.'))
		return 0;
	snprintf(err, errlen, "remote name '%.*s' must be a plain file name", (int)n, s);
	shown_safe(err);
	return CTL_E_BAD_REQUEST;
}

/* A ULID as id_new() makes it: 26 digits of Crockford's base32 in capitals,
 * the first at most 7 (48 bits of milliseconds). Other spellings (small
 * letters, I L O U) are refused rather than mapped: the id names a file in
 * spool/files and is compared byte for byte. */
int ctlargs_check_ulid(const char *s, size_t n, char *err, size_t errlen)
{
	static const char digits[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
	bool ok = n == UCGW_ID_LEN && s[0] <= '7';
	for (size_t i = 0; ok && i < n; i++)
		ok = s[i] && strchr(digits, s[i]);
	if (ok)
		return 0;
	snprintf(err, errlen, "id '%.*s' is not a ULID as ucgwd makes them: 26 characters of Crockford's base32 in "
			      "capitals (0-9 and A-Z without I, L, O, U), the first 0-7", (int)(n < 64 ? n : 64), s);
	shown_safe(err);
	return CTL_E_BAD_REQUEST;
}

/* ---- the tables ---- */

/* ttl_s: 0 (never expires) up to a hundred years, as ucgwctl --ttl. */
#define TTL_MAX_S 3153600000u
#define PROTO_NAME_MAX 15 /* the longest protocol name a request may give */
#define NAME_MAX_BYTES 63 /* a worker's or protocol's name, a message id in queue and trace */

#define A_PROTOCOL { "protocol", CTLARGS_STR, false, 1, PROTO_NAME_MAX, NULL, "auto or a protocol's name", NULL, NULL }
#define A_PRIORITY { "priority", CTLARGS_STR, false, 0, 15, "high|normal|low", NULL, NULL, NULL }
#define A_TTL { "ttl_s", CTLARGS_UINT, false, 0, TTL_MAX_S, NULL, \
		"a whole number of seconds from 0 (never expires) to 3153600000", NULL, NULL }
#define A_WAIT { "wait", CTLARGS_BOOL, false, 0, 0, NULL, "true or false", NULL, NULL }
#define A_ENCRYPT { "encrypt", CTLARGS_BOOL, false, 0, 0, NULL, "true or false", NULL, NULL }
#define A_ID { "id", CTLARGS_STR, false, 0, 64, NULL, "a ULID", NULL, ctlargs_check_ulid }

static const struct ctlargs_arg args_name_worker[] = {
	{ "name", CTLARGS_STR, true, 1, NAME_MAX_BYTES, NULL, "a worker's name", "which worker? (give its name)", NULL },
};
static const struct ctlargs_arg args_name_protocol[] = {
	{ "name", CTLARGS_STR, true, 1, NAME_MAX_BYTES, NULL, "a protocol's name", "which protocol? (give its name)",
	  NULL },
};
static const struct ctlargs_arg args_send[] = {
	{ "data", CTLARGS_DATA, true, 0, 0, NULL, "bytes or a string", "no data given", NULL },
	{ "format", CTLARGS_STR, false, 0, 15, "json|raw", NULL, NULL, NULL },
	A_PROTOCOL,
	A_PRIORITY,
	{ "topic", CTLARGS_STR, false, 0, 255, NULL, "an MQTT topic", NULL, check_topic },
	{ "endpoint", CTLARGS_STR, false, 0, 255, NULL, "a URL path starting with '/'", NULL, check_endpoint },
	A_TTL,
	A_ENCRYPT,
	A_WAIT,
	A_ID,
};
static const struct ctlargs_arg args_send_file[] = {
	{ "path", CTLARGS_STR, false, 1, 4095, NULL, "a file's path", NULL, NULL },
	{ "fd", CTLARGS_BOOL, false, 0, 0, NULL, "true when a descriptor comes with the frame", NULL, NULL },
	{ "remote_name", CTLARGS_STR, false, 0, 255, NULL, "a plain file name", NULL, check_remote_name },
	A_PROTOCOL,
	A_PRIORITY,
	A_TTL,
	A_ENCRYPT,
	A_WAIT,
	A_ID,
};
static const struct ctlargs_arg args_queue[] = {
	{ "action", CTLARGS_STR, false, 0, 15, "list|dead|retry|purge|requeue", QUEUE_ACTIONS, NULL, NULL },
	{ "id", CTLARGS_STR, false, 0, NAME_MAX_BYTES, NULL, "a message id, or all", NULL, NULL },
	{ "limit", CTLARGS_UINT, false, 1, UINT64_MAX, NULL, "how many messages to list, at least 1", NULL, NULL },
};
static const struct ctlargs_arg args_trace[] = {
	{ "id", CTLARGS_STR, true, 1, NAME_MAX_BYTES, NULL, "a message id", "which message? (give its id)", NULL },
};
static const struct ctlargs_arg args_select[] = {
	{ "kind", CTLARGS_STR, false, 0, 15, "metadata|file", NULL, NULL, NULL },
	{ "size", CTLARGS_UINT, false, 0, UINT64_MAX, NULL, "the message's size in bytes", NULL, NULL },
	A_PRIORITY,
	A_PROTOCOL,
};

#define CMD(n, a) { n, a, sizeof a / sizeof a[0] }
#define CMD0(n) { n, NULL, 0 }
const struct ctlargs_cmd ctlargs_commands[] = {
	CMD0("status"),
	CMD0("workers"),
	CMD("restart", args_name_worker),
	CMD("pause", args_name_protocol),
	CMD("resume", args_name_protocol),
	CMD0("reload"),
	CMD0("shutdown"),
	CMD("send", args_send),
	CMD("send-file", args_send_file),
	CMD("queue", args_queue),
	CMD0("stats"),
	CMD("trace", args_trace),
	CMD("select", args_select),
	CMD0("dashboard"),
};
const size_t ctlargs_ncommands = sizeof ctlargs_commands / sizeof ctlargs_commands[0];

const struct ctlargs_cmd *ctlargs_command(const char *name)
{
	for (size_t i = 0; name && i < ctlargs_ncommands; i++)
		if (strcmp(ctlargs_commands[i].name, name) == 0)
			return &ctlargs_commands[i];
	return NULL;
}

void ctlargs_command_names(char *buf, size_t len)
{
	buf[0] = '\0';
	for (size_t i = 0; i < ctlargs_ncommands; i++)
		snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", i ? ", " : "", ctlargs_commands[i].name);
}

/* ---- the reader ---- */

static const char *type_name(msgpack_object_type t)
{
	switch (t) {
	case MSGPACK_OBJECT_NIL: return "nil";
	case MSGPACK_OBJECT_BOOLEAN: return "a boolean";
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "an integer";
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: return "a float";
	case MSGPACK_OBJECT_STR: return "a string";
	case MSGPACK_OBJECT_BIN: return "bytes";
	case MSGPACK_OBJECT_ARRAY: return "an array";
	case MSGPACK_OBJECT_MAP: return "a map";
	default: return "an extension";
	}
}

/* "high, normal, low" from "high|normal|low". */
static void choices_text(const char *choices, char *buf, size_t len)
{
	size_t n = 0;
	for (const char *p = choices; *p && n + 3 < len; p++) {
		if (*p == '|') {
			buf[n++] = ',';
			buf[n++] = ' ';
		} else {
			buf[n++] = *p;
		}
	}
	buf[n] = '\0';
}

static bool choice_ok(const char *choices, const char *s, size_t n)
{
	for (const char *p = choices; *p;) {
		size_t l = strcspn(p, "|");
		if (l == n && memcmp(p, s, n) == 0)
			return true;
		p += l + (p[l] == '|');
	}
	return false;
}

/* The expected value in words: the table's, else the choices. */
static const char *expected(const struct ctlargs_arg *a, char *buf, size_t len)
{
	if (a->what)
		return a->what;
	if (a->choices) {
		char list[128];
		choices_text(a->choices, list, sizeof list);
		snprintf(buf, len, "one of %s", list);
		return buf;
	}
	return "a value";
}

static int read_str(const struct ctlargs_cmd *cmd, const struct ctlargs_arg *a, const msgpack_object *o,
		    struct ctlargs_val *v, char *err, size_t errlen)
{
	char exp[160], list[128];
	const char *s = o->via.str.ptr;
	size_t n = o->via.str.size;
	if (o->type != MSGPACK_OBJECT_STR) {
		snprintf(err, errlen, "%s: %s must be a string (%s), not %s", cmd->name, a->name,
			 expected(a, exp, sizeof exp), type_name(o->type));
		return CTL_E_BAD_REQUEST;
	}
	if (a->choices && !choice_ok(a->choices, s, n)) { /* whatever its length: not one of them */
		choices_text(a->choices, list, sizeof list);
		snprintf(err, errlen, "%s: unknown %s '%.*s%s' (valid: %s)", cmd->name, a->name, (int)(n < 64 ? n : 64),
			 s, n > 64 ? "..." : "", a->what ? a->what : list);
		shown_safe(err);
		return CTL_E_BAD_REQUEST;
	}
	if (n > a->max) {
		snprintf(err, errlen, "%s: %s of %zu bytes is longer than the %llu allowed", cmd->name, a->name, n,
			 (unsigned long long)a->max);
		return CTL_E_BAD_REQUEST;
	}
	if (memchr(s, '\0', n)) {
		snprintf(err, errlen, "%s: %s contains a NUL character", cmd->name, a->name);
		return CTL_E_BAD_REQUEST;
	}
	if (n < a->min) {
		snprintf(err, errlen, "%s: %s is empty, expected %s", cmd->name, a->name, expected(a, exp, sizeof exp));
		return CTL_E_BAD_REQUEST;
	}
	if (a->check) {
		char why[400];
		int code = a->check(s, n, why, sizeof why);
		if (code) {
			snprintf(err, errlen, "%s: %s", cmd->name, why);
			return code;
		}
	}
	v->s = s;
	v->len = n;
	return 0;
}

static int read_uint(const struct ctlargs_cmd *cmd, const struct ctlargs_arg *a, const msgpack_object *o,
		     struct ctlargs_val *v, char *err, size_t errlen)
{
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 >= a->min && o->via.u64 <= a->max) {
		v->u = o->via.u64;
		return 0;
	}
	if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		snprintf(err, errlen, "%s: %s %lld is negative, expected %s", cmd->name, a->name, (long long)o->via.i64,
			 a->what);
	else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		snprintf(err, errlen, "%s: %s %llu is too %s, expected %s", cmd->name, a->name,
			 (unsigned long long)o->via.u64, o->via.u64 < a->min ? "small" : "large", a->what);
	else
		snprintf(err, errlen, "%s: %s must be %s, not %s", cmd->name, a->name, a->what, type_name(o->type));
	return CTL_E_BAD_REQUEST;
}

static int read_arg(const struct ctlargs_cmd *cmd, const struct ctlargs_arg *a, const msgpack_object *o,
		    struct ctlargs_val *v, char *err, size_t errlen)
{
	switch (a->type) {
	case CTLARGS_STR:
		return read_str(cmd, a, o, v, err, errlen);
	case CTLARGS_UINT:
		return read_uint(cmd, a, o, v, err, errlen);
	case CTLARGS_BOOL:
		if (o->type != MSGPACK_OBJECT_BOOLEAN) {
			snprintf(err, errlen, "%s: %s must be true or false, not %s", cmd->name, a->name, type_name(o->type));
			return CTL_E_BAD_REQUEST;
		}
		v->b = o->via.boolean;
		return 0;
	case CTLARGS_DATA:
		if (o->type != MSGPACK_OBJECT_BIN && o->type != MSGPACK_OBJECT_STR) {
			snprintf(err, errlen, "%s: %s must be %s, not %s", cmd->name, a->name, a->what, type_name(o->type));
			return CTL_E_BAD_REQUEST;
		}
		v->s = o->type == MSGPACK_OBJECT_BIN ? o->via.bin.ptr : o->via.str.ptr;
		v->len = o->type == MSGPACK_OBJECT_BIN ? o->via.bin.size : o->via.str.size;
		return 0;
	}
	return CTL_E_INTERNAL;
}

static int unknown_key(const struct ctlargs_cmd *cmd, const msgpack_object *k, char *err, size_t errlen)
{
	char key[72], list[256] = "";
	const char *names[CTLARGS_MAX];
	if (k->type != MSGPACK_OBJECT_STR) {
		snprintf(err, errlen, "%s: a key of the body is %s, not a string", cmd->name, type_name(k->type));
		return CTL_E_BAD_REQUEST;
	}
	snprintf(key, sizeof key, "%.*s", (int)(k->via.str.size < 64 ? k->via.str.size : 64), k->via.str.ptr);
	for (unsigned i = 0; i < cmd->nargs; i++) {
		names[i] = cmd->args[i].name;
		snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", names[i]);
	}
	const char *near = cmd->nargs ? cfg_nearest(key, names, cmd->nargs) : NULL;
	char hint[96] = "";
	if (near)
		snprintf(hint, sizeof hint, "did you mean '%s'? ", near);
	snprintf(err, errlen, "%s: unknown key '%s' (%s%s%s)", cmd->name, key, hint,
		 cmd->nargs ? "it takes: " : "it takes no arguments", list);
	shown_safe(err);
	return CTL_E_BAD_REQUEST;
}

int ctlargs_read(const struct ctlargs_cmd *cmd, const msgpack_object *body, unsigned version, struct ctlargs *out,
		 char *err, size_t errlen)
{
	memset(out, 0, sizeof *out);
	out->cmd = cmd;
	if (body && body->type != MSGPACK_OBJECT_MAP && body->type != MSGPACK_OBJECT_NIL) {
		snprintf(err, errlen, "%s: the body must be a map of arguments, not %s", cmd->name, type_name(body->type));
		return CTL_E_BAD_REQUEST;
	}
	uint32_t n = body && body->type == MSGPACK_OBJECT_MAP ? body->via.map.size : 0;
	for (uint32_t i = 0; i < n; i++) {
		const msgpack_object_kv *kv = &body->via.map.ptr[i];
		unsigned j = 0;
		while (j < cmd->nargs && !(kv->key.type == MSGPACK_OBJECT_STR &&
					   kv->key.via.str.size == strlen(cmd->args[j].name) &&
					   memcmp(kv->key.via.str.ptr, cmd->args[j].name, kv->key.via.str.size) == 0))
			j++;
		if (j == cmd->nargs) {
			if (version < 2)
				continue; /* version 1: ignored, as it was */
			return unknown_key(cmd, &kv->key, err, errlen);
		}
		if (out->v[j].present) {
			snprintf(err, errlen, "%s: %s is given twice", cmd->name, cmd->args[j].name);
			return CTL_E_BAD_REQUEST;
		}
		int code = read_arg(cmd, &cmd->args[j], &kv->val, &out->v[j], err, errlen);
		if (code)
			return code;
		out->v[j].present = true;
	}
	for (unsigned j = 0; j < cmd->nargs; j++) {
		const struct ctlargs_arg *a = &cmd->args[j];
		char exp[160];
		if (!a->required || out->v[j].present)
			continue;
		if (a->missing)
			snprintf(err, errlen, "%s: %s", cmd->name, a->missing);
		else
			snprintf(err, errlen, "%s: %s is required (%s)", cmd->name, a->name, expected(a, exp, sizeof exp));
		return CTL_E_BAD_REQUEST;
	}
	return 0;
}

const struct ctlargs_val *ctlargs_get(const struct ctlargs *a, const char *name)
{
	for (unsigned i = 0; i < a->cmd->nargs; i++)
		if (strcmp(a->cmd->args[i].name, name) == 0)
			return &a->v[i];
	panic("command %s has no argument %s in its table", a->cmd->name, name);
}

bool ctlargs_str(const struct ctlargs *a, const char *name, char *buf, size_t len)
{
	const struct ctlargs_val *v = ctlargs_get(a, name);
	if (!v->present)
		return false;
	if (v->len >= len)
		panic("argument %s of %s: %zu bytes do not fit in %zu", name, a->cmd->name, v->len, len);
	memcpy(buf, v->s, v->len);
	buf[v->len] = '\0';
	return true;
}

bool ctlargs_u64(const struct ctlargs *a, const char *name, uint64_t *out)
{
	const struct ctlargs_val *v = ctlargs_get(a, name);
	if (v->present)
		*out = v->u;
	return v->present;
}

bool ctlargs_bool(const struct ctlargs *a, const char *name, bool *out)
{
	const struct ctlargs_val *v = ctlargs_get(a, name);
	if (v->present)
		*out = v->b;
	return v->present;
}
