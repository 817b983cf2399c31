/* The control commands' strict argument reader (supervisor/ctlargs.c), driven
 * by the tables themselves: for every command, an unknown key, and for every
 * argument a wrong type, a value out of range and (when required) its absence
 * are refused with the key's name in the error and the code bad_request; a
 * valid body passes; version 1 ignores the unknown key as version 1 did. And
 * docs/control-protocol.md's table names every argument of every command. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "proto/proto.h"
#include "supervisor/ctlargs.h"

static const char *const VALID_ULID = "01JF0000000000000000000000";

/* One argument packed with a valid value (what = 0), a wrong type (1), a
 * value out of range (2: false when the type has no range). */
static bool pack_value(msgpack_packer *pk, const struct ctlargs_arg *a, int what)
{
	char buf[5000];
	switch (a->type) {
	case CTLARGS_STR:
		if (what == 1) {
			msgpack_pack_int(pk, 5);
		} else if (what == 2 && a->choices) {
			pk_str(pk, "no-such-choice");
		} else if (what == 2) {
			memset(buf, 'a', a->max + 1);
			buf[a->max + 1] = '\0';
			pk_str(pk, buf);
		} else if (a->choices) {
			snprintf(buf, sizeof buf, "%.*s", (int)strcspn(a->choices, "|"), a->choices);
			pk_str(pk, buf);
		} else if (a->check == ctlargs_check_ulid) {
			pk_str(pk, VALID_ULID);
		} else {
			pk_str(pk, strcmp(a->name, "endpoint") == 0 ? "/x" : "x");
		}
		return true;
	case CTLARGS_UINT:
		if (what == 1)
			pk_str(pk, "7");
		else if (what == 2 && a->max < UINT64_MAX)
			msgpack_pack_uint64(pk, a->max + 1);
		else if (what == 2)
			msgpack_pack_int64(pk, -1);
		else
			msgpack_pack_uint64(pk, a->min);
		return true;
	case CTLARGS_BOOL:
		if (what == 2)
			return false;
		if (what == 1)
			pk_str(pk, "yes");
		else
			msgpack_pack_true(pk);
		return true;
	case CTLARGS_DATA:
		if (what == 2)
			return false;
		if (what == 1)
			msgpack_pack_int(pk, 1);
		else
			pk_str(pk, "{}");
		return true;
	}
	return false;
}

/* A body of cmd's required arguments (valid) and, when special >= 0, its
 * argument special as `what`, or (special == -2) the key "zzz_unknown", or
 * (skip >= 0) without the argument skip. */
static bool build(const struct ctlargs_cmd *cmd, int special, int what, int skip, msgpack_sbuffer *sb)
{
	msgpack_packer pk;
	msgpack_sbuffer_clear(sb);
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	unsigned n = 0;
	for (unsigned i = 0; i < cmd->nargs; i++)
		n += ((cmd->args[i].required && (int)i != skip) || (int)i == special);
	msgpack_pack_map(&pk, n + (special == -2));
	for (unsigned i = 0; i < cmd->nargs; i++) {
		if (!((cmd->args[i].required && (int)i != skip) || (int)i == special))
			continue;
		pk_key(&pk, cmd->args[i].name);
		if (!pack_value(&pk, &cmd->args[i], (int)i == special ? what : 0))
			return false;
	}
	if (special == -2)
		pk_kv_str(&pk, "zzz_unknown", "x");
	return true;
}

static int run(const struct ctlargs_cmd *cmd, const msgpack_sbuffer *sb, unsigned version, char *err, size_t len)
{
	msgpack_zone z;
	msgpack_object o;
	msgpack_zone_init(&z, 1024);
	if (msgpack_unpack(sb->data, sb->size, NULL, &z, &o) != MSGPACK_UNPACK_SUCCESS) {
		msgpack_zone_destroy(&z);
		return -1;
	}
	struct ctlargs a;
	err[0] = '\0';
	int code = ctlargs_read(cmd, &o, version, &a, err, len);
	msgpack_zone_destroy(&z);
	return code;
}

/* The error names the command first and the key. */
static bool names(const char *err, const struct ctlargs_cmd *cmd, const char *key)
{
	size_t n = strlen(cmd->name);
	bool ok = strncmp(err, cmd->name, n) == 0 && err[n] == ':' && strstr(err, key);
	if (!ok)
		fprintf(stderr, "  %s / %s: %s\n", cmd->name, key, err);
	return ok;
}

static char *read_doc(void)
{
	FILE *f = fopen("../../docs/control-protocol.md", "r");
	if (!f)
		return NULL;
	static char doc[1 << 17];
	size_t n = fread(doc, 1, sizeof doc - 1, f);
	fclose(f);
	doc[n] = '\0';
	return doc;
}

