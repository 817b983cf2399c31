#include "common/crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "common/cfgfile.h"
#include "common/log.h"
#include "common/util.h"

#define KEY_FILE_MAX 1024 /* no key form is longer than 64 hex digits and a CRLF */
#define EVP_CHUNK (1 << 30) /* EVP_*Update takes an int length */

void crypto_wipe(void *p, size_t len)
{
	if (p && len)
		OPENSSL_cleanse(p, len);
}

/* ---- base64 ---- */

static const char std_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char url_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t b64_encoded_len(size_t len) { return (len + 2) / 3 * 4; }
size_t b64url_encoded_len(size_t len) { return len / 3 * 4 + (len % 3 ? len % 3 + 1 : 0); }
size_t b64_decoded_max(size_t len) { return len / 4 * 3 + 3; }

static size_t encode(const unsigned char *in, size_t len, char *out, const char *alpha, bool pad)
{
	size_t o = 0, i = 0;
	for (; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = alpha[v >> 18];
		out[o++] = alpha[(v >> 12) & 63];
		out[o++] = alpha[(v >> 6) & 63];
		out[o++] = alpha[v & 63];
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		out[o++] = alpha[v >> 18];
		out[o++] = alpha[(v >> 12) & 63];
		if (pad) {
			out[o++] = '=';
			out[o++] = '=';
		}
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = alpha[v >> 18];
		out[o++] = alpha[(v >> 12) & 63];
		out[o++] = alpha[(v >> 6) & 63];
		if (pad)
			out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}

size_t b64_encode(const void *in, size_t len, char *out) { return encode(in, len, out, std_alpha, true); }
size_t b64url_encode(const void *in, size_t len, char *out) { return encode(in, len, out, url_alpha, false); }

static int sextet(unsigned char c, bool url)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == (url ? '-' : '+'))
		return 62;
	if (c == (url ? '_' : '/'))
		return 63;
	return -1;
}

/* Both alphabets. Standard text comes in groups of four with its padding;
 * url-safe text has no padding, so only a lone trailing character (6 bits, less
 * than a byte) is impossible. */
static int decode(const char *in, size_t len, unsigned char *out, size_t *outlen, bool url)
{
	if (!url) {
		if (len % 4)
			return -1;
		if (len && in[len - 1] == '=')
			len -= in[len - 2] == '=' ? 2 : 1; /* a third '=' fails as a bad character */
	} else if (len % 4 == 1) {
		return -1;
	}
	uint32_t acc = 0;
	int bits = 0;
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		int v = sextet((unsigned char)in[i], url);
		if (v < 0)
			return -1;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	if (acc) /* unused low bits of the last character must be zero: one text per byte string */
		return -1;
	*outlen = o;
	return 0;
}

int b64_decode(const char *in, size_t len, unsigned char *out, size_t *outlen) { return decode(in, len, out, outlen, false); }
int b64url_decode(const char *in, size_t len, unsigned char *out, size_t *outlen) { return decode(in, len, out, outlen, true); }

