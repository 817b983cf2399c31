/* The YAML loader: libyaml's document API gives a node tree with marks, which
 * is all an error message needs for FILE:LINE:COL. Each section is then checked
 * key by key against config/schema.c. */
#include "config/config.h"

#include <errno.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <yaml.h>

#include "common/log.h"

struct loader {
	const char *path;
	yaml_document_t doc;
	char *err;
	size_t errlen;
};

static int fail_at(struct loader *L, const yaml_node_t *n, const char *fmt, ...) PRINTF(3, 4);

static int fail_at(struct loader *L, const yaml_node_t *n, const char *fmt, ...)
{
	int off = snprintf(L->err, L->errlen, "%s:%zu:%zu: ", L->path, n ? n->start_mark.line + 1 : 1,
			   n ? n->start_mark.column + 1 : 1);
	if (off < 0 || (size_t)off >= L->errlen)
		return -1;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(L->err + off, L->errlen - (size_t)off, fmt, ap);
	va_end(ap);
	return -1;
}

/* ---- suggestions ---- */

static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[64];
	if (la >= 63 || lb >= 63)
		return 99;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t prev = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t cur = row[j];
			size_t sub = prev + (a[i - 1] != b[j - 1]);
			size_t best = row[j] + 1 < row[j - 1] + 1 ? row[j] + 1 : row[j - 1] + 1;
			row[j] = sub < best ? sub : best;
			prev = cur;
		}
	}
	return row[lb];
}

/* The nearest name, if it is near enough to be a typo. */
static const char *nearest(const char *word, const char *const *names, size_t n)
{
	const char *best = NULL;
	size_t bestd = 99;
	for (size_t i = 0; i < n; i++) {
		size_t d = edit_distance(word, names[i]);
		if (d < bestd) {
			bestd = d;
			best = names[i];
		}
	}
	size_t len = strlen(word);
	return best && bestd <= (len < 6 ? 2 : len / 3 + 1) ? best : NULL;
}

static void suggestion(char *buf, size_t len, const char *word, const char *const *names, size_t n)
{
	const char *s = nearest(word, names, n);
	if (s)
		snprintf(buf, len, " (did you mean '%s'?)", s);
	else
		buf[0] = '\0';
}

/* ---- schema lookups ---- */

static const struct cfg_schema_section *schema_section(const char *name)
{
	for (size_t i = 0; i < cfg_schema_len; i++)
		if (strcmp(cfg_schema[i].name, name) == 0)
			return &cfg_schema[i];
	return NULL;
}

static int key_index(const struct cfg_schema_section *sc, const char *key)
{
	for (size_t i = 0; i < sc->nkeys; i++)
		if (strcmp(sc->keys[i].key, key) == 0)
			return (int)i;
	return -1;
}

/* ---- values ---- */

static void value_free(struct cfg_value *v)
{
	free(v->s);
	for (size_t i = 0; i < v->nitems; i++) {
		free(v->items[i]);
		if (v->vals)
			free(v->vals[i]);
		if (v->sub)
			value_free(&v->sub[i]);
	}
	free(v->items);
	free(v->vals);
	free(v->sub);
	memset(v, 0, sizeof *v);
}

static void push_item(struct cfg_value *v, const char *item, const char *val)
{
	v->items = xrealloc(v->items, (v->nitems + 1) * sizeof *v->items);
	v->items[v->nitems] = xstrdup(item);
	if (val) {
		v->vals = xrealloc(v->vals, (v->nitems + 1) * sizeof *v->vals);
		v->vals[v->nitems] = xstrdup(val);
	}
	v->nitems++;
}

static bool parse_bool(const char *s, bool *out)
{
	static const char *const t[] = { "true", "yes", "on" }, *const f[] = { "false", "no", "off" };
	for (int i = 0; i < 3; i++) {
		if (strcasecmp(s, t[i]) == 0)
			return *out = true, true;
		if (strcasecmp(s, f[i]) == 0)
			return *out = false, true;
	}
	return false;
}

