/* libFuzzer: the JWT verifier. The first byte picks how the rest is used:
 *   0: a token, verified as it is (the signature almost never matches, so this
 *      covers splitting, base64url and the header);
 *   1: "HEADER\nCLAIMS", JSON the harness encodes and signs with the right
 *      secret, so the claims reader and the exp/nbf checks are reached too;
 *   2: a subject: a minted token must verify and give it back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/crypto.h"
#include "common/jwt.h"

static const char secret[] = "fuzz-secret";
#define NOW 1700000000

static void verify(const char *tok, size_t len)
{
	char why[256];
	struct jwt_claims c;
	enum jwt_status st = jwt_verify(tok, len, secret, strlen(secret), NOW, &c, why, sizeof why);
	if (st > JWT_NOT_YET_VALID || !why[0] || memchr(why, '\0', sizeof why) == NULL)
		abort();
	if (st == JWT_OK && c.has_exp && NOW >= c.exp + JWT_LEEWAY_S)
		abort();
}

static void signed_parts(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t hl = nl ? (size_t)(nl - data) : size, cl = nl ? size - hl - 1 : 0;
	char *tok = malloc(b64url_encoded_len(hl) + b64url_encoded_len(cl) + 64);
	size_t n = b64url_encode(data, hl, tok);
	tok[n++] = '.';
	n += b64url_encode(nl ? nl + 1 : data, cl, tok + n);
	unsigned char sig[32];
	unsigned int sl = sizeof sig;
	HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)tok, n, sig, &sl);
	tok[n++] = '.';
	n += b64url_encode(sig, sizeof sig, tok + n);
	verify(tok, n);
	free(tok);
}

static void minted(const uint8_t *data, size_t size)
{
	char *sub = malloc(size + 1);
	memcpy(sub, data, size);
	sub[size] = '\0';
	char *tok = jwt_mint_at(secret, strlen(secret), sub, NOW, 60);
	struct jwt_claims c;
	char why[256];
	if (jwt_verify(tok, strlen(tok), secret, strlen(secret), NOW, &c, why, sizeof why) != JWT_OK) {
		if (strlen(tok) <= JWT_MAX_LEN)
			abort();
	} else if (strlen(sub) < sizeof c.sub && strcmp(c.sub, sub) != 0) {
		abort();
	}
	free(tok);
	free(sub);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0] % 3) {
	case 0: verify((const char *)data + 1, size - 1); break;
	case 1: signed_parts(data + 1, size - 1); break;
	case 2: minted(data + 1, size - 1); break;
	}
	return 0;
}