/* ---- keys ---- */

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool parse_hex_key(const unsigned char *p, size_t len, unsigned char key[CRYPTO_KEY_LEN])
{
	if (len != 2 * CRYPTO_KEY_LEN)
		return false;
	for (size_t i = 0; i < CRYPTO_KEY_LEN; i++) {
		int hi = hexval(p[2 * i]), lo = hexval(p[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return false;
		key[i] = (unsigned char)(hi << 4 | lo);
	}
	return true;
}

static bool parse_b64_key(const unsigned char *p, size_t len, unsigned char key[CRYPTO_KEY_LEN])
{
	unsigned char buf[48];
	size_t n = 0;
	if (len != 44 || b64_decode((const char *)p, len, buf, &n) < 0 || n != CRYPTO_KEY_LEN) {
		crypto_wipe(buf, sizeof buf);
		return false;
	}
	memcpy(key, buf, CRYPTO_KEY_LEN);
	crypto_wipe(buf, sizeof buf);
	return true;
}

int crypto_key_parse(const void *buf, size_t len, unsigned char key[CRYPTO_KEY_LEN], char *err, size_t errlen)
{
	const unsigned char *p = buf;
	if (len == CRYPTO_KEY_LEN) { /* raw: taken as is, even if its last byte is a newline */
		memcpy(key, p, CRYPTO_KEY_LEN);
		return 0;
	}
	size_t n = len;
	if (n && p[n - 1] == '\n')
		n--;
	if (n && p[n - 1] == '\r')
		n--;
	if (parse_hex_key(p, n, key) || parse_b64_key(p, n, key))
		return 0;
	crypto_wipe(key, CRYPTO_KEY_LEN);
	snprintf(err, errlen, "not an AES-256 key: expected 32 raw bytes, 64 hex digits or the base64 of 32 bytes "
			      "(found %zu bytes)", len);
	return -1;
}

int crypto_key_load(const char *path, unsigned char key[CRYPTO_KEY_LEN], char *err, size_t errlen)
{
	struct stat st;
	int fd = cf_open("key file", path, O_RDONLY, CF_REG, 0, &st, err, errlen);
	if (fd < 0) {
		if (errno == EACCES) /* group and others may not read it (below): its owner must be us */
			snprintf(err + strlen(err), errlen - strlen(err), ", who must own it (mode 0600)");
		return -1;
	}
	if (st.st_mode & 077) {
		snprintf(err, errlen, "key file %s is readable or writable by group or others (mode %04o); chmod 600 it",
			 path, (unsigned)(st.st_mode & 07777));
		close(fd);
		return -1;
	}
	unsigned char buf[KEY_FILE_MAX + 1];
	size_t n = 0;
	while (n < sizeof buf) {
		ssize_t r = read(fd, buf + n, sizeof buf - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			snprintf(err, errlen, "cannot read key file %s: %s", path, strerror(errno));
			close(fd);
			crypto_wipe(buf, sizeof buf);
			return -1;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	char why[256];
	int rc = n > KEY_FILE_MAX ? -1 : crypto_key_parse(buf, n, key, why, sizeof why);
	if (n > KEY_FILE_MAX)
		snprintf(why, sizeof why, "far too long to be an AES-256 key");
	if (rc < 0)
		snprintf(err, errlen, "key file %s: %s", path, why);
	crypto_wipe(buf, sizeof buf);
	return rc;
}

/* ---- AES-256-GCM ---- */

static int ssl_fail(EVP_CIPHER_CTX *ctx, const char *what, char *err, size_t errlen)
{
	snprintf(err, errlen, "OpenSSL: %s failed", what);
	EVP_CIPHER_CTX_free(ctx);
	return -1;
}

/* Run EVP_{En,De}cryptUpdate over any length, in int-sized pieces. */
static bool update_all(EVP_CIPHER_CTX *ctx, bool enc, const unsigned char *in, size_t len, unsigned char *out,
		       size_t *done)
{
	*done = 0;
	while (len) {
		int piece = len > EVP_CHUNK ? EVP_CHUNK : (int)len, n = 0;
		if (!(enc ? EVP_EncryptUpdate(ctx, out + *done, &n, in, piece)
			  : EVP_DecryptUpdate(ctx, out + *done, &n, in, piece)))
			return false;
		*done += (size_t)n;
		in += piece;
		len -= (size_t)piece;
	}
	return true;
}

int crypto_seal_nonce(const unsigned char key[CRYPTO_KEY_LEN], const unsigned char nonce[CRYPTO_NONCE_LEN],
		      const void *pt, size_t len, unsigned char *out, char *err, size_t errlen)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return ssl_fail(NULL, "EVP_CIPHER_CTX_new", err, errlen);
	if (!EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) ||
	    !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, CRYPTO_NONCE_LEN, NULL) ||
	    !EVP_EncryptInit_ex(ctx, NULL, NULL, key, nonce))
		return ssl_fail(ctx, "AES-256-GCM set-up", err, errlen);
	unsigned char *ct = out + CRYPTO_OVERHEAD;
	size_t n = 0;
	int fin = 0;
	if (!update_all(ctx, true, pt, len, ct, &n) || !EVP_EncryptFinal_ex(ctx, ct + n, &fin) ||
	    !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, CRYPTO_TAG_LEN, out + CRYPTO_NONCE_LEN))
		return ssl_fail(ctx, "AES-256-GCM encryption", err, errlen);
	memcpy(out, nonce, CRYPTO_NONCE_LEN);
	EVP_CIPHER_CTX_free(ctx);
	return 0;
}

