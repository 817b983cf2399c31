/* The configuration: YAML (libyaml) validated against one schema table, the same
 * table that generates docs/configuration.md. Each section becomes an array of
 * typed values in schema order; a protocol section is also packed to msgpack, which
 * is what its worker receives over fd 3 and what a reload compares to decide
 * whether that worker must restart. */
#ifndef UCGW_CONFIG_H
#define UCGW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum cfg_type {
	CFG_STR,     /* scalar text */
	CFG_INT,     /* integer within [min, max] */
	CFG_NUM,     /* floating point within [min, max] */
	CFG_BOOL,    /* true/false/yes/no/on/off */
	CFG_ENUM,    /* one of choices "a|b|c" */
	CFG_STRLIST, /* sequence of scalars */
	CFG_STRMAP,  /* mapping of scalar -> scalar */
	CFG_LISTMAP, /* mapping of scalar -> sequence of scalars */
};

#define CFG_REQUIRED 0x1u /* must be given when the section is enabled */
#define CFG_SECRET   0x2u /* never logged nor shown; may be given as KEY_file */
#define CFG_PATH     0x4u /* a file-system path */
#define CFG_OCTAL    0x8u /* STR: a file mode in octal text, e.g. "0660" */
#define CFG_PROTOCOLS 0x10u /* STRLIST/LISTMAP: every name (and map key) is a protocol section */
#define CFG_READ     0x20u /* PATH of a protocol section: ucgwd reads the file at every start of the
			      worker and sends its contents along with the section (worker_file()) */
#define CFG_RSYNC_OPTIONS 0x40u /* STRLIST: rsync options; those cfg_rsync_refused() names are refused */
#define CFG_PICK_META  0x80u  /* ENUM: a protocol that carries metadata (choices and default from the descriptors) */
#define CFG_PICK_FILES 0x100u /* ENUM: a protocol that carries files (likewise) */
#define CFG_NO_MAX 1e15     /* an INT max this large means "no upper limit" (still exact in a double) */
#define CFG_SERVERS  0x200u /* STRLIST: a protocol's servers, written as one string or as a list of them */
#define CFG_SERVERS_MAX 16 /* servers in one such list */

/* Default text (struct cfg_key.def) is parsed like a value written in the file:
 *   scalars  the YAML text itself: "info", "5", "true", "0660"
 *   STRLIST  items separated by ',':                 "-a,--partial"
 *   STRMAP   name=value entries separated by ';':     "Accept=text/plain;X-A=b"
 *   LISTMAP  name=item,item entries separated by ';': "sftp=rsync;rsync=sftp"
 * so default items cannot contain ',', ';' or '='. "" is an empty list or map.
 * A malformed default is a programming error: loading panics. */

struct cfg_key {
	const char *key;
	enum cfg_type type;
	const char *def;     /* default as YAML text (lists "a,b"), NULL: unset */
	double min, max;     /* INT/NUM bounds; both 0: unbounded */
	const char *choices; /* ENUM: "a|b|c" */
	unsigned flags;
	const char *help;    /* one line for docs/configuration.md and --help */
};

struct protocol;
struct cfg_schema_section {
	const char *name;
	const char *worker;  /* protocol sections: worker executable, e.g. "ucgw-mqtt"; else NULL */
	const struct cfg_key *keys;
	size_t nkeys;
	const char *help;
	const struct protocol *protocol; /* protocol sections: the descriptor (workers/protocols.h) */
};

/* The daemon's own sections (config/schema.c) and one per protocol of the
 * descriptor table, put together once at start-up: every section in one array. */
extern const struct cfg_schema_section *cfg_schema;
extern size_t cfg_schema_len;
bool cfg_section_hidden(const struct cfg_schema_section *s); /* a test fixture: in no user-facing list */

struct cfg_value {
	bool set;            /* given in the file or by a default */
	int line, col;       /* where it was given, 0 for a default */
	char *s;             /* STR, ENUM */
	int64_t i;           /* INT */
	double d;            /* NUM */
	bool b;              /* BOOL */
	char **items;        /* STRLIST items; STRMAP/LISTMAP keys */
	size_t nitems;
	char **vals;         /* STRMAP values */
	struct cfg_value *sub; /* LISTMAP: one STRLIST value per key */
};