static bool enum_has(const char *choices, const char *s)
{
	size_t n = strlen(s);
	for (const char *p = choices; p && *p;) {
		const char *bar = strchr(p, '|');
		size_t len = bar ? (size_t)(bar - p) : strlen(p);
		if (len == n && strncmp(p, s, n) == 0)
			return true;
		p = bar ? bar + 1 : NULL;
	}
	return false;
}

static void choices_text(const char *choices, char *buf, size_t len)
{
	size_t o = 0;
	for (const char *p = choices; *p && o + 3 < len; p++) {
		if (*p == '|') {
			buf[o++] = ',';
			buf[o++] = ' ';
		} else {
			buf[o++] = *p;
		}
	}
	buf[o] = '\0';
}

/* Parse scalar text into v for the scalar types. Returns an "expected ..." text on error. */
static const char *scalar_value(const struct cfg_key *k, const char *s, struct cfg_value *v, char *why, size_t wl)
{
	char *end;
	switch (k->type) {
	case CFG_STR:
		v->s = xstrdup(s);
		return NULL;
	case CFG_INT: {
		errno = 0;
		long long x = strtoll(s, &end, 10);
		if (!*s || *end || errno)
			return "expected an integer";
		if ((k->min || k->max) && ((double)x < k->min || (double)x > k->max)) {
			snprintf(why, wl, "expected an integer from %.0f to %.0f", k->min, k->max);
			return why;
		}
		v->i = x;
		return NULL;
	}
	case CFG_NUM: {
		errno = 0;
		double x = strtod(s, &end);
		if (!*s || *end || errno)
			return "expected a number";
		if ((k->min || k->max) && (x < k->min || x > k->max)) {
			snprintf(why, wl, "expected a number from %g to %g", k->min, k->max);
			return why;
		}
		v->d = x;
		return NULL;
	}
	case CFG_BOOL:
		return parse_bool(s, &v->b) ? NULL : "expected true or false";
	case CFG_ENUM: {
		if (enum_has(k->choices, s)) {
			v->s = xstrdup(s);
			return NULL;
		}
		char list[256];
		choices_text(k->choices, list, sizeof list);
		snprintf(why, wl, "expected one of: %s", list);
		return why;
	}
	default:
		return "expected a scalar";
	}
}

/* Defaults are YAML-ish text: lists "a,b", maps "k=v;k2=v2", list maps "k=a,b;k2=c". */
static void default_value(const struct cfg_key *k, struct cfg_value *v)
{
	char why[128];
	memset(v, 0, sizeof *v);
	if (!k->def)
		return;
	v->set = true;
	if (k->type <= CFG_ENUM) {
		if (scalar_value(k, k->def, v, why, sizeof why))
			panic("schema default of %s is bad: %s", k->key, why);
		return;
	}
	char *copy = xstrdup(k->def), *save1 = NULL;
	for (char *part = strtok_r(copy, k->type == CFG_STRLIST ? "," : ";", &save1); part;
	     part = strtok_r(NULL, k->type == CFG_STRLIST ? "," : ";", &save1)) {
		char *eq = strchr(part, '=');
		if (k->type == CFG_STRLIST || !eq) {
			push_item(v, part, NULL);
			continue;
		}
		*eq = '\0';
		if (k->type == CFG_STRMAP) {
			push_item(v, part, eq + 1);
			continue;
		}
		push_item(v, part, NULL);
		v->sub = xrealloc(v->sub, v->nitems * sizeof *v->sub);
		struct cfg_value *sub = &v->sub[v->nitems - 1];
		memset(sub, 0, sizeof *sub);
		sub->set = true;
		char *save2 = NULL;
		for (char *it = strtok_r(eq + 1, ",", &save2); it; it = strtok_r(NULL, ",", &save2))
			push_item(sub, it, NULL);
	}
	free(copy);
}

static const char *scalar_text(const yaml_node_t *n)
{
	return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static yaml_node_t *node(struct loader *L, int id) { return yaml_document_get_node(&L->doc, id); }

static int list_value(struct loader *L, const yaml_node_t *n, struct cfg_value *v, const char *key)
{
	if (n->type != YAML_SEQUENCE_NODE)
		return fail_at(L, n, "%s: expected a list of strings", key);
	for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
		const yaml_node_t *e = node(L, *it);
		if (!scalar_text(e))
			return fail_at(L, e, "%s: expected a list of strings", key);
		push_item(v, scalar_text(e), NULL);
	}
	return 0;
}

