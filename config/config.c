/* The YAML loader. libyaml's document API gives a node tree whose marks are all
 * an error message needs for FILE:LINE:COL; each section is then checked key by
 * key against config/schema.c. The first problem ends the load with one line
 * that says where, what is wrong, and what was expected: an operator reading
 * `ucgwd -n` output should not need the source to fix the file. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "common/cfgfile.h"
#include "common/crypto.h"
#include "common/log.h"
#include "common/util.h"
#include "config/internal.h"
#include "proto/proto.h"
#include "workers/protocols.h"

#define CONFIG_MAX_BYTES (4u << 20) /* a configuration is a few kilobytes; more is a wrong file */
#define SECRET_MAX_BYTES 65536u
#define CONFIG_MAX_DEPTH 32
#define SHOWN_MAX 60 /* characters of a bad value or name repeated in a message */

struct loader {
	const char *path; /* as given: messages name the file the way the operator did */
	char *dir;        /* the file's directory: relative KEY_file paths start there */
	yaml_document_t doc;
	bool have_doc;
	size_t items; /* strings in the value being read, against CFG_MAX_ITEMS */
	char *err;
	size_t errlen;
	struct config *cfg; /* being filled: it collects the warnings */
};

/* ---- messages ---- */

static int vfail(struct loader *L, size_t line, size_t col, const char *fmt, va_list ap)
{
	if (!L->errlen)
		return -1;
	int off = snprintf(L->err, L->errlen, "%s:%zu:%zu: ", L->path, line, col);
	if (off >= 0 && (size_t)off < L->errlen)
		vsnprintf(L->err + off, L->errlen - (size_t)off, fmt, ap);
	return -1;
}

static int fail_pos(struct loader *L, size_t line, size_t col, const char *fmt, ...) PRINTF(4, 5);
static int fail_pos(struct loader *L, size_t line, size_t col, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfail(L, line, col, fmt, ap);
	va_end(ap);
	return -1;
}

/* At a node: libyaml's marks are 0-based. */
static int fail_at(struct loader *L, const yaml_node_t *n, const char *fmt, ...) PRINTF(3, 4);
static int fail_at(struct loader *L, const yaml_node_t *n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfail(L, n->start_mark.line + 1, n->start_mark.column + 1, fmt, ap);
	va_end(ap);
	return -1;
}

/* Text from the file as it may appear in a message: bounded, and without
 * control characters, so a message stays one line whatever the file holds. */
static const char *shown(const char *s, char buf[SHOWN_MAX + 4])
{
	size_t i = 0;
	for (; s[i] && i < SHOWN_MAX; i++)
		buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
	strcpy(buf + i, s[i] ? "..." : "");
	return buf;
}

/* The whole message on one line, whatever the file name or libyaml said. */
static void one_line(char *err, size_t errlen)
{
	for (size_t i = 0; i < errlen && err[i]; i++)
		if ((unsigned char)err[i] < 0x20 || err[i] == 0x7f)
			err[i] = ' ';
}

/* ---- nodes ---- */

static yaml_node_t *node(struct loader *L, int id) { return yaml_document_get_node(&L->doc, id); }

