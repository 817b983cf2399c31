/* Typed values: parsing scalar text, building lists and maps, the defaults from
 * the schema's text, and the typo suggestions. Used by the YAML loader and by
 * the worker-side unpacker alike, so both apply the same rules. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "config/internal.h"

/* ---- schema look-ups ---- */

/* The supervisor asks by name several times per message (is the protocol
 * enabled, its size limit, its ttl), and a name is found by a scan with
 * strcmp over the schema. A small cache per thread, keyed by where the name
 * is (callers pass string literals) and checked by its text, makes a repeated
 * question one comparison; a name at a reused address with other text misses
 * and is looked up again, so a stale answer is never given. */
#define LOOKUP_BITS 7
#define LOOKUP_SLOTS (1u << LOOKUP_BITS)
#define LOOKUP_NAME_MAX 40

struct lookup_slot {
	const void *scope; /* the schema section (NULL: the section list) */
	const char *name;
	char text[LOOKUP_NAME_MAX];
	int index;         /* -1: not there */
};

static _Thread_local struct lookup_slot lookup_cache[LOOKUP_SLOTS];

static struct lookup_slot *lookup_slot(const void *scope, const char *name)
{
	/* Fibonacci hashing: the top bits of the product depend on every bit of
	 * both addresses (the hot names of a message must not share slots). */
	uint64_t h = ((uint64_t)(uintptr_t)name ^ ((uint64_t)(uintptr_t)scope << 1)) * 0x9E3779B97F4A7C15u;
	return &lookup_cache[h >> (64 - LOOKUP_BITS)];
}

static int scan_sections(const void *unused, const char *name)
{
	for (size_t i = 0; i < cfg_schema_len; i++)
		if (strcmp(cfg_schema[i].name, name) == 0)
			return (int)i;
	return -1;
}

static int scan_keys(const void *section, const char *key)
{
	const struct cfg_schema_section *sc = section;
	for (size_t i = 0; i < sc->nkeys; i++)
		if (strcmp(sc->keys[i].key, key) == 0)
			return (int)i;
	return -1;
}

/* scan(scope, name), answered from the cache when the same name was asked before */
static int cached_index(const void *scope, const char *name, int (*scan)(const void *, const char *))
{
	struct lookup_slot *s = lookup_slot(scope, name);
	if (s->name == name && s->scope == scope && strcmp(s->text, name) == 0)
		return s->index;
	int index = scan(scope, name);
	size_t n = strlen(name);
	if (n < LOOKUP_NAME_MAX) {
		*s = (struct lookup_slot){ .scope = scope, .name = name, .index = index };
		memcpy(s->text, name, n + 1);
	}
	return index;
}

const struct cfg_schema_section *cfg_schema_find(const char *name)
{
	int i = cached_index(NULL, name, scan_sections);
	return i < 0 ? NULL : &cfg_schema[i];
}

int cfg_key_index(const struct cfg_schema_section *sc, const char *key)
{
	return cached_index(sc, key, scan_keys);
}

bool cfg_is_scalar_type(enum cfg_type t)
{
	return t == CFG_STR || t == CFG_INT || t == CFG_NUM || t == CFG_BOOL || t == CFG_ENUM;
}

/* ---- building values ---- */

void cfg_value_clear(struct cfg_value *v)
{
	free(v->s);
	for (size_t i = 0; i < v->nitems; i++) {
		free(v->items[i]);
		if (v->vals)
			free(v->vals[i]);
		if (v->sub)
			cfg_value_clear(&v->sub[i]);
	}
	free(v->items);
	free(v->vals);
	free(v->sub);
	memset(v, 0, sizeof *v);
}

/* Grow items (and vals/sub when in use) by one; returns the new index. */
static size_t grow(struct cfg_value *v, bool with_vals, bool with_sub)
{
	size_t n = v->nitems + 1;
	v->items = xrealloc(v->items, n * sizeof *v->items);
	if (with_vals)
		v->vals = xrealloc(v->vals, n * sizeof *v->vals);
	if (with_sub) {
		v->sub = xrealloc(v->sub, n * sizeof *v->sub);
		memset(&v->sub[n - 1], 0, sizeof *v->sub);
	}
	v->nitems = n;
	return n - 1;
}

void cfg_value_push(struct cfg_value *v, const char *item)
{
	size_t i = grow(v, false, false);
	v->items[i] = xstrdup(item);
}

void cfg_value_push_pair(struct cfg_value *v, const char *name, const char *val)
{
	size_t i = grow(v, true, false);
	v->items[i] = xstrdup(name);
	v->vals[i] = xstrdup(val);
}

struct cfg_value *cfg_value_push_list(struct cfg_value *v, const char *name)
{
	size_t i = grow(v, false, true);
	v->items[i] = xstrdup(name);
	v->sub[i].set = true; /* an empty list is still a given list */
	return &v->sub[i];
}

bool cfg_value_has_name(const struct cfg_value *v, const char *name)
{
	for (size_t i = 0; i < v->nitems; i++)
		if (strcmp(v->items[i], name) == 0)
			return true;
	return false;
}

