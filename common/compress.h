/* Payload compression (compress: none | gzip | zstd in the metadata protocols'
 * sections): gzip (RFC 1952) with zlib, zstd (RFC 8878) with libzstd, one
 * whole body at a time; and permessage-deflate's stream (RFC 7692) for the
 * WebSocket worker. Shared by the workers (the transport's body), the
 * supervisor (a payload it seals is compressed first: ciphertext does not
 * compress) and the test peer (which decodes what arrived). */
#ifndef UCGW_COMPRESS_H
#define UCGW_COMPRESS_H

#include <stdbool.h>
#include <stddef.h>

enum compress_alg { COMPRESS_NONE, COMPRESS_GZIP, COMPRESS_ZSTD };

/* "none", "gzip", "zstd" (the config's words, and HTTP's Content-Encoding
 * tokens); -1 for anything else. */
int compress_alg_parse(const char *name);
const char *compress_alg_name(enum compress_alg alg);

/* The compressed form of in, malloc'd, or NULL when it would not be smaller
 * than in (then send in as it is) or alg is COMPRESS_NONE. */
unsigned char *compress_buf(enum compress_alg alg, const void *in, size_t len, size_t *outlen);

/* Decompress a whole gzip or zstd body, malloc'd with a NUL after it (not
 * counted in *outlen); NULL with err when it is damaged, truncated, or would
 * be larger than max. */
unsigned char *decompress_buf(enum compress_alg alg, const void *in, size_t len, size_t max, size_t *outlen,
			      char *err, size_t errlen);

/* Which compression a sealed payload's plaintext carries, by its magic bytes
 * (gzip 1f 8b, zstd 28 b5 2f fd; a JSON text never starts with either). */
enum compress_alg compress_sniff(const void *p, size_t len);

/* permessage-deflate, one direction of one connection: raw deflate, each
 * message flushed (Z_SYNC_FLUSH) with its last 4 bytes (00 00 ff ff) taken
 * off. With context takeover the window carries over from message to message,
 * so the second of two similar records costs a few bytes. */
struct pmd;
struct pmd *pmd_new(bool deflate, int window_bits, bool takeover);
void pmd_free(struct pmd *z);
/* Deflate (or inflate) one message into a malloc'd buffer; NULL on a
 * damaged message or when more than max would come out (inflate), or when
 * zlib fails (deflate: the stream is unusable from then on). A deflated
 * message may come out larger than it went in: with context takeover it must
 * be sent all the same, since it is in the window both ends keep. */
unsigned char *pmd_run(struct pmd *z, const void *in, size_t len, size_t max, size_t *outlen);

#endif
