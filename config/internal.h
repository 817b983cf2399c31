/* Shared by the files of config/ only: schema look-ups, value building, and the
 * msgpack form. Not part of the API in config.h. */
#ifndef UCGW_CONFIG_INTERNAL_H
#define UCGW_CONFIG_INTERNAL_H

#include "config/config.h"

#define CFG_MAX_ITEMS 10000 /* strings in one list or map value, so a file cannot ask for millions */


const struct cfg_schema_section *cfg_schema_find(const char *name);
int cfg_key_index(const struct cfg_schema_section *sc, const char *key); /* -1: none */
bool cfg_is_scalar_type(enum cfg_type t);

/* Values */
void cfg_value_clear(struct cfg_value *v);
void cfg_value_push(struct cfg_value *v, const char *item);                   /* STRLIST */
void cfg_value_push_pair(struct cfg_value *v, const char *name, const char *val); /* STRMAP */
struct cfg_value *cfg_value_push_list(struct cfg_value *v, const char *name); /* LISTMAP: the new list */
bool cfg_value_has_name(const struct cfg_value *v, const char *name);
size_t cfg_value_count(const struct cfg_value *v); /* strings held, for CFG_MAX_ITEMS */

/* Parse scalar text for a scalar key into v (STR, INT, NUM, BOOL, ENUM). On error
 * returns false and writes "expected ..." to why. */
bool cfg_parse_scalar(const struct cfg_key *k, const char *text, struct cfg_value *v, char *why, size_t whylen);
/* A value within the key's rules (range, choices, octal): for values that did not
 * come from text, i.e. unpacked ones. */
bool cfg_value_valid(const struct cfg_key *k, const struct cfg_value *v);
/* What a value of this key must look like: "expected an integer from 0 to 2". */
void cfg_expected(const struct cfg_key *k, char *buf, size_t len);
/* "a|b|c" -> "a, b, c" */
void cfg_choices_text(const char *choices, char *buf, size_t len);

/* Sections: every key at its default; freeing is cfg_section_free. */
void cfg_section_defaults(struct cfg_section *sec, const struct cfg_schema_section *sc);
void cfg_section_pack(struct cfg_section *sec);

/* The files, directories and addresses the configuration names (files.c):
 * -1 with "FILE:LINE:COL: ..." in err; a file not there yet adds a warning. */
int cfg_check_files(struct config *cfg, const char *path, char *err, size_t errlen);

/* The known name nearest to word, when it is close enough to be a typo; else NULL. */
const char *cfg_nearest(const char *word, const char *const *names, size_t n);

#endif