static int map_value(struct loader *L, const struct cfg_key *k, const yaml_node_t *n, struct cfg_value *v)
{
	const char *what = k->type == CFG_STRMAP ? "a mapping of names to strings" : "a mapping of names to lists";
	if (n->type == YAML_SCALAR_NODE && !*scalar_text(n))
		return 0; /* an empty value: an empty mapping */
	if (n->type != YAML_MAPPING_NODE)
		return fail_at(L, n, "%s: expected %s", k->key, what);
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
		const yaml_node_t *kn = node(L, p->key), *vn = node(L, p->value);
		if (!scalar_text(kn))
			return fail_at(L, kn, "%s: expected %s", k->key, what);
		for (size_t i = 0; i < v->nitems; i++)
			if (strcmp(v->items[i], scalar_text(kn)) == 0)
				return fail_at(L, kn, "%s: duplicate key '%s'", k->key, scalar_text(kn));
		if (k->type == CFG_STRMAP) {
			if (!scalar_text(vn))
				return fail_at(L, vn, "%s.%s: expected a string", k->key, scalar_text(kn));
			push_item(v, scalar_text(kn), scalar_text(vn));
			continue;
		}
		push_item(v, scalar_text(kn), NULL);
		v->sub = xrealloc(v->sub, v->nitems * sizeof *v->sub);
		struct cfg_value *sub = &v->sub[v->nitems - 1];
		memset(sub, 0, sizeof *sub);
		sub->set = true;
		if (list_value(L, vn, sub, k->key) < 0)
			return -1;
	}
	return 0;
}

static int read_value(struct loader *L, const struct cfg_key *k, const yaml_node_t *n, struct cfg_value *v)
{
	char why[160];
	value_free(v);
	v->set = true;
	v->line = (int)n->start_mark.line + 1;
	v->col = (int)n->start_mark.column + 1;
	if (k->type == CFG_STRLIST)
		return list_value(L, n, v, k->key);
	if (k->type == CFG_STRMAP || k->type == CFG_LISTMAP)
		return map_value(L, k, n, v);
	const char *s = scalar_text(n);
	if (!s) {
		static const char *const expect[] = { "a string", "an integer", "a number", "true or false", "one value" };
		return fail_at(L, n, "%s: expected %s", k->key, expect[k->type]);
	}
	const char *bad = scalar_value(k, s, v, why, sizeof why);
	return bad ? fail_at(L, n, "%s: %s, not '%s'", k->key, bad, s) : 0;
}

/* KEY_file: the secret's text from a file nobody else may read. */
static int read_secret_file(struct loader *L, const char *key, const yaml_node_t *n, struct cfg_value *v)
{
	const char *path = scalar_text(n);
	if (!path)
		return fail_at(L, n, "%s_file: expected a file name", key);
	struct stat st;
	FILE *f = fopen(path, "r");
	if (!f || fstat(fileno(f), &st) < 0) {
		int e = errno;
		if (f)
			fclose(f);
		return fail_at(L, n, "%s_file: cannot read %s: %s", key, path, strerror(e));
	}
	if (st.st_mode & 077) {
		fclose(f);
		return fail_at(L, n, "%s_file %s is readable or writable by others (mode %04o); chmod 600 it", key, path,
			       (unsigned)(st.st_mode & 07777));
	}
	char buf[8192];
	size_t len = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[len] = '\0';
	while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		buf[--len] = '\0';
	value_free(v);
	v->set = true;
	v->line = (int)n->start_mark.line + 1;
	v->col = (int)n->start_mark.column + 1;
	v->s = xstrdup(buf);
	return 0;
}

