/* See compress.h. The compressors are kept from call to call (reset, not
 * made anew): zlib's deflate state is 268 KiB, zstd's context more, and the
 * camera sends many small records. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "common/compress.h"
#include "common/log.h"

#define GZIP_LEVEL 6  /* zlib's default: most of level 9's gain at a third of its time */
#define ZSTD_LEVEL 3  /* libzstd's default */

static const char *const names[] = { "none", "gzip", "zstd" };

int compress_alg_parse(const char *name)
{
	for (int i = 0; i < 3; i++)
		if (name && strcmp(name, names[i]) == 0)
			return i;
	return -1;
}

const char *compress_alg_name(enum compress_alg alg) { return names[alg]; }

static unsigned char *gzip_buf(const void *in, size_t len, size_t *outlen)
{
	static z_stream zs;
	static bool ready;
	if (!ready) {
		if (deflateInit2(&zs, GZIP_LEVEL, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
			return NULL;
		ready = true;
	} else {
		deflateReset(&zs);
	}
	size_t cap = deflateBound(&zs, (uLong)len);
	unsigned char *out = xmalloc(cap);
	zs.next_in = (Bytef *)(uintptr_t)in;
	zs.avail_in = (uInt)len;
	zs.next_out = out;
	zs.avail_out = (uInt)cap;
	if (deflate(&zs, Z_FINISH) != Z_STREAM_END) {
		free(out);
		return NULL;
	}
	*outlen = cap - zs.avail_out;
	return out;
}

static unsigned char *zstd_buf(const void *in, size_t len, size_t *outlen)
{
	static ZSTD_CCtx *cx;
	if (!cx && !(cx = ZSTD_createCCtx()))
		return NULL;
	size_t cap = ZSTD_compressBound(len);
	unsigned char *out = xmalloc(cap);
	size_t n = ZSTD_compressCCtx(cx, out, cap, in, len, ZSTD_LEVEL);
	if (ZSTD_isError(n)) {
		free(out);
		return NULL;
	}
	*outlen = n;
	return out;
}

unsigned char *compress_buf(enum compress_alg alg, const void *in, size_t len, size_t *outlen)
{
	unsigned char *out = alg == COMPRESS_GZIP ? gzip_buf(in, len, outlen)
			     : alg == COMPRESS_ZSTD ? zstd_buf(in, len, outlen)
						    : NULL;
	if (out && *outlen >= len) {
		free(out);
		return NULL;
	}
	return out;
}

/* Grow out to hold at least need bytes (and a NUL), up to max + 1. */
static bool grow(unsigned char **out, size_t *cap, size_t need, size_t max)
{
	if (need <= *cap)
		return true;
	if (*cap > max)
		return false;
	size_t c = *cap ? *cap * 2 : 4096;
	if (c < need)
		c = need;
	if (c > max + 1)
		c = max + 1;
	*out = xrealloc(*out, c + 1);
	*cap = c;
	return true;
}

static unsigned char *gunzip_buf(const void *in, size_t len, size_t max, size_t *outlen, char *err, size_t errlen)
{
	z_stream zs;
	memset(&zs, 0, sizeof zs);
	if (inflateInit2(&zs, 15 + 16) != Z_OK) {
		snprintf(err, errlen, "gzip: inflateInit2 failed");
		return NULL;
	}
	unsigned char *out = NULL;
	size_t cap = 0, n = 0;
	zs.next_in = (Bytef *)(uintptr_t)in;
	zs.avail_in = (uInt)len;
	int rc = Z_OK;
	while (rc == Z_OK) {
		if (!grow(&out, &cap, n + 4096, max)) {
			snprintf(err, errlen, "gzip: more than %zu bytes once decompressed", max);
			goto fail;
		}
		zs.next_out = out + n;
		zs.avail_out = (uInt)(cap - n);
		rc = inflate(&zs, Z_NO_FLUSH);
		n = cap - zs.avail_out;
		if (rc == Z_BUF_ERROR && zs.avail_in == 0)
			break;
		if (rc == Z_BUF_ERROR)
			rc = Z_OK;
	}
	if (rc != Z_STREAM_END || zs.avail_in) {
		snprintf(err, errlen, "gzip: %s", rc == Z_STREAM_END ? "bytes after the end of the stream"
					       : zs.msg ? zs.msg : "truncated");
		goto fail;
	}
	if (n > max) {
		snprintf(err, errlen, "gzip: more than %zu bytes once decompressed", max);
		goto fail;
	}
	inflateEnd(&zs);
	out[n] = '\0';
	*outlen = n;
	return out;
fail:
	inflateEnd(&zs);
	free(out);
	return NULL;
}

static unsigned char *unzstd_buf(const void *in, size_t len, size_t max, size_t *outlen, char *err, size_t errlen)
{
	ZSTD_DCtx *dx = ZSTD_createDCtx();
	unsigned char *out = NULL;
	size_t cap = 0, n = 0, rc = 1;
	ZSTD_inBuffer ib = { in, len, 0 };
	while (dx && ib.pos < ib.size) {
		if (!grow(&out, &cap, n + 4096, max)) {
			snprintf(err, errlen, "zstd: more than %zu bytes once decompressed", max);
			goto fail;
		}
		ZSTD_outBuffer ob = { out, cap, n };
		rc = ZSTD_decompressStream(dx, &ob, &ib);
		n = ob.pos;
		if (ZSTD_isError(rc)) {
			snprintf(err, errlen, "zstd: %s", ZSTD_getErrorName(rc));
			goto fail;
		}
		if (rc == 0 && ib.pos < ib.size) {
			snprintf(err, errlen, "zstd: bytes after the end of the frame");
			goto fail;
		}
	}
	/* all input taken: what zstd still holds comes out now */
	while (dx && rc != 0) {
		if (!grow(&out, &cap, n + 4096, max)) {
			snprintf(err, errlen, "zstd: more than %zu bytes once decompressed", max);
			goto fail;
		}
		ZSTD_outBuffer ob = { out, cap, n };
		rc = ZSTD_decompressStream(dx, &ob, &ib);
		if (ZSTD_isError(rc) || ob.pos == n) {
			snprintf(err, errlen, "zstd: %s", ZSTD_isError(rc) ? ZSTD_getErrorName(rc) : "truncated");
			goto fail;
		}
		n = ob.pos;
	}
	if (!dx || n > max) {
		snprintf(err, errlen, dx ? "zstd: more than %zu bytes once decompressed" : "zstd: out of memory", max);
		goto fail;
	}
	ZSTD_freeDCtx(dx);
	grow(&out, &cap, 1, max);
	out[n] = '\0';
	*outlen = n;
	return out;
fail:
	ZSTD_freeDCtx(dx);
	free(out);
	return NULL;
}

unsigned char *decompress_buf(enum compress_alg alg, const void *in, size_t len, size_t max, size_t *outlen,
			      char *err, size_t errlen)
{
	if (alg == COMPRESS_GZIP)
		return gunzip_buf(in, len, max, outlen, err, errlen);
	if (alg == COMPRESS_ZSTD)
		return unzstd_buf(in, len, max, outlen, err, errlen);
	snprintf(err, errlen, "not compressed");
	return NULL;
}

enum compress_alg compress_sniff(const void *p, size_t len)
{
	const unsigned char *b = p;
	if (len >= 2 && b[0] == 0x1f && b[1] == 0x8b)
		return COMPRESS_GZIP;
	if (len >= 4 && b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd)
		return COMPRESS_ZSTD;
	return COMPRESS_NONE;
}

/* ---- permessage-deflate ---- */

struct pmd {
	z_stream zs;
	bool deflate, takeover;
};

struct pmd *pmd_new(bool deflate, int window_bits, bool takeover)
{
	struct pmd *z = xcalloc(1, sizeof *z);
	z->deflate = deflate;
	z->takeover = takeover;
	/* zlib refuses a raw window of 8 bits; 9 is what RFC 7692 8 gets on the wire. */
	int wb = window_bits < 9 ? 9 : window_bits > 15 ? 15 : window_bits;
	int rc = deflate ? deflateInit2(&z->zs, GZIP_LEVEL, Z_DEFLATED, -wb, 8, Z_DEFAULT_STRATEGY)
			 : inflateInit2(&z->zs, -15);
	if (rc != Z_OK) {
		free(z);
		return NULL;
	}
	return z;
}

void pmd_free(struct pmd *z)
{
	if (!z)
		return;
	if (z->deflate)
		deflateEnd(&z->zs);
	else
		inflateEnd(&z->zs);
	free(z);
}

/* Every message that went in must go out, max or not: with context
 * takeover it is in the window now, and the peer's inflater must see it. */
static unsigned char *pmd_deflate(struct pmd *z, const void *in, size_t len, size_t *outlen)
{
	size_t cap = deflateBound(&z->zs, (uLong)len) + 16, n = 0;
	unsigned char *out = xmalloc(cap);
	z->zs.next_in = (Bytef *)(uintptr_t)in;
	z->zs.avail_in = (uInt)len;
	int rc;
	do { /* a sync flush may need a few bytes more than deflateBound says */
		if (n == cap)
			out = xrealloc(out, cap *= 2);
		z->zs.next_out = out + n;
		z->zs.avail_out = (uInt)(cap - n);
		rc = deflate(&z->zs, Z_SYNC_FLUSH);
		n = cap - z->zs.avail_out;
	} while (rc == Z_OK && z->zs.avail_out == 0);
	if (!z->takeover)
		deflateReset(&z->zs);
	if (rc != Z_OK || z->zs.avail_in || n < 4) {
		free(out);
		return NULL;
	}
	*outlen = n - 4; /* the flush's empty stored block 00 00 ff ff: RFC 7692 7.2.1 */
	return out;
}

static unsigned char *pmd_inflate(struct pmd *z, const void *in, size_t len, size_t max, size_t *outlen)
{
	static const unsigned char tail[4] = { 0, 0, 0xff, 0xff };
	unsigned char *out = NULL;
	size_t cap = 0, n = 0;
	for (int part = 0; part < 2; part++) {
		z->zs.next_in = part ? (Bytef *)(uintptr_t)tail : (Bytef *)(uintptr_t)in;
		z->zs.avail_in = part ? 4 : (uInt)len;
		while (z->zs.avail_in) {
			if (!grow(&out, &cap, n + 4096, max))
				goto fail;
			z->zs.next_out = out + n;
			z->zs.avail_out = (uInt)(cap - n);
			int rc = inflate(&z->zs, Z_SYNC_FLUSH);
			n = cap - z->zs.avail_out;
			if (rc != Z_OK && rc != Z_BUF_ERROR)
				goto fail;
		}
	}
	if (n > max)
		goto fail;
	if (!z->takeover)
		inflateReset(&z->zs);
	grow(&out, &cap, 1, max);
	out[n] = '\0';
	*outlen = n;
	return out;
fail:
	free(out);
	return NULL;
}

unsigned char *pmd_run(struct pmd *z, const void *in, size_t len, size_t max, size_t *outlen)
{
	return z->deflate ? pmd_deflate(z, in, len, outlen) : pmd_inflate(z, in, len, max, outlen);
}