struct cfg_section {
	const struct cfg_schema_section *schema;
	bool present;            /* the section appeared in the file */
	int line, col;           /* where it starts (0 when absent) */
	struct cfg_value *values; /* schema->nkeys entries, schema order */
	void *packed;            /* msgpack map of every key, schema order (protocol sections) */
	size_t packed_len;
};

struct config {
	char *path;
	struct cfg_section *sections; /* cfg_schema_len entries, schema order */
	char **warnings;              /* "FILE:LINE:COL: ..." for what loads but will not work */
	size_t nwarnings;
};

/* Load and validate. On error returns -1 and writes "FILE:LINE:COL: what was
 * expected" (one line; an unknown key suggests the nearest known one) to err. */
int config_load(const char *path, struct config **out, char *err, size_t errlen);
void config_free(struct config *cfg);

const struct cfg_section *config_section(const struct config *cfg, const char *name);
/* A protocol section is enabled when it is present in the file and does not
 * say `enabled: false`. */
bool config_protocol_enabled(const struct config *cfg, const char *name);

/* Worker side: rebuild a section from the packed bytes its supervisor sent. */
int cfg_section_unpack(const char *name, const void *buf, size_t len,
		       struct cfg_section *out, char *err, size_t errlen);
void cfg_section_free(struct cfg_section *sec);
bool cfg_section_equal(const struct cfg_section *a, const struct cfg_section *b);

/* Typed accessors. The key must be in the schema with that type (a programming
 * error otherwise: panic). */
const char *cfg_str(const struct cfg_section *s, const char *key);  /* NULL when unset */
int64_t cfg_int(const struct cfg_section *s, const char *key);
double cfg_num(const struct cfg_section *s, const char *key);
bool cfg_bool(const struct cfg_section *s, const char *key);
const struct cfg_value *cfg_get(const struct cfg_section *s, const char *key);
/* Does the section's schema have this key at all? */
bool cfg_has(const struct cfg_section *s, const char *key);

/* A CFG_SERVERS key (rest.base_url, mqtt.broker_url): its servers in order
 * and their count; an unset key has none. */
char *const *cfg_servers(const struct cfg_section *s, const char *key, size_t *n);
/* Its first server, NULL when none: what is probed. */
const char *config_first_server(const struct config *c, const char *sec, const char *key);

/* Shorthand: config_section(cfg, sec) then cfg_str/int/bool. */
const char *config_str(const struct config *c, const char *sec, const char *key);
int64_t config_int(const struct config *c, const char *sec, const char *key);
bool config_bool(const struct config *c, const char *sec, const char *key);

/* The first of items (rsync options, one argument each) that the rsync worker
 * refuses: why, with *at its index and opt the option as written ("--delete",
 * or "-n" out of a bundle such as "-azn"); NULL when every item may be used. */
const char *cfg_rsync_refused(char *const *items, size_t nitems, size_t *at, char *opt, size_t optlen);

/* Largest file of a CFG_READ key (a key, a certificate chain, known_hosts):
 * far beyond any of them, and keeps a wrong path (a disk image...) out of the
 * worker's config frame. */
#define CFG_READ_MAX (4u << 20)

struct sockaddr_storage;
/* metrics.listen: HOST:PORT on loopback (127.0.0.0/8, ::1, [::1]) into sa, or
 * with allow_remote (metrics.allow_remote) any IP address (0.0.0.0, [::]...);
 * -1 with err for anything else, naming metrics.allow_remote when that is what
 * is missing. The loader checks it; http.c listens on it. */
int cfg_parse_listen(const char *listen, bool allow_remote, struct sockaddr_storage *sa, char *err, size_t errlen);

/* Markdown reference of every section and key, from the schema (docs generator). */
void config_write_reference(FILE *out);

#endif