static int load_section(struct loader *L, struct cfg_section *sec, const yaml_node_t *n)
{
	const struct cfg_schema_section *sc = sec->schema;
	if (n->type == YAML_SCALAR_NODE && !*scalar_text(n))
		return 0; /* "mqtt:" with nothing under it */
	if (n->type != YAML_MAPPING_NODE)
		return fail_at(L, n, "section '%s': expected a mapping of keys to values", sc->name);
	bool *given = xcalloc(sc->nkeys, sizeof *given);
	int rc = 0;
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; rc == 0 && p < n->data.mapping.pairs.top; p++) {
		const yaml_node_t *kn = node(L, p->key), *vn = node(L, p->value);
		const char *key = scalar_text(kn);
		if (!key) {
			rc = fail_at(L, kn, "section '%s': expected a key name", sc->name);
			break;
		}
		int idx = key_index(sc, key);
		bool from_file = false;
		size_t kl = strlen(key);
		if (idx < 0 && kl > 5 && strcmp(key + kl - 5, "_file") == 0) {
			char *base = xstrndup(key, kl - 5);
			idx = key_index(sc, base);
			free(base);
			from_file = idx >= 0 && (sc->keys[idx].flags & CFG_SECRET) && sc->keys[idx].type == CFG_STR;
			if (!from_file)
				idx = -1;
		}
		if (idx < 0) {
			const char *names[64];
			size_t nn = 0;
			for (size_t i = 0; i < sc->nkeys && nn < 64; i++)
				names[nn++] = sc->keys[i].key;
			char sug[96];
			suggestion(sug, sizeof sug, key, names, nn);
			rc = fail_at(L, kn, "unknown key '%s' in section '%s'%s", key, sc->name, sug);
			break;
		}
		if (given[idx]) {
			rc = fail_at(L, kn, "'%s' given twice in section '%s'%s", sc->keys[idx].key, sc->name,
				     from_file ? " (as itself and as _file)" : "");
			break;
		}
		given[idx] = true;
		rc = from_file ? read_secret_file(L, sc->keys[idx].key, vn, &sec->values[idx])
			       : read_value(L, &sc->keys[idx], vn, &sec->values[idx]);
	}
	free(given);
	return rc;
}

/* ---- packing (protocol sections travel to their worker as msgpack) ---- */

static void pack_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void pack_list(msgpack_packer *pk, const struct cfg_value *v)
{
	msgpack_pack_array(pk, v->nitems);
	for (size_t i = 0; i < v->nitems; i++)
		pack_str(pk, v->items[i]);
}

static void pack_value(msgpack_packer *pk, const struct cfg_key *k, const struct cfg_value *v)
{
	if (!v->set) {
		msgpack_pack_nil(pk);
		return;
	}
	switch (k->type) {
	case CFG_STR:
	case CFG_ENUM: pack_str(pk, v->s); break;
	case CFG_INT: msgpack_pack_int64(pk, v->i); break;
	case CFG_NUM: msgpack_pack_double(pk, v->d); break;
	case CFG_BOOL: v->b ? msgpack_pack_true(pk) : msgpack_pack_false(pk); break;
	case CFG_STRLIST: pack_list(pk, v); break;
	case CFG_STRMAP:
	case CFG_LISTMAP:
		msgpack_pack_map(pk, v->nitems);
		for (size_t i = 0; i < v->nitems; i++) {
			pack_str(pk, v->items[i]);
			if (k->type == CFG_STRMAP)
				pack_str(pk, v->vals[i]);
			else
				pack_list(pk, &v->sub[i]);
		}
		break;
	}
}

static void pack_section(struct cfg_section *sec)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, sec->schema->nkeys);
	for (size_t i = 0; i < sec->schema->nkeys; i++) {
		pack_str(&pk, sec->schema->keys[i].key);
		pack_value(&pk, &sec->schema->keys[i], &sec->values[i]);
	}
	sec->packed = sb.data; /* taken over: freed with the section */
	sec->packed_len = sb.size;
}

/* ---- sections ---- */

static void section_init(struct cfg_section *sec, const struct cfg_schema_section *sc)
{
	memset(sec, 0, sizeof *sec);
	sec->schema = sc;
	sec->values = xcalloc(sc->nkeys ? sc->nkeys : 1, sizeof *sec->values);
	for (size_t i = 0; i < sc->nkeys; i++)
		default_value(&sc->keys[i], &sec->values[i]);
}

