/* common/jwt: known tokens (jwt.io, RFC 7515 A.1), minting, and every refusal:
 * alg none and other algorithms, bad signatures, exp/nbf with the leeway, and
 * malformed tokens of many shapes. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "check.h"
#include "common/crypto.h"
#include "common/jwt.h"

#define NOW 1700000000

static const char secret[] = "your-256-bit-secret";

static enum jwt_status verify(const char *tok, int64_t now, struct jwt_claims *c, char *why, size_t whylen)
{
	return jwt_verify(tok, strlen(tok), secret, strlen(secret), now, c, why, whylen);
}

/* header and claims JSON -> a token signed with key, whatever the header says */
static char *make(const char *header, const char *claims, const void *key, size_t keylen)
{
	char *tok = malloc(4096);
	size_t n = b64url_encode(header, strlen(header), tok);
	tok[n++] = '.';
	n += b64url_encode(claims, strlen(claims), tok + n);
	unsigned char sig[32];
	unsigned int sl = sizeof sig;
	HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)tok, n, sig, &sl);
	tok[n++] = '.';
	b64url_encode(sig, sizeof sig, tok + n);
	return tok;
}

static char *signed_tok(const char *header, const char *claims) { return make(header, claims, secret, strlen(secret)); }

static const char hs256[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static void test_known_tokens(void)
{
	char why[256];
	struct jwt_claims c;
	/* jwt.io's example */
	const char *io = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0Ij"
			 "oxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
	CHECK(verify(io, NOW, &c, why, sizeof why) == JWT_OK);
	CHECK(strcmp(c.sub, "1234567890") == 0 && c.has_iat && c.iat == 1516239022 && !c.has_exp);
	/* RFC 7515 appendix A.1: CRLF and spaces in the JSON, a boolean claim, a binary key */
	const char *rfc = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dH"
			  "A6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
	unsigned char key[64];
	size_t kl;
	const char *k64 = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
	CHECK(b64url_decode(k64, strlen(k64), key, &kl) == 0 && kl == 64);
	CHECK(jwt_verify(rfc, strlen(rfc), key, kl, 1300819380 - 100, &c, why, sizeof why) == JWT_OK);
	CHECK(c.has_exp && c.exp == 1300819380);
	CHECK(jwt_verify(rfc, strlen(rfc), key, kl, 1300819380 + JWT_LEEWAY_S, &c, why, sizeof why) == JWT_EXPIRED);
	CHECK(strcmp(why, "token expired") == 0);
	/* the right token with the wrong secret */
	CHECK(jwt_verify(io, strlen(io), "your-256-bit-secreT", 19, NOW, &c, why, sizeof why) == JWT_BAD_SIGNATURE);
	CHECK(jwt_verify(io, strlen(io), "", 0, NOW, &c, why, sizeof why) == JWT_BAD_SIGNATURE);
}

static void test_mint(void)
{
	char why[256];
	struct jwt_claims c;
	char *t = jwt_mint_at(secret, strlen(secret), "rest-worker", NOW, 300);
	CHECK(strncmp(t, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.", 37) == 0);
	CHECK(verify(t, NOW, &c, why, sizeof why) == JWT_OK);
	CHECK(strcmp(c.sub, "rest-worker") == 0 && c.iat == NOW && c.exp == NOW + 300);
	CHECK(verify(t, NOW + 300 + JWT_LEEWAY_S - 1, &c, why, sizeof why) == JWT_OK);   /* within the leeway */
	CHECK(verify(t, NOW + 300 + JWT_LEEWAY_S, &c, why, sizeof why) == JWT_EXPIRED);
	free(t);
	/* a subject that needs escaping comes back intact */
	t = jwt_mint_at(secret, strlen(secret), "a \"quoted\" \\ name\n\x01", NOW, 60);
	CHECK(verify(t, NOW, &c, why, sizeof why) == JWT_OK && strcmp(c.sub, "a \"quoted\" \\ name\n\x01") == 0);
	free(t);
	t = jwt_mint_at(secret, strlen(secret), NULL, NOW, 60);
	CHECK(verify(t, NOW, &c, why, sizeof why) == JWT_OK && c.sub[0] == '\0');
	free(t);
	t = jwt_mint(secret, "now", 60); /* the real clock */
	CHECK(jwt_verify(t, strlen(t), secret, strlen(secret), (int64_t)time(NULL), &c, why, sizeof why) == JWT_OK);
	free(t);
}

static void test_algorithms(void)
{
	char why[256];
	/* alg none: unsigned (empty signature) and even "signed" */
	const char *none_hdrs[] = { "{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"alg\":\"None\"}", "{\"alg\":\"NONE\"}",
				    "{\"alg\":\"\"}" };
	for (size_t i = 0; i < 4; i++) {
		char h[128], cl[128], tok[512];
		b64url_encode(none_hdrs[i], strlen(none_hdrs[i]), h);
		b64url_encode("{\"sub\":\"x\"}", 11, cl);
		snprintf(tok, sizeof tok, "%s.%s.", h, cl);
		CHECK(verify(tok, NOW, NULL, why, sizeof why) == JWT_BAD_ALG);
		CHECK(strstr(why, "not accepted") != NULL);
		char *s = signed_tok(none_hdrs[i], "{\"sub\":\"x\"}");
		CHECK(verify(s, NOW, NULL, why, sizeof why) == JWT_BAD_ALG);
		free(s);
	}
	char *t = signed_tok("{\"alg\":\"none\"}", "{}");
	verify(t, NOW, NULL, why, sizeof why);
	CHECK(strcmp(why, "token algorithm 'none' is not accepted (HS256 only)") == 0);
	free(t);
	/* other algorithms, even with a valid HMAC-SHA256 signature over the input */
	const char *others[] = { "HS512", "HS384", "RS256", "ES256", "hs256", "HS256 ", "PS256" };
	for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
		char hdr[128];
		snprintf(hdr, sizeof hdr, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", others[i]);
		t = signed_tok(hdr, "{\"sub\":\"x\"}");
		CHECK(verify(t, NOW, NULL, why, sizeof why) == JWT_BAD_ALG);
		free(t);
	}
	/* a header smuggling a second alg, a non-string alg, no alg, typ not JWT, crit */
	const char *bad_hdrs[] = { "{\"alg\":\"HS256\",\"alg\":\"none\"}", "{\"alg\":\"none\",\"alg\":\"HS256\"}",
				   "{\"alg\":256}", "{\"typ\":\"JWT\"}", "{\"alg\":\"HS256\",\"typ\":\"JWE\"}",
				   "{\"alg\":\"HS256\",\"crit\":[\"exp\"],\"exp\":1}", "{\"alg\":[\"HS256\"]}",
				   "{\"alg\":\"HS256\",\"typ\":1}" };
	for (size_t i = 0; i < sizeof bad_hdrs / sizeof bad_hdrs[0]; i++) {
		t = signed_tok(bad_hdrs[i], "{}");
		enum jwt_status st = verify(t, NOW, NULL, why, sizeof why);
		CHECK(st == JWT_MALFORMED || st == JWT_BAD_ALG);
		free(t);
	}
	/* typ is optional, other header members (kid) are fine, an escaped alg is still HS256 */
	const char *good_hdrs[] = { "{\"alg\":\"HS256\"}", "{\"alg\":\"HS256\",\"kid\":\"k1\",\"typ\":\"jwt\"}",
				    "{\"alg\":\"\\u0048S256\"}", " { \"alg\" : \"HS256\" } " };
	for (size_t i = 0; i < sizeof good_hdrs / sizeof good_hdrs[0]; i++) {
		t = signed_tok(good_hdrs[i], "{}");
		CHECK(verify(t, NOW, NULL, why, sizeof why) == JWT_OK);
		free(t);
	}
}

static void test_signature(void)
{
	char why[256];
	char *t = jwt_mint_at(secret, strlen(secret), "x", NOW, 60);
	size_t len = strlen(t);
	/* change one character of each part */
	const char *d2 = strrchr(t, '.');
	size_t positions[] = { 5, 40, (size_t)(d2 - t) + 3, len - 2 };
	for (size_t i = 0; i < 4; i++) {
		char *c = strdup(t);
		c[positions[i]] = c[positions[i]] == 'A' ? 'B' : 'A';
		enum jwt_status st = verify(c, NOW, NULL, why, sizeof why);
		CHECK(st == JWT_BAD_SIGNATURE || st == JWT_MALFORMED);
		free(c);
	}
	/* signature cut short, extended, empty, not base64url */
	char *c = strdup(t);
	c[len - 1] = '\0';
	CHECK(verify(c, NOW, NULL, why, sizeof why) == JWT_BAD_SIGNATURE);
	free(c);
	c = malloc(len + 3);
	sprintf(c, "%sAA", t);
	CHECK(verify(c, NOW, NULL, why, sizeof why) == JWT_BAD_SIGNATURE);
	strcpy(c, t);
	*strrchr(c, '.') = '\0';
	strcat(c, ".");
	CHECK(verify(c, NOW, NULL, why, sizeof why) == JWT_BAD_SIGNATURE);
	strcpy(c, t);
	c[len - 5] = '+';
	CHECK(verify(c, NOW, NULL, why, sizeof why) == JWT_BAD_SIGNATURE);
	free(c);
	/* signed with another secret */
	char *o = jwt_mint_at("another secret", 14, "x", NOW, 60);
	CHECK(verify(o, NOW, NULL, why, sizeof why) == JWT_BAD_SIGNATURE && strcmp(why, "bad token signature") == 0);
	free(o);
	free(t);
}

static void test_times(void)
{
	char why[256];
	struct jwt_claims c;
	char cl[256];
	snprintf(cl, sizeof cl, "{\"exp\":%d}", NOW - 3600);
	char *t = signed_tok(hs256, cl);
	CHECK(verify(t, NOW, &c, why, sizeof why) == JWT_EXPIRED && strcmp(why, "token expired") == 0);
	free(t);
	snprintf(cl, sizeof cl, "{\"nbf\":%d,\"exp\":%d}", NOW + 3600, NOW + 7200);
	t = signed_tok(hs256, cl);
	CHECK(verify(t, NOW, &c, why, sizeof why) == JWT_NOT_YET_VALID && strcmp(why, "token not valid yet") == 0);
	CHECK(verify(t, NOW + 3600 - JWT_LEEWAY_S, &c, why, sizeof why) == JWT_OK);
	CHECK(verify(t, NOW + 3600 - JWT_LEEWAY_S - 1, &c, why, sizeof why) == JWT_NOT_YET_VALID);
	free(t);
	/* fractional NumericDates, exponents */
	snprintf(cl, sizeof cl, "{\"exp\":%d.75,\"nbf\":1.7e9}", NOW + 10);
	t = signed_tok(hs256, cl);
	CHECK(verify(t, NOW, &c, why, sizeof why) == JWT_OK && c.exp == NOW + 10 && c.nbf == 1700000000);
	free(t);
	/* wrong types and ranges */
	const char *bad[] = { "{\"exp\":\"1700000000\"}", "{\"nbf\":true}", "{\"exp\":1e300}", "{\"exp\":null}",
			      "{\"exp\":1,\"exp\":9999999999}", "{\"sub\":5}", "{\"iat\":[1]}", "{\"exp\":-1e16}" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		t = signed_tok(hs256, bad[i]);
		CHECK(verify(t, NOW, &c, why, sizeof why) == JWT_MALFORMED);
		free(t);
	}
	snprintf(cl, sizeof cl, "{\"exp\":1,\"exp\":9999999999}");
	t = signed_tok(hs256, cl);
	verify(t, NOW, &c, why, sizeof why);
	CHECK(strstr(why, "duplicate 'exp'") != NULL);
	free(t);
	/* claims we do not read may be anything JSON allows */
	t = signed_tok(hs256, "{\"aud\":[\"a\",{\"b\":[1,2,{}]}],\"x\":null,\"y\":false,\"z\":-0.5e-3,\"sub\":\"\\ud83d\\ude00\"}");
	CHECK(verify(t, NOW, &c, why, sizeof why) == JWT_OK && strcmp(c.sub, "\xf0\x9f\x98\x80") == 0);
	free(t);
}

static void test_malformed(void)
{
	char why[256];
	const char *shapes[] = { "", ".", "..", "...", "abc", "a.b", "a.b.c.d", "eyJhbGciOiJIUzI1NiJ9..",
				 "eyJhbGciOiJIUzI1NiJ9.e30", "!!!.e30.AAAA", "eyJhbGciOiJIUzI1NiJ9=.e30.AAAA" };
	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
		enum jwt_status st = verify(shapes[i], NOW, NULL, why, sizeof why);
		CHECK(st == JWT_MALFORMED || st == JWT_BAD_SIGNATURE);
		CHECK(strncmp(why, "malformed token", 15) == 0 || strstr(why, "signature"));
	}
	CHECK(verify("a.b", NOW, NULL, why, sizeof why) == JWT_MALFORMED &&
	      strcmp(why, "malformed token: expected three parts separated by dots") == 0);
	/* JSON that is not a flat object we can read */
	const char *bad_json[] = { "[]", "\"HS256\"", "{", "{\"alg\":\"HS256\"", "{\"alg\":\"HS256\"} x",
				   "{\"alg\":\"HS256\",}", "{\"alg\" \"HS256\"}", "{alg:\"HS256\"}", "{\"alg\":'HS256'}",
				   "{\"alg\":\"HS\x01" "256\"}", "{\"alg\":\"\\x\"}", "{\"alg\":\"\\ud800\"}",
				   "{\"alg\":\"\\udc00x\"}", "{\"alg\":\"HS256\",\"n\":01}", "{\"alg\":\"HS256\",\"n\":1.}",
				   "{\"alg\":\"HS256\",\"n\":-}", "{\"alg\":\"HS256\",\"n\":tru}", "{\"alg\":\"HS256\",\"n\":+1}",
				   "{\"alg\":\"HS256\",\"n\":[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]}" };
	for (size_t i = 0; i < sizeof bad_json / sizeof bad_json[0]; i++) {
		char *t = signed_tok(bad_json[i], "{}");
		CHECK(verify(t, NOW, NULL, why, sizeof why) == JWT_MALFORMED);
		free(t);
		t = signed_tok(hs256, bad_json[i]);
		CHECK(verify(t, NOW, NULL, why, sizeof why) == JWT_MALFORMED);
		free(t);
	}
	/* a header with a NUL byte inside */
	char hdr[] = "{\"alg\":\"HS256\"\0}";
	char h64[64], tok[256];
	b64url_encode(hdr, sizeof hdr - 1, h64);
	snprintf(tok, sizeof tok, "%s.e30.AAAA", h64);
	CHECK(verify(tok, NOW, NULL, why, sizeof why) == JWT_MALFORMED);
	/* oversize */
	char *big = malloc(JWT_MAX_LEN + 10);
	memset(big, 'A', JWT_MAX_LEN + 9);
	big[10] = big[20] = '.';
	big[JWT_MAX_LEN + 9] = '\0';
	CHECK(verify(big, NOW, NULL, why, sizeof why) == JWT_MALFORMED && strstr(why, "longer than"));
	free(big);
	/* reasons never quote the token */
	char *t = jwt_mint_at("other", 5, "secret-subject", NOW, 60);
	verify(t, NOW, NULL, why, sizeof why);
	CHECK(!strstr(why, "secret-subject") && !strstr(why, t));
	free(t);
	/* a long, unprintable alg is cut and cleaned in the reason */
	t = signed_tok("{\"alg\":\"\\u0001AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}", "{}");
	CHECK(verify(t, NOW, NULL, why, sizeof why) == JWT_BAD_ALG && strstr(why, "'?AAAA") && strlen(why) < 100);
	free(t);
	CHECK(strcmp(jwt_status_str(JWT_EXPIRED), "expired") == 0);
}

int main(void)
{
	test_known_tokens();
	test_mint();
	test_algorithms();
	test_signature();
	test_times();
	test_malformed();
	return CHECK_DONE();
}