int crypto_seal(const unsigned char key[CRYPTO_KEY_LEN], const void *pt, size_t len, unsigned char *out, char *err,
		size_t errlen)
{
	unsigned char nonce[CRYPTO_NONCE_LEN];
	if (RAND_bytes(nonce, sizeof nonce) != 1) {
		snprintf(err, errlen, "OpenSSL: no random bytes for a nonce");
		return -1;
	}
	return crypto_seal_nonce(key, nonce, pt, len, out, err, errlen);
}

/* One GCM decryption with the tag checked; false on any failure. */
static bool gcm_open(const unsigned char *key, const unsigned char *nonce, int noncelen, const unsigned char *tag_in,
		     const unsigned char *ct, size_t ctlen, unsigned char *out, size_t *outlen)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return false;
	unsigned char tag[CRYPTO_TAG_LEN];
	memcpy(tag, tag_in, CRYPTO_TAG_LEN); /* the ctrl wants a non-const buffer */
	size_t n = 0;
	int fin = 0;
	bool ok = EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) &&
		  EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, noncelen, NULL) &&
		  EVP_DecryptInit_ex(ctx, NULL, NULL, key, nonce) &&
		  EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, CRYPTO_TAG_LEN, tag) &&
		  update_all(ctx, false, ct, ctlen, out, &n) && EVP_DecryptFinal_ex(ctx, out + n, &fin) > 0;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok) {
		crypto_wipe(out, ctlen);
		return false;
	}
	*outlen = n + (size_t)fin;
	return true;
}

int crypto_open(const unsigned char key[CRYPTO_KEY_LEN], const void *in, size_t len, unsigned char *out,
		size_t *outlen, char *err, size_t errlen)
{
	const unsigned char *p = in;
	if (len < CRYPTO_OVERHEAD) {
		snprintf(err, errlen, "encrypted payload too short: %zu bytes, at least %d expected (nonce and tag)", len,
			 CRYPTO_OVERHEAD);
		return -1;
	}
	if (gcm_open(key, p, CRYPTO_NONCE_LEN, p + CRYPTO_NONCE_LEN, p + CRYPTO_OVERHEAD, len - CRYPTO_OVERHEAD, out,
		     outlen))
		return 0;
	/* The seed's encrypt_data as written lets pycryptodome pick the nonce, which
	 * is 16 bytes for GCM there: nonce 16 | tag 16 | ciphertext. Its own
	 * decrypt_data cannot read that back; we can. Two tags tried double a
	 * forger's odds, from 2^-128 to 2^-127. */
	if (len >= CRYPTO_SEED_NONCE_LEN + CRYPTO_TAG_LEN &&
	    gcm_open(key, p, CRYPTO_SEED_NONCE_LEN, p + CRYPTO_SEED_NONCE_LEN, p + CRYPTO_SEED_NONCE_LEN + CRYPTO_TAG_LEN,
		     len - CRYPTO_SEED_NONCE_LEN - CRYPTO_TAG_LEN, out, outlen))
		return 0;
	snprintf(err, errlen, "decryption failed: wrong key, or the payload was altered or damaged");
	return -1;
}

char *crypto_encrypt_b64(const unsigned char key[CRYPTO_KEY_LEN], const void *pt, size_t len, char *err, size_t errlen)
{
	if (len > SIZE_MAX / 2) {
		snprintf(err, errlen, "payload too large to encrypt");
		return NULL;
	}
	unsigned char *bin = xmalloc(len + CRYPTO_OVERHEAD);
	char *out = NULL;
	if (crypto_seal(key, pt, len, bin, err, errlen) == 0) {
		out = xmalloc(b64_encoded_len(len + CRYPTO_OVERHEAD) + 1);
		b64_encode(bin, len + CRYPTO_OVERHEAD, out);
	}
	free(bin);
	return out;
}

unsigned char *crypto_decrypt_b64(const unsigned char key[CRYPTO_KEY_LEN], const char *b64, size_t len,
				  size_t *outlen, char *err, size_t errlen)
{
	unsigned char *bin = xmalloc(b64_decoded_max(len));
	size_t n = 0;
	if (b64_decode(b64, len, bin, &n) < 0) {
		free(bin);
		snprintf(err, errlen, "encrypted payload is not valid base64");
		return NULL;
	}
	unsigned char *pt = xmalloc(n + 1);
	if (crypto_open(key, bin, n, pt, outlen, err, errlen) < 0) {
		free(bin);
		free(pt);
		return NULL;
	}
	free(bin);
	pt[*outlen] = '\0';
	return pt;
}