static const char *scalar(const yaml_node_t *n)
{
	return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* `key:`, `key: ~` and `key: null` say nothing: the key keeps its default.
 * Only a plain scalar is null; "" written in quotes is an empty string. */
static bool is_null(const yaml_node_t *n)
{
	static const char *const nulls[] = { "", "~", "null", "Null", "NULL" };
	if (!n || n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	for (size_t i = 0; i < sizeof nulls / sizeof *nulls; i++)
		if (strcmp(scalar(n), nulls[i]) == 0)
			return true;
	return false;
}

static const char *kind(const yaml_node_t *n)
{
	if (is_null(n))
		return "empty";
	return n->type == YAML_SEQUENCE_NODE ? "a list" : n->type == YAML_MAPPING_NODE ? "a mapping" : "a single value";
}

/* A "\0" escape would cut a C string short without anyone noticing: refuse it
 * once for the whole document. */
static int check_no_nul(struct loader *L)
{
	for (yaml_node_t *n = L->doc.nodes.start; n < L->doc.nodes.top; n++)
		if (n->type == YAML_SCALAR_NODE && strlen((const char *)n->data.scalar.value) != n->data.scalar.length)
			return fail_at(L, n, "a NUL character in a string, expected text");
	return 0;
}

/* ---- reading the file ---- */

static int read_config_file(struct loader *L, unsigned char **out, size_t *outlen)
{
	struct stat st;
	char *buf = cf_read(NULL, L->path, CONFIG_MAX_BYTES, outlen, &st, L->err, L->errlen);
	if (!buf)
		return -1;
	*out = (unsigned char *)buf;
	return 0;
}

/* libyaml's reader reports a byte offset, not a mark. */
static void offset_to_pos(const unsigned char *buf, size_t len, size_t off, size_t *line, size_t *col)
{
	*line = 1;
	*col = 1;
	for (size_t i = 0; i < off && i < len; i++) {
		if (buf[i] == '\n') {
			++*line;
			*col = 1;
		} else {
			++*col;
		}
	}
}

static int yaml_failure(struct loader *L, const yaml_parser_t *p, const unsigned char *buf, size_t len)
{
	const char *problem = p->problem ? p->problem : "cannot parse";
	if (p->error == YAML_MEMORY_ERROR)
		panic("libyaml: out of memory");
	if (p->error == YAML_READER_ERROR) {
		size_t line, col;
		offset_to_pos(buf, len, p->problem_offset, &line, &col);
		return fail_pos(L, line, col, "%s, expected UTF-8 text", problem);
	}
	size_t line = p->problem_mark.line + 1, col = p->problem_mark.column + 1;
	if (p->context)
		return fail_pos(L, line, col, "YAML syntax error: %s (%s at %zu:%zu)", problem, p->context,
				p->context_mark.line + 1, p->context_mark.column + 1);
	return fail_pos(L, line, col, "YAML syntax error: %s", problem);
}

/* libyaml stops after the first document; text after a `---` would be ignored
 * without a word, so look for it. */
static int no_second_document(struct loader *L, yaml_parser_t *p, const unsigned char *buf, size_t len)
{
	yaml_document_t next;
	if (!yaml_parser_load(p, &next))
		return yaml_failure(L, p, buf, len);
	int rc = 0;
	if (yaml_document_get_root_node(&next))
		rc = fail_pos(L, next.start_mark.line + 1, next.start_mark.column + 1,
			      "a second YAML document, expected one document per file");
	yaml_document_delete(&next);
	return rc;
}

/* libyaml has no nesting limit, and its scanner looks at every open flow
 * level for each token: 100,000 nested '[' took 19 s (quadratic). A first
 * pass over the events stops at CONFIG_MAX_DEPTH, long before that costs
 * anything; a configuration needs 4 levels (section, key, map, list). */
static int check_depth(struct loader *L, const unsigned char *buf, size_t len)
{
	yaml_parser_t p;
	yaml_event_t ev;
	if (!yaml_parser_initialize(&p))
		panic("libyaml: out of memory");
	yaml_parser_set_input_string(&p, buf, len);
	int depth = 0, rc = 0;
	for (bool done = false; !done && rc == 0;) {
		if (!yaml_parser_parse(&p, &ev)) {
			rc = yaml_failure(L, &p, buf, len);
			break;
		}
		if (ev.type == YAML_SEQUENCE_START_EVENT || ev.type == YAML_MAPPING_START_EVENT) {
			if (++depth > CONFIG_MAX_DEPTH)
				rc = fail_pos(L, ev.start_mark.line + 1, ev.start_mark.column + 1,
					      "nested deeper than %d levels, expected sections of keys (a configuration "
					      "needs 4)", CONFIG_MAX_DEPTH);
		} else if (ev.type == YAML_SEQUENCE_END_EVENT || ev.type == YAML_MAPPING_END_EVENT) {
			depth--;
		}
		done = ev.type == YAML_STREAM_END_EVENT;
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&p);
	return rc;
}

static int parse_yaml(struct loader *L, const unsigned char *buf, size_t len)
{
	if (check_depth(L, buf, len) < 0)
		return -1;
	yaml_parser_t p;
	if (!yaml_parser_initialize(&p))
		panic("libyaml: out of memory");
	yaml_parser_set_input_string(&p, buf, len);
	int rc = 0;
	if (!yaml_parser_load(&p, &L->doc)) {
		rc = yaml_failure(L, &p, buf, len);
	} else {
		L->have_doc = true;
		if (yaml_document_get_root_node(&L->doc))
			rc = no_second_document(L, &p, buf, len);
	}
	yaml_parser_delete(&p);
	return rc;
}

/* ---- secrets from files ---- */

static int secret_mode_refused(struct loader *L, const yaml_node_t *n, const char *key, const char *path, mode_t mode)
{
	char b[SHOWN_MAX + 4];
	bool readable = mode & 044, writable = mode & 022;
	const char *how = readable && writable ? "readable and writable" : readable ? "readable" : "writable";
	const char *who = mode & 006 ? "others" : "its group";
	return fail_at(L, n, "%s_file %s is %s by %s (mode %04o); chmod 600 it", key, shown(path, b), how, who,
		       (unsigned)(mode & 07777));
}

/* Up to cap bytes, until end of file: 0, or -1 with errno. */
static int read_all(int fd, char *buf, size_t cap, size_t *got)
{
	*got = 0;
	while (*got < cap) {
		ssize_t n = read(fd, buf + *got, cap - *got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		*got += (size_t)n;
	}
	return 0;
}

/* The secret file's text, for a key given as KEY_file. Nobody but the owner may
 * read or change it: a secret that others can read is no secret, and one that
 * others can write lets them choose our credentials. */
static int read_secret(struct loader *L, const yaml_node_t *n, const char *key, const char *path, char **out)
{
	char b[SHOWN_MAX + 4];
	char *full = path[0] == '/' ? xstrdup(path) : xasprintf("%s/%s", L->dir, path);
	char what[SHOWN_MAX + 8], why[900];
	snprintf(what, sizeof what, "%s_file", key);
	struct stat st;
	int fd = cf_open(what, full, O_RDONLY, CF_REG, SECRET_MAX_BYTES, &st, why, sizeof why);
	free(full);
	if (fd < 0) {
		if (errno == EACCES) /* group and others may not read it (below): its owner must be us */
			return fail_at(L, n, "%s: make the user ucgwd runs as its owner, mode 0600", why);
		bool kind = errno == EINVAL || errno == EISDIR;
		return fail_at(L, n, "%s%s", why, kind ? ", expected a file holding the secret" : "");
	}
	int rc = 0;
	if (st.st_mode & 066)
		rc = secret_mode_refused(L, n, key, path, st.st_mode);
	char *text = NULL;
	size_t got = 0;
	if (rc == 0) {
		text = xmalloc(SECRET_MAX_BYTES + 1);
		rc = read_all(fd, text, SECRET_MAX_BYTES + 1, &got);
		if (rc < 0)
			fail_at(L, n, "cannot read %s_file %s: %s", key, shown(path, b), strerror(errno));
		else if (got > SECRET_MAX_BYTES || memchr(text, 0, got)) /* it grew since fstat, or is binary */
			rc = fail_at(L, n, "%s_file %s is not a short text, expected the secret alone", key, shown(path, b));
	}
	close(fd);
	if (rc < 0) {
		free(text);
		return -1;
	}
	while (got > 0 && (text[got - 1] == '\n' || text[got - 1] == '\r'))
		got--; /* editors add a final newline; it is not part of the secret */
	if (got == 0) {
		free(text);
		return fail_at(L, n, "%s_file %s is empty, expected the secret in it", key, shown(path, b));
	}
	*out = xstrndup(text, got);
	free(text);
	return 0;
}

/* A list secret from a file: one item per line, blank lines skipped. */
static void split_lines(char *text, struct cfg_value *v)
{
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		size_t n = strlen(line);
		if (n && line[n - 1] == '\r')
			line[n - 1] = '\0';
		if (*line)
			cfg_value_push(v, line);
	}
}

static int load_secret_file(struct loader *L, const struct cfg_schema_section *sc, const struct cfg_key *k,
			    struct cfg_value *v, const yaml_node_t *vn)
{
	const char *path = scalar(vn);
	if (!path || is_null(vn) || !*path)
		return fail_at(L, vn, "'%s_file' in section '%s' is %s, expected a file name", k->key, sc->name,
			       kind(vn));
	char *text = NULL;
	if (read_secret(L, vn, k->key, path, &text) < 0)
		return -1;
	cfg_value_clear(v);
	v->set = true;
	v->line = (int)vn->start_mark.line + 1;
	v->col = (int)vn->start_mark.column + 1;
	if (k->type == CFG_STRLIST) {
		split_lines(text, v);
		free(text);
	} else {
		v->s = text;
	}
	return 0;
}

/* ---- values ---- */

static int wrong_kind(struct loader *L, const struct cfg_schema_section *sc, const struct cfg_key *k,
		      const yaml_node_t *n)
{
	char want[300];
	cfg_expected(k, want, sizeof want);
	return fail_at(L, n, "'%s' in section '%s' is %s, %s", k->key, sc->name, kind(n), want);
}

static int count_item(struct loader *L, const struct cfg_schema_section *sc, const struct cfg_key *k,
		      const yaml_node_t *n)
{
	if (++L->items <= CFG_MAX_ITEMS)
		return 0;
	return fail_at(L, n, "too many items in '%s' of section '%s', expected at most %d", k->key, sc->name,
		       CFG_MAX_ITEMS);
}

/* Names in fallback chains and the like must be protocols, or a typo would
 * silently leave a message without its fallback. */
static int check_protocol(struct loader *L, const struct cfg_schema_section *sc, const struct cfg_key *k,
			  const yaml_node_t *n, const char *name)
{
	const char *names[64];
	size_t nn = 0;
	char list[512] = "", b[SHOWN_MAX + 4];
	for (size_t i = 0; i < cfg_schema_len && nn < 64; i++) {
		if (!cfg_schema[i].worker)
			continue;
		if (strcmp(cfg_schema[i].name, name) == 0)
			return 0;
		if (cfg_section_hidden(&cfg_schema[i]))
			continue;
		names[nn++] = cfg_schema[i].name;
		snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", nn > 1 ? ", " : "", cfg_schema[i].name);
	}
	const char *near = cfg_nearest(name, names, nn);
	if (near)
		return fail_at(L, n, "unknown protocol '%s' in '%s' of section '%s' (did you mean '%s'?)", shown(name, b),
			       k->key, sc->name, near);
	return fail_at(L, n, "unknown protocol '%s' in '%s' of section '%s', expected one of: %s", shown(name, b),
		       k->key, sc->name, list);
}

/* rsync.options: an option the rsync worker refuses (config/rsync_options.c)
 * is a warning at the item that holds it, with why, not an error: the
 * reference design's own file asks for --delete and loads as written. The
 * rsync worker refuses to start with it (exit 2, marked failed, the reason in
 * `ucgwctl workers`), and `ucgwd -n` and every start and reload say so. */
static int check_rsync_options(struct loader *L, const struct cfg_schema_section *sc, const struct cfg_key *k,
			       const yaml_node_t *n, const struct cfg_value *v)
{
	size_t at;
	char opt[SHOWN_MAX + 4], in[SHOWN_MAX + 20] = "", b[SHOWN_MAX + 4];
	const char *why = cfg_rsync_refused(v->items, v->nitems, &at, opt, sizeof opt);
	if (!why)
		return 0;
	if (strcmp(opt, v->items[at]) != 0)
		snprintf(in, sizeof in, " (in '%s')", shown(v->items[at], b));
	const yaml_node_t *it = node(L, n->data.sequence.items.start[at]);
	struct config *c = L->cfg;
	c->warnings = xrealloc(c->warnings, (c->nwarnings + 1) * sizeof *c->warnings);
	c->warnings[c->nwarnings++] = xasprintf("%s:%zu:%zu: refused option '%s'%s in '%s' of section '%s': %s; "
						"the %s worker will not start until it is removed",
						L->path, (size_t)it->start_mark.line + 1, (size_t)it->start_mark.column + 1,
						opt, in, k->key, sc->name, why, sc->name);
	return 0;
}

static int load_scalar(struct loader *L, const struct cfg_schema_section *sc, const struct cfg_key *k,
		       const yaml_node_t *n, struct cfg_value *v)
{
	const char *s = scalar(n);
	if (!s)
		return wrong_kind(L, sc, k, n);
	char why[300], b[SHOWN_MAX + 4];
	if (cfg_parse_scalar(k, s, v, why, sizeof why))
		return 0;
	if (k->flags & CFG_SECRET) /* never repeat a secret, even a malformed one */
		return fail_at(L, n, "bad value for '%s' in section '%s', %s", k->key, sc->name, why);
	return fail_at(L, n, "bad value '%s' for '%s' in section '%s', %s", shown(s, b), k->key, sc->name, why);
}

/* A list: the key's whole value, or (entry != NULL) one entry of a LISTMAP. */
static int load_list(struct loader *L, const struct cfg_schema_section *sc, const struct cfg_key *k,
		     const char *entry, const yaml_node_t *n, struct cfg_value *v)
{
	if ((k->flags & CFG_SERVERS) && !entry && scalar(n)) {
		if (!*scalar(n))
			return 0; /* "" names no server: "empty value for required key" */
		cfg_value_push(v, scalar(n)); /* one server, written as it always was */
		return 0;
	}
	if (n->type != YAML_SEQUENCE_NODE && !entry)
		return wrong_kind(L, sc, k, n);
	if (n->type != YAML_SEQUENCE_NODE)
		return fail_at(L, n, "'%s' in '%s' of section '%s' is %s, expected a list of %s", entry, k->key, sc->name,
			       kind(n), k->flags & CFG_PROTOCOLS ? "protocol names" : "strings");
	for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
		const yaml_node_t *e = node(L, *it);
		const char *s = scalar(e);
		if (!s || is_null(e) || !*s)
			return fail_at(L, e, "%s in '%s' of section '%s', expected a list of non-empty strings",
				       s ? "an empty item" : e->type == YAML_SEQUENCE_NODE ? "a list as an item" : "a mapping as an item",
				       k->key, sc->name);
		if (count_item(L, sc, k, e) < 0)
			return -1;
		if ((k->flags & CFG_PROTOCOLS) && check_protocol(L, sc, k, e, s) < 0)
			return -1;
		cfg_value_push(v, s);
	}
	if ((k->flags & CFG_SERVERS) && v->nitems > CFG_SERVERS_MAX)
		return fail_at(L, n, "%zu servers in '%s' of section '%s', expected at most %d", v->nitems, k->key, sc->name,
			       CFG_SERVERS_MAX);
	if ((k->flags & CFG_RSYNC_OPTIONS) && !entry)
		return check_rsync_options(L, sc, k, n, v);
	return 0;
}

/* The name of one entry of a mapping value (headers, chains). */
static const char *entry_name(struct loader *L, const struct cfg_schema_section *sc, const struct cfg_key *k,
			      const yaml_node_t *kn, const struct cfg_value *v)
{
	char b[SHOWN_MAX + 4];
	const char *name = scalar(kn);
	if (!name || is_null(kn) || !*name) {
		fail_at(L, kn, "%s as a name in '%s' of section '%s', expected a non-empty name", kind(kn), k->key,
			sc->name);
		return NULL;
	}
	if (cfg_value_has_name(v, name)) {
		fail_at(L, kn, "duplicate name '%s' in '%s' of section '%s', expected each name once", shown(name, b),
			k->key, sc->name);
		return NULL;
	}
	if (count_item(L, sc, k, kn) < 0)
		return NULL;
	if ((k->flags & CFG_PROTOCOLS) && check_protocol(L, sc, k, kn, name) < 0)
		return NULL;
	return name;
}

static int load_map(struct loader *L, const struct cfg_schema_section *sc, const struct cfg_key *k,
		    const yaml_node_t *n, struct cfg_value *v)
{
	if (n->type != YAML_MAPPING_NODE)
		return wrong_kind(L, sc, k, n);
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
		const yaml_node_t *kn = node(L, p->key), *vn = node(L, p->value);
		const char *name = entry_name(L, sc, k, kn, v);
		if (!name)
			return -1;
		if (k->type == CFG_LISTMAP) {
			struct cfg_value *list = cfg_value_push_list(v, name);
			if (!is_null(vn) && load_list(L, sc, k, name, vn, list) < 0) /* `sftp:` alone: no fallback */
				return -1;
			continue;
		}
		const char *val = is_null(vn) ? "" : scalar(vn);
		if (!val)
			return fail_at(L, vn, "'%s' in '%s' of section '%s' is %s, expected a string", name, k->key, sc->name,
				       kind(vn));
		cfg_value_push_pair(v, name, val);
	}
	return 0;
}

