/* common/compress: gzip and zstd round trips (and that zlib's and libzstd's
 * own one-shot decoders read what compress_buf makes), the refusals of
 * damaged, truncated and oversize input, the magic bytes, and
 * permessage-deflate's stream with and without context takeover. */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "check.h"
#include "common/compress.h"

static const char record[] =
	"{\"plate\":\"ABC1234\",\"confidence\":0.97,\"camera_id\":\"cam-01\",\"timestamp\":\"2026-12-07T18:00:00Z\","
	"\"location\":{\"lat\":37.5665,\"lon\":126.978},\"vehicle\":{\"type\":\"car\",\"color\":\"white\"},"
	"\"lane\":2,\"direction\":\"inbound\",\"speed_kmh\":42.5,\"image_ref\":\"img/2026/12/07/180000_cam-01.jpg\"}";

static void round_trip(enum compress_alg alg)
{
	size_t zlen = 0, n = 0;
	char err[200];
	unsigned char *z = compress_buf(alg, record, sizeof record - 1, &zlen);
	CHECK(z && zlen < sizeof record - 1);
	CHECK(compress_sniff(z, zlen) == alg);
	unsigned char *d = decompress_buf(alg, z, zlen, 1 << 20, &n, err, sizeof err);
	CHECK(d && n == sizeof record - 1 && memcmp(d, record, n) == 0 && d[n] == '\0');
	free(d);
	/* too large once decompressed */
	CHECK(!decompress_buf(alg, z, zlen, 10, &n, err, sizeof err) && strstr(err, "more than 10 bytes"));
	/* truncated */
	CHECK(!decompress_buf(alg, z, zlen - 3, 1 << 20, &n, err, sizeof err) && err[0]);
	/* damaged */
	z[zlen / 2] ^= 0x55;
	z[zlen / 2 + 1] ^= 0x55;
	d = decompress_buf(alg, z, zlen, 1 << 20, &n, err, sizeof err);
	CHECK(!d || n != sizeof record - 1 || memcmp(d, record, n) != 0);
	free(d);
	free(z);
}

static void foreign_decoders(void)
{
	size_t zlen, n;
	unsigned char out[1024];
	unsigned char *z = compress_buf(COMPRESS_ZSTD, record, sizeof record - 1, &zlen);
	n = ZSTD_decompress(out, sizeof out, z, zlen);
	CHECK(!ZSTD_isError(n) && n == sizeof record - 1 && memcmp(out, record, n) == 0);
	free(z);
	z = compress_buf(COMPRESS_GZIP, record, sizeof record - 1, &zlen);
	z_stream zs = { 0 };
	inflateInit2(&zs, 15 + 16);
	zs.next_in = z;
	zs.avail_in = (uInt)zlen;
	zs.next_out = out;
	zs.avail_out = sizeof out;
	CHECK(inflate(&zs, Z_FINISH) == Z_STREAM_END && zs.total_out == sizeof record - 1);
	inflateEnd(&zs);
	free(z);
}

/* Takeover: the second of two equal records costs far less than the first;
 * without it, both cost the same. Either way the inflater gets them back. */
static void pmd(bool takeover)
{
	struct pmd *tx = pmd_new(true, 15, takeover), *rx = pmd_new(false, 15, takeover);
	size_t len[2], n;
	for (int i = 0; i < 2; i++) {
		unsigned char *z = pmd_run(tx, record, sizeof record - 1, 1 << 20, &len[i]);
		CHECK(z != NULL);
		unsigned char *d = pmd_run(rx, z, len[i], 1 << 20, &n);
		CHECK(d && n == sizeof record - 1 && memcmp(d, record, n) == 0);
		free(z);
		free(d);
	}
	CHECK(takeover ? len[1] * 4 < len[0] : len[1] == len[0]);
	pmd_free(tx);
	pmd_free(rx);
}

int main(void)
{
	CHECK(compress_alg_parse("none") == COMPRESS_NONE && compress_alg_parse("gzip") == COMPRESS_GZIP &&
	      compress_alg_parse("zstd") == COMPRESS_ZSTD && compress_alg_parse("br") == -1);
	round_trip(COMPRESS_GZIP);
	round_trip(COMPRESS_ZSTD);
	foreign_decoders();
	size_t n;
	CHECK(!compress_buf(COMPRESS_GZIP, "{}", 2, &n)); /* not smaller: sent as it is */
	CHECK(!compress_buf(COMPRESS_NONE, record, sizeof record - 1, &n));
	CHECK(compress_sniff("{\"a\":1}", 7) == COMPRESS_NONE && compress_sniff("\x1f", 1) == COMPRESS_NONE);
	pmd(true);
	pmd(false);
	return CHECK_DONE();
}
