/* common/crypto: base64 (RFC 4648 vectors, strictness), AES-256-GCM against the
 * GCM specification's 256-bit test cases and a vector made by the seed's Python
 * (pycryptodome), tamper detection, and key files in every accepted form. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "common/crypto.h"

static char dir[] = "/tmp/ucgw-test-crypto-XXXXXX";

static void unhex(const char *hex, unsigned char *out, size_t *len)
{
	size_t n = strlen(hex) / 2;
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		sscanf(hex + 2 * i, "%2x", &v);
		out[i] = (unsigned char)v;
	}
	*len = n;
}

static bool dec_ok(const char *s, const char *want)
{
	unsigned char out[256];
	size_t n = 0;
	return b64_decode(s, strlen(s), out, &n) == 0 && n == strlen(want) && memcmp(out, want, n) == 0;
}

static bool dec_fails(const char *s)
{
	unsigned char out[256];
	size_t n;
	return b64_decode(s, strlen(s), out, &n) < 0;
}

static bool url_dec_fails(const char *s)
{
	unsigned char out[256];
	size_t n;
	return b64url_decode(s, strlen(s), out, &n) < 0;
}

static void test_base64(void)
{
	/* RFC 4648 section 10 */
	static const char *const plain[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	static const char *const std[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
	static const char *const url[] = { "", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy" };
	for (int i = 0; i < 7; i++) {
		char out[64];
		size_t n = b64_encode(plain[i], strlen(plain[i]), out);
		CHECK(n == strlen(std[i]) && strcmp(out, std[i]) == 0 && n == b64_encoded_len(strlen(plain[i])));
		n = b64url_encode(plain[i], strlen(plain[i]), out);
		CHECK(n == strlen(url[i]) && strcmp(out, url[i]) == 0 && n == b64url_encoded_len(strlen(plain[i])));
		CHECK(dec_ok(std[i], plain[i]));
		unsigned char d[64];
		size_t dn = 0;
		CHECK(b64url_decode(url[i], strlen(url[i]), d, &dn) == 0 && dn == strlen(plain[i]) &&
		      memcmp(d, plain[i], dn) == 0);
	}
	/* the two alphabets differ in two characters */
	unsigned char bytes[] = { 0xfb, 0xff, 0xbf };
	char out[8];
	b64_encode(bytes, 3, out);
	CHECK(strcmp(out, "+/+/") == 0);
	b64url_encode(bytes, 3, out);
	CHECK(strcmp(out, "-_-_") == 0);
	CHECK(dec_fails("-_-_"));
	CHECK(url_dec_fails("+/+/"));
	/* strictness */
	CHECK(dec_fails("Zg="));      /* not a multiple of four */
	CHECK(dec_fails("Zg"));       /* padding missing */
	CHECK(dec_fails("Z==="));     /* three pads */
	CHECK(dec_fails("===="));
	CHECK(dec_fails("Zg==Zg==")); /* padding in the middle */
	CHECK(dec_fails("Zm9v\n"));   /* whitespace */
	CHECK(dec_fails("Zm 9"));
	CHECK(dec_fails("Zh=="));     /* non-zero unused bits: not the canonical "Zg==" */
	CHECK(dec_fails("Zm9="));
	CHECK(dec_fails("Zm8*"));
	CHECK(url_dec_fails("Zg=="));   /* no padding in base64url */
	CHECK(url_dec_fails("Zm9vY"));  /* a lone final character */
	CHECK(url_dec_fails("Zh"));
	char nul[] = "Zm\0v";
	unsigned char d[8];
	size_t dn;
	CHECK(b64_decode(nul, 4, d, &dn) < 0);
	/* every byte value survives */
	unsigned char all[256], back[260];
	char enc[400];
	for (int i = 0; i < 256; i++)
		all[i] = (unsigned char)i;
	for (size_t len = 0; len <= 256; len += 37) {
		size_t n = b64_encode(all, len, enc);
		CHECK(b64_decode(enc, n, back, &dn) == 0 && dn == len && memcmp(back, all, len) == 0);
		n = b64url_encode(all, len, enc);
		CHECK(b64url_decode(enc, n, back, &dn) == 0 && dn == len && memcmp(back, all, len) == 0);
	}
}

/* GCM specification (McGrew & Viega), test cases 13, 14 and 15: 256-bit keys, no AAD. */
static void test_gcm_vectors(void)
{
	static const struct {
		const char *key, *iv, *pt, *ct, *tag;
	} v[] = {
		{ "0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000", "", "",
		  "530f8afbc74536b9a963b4f1c4cb738b" },
		{ "0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000",
		  "00000000000000000000000000000000", "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919" },
		{ "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
		  "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525"
		  "b16aedf5aa0de657ba637b391aafd255",
		  "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838"
		  "c5f61e6393ba7a0abcc9f662898015ad",
		  "b094dac5d93471bdec1a502270e3cc6c" },
	};
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
		unsigned char key[32], iv[12], pt[64], ct[64], tag[16], out[128], back[64];
		size_t kl, il, pl, cl, tl, bl = 0;
		char err[256];
		unhex(v[i].key, key, &kl);
		unhex(v[i].iv, iv, &il);
		unhex(v[i].pt, pt, &pl);
		unhex(v[i].ct, ct, &cl);
		unhex(v[i].tag, tag, &tl);
		CHECK(crypto_seal_nonce(key, iv, pt, pl, out, err, sizeof err) == 0);
		CHECK(memcmp(out, iv, 12) == 0);
		CHECK(memcmp(out + 12, tag, 16) == 0);
		CHECK(memcmp(out + 28, ct, cl) == 0);
		CHECK(crypto_open(key, out, pl + 28, back, &bl, err, sizeof err) == 0 && bl == pl &&
		      memcmp(back, pt, pl) == 0);
	}
}

/* Made with the seed's encrypt_data (pycryptodome) and a fixed nonce:
 * key = 00 01 .. 1f, nonce = 64 65 .. 6f, data = {"plate":"ABC123","confidence":0.97}. */
static const char seed_b64[] =
	"ZGVmZ2hpamtsbW5vHYmEoDjSWV7RO+ooHQqVvjM5rgoYnTO8BEJ9qZgmW89x4CoqqQ+cHMG4yC2VwMBqrslw7nUl5g==";
static const char seed_json[] = "{\"plate\": \"ABC123\", \"confidence\": 0.97}";

static void test_seed_format(void)
{
	unsigned char key[32], nonce[12];
	for (int i = 0; i < 32; i++)
		key[i] = (unsigned char)i;
	for (int i = 0; i < 12; i++)
		nonce[i] = (unsigned char)(100 + i);
	char err[256];
	size_t n = 0;
	unsigned char *pt = crypto_decrypt_b64(key, seed_b64, strlen(seed_b64), &n, err, sizeof err);
	CHECK(pt && n == strlen(seed_json) && memcmp(pt, seed_json, n) == 0 && pt[n] == '\0');
	free(pt);
	/* the same nonce gives the same text, byte for byte */
	unsigned char bin[128];
	char enc[200];
	CHECK(crypto_seal_nonce(key, nonce, seed_json, strlen(seed_json), bin, err, sizeof err) == 0);
	b64_encode(bin, strlen(seed_json) + CRYPTO_OVERHEAD, enc);
	CHECK(strcmp(enc, seed_b64) == 0);
	/* a random nonce every time: two encryptions differ and both open */
	char *a = crypto_encrypt_b64(key, seed_json, strlen(seed_json), err, sizeof err);
	char *b = crypto_encrypt_b64(key, seed_json, strlen(seed_json), err, sizeof err);
	CHECK(a && b && strcmp(a, b) != 0 && strncmp(a, b, 16) != 0);
	unsigned char *pa = crypto_decrypt_b64(key, a, strlen(a), &n, err, sizeof err);
	CHECK(pa && n == strlen(seed_json) && memcmp(pa, seed_json, n) == 0);
	free(pa);
	free(a);
	free(b);
	/* what the seed's encrypt_data really emits: pycryptodome's default 16-byte GCM nonce
	 * (here nonce = c8 c9 .. d7, data = {"plate": "SEED16", "confidence": 0.5}) */
	static const char seed16[] = "yMnKy8zNzs/Q0dLT1NXW10Id8tQ9WEun5gTMyoBZ/ihfCn9N90nr3/RhWGr/wbqw4eYEh9sdbqZBcZD"
				     "ebBFNbpQGSS0qOg==";
	static const char seed16_json[] = "{\"plate\": \"SEED16\", \"confidence\": 0.5}";
	pt = crypto_decrypt_b64(key, seed16, strlen(seed16), &n, err, sizeof err);
	CHECK(pt && n == strlen(seed16_json) && memcmp(pt, seed16_json, n) == 0);
	free(pt);
	/* the empty message */
	char *e = crypto_encrypt_b64(key, "", 0, err, sizeof err);
	CHECK(e && strlen(e) == b64_encoded_len(CRYPTO_OVERHEAD));
	unsigned char *pe = crypto_decrypt_b64(key, e, strlen(e), &n, err, sizeof err);
	CHECK(pe && n == 0);
	free(pe);
	free(e);
}

static void test_tamper(void)
{
	unsigned char key[32];
	for (int i = 0; i < 32; i++)
		key[i] = (unsigned char)i;
	unsigned char bin[128], out[128];
	size_t len = 0, n;
	char err[256];
	CHECK(b64_decode(seed_b64, strlen(seed_b64), bin, &len) == 0);
	/* one flipped bit anywhere: nonce, tag or ciphertext */
	int refused = 0;
	for (size_t i = 0; i < len; i++) {
		bin[i] ^= 0x01;
		err[0] = '\0';
		if (crypto_open(key, bin, len, out, &n, err, sizeof err) < 0 && strstr(err, "decryption failed"))
			refused++;
		bin[i] ^= 0x01;
	}
	CHECK(refused == (int)len);
	CHECK(crypto_open(key, bin, len, out, &n, err, sizeof err) == 0);
	/* truncated, extended, too short to hold nonce and tag */
	CHECK(crypto_open(key, bin, len - 1, out, &n, err, sizeof err) < 0);
	bin[len] = 0;
	CHECK(crypto_open(key, bin, len + 1, out, &n, err, sizeof err) < 0);
	CHECK(crypto_open(key, bin, 27, out, &n, err, sizeof err) < 0 && strstr(err, "too short"));
	CHECK(crypto_open(key, bin, 0, out, &n, err, sizeof err) < 0);
	/* the wrong key */
	key[31] ^= 0x80;
	CHECK(crypto_open(key, bin, len, out, &n, err, sizeof err) < 0);
	key[31] ^= 0x80;
	/* bad base64 through the text API */
	CHECK(!crypto_decrypt_b64(key, "not base64!", 11, &n, err, sizeof err) && strstr(err, "base64"));
	char *ws = malloc(strlen(seed_b64) + 2);
	sprintf(ws, "%s\n", seed_b64);
	CHECK(!crypto_decrypt_b64(key, ws, strlen(ws), &n, err, sizeof err));
	free(ws);
}

static const char *write_key(const char *name, const void *buf, size_t len, int mode)
{
	static char path[512];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	fwrite(buf, 1, len, f);
	fclose(f);
	chmod(path, (mode_t)mode);
	return path;
}

static bool key_is_seq(const unsigned char *k)
{
	for (int i = 0; i < 32; i++)
		if (k[i] != i)
			return false;
	return true;
}

static void test_keys(void)
{
	unsigned char raw[32], key[32];
	char err[512];
	for (int i = 0; i < 32; i++)
		raw[i] = (unsigned char)i;
	static const char hex[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
	static const char b64[] = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
	CHECK(crypto_key_load(write_key("raw", raw, 32, 0600), key, err, sizeof err) == 0 && key_is_seq(key));
	CHECK(crypto_key_load(write_key("hex", hex, 64, 0600), key, err, sizeof err) == 0 && key_is_seq(key));
	CHECK(crypto_key_load(write_key("hexnl", "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F\n",
					65, 0400), key, err, sizeof err) == 0 && key_is_seq(key));
	CHECK(crypto_key_load(write_key("b64", b64, 44, 0600), key, err, sizeof err) == 0 && key_is_seq(key));
	CHECK(crypto_key_load(write_key("b64crlf", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\r\n", 46, 0600), key, err,
			      sizeof err) == 0 && key_is_seq(key));
	/* a raw key ending in a newline byte is still 32 raw bytes */
	raw[31] = '\n';
	CHECK(crypto_key_load(write_key("rawnl", raw, 32, 0600), key, err, sizeof err) == 0 && key[31] == '\n');
	/* refused: others may read it, wrong sizes, bad text, not a file, missing */
	err[0] = '\0';
	CHECK(crypto_key_load(write_key("open", hex, 64, 0644), key, err, sizeof err) < 0 &&
	      strstr(err, "readable or writable by group or others") && strstr(err, "chmod 600") && strstr(err, "0644"));
	CHECK(crypto_key_load(write_key("grp", hex, 64, 0640), key, err, sizeof err) < 0);
	CHECK(crypto_key_load(write_key("short", raw, 31, 0600), key, err, sizeof err) < 0 && strstr(err, "not an AES-256 key"));
	CHECK(crypto_key_load(write_key("long", "0001020304", 10, 0600), key, err, sizeof err) < 0);
	CHECK(crypto_key_load(write_key("badhex", "g00102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", 64, 0600),
			      key, err, sizeof err) < 0);
	CHECK(crypto_key_load(write_key("b64_16", "AAECAwQFBgcICQoLDA0ODw==", 24, 0600), key, err, sizeof err) < 0);
	CHECK(crypto_key_load(write_key("twonl", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n\n", 46, 0600), key, err,
			      sizeof err) < 0);
	CHECK(crypto_key_load(dir, key, err, sizeof err) < 0 && strstr(err, "not a regular file"));
	CHECK(crypto_key_load("/nonexistent/ucgw.key", key, err, sizeof err) < 0 && strstr(err, "/nonexistent/ucgw.key"));
	/* the message never carries key material */
	CHECK(crypto_key_load(write_key("open2", hex, 64, 0604), key, err, sizeof err) < 0 && !strstr(err, "0001020304"));
	char big[2000];
	memset(big, 'A', sizeof big);
	CHECK(crypto_key_load(write_key("big", big, sizeof big, 0600), key, err, sizeof err) < 0 && strstr(err, "too long"));
}

int main(void)
{
	if (!mkdtemp(dir))
		return 1;
	test_base64();
	test_gcm_vectors();
	test_seed_format();
	test_tamper();
	test_keys();
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return CHECK_DONE();
}