size_t cfg_value_count(const struct cfg_value *v)
{
	size_t n = v->nitems;
	for (size_t i = 0; v->sub && i < v->nitems; i++)
		n += v->sub[i].nitems;
	return n;
}

/* ---- scalars ---- */

static bool bounded(const struct cfg_key *k) { return k->min != 0 || k->max != 0; }

/* Plain decimal only: no leading blanks, no 0x, no 1_000, so what the file says
 * is what the number is. */
static bool parse_int(const char *s, int64_t *out)
{
	const char *d = (*s == '-' || *s == '+') ? s + 1 : s;
	if (!isdigit((unsigned char)*d))
		return false;
	char *end;
	errno = 0;
	long long x = strtoll(s, &end, 10);
	if (*end || errno)
		return false;
	*out = x;
	return true;
}

static bool parse_num(const char *s, double *out)
{
	if (!*s || isspace((unsigned char)*s) || strpbrk(s, "xX"))
		return false; /* no blanks, no hex floats */
	char *end;
	errno = 0;
	double x = strtod(s, &end);
	if (*end || errno || !isfinite(x))
		return false;
	*out = x;
	return true;
}

static bool parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "true", "yes", "on" }, *const no[] = { "false", "no", "off" };
	for (size_t i = 0; i < 3; i++) {
		if (strcasecmp(s, yes[i]) == 0)
			return *out = true, true;
		if (strcasecmp(s, no[i]) == 0)
			return *out = false, true;
	}
	return false;
}

static bool enum_has(const char *choices, const char *s)
{
	size_t n = strlen(s);
	for (const char *p = choices; p;) {
		const char *bar = strchr(p, '|');
		size_t len = bar ? (size_t)(bar - p) : strlen(p);
		if (len == n && strncmp(p, s, n) == 0)
			return true;
		p = bar ? bar + 1 : NULL;
	}
	return false;
}

/* A file mode for chmod: 1 to 4 octal digits, no file-type bits. */
static bool octal_ok(const char *s)
{
	size_t n = strspn(s, "01234567");
	return n >= 1 && n <= 4 && s[n] == '\0';
}

void cfg_choices_text(const char *choices, char *buf, size_t len)
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

static bool int_in_range(const struct cfg_key *k, int64_t x)
{
	return !bounded(k) || ((double)x >= k->min && (double)x <= k->max);
}

static bool num_in_range(const struct cfg_key *k, double x)
{
	return isfinite(x) && (!bounded(k) || (x >= k->min && x <= k->max));
}

void cfg_expected(const struct cfg_key *k, char *buf, size_t len)
{
	const char *what = k->type == CFG_NUM ? "a number" : "an integer";
	char list[256];
	switch (k->type) {
	case CFG_STR:
		snprintf(buf, len, "expected %s", k->flags & CFG_OCTAL ? "an octal file mode such as 0660" : "a string");
		break;
	case CFG_INT:
	case CFG_NUM:
		if (!bounded(k))
			snprintf(buf, len, "expected %s", what);
		else if (k->max >= CFG_NO_MAX)
			snprintf(buf, len, "expected %s of at least %g", what, k->min);
		else
			snprintf(buf, len, "expected %s from %.15g to %.15g", what, k->min, k->max);
		break;
	case CFG_BOOL: snprintf(buf, len, "expected true or false"); break;
	case CFG_ENUM:
		cfg_choices_text(k->choices, list, sizeof list);
		snprintf(buf, len, "expected one of: %s", list);
		break;
	case CFG_STRLIST:
		if (k->flags & CFG_SERVERS)
			snprintf(buf, len, "expected a server, or a list of servers");
		else
			snprintf(buf, len, "expected a list of %s", k->flags & CFG_PROTOCOLS ? "protocol names" : "strings");
		break;
	case CFG_STRMAP: snprintf(buf, len, "expected a mapping of names to strings"); break;
	case CFG_LISTMAP:
		snprintf(buf, len, "expected a mapping of %s", k->flags & CFG_PROTOCOLS ? "protocol names to lists of protocol names"
										: "names to lists of strings");
		break;
	}
}

static bool parse_str(const struct cfg_key *k, const char *s, struct cfg_value *v)
{
	if ((k->flags & CFG_OCTAL) && !octal_ok(s))
		return false;
	v->s = xstrdup(s);
	return true;
}

static bool parse_typed(const struct cfg_key *k, const char *s, struct cfg_value *v)
{
	switch (k->type) {
	case CFG_STR: return parse_str(k, s, v);
	case CFG_INT: return parse_int(s, &v->i) && int_in_range(k, v->i);
	case CFG_NUM: return parse_num(s, &v->d) && num_in_range(k, v->d);
	case CFG_BOOL: return parse_bool(s, &v->b);
	case CFG_ENUM: return enum_has(k->choices, s) && (v->s = xstrdup(s)) != NULL;
	default: return false;
	}
}

bool cfg_parse_scalar(const struct cfg_key *k, const char *s, struct cfg_value *v, char *why, size_t wl)
{
	if (parse_typed(k, s, v))
		return true;
	cfg_expected(k, why, wl);
	return false;
}