void cfg_section_free(struct cfg_section *sec)
{
	if (!sec->values)
		return;
	for (size_t i = 0; i < sec->schema->nkeys; i++)
		value_free(&sec->values[i]);
	free(sec->values);
	free(sec->packed);
	sec->values = NULL;
	sec->packed = NULL;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; cfg->sections && i < cfg_schema_len; i++)
		cfg_section_free(&cfg->sections[i]);
	free(cfg->sections);
	free(cfg->path);
	free(cfg);
}

static int check_required(struct loader *L, struct config *cfg)
{
	for (size_t i = 0; i < cfg_schema_len; i++) {
		struct cfg_section *sec = &cfg->sections[i];
		if (!sec->present || (sec->schema->worker && !cfg_bool(sec, "enabled")))
			continue;
		for (size_t k = 0; k < sec->schema->nkeys; k++)
			if ((sec->schema->keys[k].flags & CFG_REQUIRED) && !sec->values[k].set)
				return snprintf(L->err, L->errlen, "%s:%d:%d: section '%s' needs '%s' (%s)", L->path,
						sec->line, sec->col, sec->schema->name, sec->schema->keys[k].key,
						sec->schema->keys[k].help),
				       -1;
	}
	return 0;
}

static int load_root(struct loader *L, struct config *cfg)
{
	yaml_node_t *root = yaml_document_get_root_node(&L->doc);
	if (!root || (root->type == YAML_SCALAR_NODE && !*scalar_text(root)))
		return fail_at(L, root, "the file is empty; expected a mapping of sections (gateway:, mqtt:, ...)");
	if (root->type != YAML_MAPPING_NODE)
		return fail_at(L, root, "expected a mapping of sections (gateway:, mqtt:, ...)");
	for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
		const yaml_node_t *kn = node(L, p->key), *vn = node(L, p->value);
		const char *name = scalar_text(kn);
		const struct cfg_schema_section *sc = name ? schema_section(name) : NULL;
		if (!sc) {
			const char *names[32];
			for (size_t i = 0; i < cfg_schema_len; i++)
				names[i] = cfg_schema[i].name;
			char sug[96] = "";
			if (name)
				suggestion(sug, sizeof sug, name, names, cfg_schema_len);
			return fail_at(L, kn, "unknown section '%s'%s", name ? name : "?", sug);
		}
		struct cfg_section *sec = &cfg->sections[sc - cfg_schema];
		if (sec->present)
			return fail_at(L, kn, "section '%s' given twice", name);
		sec->present = true;
		sec->line = (int)kn->start_mark.line + 1;
		sec->col = (int)kn->start_mark.column + 1;
		if (load_section(L, sec, vn) < 0)
			return -1;
	}
	return check_required(L, cfg);
}

static int parse_file(struct loader *L)
{
	FILE *f = fopen(L->path, "rb");
	if (!f) {
		snprintf(L->err, L->errlen, "cannot open %s: %s", L->path, strerror(errno));
		return -1;
	}
	yaml_parser_t parser;
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_file(&parser, f);
	int ok = yaml_parser_load(&parser, &L->doc);
	if (!ok)
		snprintf(L->err, L->errlen, "%s:%zu:%zu: %s%s%s", L->path, parser.problem_mark.line + 1,
			 parser.problem_mark.column + 1, parser.problem ? parser.problem : "YAML error",
			 parser.context ? " " : "", parser.context ? parser.context : "");
	yaml_parser_delete(&parser);
	fclose(f);
	return ok ? 0 : -1;
}

int config_load(const char *path, struct config **out, char *err, size_t errlen)
{
	struct loader L = { .path = path, .err = err, .errlen = errlen };
	if (parse_file(&L) < 0)
		return -1;
	struct config *cfg = xcalloc(1, sizeof *cfg);
	cfg->path = xstrdup(path);
	cfg->sections = xcalloc(cfg_schema_len, sizeof *cfg->sections);
	for (size_t i = 0; i < cfg_schema_len; i++)
		section_init(&cfg->sections[i], &cfg_schema[i]);
	int rc = load_root(&L, cfg);
	yaml_document_delete(&L.doc);
	if (rc < 0) {
		config_free(cfg);
		return -1;
	}
	for (size_t i = 0; i < cfg_schema_len; i++)
		if (cfg_schema[i].worker)
			pack_section(&cfg->sections[i]);
	*out = cfg;
	return 0;
}

