/* Payload encryption, the reference design's EncryptionManager done with OpenSSL:
 * AES-256-GCM with a fresh random 96-bit nonce per message, written as
 * base64(nonce 12 | tag 16 | ciphertext), byte for byte what the seed's Python
 * (`base64.b64encode(cipher.nonce + tag + ciphertext)`) produces and accepts.
 * Also the base64 codecs the gateway needs (standard and url-safe, both strict). */
#ifndef UCGW_CRYPTO_H
#define UCGW_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>

#define CRYPTO_KEY_LEN 32
#define CRYPTO_NONCE_LEN 12
#define CRYPTO_TAG_LEN 16
#define CRYPTO_OVERHEAD (CRYPTO_NONCE_LEN + CRYPTO_TAG_LEN)
#define CRYPTO_SEED_NONCE_LEN 16 /* see crypto_open */

/* Read an AES-256 key from a file holding 32 raw bytes, 64 hex digits, or the
 * base64 of 32 bytes (text forms may end in one newline). A file that is not a
 * regular file, or that group or others may read or write, is refused. Returns 0,
 * or -1 with a message naming the file in err (never any key material). */
int crypto_key_load(const char *path, unsigned char key[CRYPTO_KEY_LEN], char *err, size_t errlen);
/* The same from bytes already read (the file's whole content). */
int crypto_key_parse(const void *buf, size_t len, unsigned char key[CRYPTO_KEY_LEN], char *err, size_t errlen);

/* Binary form nonce | tag | ciphertext. out must hold len + CRYPTO_OVERHEAD bytes.
 * 0, or -1 with err (only when OpenSSL itself fails). */
int crypto_seal(const unsigned char key[CRYPTO_KEY_LEN], const void *pt, size_t len, unsigned char *out,
		char *err, size_t errlen);
/* For known-answer tests only: a caller-chosen nonce. A nonce must never be used
 * twice with one key; crypto_seal draws a random one. */
int crypto_seal_nonce(const unsigned char key[CRYPTO_KEY_LEN], const unsigned char nonce[CRYPTO_NONCE_LEN],
		      const void *pt, size_t len, unsigned char *out, char *err, size_t errlen);
/* Verify the tag and decrypt nonce | tag | ciphertext into out (len - CRYPTO_OVERHEAD
 * bytes; *outlen set). -1 with err when too short or when the tag does not match:
 * nothing of a forged or damaged message is released. Also accepted: a 16-byte
 * nonce (nonce 16 | tag 16 | ciphertext), which is what the seed's encrypt_data
 * really emits, pycryptodome's default GCM nonce being 16 bytes. */
int crypto_open(const unsigned char key[CRYPTO_KEY_LEN], const void *in, size_t len, unsigned char *out,
		size_t *outlen, char *err, size_t errlen);

/* The seed's text form: base64 of the binary form, NUL-terminated, malloc'd. */
char *crypto_encrypt_b64(const unsigned char key[CRYPTO_KEY_LEN], const void *pt, size_t len, char *err,
			 size_t errlen);
/* Decode (strictly) and open; the plaintext is malloc'd with a NUL after it (not
 * counted in *outlen). NULL with err on bad base64, short input or a bad tag. */
unsigned char *crypto_decrypt_b64(const unsigned char key[CRYPTO_KEY_LEN], const char *b64, size_t len,
				  size_t *outlen, char *err, size_t errlen);

/* Base64 (RFC 4648). Encoders write a NUL-terminated string into out, which must
 * hold b64_encoded_len(len) + 1 bytes (standard, padded) or b64url_encoded_len(len)
 * + 1 (url-safe, unpadded, as JWTs use), and return the length written. */
size_t b64_encoded_len(size_t len);
size_t b64url_encoded_len(size_t len);
size_t b64_encode(const void *in, size_t len, char *out);
size_t b64url_encode(const void *in, size_t len, char *out);
/* Strict decoders: only the alphabet, standard padding exactly where it belongs
 * (url-safe: no padding at all), no whitespace, and unused trailing bits zero, so
 * that every accepted text is the canonical encoding of its bytes. out must hold
 * b64_decoded_max(len) bytes. 0 and *outlen, or -1. */
size_t b64_decoded_max(size_t len);
int b64_decode(const char *in, size_t len, unsigned char *out, size_t *outlen);
int b64url_decode(const char *in, size_t len, unsigned char *out, size_t *outlen);

/* Overwrite secrets before their memory is released. */
void crypto_wipe(void *p, size_t len);

#endif