static int load_value(struct loader *L, const struct cfg_schema_section *sc, const struct cfg_key *k,
		      const yaml_node_t *n, struct cfg_value *v)
{
	if (is_null(n)) {
		if (!v->set) { /* no default: remember where, for "empty value for required key" */
			v->line = (int)n->start_mark.line + 1;
			v->col = (int)n->start_mark.column + 1;
		}
		return 0;
	}
	cfg_value_clear(v);
	v->set = true;
	v->line = (int)n->start_mark.line + 1;
	v->col = (int)n->start_mark.column + 1;
	L->items = 0;
	switch (k->type) {
	case CFG_STRLIST: return load_list(L, sc, k, NULL, n, v);
	case CFG_STRMAP:
	case CFG_LISTMAP: return load_map(L, sc, k, n, v);
	default: return load_scalar(L, sc, k, n, v);
	}
}

/* ---- keys and sections ---- */

/* The schema index of a key as written: itself, or a secret's KEY_file form. */
static int resolve_key(const struct cfg_schema_section *sc, const char *key, bool *from_file)
{
	*from_file = false;
	int idx = cfg_key_index(sc, key);
	size_t n = strlen(key);
	if (idx >= 0 || n <= 5 || strcmp(key + n - 5, "_file") != 0)
		return idx;
	char *base = xstrndup(key, n - 5);
	idx = cfg_key_index(sc, base);
	free(base);
	if (idx < 0 || !(sc->keys[idx].flags & CFG_SECRET))
		return -1;
	*from_file = true;
	return idx;
}