/* ---- the worker side ---- */

static bool obj_str(const msgpack_object *o, char **out)
{
	if (o->type != MSGPACK_OBJECT_STR || memchr(o->via.str.ptr, 0, o->via.str.size))
		return false;
	*out = xstrndup(o->via.str.ptr, o->via.str.size);
	return true;
}

static bool unpack_list(const msgpack_object *o, struct cfg_value *v)
{
	if (o->type != MSGPACK_OBJECT_ARRAY)
		return false;
	for (uint32_t i = 0; i < o->via.array.size; i++) {
		char *s;
		if (!obj_str(&o->via.array.ptr[i], &s))
			return false;
		push_item(v, s, NULL);
		free(s);
	}
	return true;
}

static bool unpack_value(const struct cfg_key *k, const msgpack_object *o, struct cfg_value *v)
{
	value_free(v);
	if (o->type == MSGPACK_OBJECT_NIL)
		return true;
	v->set = true;
	switch (k->type) {
	case CFG_STR:
	case CFG_ENUM: return obj_str(o, &v->s);
	case CFG_INT:
		if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX)
			return v->i = (int64_t)o->via.u64, true;
		return o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? (v->i = o->via.i64, true) : false;
	case CFG_NUM:
		return o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32 ? (v->d = o->via.f64, true)
											       : false;
	case CFG_BOOL: return o->type == MSGPACK_OBJECT_BOOLEAN ? (v->b = o->via.boolean, true) : false;
	case CFG_STRLIST: return unpack_list(o, v);
	case CFG_STRMAP:
	case CFG_LISTMAP:
		if (o->type != MSGPACK_OBJECT_MAP)
			return false;
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			char *key, *val = NULL;
			if (!obj_str(&o->via.map.ptr[i].key, &key))
				return false;
			bool ok = k->type == CFG_STRMAP ? obj_str(&o->via.map.ptr[i].val, &val) : true;
			if (!ok) {
				free(key);
				return false;
			}
			push_item(v, key, k->type == CFG_STRMAP ? val : NULL);
			free(key);
			free(val);
			if (k->type == CFG_LISTMAP) {
				v->sub = xrealloc(v->sub, v->nitems * sizeof *v->sub);
				memset(&v->sub[v->nitems - 1], 0, sizeof *v->sub);
				v->sub[v->nitems - 1].set = true;
				if (!unpack_list(&o->via.map.ptr[i].val, &v->sub[v->nitems - 1]))
					return false;
			}
		}
		return true;
	}
	return false;
}

int cfg_section_unpack(const char *name, const void *buf, size_t len, struct cfg_section *out, char *err,
		       size_t errlen)
{
	const struct cfg_schema_section *sc = schema_section(name);
	if (!sc) {
		snprintf(err, errlen, "no section '%s' in the schema", name);
		return -1;
	}
	section_init(out, sc);
	out->present = true;
	msgpack_zone zone;
	msgpack_zone_init(&zone, 2048);
	msgpack_object o;
	size_t off = 0;
	int rc = 0;
	if (msgpack_unpack(buf, len, &off, &zone, &o) != MSGPACK_UNPACK_SUCCESS || off != len ||
	    o.type != MSGPACK_OBJECT_MAP) {
		snprintf(err, errlen, "section '%s': not one msgpack map", name);
		rc = -1;
	}
	for (uint32_t i = 0; rc == 0 && i < o.via.map.size; i++) {
		const msgpack_object *k = &o.via.map.ptr[i].key;
		char *key = NULL;
		int idx = obj_str(k, &key) ? key_index(sc, key) : -1;
		if (idx < 0 || !unpack_value(&sc->keys[idx], &o.via.map.ptr[i].val, &out->values[idx])) {
			snprintf(err, errlen, "section '%s': bad key or value '%s'", name, key ? key : "?");
			rc = -1;
		}
		free(key);
	}
	msgpack_zone_destroy(&zone);
	if (rc < 0) {
		cfg_section_free(out);
		return -1;
	}
	out->packed = xmalloc(len ? len : 1);
	memcpy(out->packed, buf, len);
	out->packed_len = len;
	return 0;
}

