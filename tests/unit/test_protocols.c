/* The protocol descriptor table (workers/protocols.h): every row complete and
 * sound, no two alike, and the schema, the selection rules and the fallback
 * chains built from it as the rows say. */
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "config/config.h"
#include "workers/protocols.h"

static const struct cfg_key *key_of(const struct protocol *p, const char *key)
{
	for (size_t k = 0; k < p->nkeys; k++)
		if (strcmp(p->keys[k].key, key) == 0)
			return &p->keys[k];
	return NULL;
}

static const struct cfg_schema_section *section(const char *name)
{
	for (size_t i = 0; i < cfg_schema_len; i++)
		if (strcmp(cfg_schema[i].name, name) == 0)
			return &cfg_schema[i];
	return NULL;
}

static const struct cfg_key *schema_key(const char *sec, const char *key)
{
	const struct cfg_schema_section *s = section(sec);
	for (size_t k = 0; s && k < s->nkeys; k++)
		if (strcmp(s->keys[k].key, key) == 0)
			return &s->keys[k];
	return NULL;
}

static void test_table_sound(void)
{
	char why[200];
	const char *err = protocol_table_error(why, sizeof why);
	if (err)
		fprintf(stderr, "table: %s\n", err);
	CHECK(err == NULL);
	CHECK(protocol_count() >= 5 && protocol_count() <= PROTO_MAX);
	CHECK(protocol_at(protocol_count()) == NULL);
	CHECK(protocol_find("nosuch") == NULL);
}

/* Every row has every field a protocol needs. */
static void test_rows_complete(void)
{
	for (size_t i = 0; i < protocol_count(); i++) {
		const struct protocol *p = protocol_at(i);
		char exe[64];
		snprintf(exe, sizeof exe, "ucgw-%s", p->name);
		CHECK(p->name && p->name[0] && strlen(p->name) < 16);
		CHECK(protocol_find(p->name) == p && protocol_index(p) == (int)i);
		CHECK(p->exe && strcmp(p->exe, exe) == 0);
		CHECK(p->help && p->help[0] && p->help[strlen(p->help) - 1] == '.');
		CHECK(p->carries && !(p->carries & ~(PROTO_META | PROTO_FILES)));
		CHECK(p->nkeys >= 1 && strcmp(p->keys[0].key, "enabled") == 0 && p->keys[0].type == CFG_BOOL);
		for (size_t k = 0; k < p->nkeys; k++)
			CHECK(p->keys[k].help && p->keys[k].help[0]);
		CHECK(p->sandbox.calls != NULL);
		for (size_t c = 0; p->sandbox.calls && p->sandbox.calls[c]; c++) /* a typo would allow nothing */
			CHECK(seccomp_syscall_resolve_name(p->sandbox.calls[c]) != __NR_SCMP_ERROR);
		if (p->test_only) {
			CHECK(!p->picks && !p->network && !p->fallback);
			continue;
		}
		/* the network monitor can find its server */
		const struct cfg_key *sk = p->server.key ? key_of(p, p->server.key) : NULL;
		CHECK(sk && (sk->flags & CFG_REQUIRED) &&
		      (sk->type == CFG_STR || (sk->type == CFG_STRLIST && (sk->flags & CFG_SERVERS))));
		CHECK(p->server.port_key ? key_of(p, p->server.port_key) && key_of(p, p->server.port_key)->type == CFG_INT
					 : p->server.port != NULL);
		CHECK(!p->retry_key || (key_of(p, p->retry_key) && key_of(p, p->retry_key)->type == CFG_INT));
		CHECK(p->picks && p->picks[0]); /* the default of some rule: auto can pick it */
		CHECK(p->fallback != NULL);
	}
}

/* No two rows share a name, an executable or a section. */
static void test_no_two_alike(void)
{
	for (size_t i = 0; i < protocol_count(); i++)
		for (size_t j = 0; j < i; j++) {
			const struct protocol *a = protocol_at(i), *b = protocol_at(j);
			CHECK(strcmp(a->name, b->name) != 0);
			CHECK(strcmp(a->exe, b->exe) != 0);
			CHECK(a->keys != b->keys);
		}
	for (size_t i = 0; i < cfg_schema_len; i++)
		for (size_t j = 0; j < i; j++)
			CHECK(strcmp(cfg_schema[i].name, cfg_schema[j].name) != 0);
}

/* Each row is a section of the schema, pointing back at it; the test rows are hidden. */
static void test_schema_from_rows(void)
{
	size_t protocols = 0;
	for (size_t i = 0; i < cfg_schema_len; i++)
		protocols += cfg_schema[i].protocol != NULL;
	CHECK(protocols == protocol_count());
	for (size_t i = 0; i < protocol_count(); i++) {
		const struct protocol *p = protocol_at(i);
		const struct cfg_schema_section *s = section(p->name);
		CHECK(s && s->protocol == p && s->worker == p->exe && s->keys == p->keys && s->nkeys == p->nkeys);
		CHECK(s && cfg_section_hidden(s) == p->test_only);
	}
	CHECK(section("gateway") && !section("gateway")->protocol && !cfg_section_hidden(section("gateway")));
}

/* The selection rules choose among the rows that carry their kind, each
 * defaulting to the row that names it; the default chains are the rows'. */
static void test_selection_from_rows(void)
{
	const struct cfg_schema_section *sel = section("protocol_selection");
	CHECK(sel != NULL);
	unsigned picks = 0;
	for (size_t k = 0; sel && k < sel->nkeys; k++) {
		const struct cfg_key *key = &sel->keys[k];
		if (!(key->flags & (CFG_PICK_META | CFG_PICK_FILES)))
			continue;
		picks++;
		unsigned kind = key->flags & CFG_PICK_FILES ? PROTO_FILES : PROTO_META;
		CHECK(key->type == CFG_ENUM && key->def && key->choices);
		const struct protocol *d = key->def ? protocol_find(key->def) : NULL;
		CHECK(d && (d->carries & kind) && !d->test_only);
		char names[200];
		protocol_names(kind, "|", names, sizeof names);
		CHECK(key->choices && strcmp(key->choices, names) == 0);
	}
	CHECK(picks == 10);
	const struct cfg_key *chains = schema_key("fallback", "chains");
	CHECK(chains && chains->def &&
	      strcmp(chains->def, "websocket=rest,mqtt;rest=mqtt,websocket;mqtt=rest,websocket;sftp=rsync;rsync=sftp") == 0);
	CHECK(strcmp(schema_key("protocol_selection", "small")->def, "websocket") == 0);
	CHECK(strcmp(schema_key("protocol_selection", "file_large")->def, "rsync") == 0);
}

static void test_names(void)
{
	char buf[200];
	protocol_names(PROTO_META, ", ", buf, sizeof buf);
	CHECK(strcmp(buf, "websocket, rest, mqtt") == 0);
	protocol_names(PROTO_FILES, " or ", buf, sizeof buf);
	CHECK(strcmp(buf, "sftp or rsync") == 0);
	protocol_names(PROTO_META | PROTO_FILES, ",", buf, 12); /* cut, never overrun */
	CHECK(strlen(buf) < 12);
}

int main(void)
{
	test_table_sound();
	test_rows_complete();
	test_no_two_alike();
	test_schema_from_rows();
	test_selection_from_rows();
	test_names();
	return CHECK_DONE();
}