/* A section other than sc that has this exact key, for "it belongs in ...". */
static const char *section_with_key(const struct cfg_schema_section *sc, const char *key)
{
	for (size_t i = 0; i < cfg_schema_len; i++)
		if (&cfg_schema[i] != sc && cfg_key_index(&cfg_schema[i], key) >= 0)
			return cfg_schema[i].name;
	return NULL;
}

static int unknown_key(struct loader *L, const struct cfg_schema_section *sc, const yaml_node_t *kn, const char *key)
{
	char b[SHOWN_MAX + 4];
	size_t n = strlen(key);
	if (n > 5 && strcmp(key + n - 5, "_file") == 0) {
		char *base = xstrndup(key, n - 5);
		bool known = cfg_key_index(sc, base) >= 0;
		free(base);
		if (known)
			return fail_at(L, kn, "unknown key '%s' in section '%s' (only secrets can be given as KEY_file)",
				       shown(key, b), sc->name);
	}
	/* the keys, and the KEY_file forms of the secrets, as candidates */
	const char **names = xcalloc(2 * sc->nkeys + 1, sizeof *names);
	char **forms = xcalloc(sc->nkeys + 1, sizeof *forms);
	size_t nn = 0, nf = 0;
	for (size_t i = 0; i < sc->nkeys; i++) {
		names[nn++] = sc->keys[i].key;
		if (sc->keys[i].flags & CFG_SECRET)
			names[nn++] = forms[nf++] = xasprintf("%s_file", sc->keys[i].key);
	}
	const char *near = cfg_nearest(key, names, nn), *elsewhere = section_with_key(sc, key);
	if (near)
		fail_at(L, kn, "unknown key '%s' in section '%s' (did you mean '%s'?)", shown(key, b), sc->name, near);
	else if (elsewhere)
		fail_at(L, kn, "unknown key '%s' in section '%s' (it belongs in section '%s')", shown(key, b), sc->name,
			elsewhere);
	else
		fail_at(L, kn, "unknown key '%s' in section '%s'", shown(key, b), sc->name);
	for (size_t i = 0; i < nf; i++)
		free(forms[i]);
	free(forms);
	free(names);
	return -1;
}

