/* The Markdown reference of every section and key (docs/configuration.md),
 * written from the schema so the documentation cannot drift from the loader.
 * Defaults are shown as the YAML one would write, not as the schema's text. */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "config/internal.h"

/* One table cell: a '|' would end the cell early. */
static void cell(FILE *out, const char *s)
{
	for (; *s; s++) {
		if (*s == '|')
			fputc('\\', out);
		fputc(*s, out);
	}
}

static void type_text(const struct cfg_key *k, char *buf, size_t len)
{
	static const char *const names[] = {
		[CFG_STR] = "string",         [CFG_INT] = "integer",      [CFG_NUM] = "number",
		[CFG_BOOL] = "boolean",       [CFG_ENUM] = "one of",      [CFG_STRLIST] = "list of strings",
		[CFG_STRMAP] = "map of strings", [CFG_LISTMAP] = "map of lists",
	};
	char extra[300] = "";
	if (k->type == CFG_ENUM) {
		cfg_choices_text(k->choices, extra, sizeof extra);
		snprintf(buf, len, "one of: %s", extra);
		return;
	}
	if ((k->type == CFG_INT || k->type == CFG_NUM) && (k->min != 0 || k->max != 0)) {
		if (k->max >= CFG_NO_MAX)
			snprintf(extra, sizeof extra, ", at least %g", k->min);
		else
			snprintf(extra, sizeof extra, ", %.15g to %.15g", k->min, k->max);
	}
	const char *name = k->flags & CFG_OCTAL	  ? "octal mode"
			   : k->flags & CFG_PATH    ? "path"
			   : k->flags & CFG_SERVERS ? "string or list of strings"
						    : names[k->type];
	snprintf(buf, len, "%s%s%s%s%s%s", name, k->flags & CFG_PROTOCOLS ? " (protocol names)" : "", extra,
		 k->flags & CFG_REQUIRED ? ", required" : "", k->flags & CFG_SECRET ? ", *secret*" : "",
		 k->flags & CFG_READ ? ", read by ucgwd" : "");
}

static void list_yaml(FILE *out, const struct cfg_value *v)
{
	fputc('[', out);
	for (size_t i = 0; i < v->nitems; i++)
		fprintf(out, "%s%s", i ? ", " : "", v->items[i]);
	fputc(']', out);
}

/* The default as YAML: `info`, `[-a, --partial]`, `{sftp: [rsync]}`. */
static void default_text(FILE *out, const struct cfg_key *k, const struct cfg_value *v)
{
	if (!v->set || (k->flags & CFG_SECRET)) {
		fputs("–", out);
		return;
	}
	fputc('`', out);
	if (cfg_is_scalar_type(k->type)) {
		cell(out, k->def);
	} else if (k->type == CFG_STRLIST) {
		list_yaml(out, v);
	} else {
		fputc('{', out);
		for (size_t i = 0; i < v->nitems; i++) {
			fprintf(out, "%s%s: ", i ? ", " : "", v->items[i]);
			if (k->type == CFG_STRMAP)
				fputs(v->vals[i], out);
			else
				list_yaml(out, &v->sub[i]);
		}
		fputc('}', out);
	}
	fputc('`', out);
}

static void write_section(FILE *out, const struct cfg_schema_section *sc)
{
	struct cfg_section defaults;
	cfg_section_defaults(&defaults, sc);
	fprintf(out, "\n## `%s`\n\n%s", sc->name, sc->help);
	if (sc->worker)
		fprintf(out, " Worker: `%s`; the worker runs when the section is present and not `enabled: false`.",
			sc->worker);
	fputs("\n\n| key | type | default | description |\n| --- | --- | --- | --- |\n", out);
	for (size_t i = 0; i < sc->nkeys; i++) {
		const struct cfg_key *k = &sc->keys[i];
		char type[400];
		type_text(k, type, sizeof type);
		fprintf(out, "| `%s` | ", k->key);
		cell(out, type);
		fputs(" | ", out);
		default_text(out, k, &defaults.values[i]);
		fputs(" | ", out);
		cell(out, k->help);
		fputs(" |\n", out);
	}
	cfg_section_free(&defaults);
}

void config_write_reference(FILE *out)
{
	fputs("# ucgw configuration reference\n\n"
	      "Generated from `config/schema.c` and the protocol descriptors (`workers/protocols.c`) by\n"
	      "`ucgwd --config-reference`; the loader validates against the same table, and\n"
	      "`ucgwd -n -c FILE` checks a file without starting.\n\n"
	      "- A key left out, or written with no value (`key:` or `key: ~`), keeps its default;\n"
	      "  `\"\"` in quotes is an empty string.\n"
	      "- A key marked *secret* may instead be given as `KEY_file: PATH`: the file holds the\n"
	      "  secret (a final newline is dropped; for a list, one item per line) and must not be\n"
	      "  readable or writable by group or others. A relative PATH starts at the directory of\n"
	      "  the configuration file. Giving both `KEY` and `KEY_file` is an error.\n"
	      "- A section absent from the file keeps every default; a protocol section (one with a\n"
	      "  worker) runs its worker only when present, and its required keys are needed then.\n",
	      out);
	for (size_t i = 0; i < cfg_schema_len; i++)
		if (!cfg_section_hidden(&cfg_schema[i]))
			write_section(out, &cfg_schema[i]);
}