int main(void)
{
	char err[512];
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	const char *doc = read_doc();
	CHECK(doc != NULL);
	const char *args_table = doc ? strstr(doc, "## Arguments") : NULL;
	CHECK(args_table != NULL);
	CHECK(ctlargs_ncommands >= 14);
	for (size_t c = 0; c < ctlargs_ncommands; c++) {
		const struct ctlargs_cmd *cmd = &ctlargs_commands[c];
		CHECK(ctlargs_command(cmd->name) == cmd);
		CHECK(cmd->nargs <= CTLARGS_MAX);
		/* a valid body passes, with its required arguments only */
		CHECK(build(cmd, -1, 0, -1, &sb) && run(cmd, &sb, 2, err, sizeof err) == 0);
		/* an unknown key: refused from version 2, ignored by version 1 */
		CHECK(build(cmd, -2, 0, -1, &sb));
		CHECK(run(cmd, &sb, 2, err, sizeof err) == CTL_E_BAD_REQUEST && names(err, cmd, "'zzz_unknown'"));
		CHECK(run(cmd, &sb, 1, err, sizeof err) == 0);
		for (unsigned i = 0; i < cmd->nargs; i++) {
			const struct ctlargs_arg *a = &cmd->args[i];
			for (unsigned j = 0; j < i; j++)
				CHECK(strcmp(cmd->args[j].name, a->name) != 0); /* no two alike */
			CHECK(a->type != CTLARGS_STR || a->max > 0);
			/* valid alone */
			CHECK(build(cmd, (int)i, 0, -1, &sb) && run(cmd, &sb, 2, err, sizeof err) == 0);
			/* a wrong type, in both versions */
			CHECK(build(cmd, (int)i, 1, -1, &sb));
			CHECK(run(cmd, &sb, 2, err, sizeof err) == CTL_E_BAD_REQUEST && names(err, cmd, a->name));
			CHECK(run(cmd, &sb, 1, err, sizeof err) == CTL_E_BAD_REQUEST && names(err, cmd, a->name));
			/* out of range, where the type has a range */
			if (build(cmd, (int)i, 2, -1, &sb))
				CHECK(run(cmd, &sb, 2, err, sizeof err) == CTL_E_BAD_REQUEST && names(err, cmd, a->name));
			else
				CHECK(a->type == CTLARGS_BOOL || a->type == CTLARGS_DATA);
			/* missing when required */
			if (a->required) {
				CHECK(build(cmd, -1, 0, (int)i, &sb));
				CHECK(run(cmd, &sb, 2, err, sizeof err) == CTL_E_BAD_REQUEST && names(err, cmd, a->name));
			}
			/* the documentation's row of this command names it */
			char row[64], key[64];
			snprintf(row, sizeof row, "\n| `%s` |", cmd->name);
			snprintf(key, sizeof key, "`%s`", a->name);
			const char *r = args_table ? strstr(args_table, row) : NULL;
			const char *end = r ? strchr(r + 1, '\n') : NULL;
			const char *at = r ? strstr(r, key) : NULL;
			CHECK(r && at && at < end);
			if (!(r && at && at < end))
				fprintf(stderr, "  docs/control-protocol.md, Arguments: %s has no %s\n", cmd->name, key);
		}
	}
	/* the nearest known key is suggested */
	const struct ctlargs_cmd *send = ctlargs_command("send");
	msgpack_packer pk;
	msgpack_sbuffer_clear(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	pk_kv_str(&pk, "data", "{}");
	pk_kv_str(&pk, "priorty", "high");
	CHECK(run(send, &sb, 2, err, sizeof err) == CTL_E_BAD_REQUEST && strstr(err, "did you mean 'priority'?"));
	/* a body that is no map */
	msgpack_sbuffer_clear(&sb);
	msgpack_pack_int(&pk, 3);
	CHECK(run(send, &sb, 2, err, sizeof err) == CTL_E_BAD_REQUEST && strstr(err, "must be a map"));
	/* every code has a name, and no name two codes */
	static const int codes[] = { CTL_E_BAD_REQUEST, CTL_E_UNAUTHORIZED, CTL_E_FORBIDDEN, CTL_E_NOT_FOUND,
				     CTL_E_CONFLICT, CTL_E_TOO_LARGE, CTL_E_CONFIG, CTL_E_BUSY, CTL_E_INTERNAL,
				     CTL_E_UNAVAILABLE, CTL_E_VERSION, CTL_E_SPOOL_FULL };
	for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
		CHECK(ctl_code_name(codes[i]) != NULL);
		for (size_t j = 0; j < i; j++)
			CHECK(strcmp(ctl_code_name(codes[i]), ctl_code_name(codes[j])) != 0);
		char row[64];
		snprintf(row, sizeof row, "| %d | `%s` |", codes[i], ctl_code_name(codes[i]));
		CHECK(doc && strstr(doc, row));
	}
	CHECK(ctl_code_name(CTL_OK) == NULL);
	msgpack_sbuffer_destroy(&sb);
	return CHECK_DONE();
}