static int duplicate_key(struct loader *L, const struct cfg_schema_section *sc, const yaml_node_t *kn,
			 const yaml_node_t *first)
{
	const char *now = scalar(kn), *before = scalar(first);
	size_t line = first->start_mark.line + 1, col = first->start_mark.column + 1;
	if (strcmp(now, before) == 0)
		return fail_at(L, kn, "duplicate key '%s' in section '%s' (first at %zu:%zu), expected each key once", now,
			       sc->name, line, col);
	return fail_at(L, kn, "both '%s' (at %zu:%zu) and '%s' given in section '%s', expected only one of them", before,
		       line, col, now, sc->name);
}

static int load_entry(struct loader *L, struct cfg_section *sec, const yaml_node_t **seen, const yaml_node_t *kn,
		      const yaml_node_t *vn)
{
	const struct cfg_schema_section *sc = sec->schema;
	const char *key = scalar(kn);
	if (!key || is_null(kn))
		return fail_at(L, kn, "%s as a key in section '%s', expected a key name", kind(kn), sc->name);
	bool from_file;
	int idx = resolve_key(sc, key, &from_file);
	if (idx < 0)
		return unknown_key(L, sc, kn, key);
	if (seen[idx])
		return duplicate_key(L, sc, kn, seen[idx]);
	seen[idx] = kn;
	if (from_file)
		return load_secret_file(L, sc, &sc->keys[idx], &sec->values[idx], vn);
	return load_value(L, sc, &sc->keys[idx], vn, &sec->values[idx]);
}