bool cfg_value_valid(const struct cfg_key *k, const struct cfg_value *v)
{
	if (!v->set)
		return true;
	switch (k->type) {
	case CFG_STR: return !(k->flags & CFG_OCTAL) || octal_ok(v->s);
	case CFG_INT: return int_in_range(k, v->i);
	case CFG_NUM: return num_in_range(k, v->d);
	case CFG_ENUM: return enum_has(k->choices, v->s);
	default: return true;
	}
}

/* ---- defaults ---- */

/* The next field of *p up to sep (or the end), copied; *p moves past it. */
static char *next_field(const char **p, char sep)
{
	const char *end = strchr(*p, sep);
	size_t n = end ? (size_t)(end - *p) : strlen(*p);
	char *f = xstrndup(*p, n);
	*p = end ? end + 1 : NULL;
	return f;
}

static void default_list(struct cfg_value *v, const char *text)
{
	for (const char *p = *text ? text : NULL; p;) {
		char *item = next_field(&p, ',');
		cfg_value_push(v, item);
		free(item);
	}
}

/* "name=rest;name2=rest2": name and rest for each entry. */
static void default_map(const struct cfg_key *k, struct cfg_value *v)
{
	for (const char *p = *k->def ? k->def : NULL; p;) {
		char *entry = next_field(&p, ';');
		char *eq = strchr(entry, '=');
		if (!eq || eq == entry)
			panic("schema: default of '%s' has an entry without name=: '%s'", k->key, entry);
		*eq = '\0';
		if (k->type == CFG_STRMAP)
			cfg_value_push_pair(v, entry, eq + 1);
		else
			default_list(cfg_value_push_list(v, entry), eq + 1);
		free(entry);
	}
}

static void default_value(const struct cfg_key *k, struct cfg_value *v)
{
	char why[160];
	memset(v, 0, sizeof *v);
	if (!k->def)
		return;
	v->set = true;
	if (cfg_is_scalar_type(k->type)) {
		if (!cfg_parse_scalar(k, k->def, v, why, sizeof why))
			panic("schema: default '%s' of '%s' is bad: %s", k->def, k->key, why);
	} else if (k->type == CFG_STRLIST) {
		default_list(v, k->def);
	} else {
		default_map(k, v);
	}
}

void cfg_section_defaults(struct cfg_section *sec, const struct cfg_schema_section *sc)
{
	memset(sec, 0, sizeof *sec);
	sec->schema = sc;
	sec->values = xcalloc(sc->nkeys ? sc->nkeys : 1, sizeof *sec->values);
	for (size_t i = 0; i < sc->nkeys; i++)
		default_value(&sc->keys[i], &sec->values[i]);
}

void cfg_section_free(struct cfg_section *sec)
{
	if (!sec)
		return;
	for (size_t i = 0; sec->values && i < sec->schema->nkeys; i++)
		cfg_value_clear(&sec->values[i]);
	free(sec->values);
	free(sec->packed);
	sec->values = NULL;
	sec->packed = NULL;
	sec->packed_len = 0;
}

/* ---- suggestions ---- */

#define WORD_MAX 64 /* longer words are not typos of any key */

/* Optimal string alignment distance (Levenshtein plus swapped neighbours, the
 * commonest typo), ignoring case. */
static size_t typo_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t rows[3][WORD_MAX + 1];
	size_t *before = rows[0], *prev = rows[1], *cur = rows[2]; /* rows i-2, i-1, i */
	for (size_t j = 0; j <= lb; j++)
		prev[j] = j;
	for (size_t i = 1; i <= la; i++) {
		cur[0] = i;
		int ca = tolower((unsigned char)a[i - 1]);
		for (size_t j = 1; j <= lb; j++) {
			int cb = tolower((unsigned char)b[j - 1]);
			size_t best = prev[j - 1] + (ca != cb);
			if (prev[j] + 1 < best)
				best = prev[j] + 1;
			if (cur[j - 1] + 1 < best)
				best = cur[j - 1] + 1;
			bool swapped = i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
				       tolower((unsigned char)a[i - 2]) == cb;
			if (swapped && before[j - 2] + 1 < best)
				best = before[j - 2] + 1;
			cur[j] = best;
		}
		size_t *t = before;
		before = prev;
		prev = cur;
		cur = t;
	}
	return prev[lb];
}

const char *cfg_nearest(const char *word, const char *const *names, size_t n)
{
	size_t lw = strlen(word);
	if (lw == 0 || lw > WORD_MAX)
		return NULL;
	const char *best = NULL;
	size_t bestd = (size_t)-1;
	for (size_t i = 0; i < n; i++) {
		size_t ln = strlen(names[i]);
		if (ln > WORD_MAX)
			continue;
		size_t d = typo_distance(word, names[i]);
		if (d < bestd) {
			bestd = d;
			best = names[i];
		}
	}
	/* Near enough: one edit in three characters of the longer word. */
	size_t longer = best && strlen(best) > lw ? strlen(best) : lw;
	return best && bestd * 3 <= longer ? best : NULL;
}
