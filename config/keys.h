/* The macros a schema table is written with: one line per key, in config/schema.c
 * (the daemon's own sections) and in workers/protocols.c (each protocol's
 * section, next to its descriptor). */
#ifndef UCGW_CONFIG_KEYS_H
#define UCGW_CONFIG_KEYS_H

#include "config/config.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define BIG CFG_NO_MAX /* byte and message counts: no upper limit */

/*        key   type         default  min  max  choices  flags                   help */
#define STR(k, d, h)         { k, CFG_STR, d, 0, 0, NULL, 0, h }
#define PATH(k, d, h)        { k, CFG_STR, d, 0, 0, NULL, CFG_PATH, h }
/* A file the worker needs (keys, certificates, known_hosts): ucgwd reads it at
 * every start of the worker and hands over its contents, so that a worker
 * running as an unprivileged user in its sandbox needs no access to it. */
#define INFILE(k, d, h)      { k, CFG_STR, d, 0, 0, NULL, CFG_PATH | CFG_READ, h }
#define REQUIRED(k, h)       { k, CFG_STR, NULL, 0, 0, NULL, CFG_REQUIRED, h }
#define SECRET(k, h)         { k, CFG_STR, NULL, 0, 0, NULL, CFG_SECRET, h }
#define OCTAL(k, d, h)       { k, CFG_STR, d, 0, 0, NULL, CFG_OCTAL, h }
#define INT(k, d, lo, hi, h) { k, CFG_INT, d, lo, hi, NULL, 0, h }
#define NUM(k, d, lo, hi, h) { k, CFG_NUM, d, lo, hi, NULL, 0, h }
#define BOOL(k, d, h)        { k, CFG_BOOL, d, 0, 0, NULL, 0, h }
#define ENUM(k, d, c, h)     { k, CFG_ENUM, d, 0, 0, c, 0, h }
#define LIST(k, d, f, h)     { k, CFG_STRLIST, d, 0, 0, NULL, f, h }
#define MAP(k, h)            { k, CFG_STRMAP, NULL, 0, 0, NULL, 0, h }
#define LISTMAP(k, d, f, h)  { k, CFG_LISTMAP, d, 0, 0, NULL, f, h }

/* Keys every protocol section shares. */
#define ENABLED BOOL("enabled", "true", "run this protocol's worker (a section absent from the file is off)")
#define CA_FILE INFILE("ca_file", NULL, "CA certificates to verify the server with (default: the system's)")
#define CERT_FILE INFILE("cert_file", NULL, "client certificate (PEM)")
#define TLS_KEY_FILE INFILE("key_file", NULL, "client key (PEM)")
#define INSECURE BOOL("insecure", "false", "do not verify the server's certificate (logs a warning at every start)")
/* A protocol's servers: one, or a list (a broker cluster, several front ends). */
#define SERVERS(k, h) { k, CFG_STRLIST, NULL, 0, 0, NULL, CFG_REQUIRED | CFG_SERVERS, h }
#define SERVERS_POLICY ENUM("servers_policy", "failover", "failover|spread", \
	"with more than one server: failover sends everything to the first that works and goes back to an earlier one " \
	"after failback_s; spread takes the servers that work in turn; either way a message that fails on one server " \
	"goes to the next before it moves on to the next protocol")
#define FAILBACK INT("failback_s", "60", 1, 86400, \
	"servers_policy failover: seconds on a later server before the first is tried again (and how long a server " \
	"that failed is left out under spread)")
#define ENCRYPT BOOL("encrypt", "false", "encrypt payloads (AES-256-GCM, security.encryption_key_file); with compress " \
	"on, a payload of compress_min_bytes or more is compressed before it is sealed (ciphertext does not compress): " \
	"its plaintext then starts with gzip's (1f 8b) or zstd's (28 b5 2f fd) magic bytes, which no JSON text does")
/* compress: the same words everywhere, what they do on the wire said per protocol. */
#define COMPRESS(h) ENUM("compress", "none", "none|gzip|zstd", h)
#define COMPRESS_MIN INT("compress_min_bytes", "256", 0, BIG, \
	"a message (or a batch) smaller than this goes uncompressed: below a few hundred bytes the format's own " \
	"overhead and the CPU cost outweigh what is saved; compressed or not, a message whose compressed form is " \
	"not smaller goes as it is")

/* A descriptor row's section (workers/protocols.h): .keys and .nkeys of an array. */
#define SECTION_KEYS(k) .keys = k, .nkeys = COUNT(k)

#endif