static int load_section(struct loader *L, struct cfg_section *sec, const yaml_node_t *n)
{
	if (is_null(n))
		return 0; /* `mqtt:` alone: every key at its default */
	if (n->type != YAML_MAPPING_NODE)
		return fail_at(L, n, "section '%s' is %s, expected a mapping of keys to values", sec->schema->name, kind(n));
	const yaml_node_t **seen = xcalloc(sec->schema->nkeys + 1, sizeof *seen); /* where each key was first given */
	int rc = 0;
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; rc == 0 && p < n->data.mapping.pairs.top; p++)
		rc = load_entry(L, sec, seen, node(L, p->key), node(L, p->value));
	free(seen);
	return rc;
}

static int unknown_section(struct loader *L, const yaml_node_t *kn, const char *name)
{
	const char *names[128];
	char list[1024] = "", b[SHOWN_MAX + 4];
	size_t nn = 0;
	for (size_t i = 0; i < cfg_schema_len && nn < 128; i++) {
		if (cfg_section_hidden(&cfg_schema[i]))
			continue;
		names[nn++] = cfg_schema[i].name;
		snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", nn > 1 ? ", " : "", cfg_schema[i].name);
	}
	const char *near = cfg_nearest(name, names, nn);
	if (near)
		return fail_at(L, kn, "unknown section '%s' (did you mean '%s'?)", shown(name, b), near);
	return fail_at(L, kn, "unknown section '%s', expected one of: %s", shown(name, b), list);
}

static int load_top_entry(struct loader *L, struct config *cfg, const yaml_node_t *kn, const yaml_node_t *vn)
{
	const char *name = scalar(kn);
	if (!name || is_null(kn))
		return fail_at(L, kn, "%s as a section name, expected a name such as gateway", kind(kn));
	const struct cfg_schema_section *sc = cfg_schema_find(name);
	if (!sc)
		return unknown_section(L, kn, name);
	struct cfg_section *sec = &cfg->sections[sc - cfg_schema];
	if (sec->present)
		return fail_at(L, kn, "duplicate section '%s' (first at %d:%d), expected each section once", name, sec->line,
			       sec->col);
	sec->present = true;
	sec->line = (int)kn->start_mark.line + 1;
	sec->col = (int)kn->start_mark.column + 1;
	return load_section(L, sec, vn);
}