bool cfg_section_equal(const struct cfg_section *a, const struct cfg_section *b)
{
	return a->packed_len == b->packed_len && (a->packed_len == 0 || memcmp(a->packed, b->packed, a->packed_len) == 0);
}

/* ---- accessors ---- */

const struct cfg_section *config_section(const struct config *cfg, const char *name)
{
	const struct cfg_schema_section *sc = schema_section(name);
	if (!sc)
		panic("no config section '%s'", name);
	return &cfg->sections[sc - cfg_schema];
}

bool config_protocol_enabled(const struct config *cfg, const char *name)
{
	const struct cfg_section *s = config_section(cfg, name);
	return s->schema->worker && s->present && cfg_bool(s, "enabled");
}

static const struct cfg_value *typed(const struct cfg_section *s, const char *key, int type1, int type2)
{
	int idx = key_index(s->schema, key);
	if (idx < 0)
		panic("no key '%s' in section '%s'", key, s->schema->name);
	int t = (int)s->schema->keys[idx].type;
	if (type1 >= 0 && t != type1 && t != type2)
		panic("key '%s.%s' read with the wrong type", s->schema->name, key);
	return &s->values[idx];
}

const struct cfg_value *cfg_get(const struct cfg_section *s, const char *key) { return typed(s, key, -1, -1); }

bool cfg_has(const struct cfg_section *s, const char *key) { return key_index(s->schema, key) >= 0; }

const char *cfg_str(const struct cfg_section *s, const char *key)
{
	const struct cfg_value *v = typed(s, key, CFG_STR, CFG_ENUM);
	return v->set ? v->s : NULL;
}

int64_t cfg_int(const struct cfg_section *s, const char *key) { return typed(s, key, CFG_INT, CFG_INT)->i; }
double cfg_num(const struct cfg_section *s, const char *key)
{
	const struct cfg_value *v = typed(s, key, CFG_NUM, CFG_INT);
	return s->schema->keys[key_index(s->schema, key)].type == CFG_INT ? (double)v->i : v->d;
}
bool cfg_bool(const struct cfg_section *s, const char *key) { return typed(s, key, CFG_BOOL, CFG_BOOL)->b; }

const char *config_str(const struct config *c, const char *sec, const char *key)
{
	return cfg_str(config_section(c, sec), key);
}
int64_t config_int(const struct config *c, const char *sec, const char *key)
{
	return cfg_int(config_section(c, sec), key);
}
bool config_bool(const struct config *c, const char *sec, const char *key)
{
	return cfg_bool(config_section(c, sec), key);
}

/* ---- the reference ---- */

void config_write_reference(FILE *out)
{
	static const char *const tn[] = { "string", "integer", "number", "boolean", "one of", "list", "map", "map of lists" };
	fprintf(out, "# ucgw configuration reference\n\nGenerated from `config/schema.c` by `ucgwd --config-reference`;\n"
		     "the loader validates against the same table. A key marked *secret* may instead be given as\n"
		     "`KEY_file: PATH` (the file must not be readable by others).\n");
	for (size_t i = 0; i < cfg_schema_len; i++) {
		const struct cfg_schema_section *sc = &cfg_schema[i];
		fprintf(out, "\n## `%s`\n\n%s%s%s%s\n\n| key | type | default | description |\n| --- | --- | --- | --- |\n",
			sc->name, sc->help, sc->worker ? " Worker: `" : "", sc->worker ? sc->worker : "", sc->worker ? "`." : "");
		for (size_t k = 0; k < sc->nkeys; k++) {
			const struct cfg_key *key = &sc->keys[k];
			char type[160];
			if (key->type == CFG_ENUM) {
				char list[128];
				choices_text(key->choices, list, sizeof list); /* a '|' would split the table */
				snprintf(type, sizeof type, "one of: %s", list);
			}
			else
				snprintf(type, sizeof type, "%s", tn[key->type]);
			fprintf(out, "| `%s` | %s%s%s | %s%s%s | %s |\n", key->key, type,
				key->flags & CFG_REQUIRED ? ", required" : "", key->flags & CFG_SECRET ? ", *secret*" : "",
				key->def ? "`" : "", key->def ? key->def : "–", key->def ? "`" : "", key->help);
		}
	}
}
