/* libFuzzer: the base64 codecs and the AES-256-GCM opener. Properties checked:
 * a strict decoder accepts only canonical text (decode then encode gives the
 * input back); nothing opens under a key it was not sealed with unless the tag
 * matches; seal then open gives the plaintext back; key parsing never crashes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"

static const unsigned char key[CRYPTO_KEY_LEN] = "0123456789abcdef0123456789abcdef";

static void base64_roundtrip(const char *in, size_t len, bool url)
{
	unsigned char *out = malloc(b64_decoded_max(len));
	size_t n = 0;
	if ((url ? b64url_decode(in, len, out, &n) : b64_decode(in, len, out, &n)) == 0) {
		char *back = malloc(b64_encoded_len(n) + 1);
		size_t bl = url ? b64url_encode(out, n, back) : b64_encode(out, n, back);
		if (bl != len || memcmp(back, in, len) != 0)
			abort();
		free(back);
	}
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	base64_roundtrip(text, size, false);
	base64_roundtrip(text, size, true);
	char err[256];
	size_t n;
	/* a payload as received: base64, then nonce | tag | ciphertext */
	unsigned char *pt = crypto_decrypt_b64(key, text, size, &n, err, sizeof err);
	free(pt);
	unsigned char *raw = malloc(size + 1);
	if (size >= CRYPTO_OVERHEAD && crypto_open(key, data, size, raw, &n, err, sizeof err) == 0)
		abort(); /* a forged tag: 2^-127 */
	free(raw);
	/* seal and open the input */
	unsigned char *sealed = malloc(size + CRYPTO_OVERHEAD), *opened = malloc(size + 1);
	if (crypto_seal(key, data, size, sealed, err, sizeof err) < 0 ||
	    crypto_open(key, sealed, size + CRYPTO_OVERHEAD, opened, &n, err, sizeof err) < 0 || n != size ||
	    (size && memcmp(opened, data, size) != 0))
		abort();
	free(sealed);
	free(opened);
	unsigned char k[CRYPTO_KEY_LEN];
	crypto_key_parse(data, size, k, err, sizeof err);
	return 0;
}