/* A section without an `enabled` key is on whenever it is present. */
static bool section_on(const struct cfg_section *sec)
{
	int idx = cfg_key_index(sec->schema, "enabled");
	return sec->present && (idx < 0 || sec->values[idx].b);
}

/* Required keys are checked last: `enabled: false` may come after them. */
static int check_required(struct loader *L, const struct config *cfg)
{
	for (size_t i = 0; i < cfg_schema_len; i++) {
		const struct cfg_section *sec = &cfg->sections[i];
		if (!section_on(sec))
			continue;
		for (size_t k = 0; k < sec->schema->nkeys; k++) {
			const struct cfg_key *key = &sec->schema->keys[k];
			const struct cfg_value *v = &sec->values[k];
			bool empty = v->set && ((key->type == CFG_STR && !*v->s) || (key->type == CFG_STRLIST && !v->nitems));
			if (!(key->flags & CFG_REQUIRED) || (v->set && !empty))
				continue;
			if (v->line)
				return fail_pos(L, (size_t)v->line, (size_t)v->col,
						"empty value for required key '%s' in section '%s', expected %s", key->key,
						sec->schema->name, key->help);
			return fail_pos(L, (size_t)sec->line, (size_t)sec->col,
					"missing required key '%s' in section '%s', expected %s: <%s>%s", key->key,
					sec->schema->name, key->key, key->help,
					cfg_key_index(sec->schema, "enabled") >= 0 ? " (or enabled: false)" : "");
		}
	}
	return 0;
}

/* Every message of gateway.max_message_bytes must fit in a frame, on the control
 * socket and to a worker: with an encryption key configured, as the base64 of
 * nonce | tag | ciphertext in quotes (router.c), plus the frame's other fields. */
static int check_frame_limit(struct loader *L, const struct config *cfg)
{
	const struct cfg_section *gw = config_section(cfg, "gateway");
	const struct cfg_value *frame = cfg_get(gw, "max_frame_bytes"), *msg = cfg_get(gw, "max_message_bytes");
	uint64_t n = (uint64_t)msg->i;
	bool encrypted = config_str(cfg, "security", "encryption_key_file") != NULL;
	uint64_t payload = encrypted ? b64_encoded_len((size_t)n + CRYPTO_OVERHEAD) + 2 : n;
	uint64_t need = payload + FRAME_ENVELOPE_MAX;
	if ((uint64_t)frame->i >= need)
		return 0;
	const struct cfg_value *at = frame->line ? frame : msg;
	size_t line = (size_t)(at->line ? at->line : gw->line ? gw->line : 1);
	size_t col = (size_t)(at->line ? at->col : gw->line ? gw->col : 1);
	return fail_pos(L, line, col,
			"gateway.max_frame_bytes (%lld) is too small for gateway.max_message_bytes (%lld): "
			"a message of that size needs frames of up to %llu bytes (%s%d for the rest of the frame); "
			"raise max_frame_bytes or lower max_message_bytes",
			(long long)frame->i, (long long)msg->i, (unsigned long long)need,
			encrypted ? "as base64 once encrypted with security.encryption_key_file, plus " : "plus ",
			FRAME_ENVELOPE_MAX);
}

/* What a protocol's row checks beyond each key's range (workers/protocols.c):
 * said at load, not at the first message. */
static int check_protocol_rows(struct loader *L, const struct config *cfg)
{
	for (size_t i = 0; i < protocol_count(); i++) {
		const struct protocol *p = protocol_at(i);
		const struct cfg_section *sec = config_section(cfg, p->name);
		char why[300];
		const char *key = p->check && section_on(sec) ? p->check(sec, why, sizeof why) : NULL;
		if (key) {
			const struct cfg_value *v = cfg_get(sec, key);
			return fail_pos(L, (size_t)(v && v->line ? v->line : 1), (size_t)(v && v->line ? v->col : 1),
					"%s.%s: %s", p->name, key, why);
		}
	}
	return 0;
}

static int load_root(struct loader *L, struct config *cfg)
{
	const yaml_node_t *root = yaml_document_get_root_node(&L->doc);
	if (!root || is_null(root))
		return fail_pos(L, 1, 1, "the file is empty, expected a mapping of sections (gateway:, mqtt:, ...)");
	if (root->type != YAML_MAPPING_NODE)
		return fail_at(L, root, "the top level is %s, expected a mapping of sections (gateway:, mqtt:, ...)",
			       kind(root));
	if (check_no_nul(L) < 0)
		return -1;
	for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++)
		if (load_top_entry(L, cfg, node(L, p->key), node(L, p->value)) < 0)
			return -1;
	if (check_required(L, cfg) < 0 || check_protocol_rows(L, cfg) < 0)
		return -1;
	return check_frame_limit(L, cfg);
}

/* ---- the configuration ---- */

static struct config *config_new(const char *path)
{
	struct config *cfg = xcalloc(1, sizeof *cfg);
	cfg->path = xstrdup(path);
	cfg->sections = xcalloc(cfg_schema_len, sizeof *cfg->sections);
	for (size_t i = 0; i < cfg_schema_len; i++)
		cfg_section_defaults(&cfg->sections[i], &cfg_schema[i]);
	return cfg;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; cfg->sections && i < cfg_schema_len; i++)
		cfg_section_free(&cfg->sections[i]);
	free(cfg->sections);
	for (size_t i = 0; i < cfg->nwarnings; i++)
		free(cfg->warnings[i]);
	free(cfg->warnings);
	free(cfg->path);
	free(cfg);
}

static char *dir_of(const char *path)
{
	char *copy = xstrdup(path);
	char *dir = xstrdup(dirname(copy));
	free(copy);
	return dir;
}

int config_load(const char *path, struct config **out, char *err, size_t errlen)
{
	struct loader L = { .path = path, .err = err, .errlen = errlen };
	if (errlen)
		err[0] = '\0';
	unsigned char *buf;
	size_t len;
	if (read_config_file(&L, &buf, &len) < 0) {
		one_line(err, errlen);
		return -1;
	}
	L.dir = dir_of(path);
	struct config *cfg = config_new(path);
	L.cfg = cfg;
	int rc = parse_yaml(&L, buf, len);
	if (rc == 0)
		rc = load_root(&L, cfg);
	if (rc == 0)
		rc = cfg_check_files(cfg, path, err, errlen);
	if (L.have_doc)
		yaml_document_delete(&L.doc);
	free(buf);
	free(L.dir);
	if (rc < 0) {
		config_free(cfg);
		one_line(err, errlen);
		return -1;
	}
	for (size_t i = 0; i < cfg_schema_len; i++)
		if (cfg_schema[i].worker)
			cfg_section_pack(&cfg->sections[i]);
	*out = cfg;
	return 0;
}

/* ---- accessors: a wrong name or type is a bug in the caller, not in the file ---- */

const struct cfg_section *config_section(const struct config *cfg, const char *name)
{
	const struct cfg_schema_section *sc = cfg_schema_find(name);
	if (!sc)
		panic("no configuration section '%s' in the schema", name);
	return &cfg->sections[sc - cfg_schema];
}

bool config_protocol_enabled(const struct config *cfg, const char *name)
{
	const struct cfg_section *sec = config_section(cfg, name);
	return sec->schema->worker && section_on(sec);
}

static const struct cfg_value *lookup(const struct cfg_section *s, const char *key, enum cfg_type t1,
				      enum cfg_type t2, bool any)
{
	int idx = cfg_key_index(s->schema, key);
	if (idx < 0)
		panic("no key '%s' in configuration section '%s'", key, s->schema->name);
	enum cfg_type t = s->schema->keys[idx].type;
	if (!any && t != t1 && t != t2)
		panic("configuration key '%s.%s' read as the wrong type", s->schema->name, key);
	return &s->values[idx];
}

const struct cfg_value *cfg_get(const struct cfg_section *s, const char *key)
{
	return lookup(s, key, CFG_STR, CFG_STR, true);
}

bool cfg_has(const struct cfg_section *s, const char *key) { return cfg_key_index(s->schema, key) >= 0; }

const char *cfg_str(const struct cfg_section *s, const char *key)
{
	const struct cfg_value *v = lookup(s, key, CFG_STR, CFG_ENUM, false);
	return v->set ? v->s : NULL;
}

int64_t cfg_int(const struct cfg_section *s, const char *key) { return lookup(s, key, CFG_INT, CFG_INT, false)->i; }

double cfg_num(const struct cfg_section *s, const char *key) { return lookup(s, key, CFG_NUM, CFG_NUM, false)->d; }

bool cfg_bool(const struct cfg_section *s, const char *key) { return lookup(s, key, CFG_BOOL, CFG_BOOL, false)->b; }

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

char *const *cfg_servers(const struct cfg_section *s, const char *key, size_t *n)
{
	const struct cfg_value *v = lookup(s, key, CFG_STRLIST, CFG_STRLIST, false);
	*n = v->set ? v->nitems : 0;
	return v->items;
}

const char *config_first_server(const struct config *c, const char *sec, const char *key)
{
	size_t n;
	char *const *items = cfg_servers(config_section(c, sec), key, &n);
	return n ? items[0] : NULL;
}
