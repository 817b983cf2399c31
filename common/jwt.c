#include "common/jwt.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/crypto.h"
#include "common/log.h"

#define SIG_LEN 32 /* HMAC-SHA256 */
#define JSON_MAX_DEPTH 16

const char *jwt_status_str(enum jwt_status s)
{
	switch (s) {
	case JWT_OK: return "ok";
	case JWT_MALFORMED: return "malformed";
	case JWT_BAD_ALG: return "algorithm refused";
	case JWT_BAD_SIGNATURE: return "bad signature";
	case JWT_EXPIRED: return "expired";
	case JWT_NOT_YET_VALID: return "not yet valid";
	}
	return "unknown";
}

/* ---- a reader for the small flat JSON objects of a JWT header and claims ----
 *
 * Hand-written on purpose. We need a handful of members (alg, typ, crit, exp,
 * nbf, iat, sub) out of two objects of a few hundred bytes, under stricter rules
 * than a general parser applies by default: a duplicate of any member we act on
 * is refused (two "exp" must not let one parser see a different token than
 * another), types are checked, and nothing may follow the object. None of the
 * libraries the project links reads JSON (libyaml is YAML 1.1, which accepts far
 * more than JSON), and a JSON library in the supervisor for this would bring more
 * code facing untrusted input than these lines. Nested arrays and objects are
 * skipped (depth-limited) so that tokens carrying e.g. an "aud" array still verify. */

enum jkind { J_STR, J_NUM, J_LIT, J_NESTED };

struct jmember {
	char key[32];
	bool key_long;      /* longer than key[]: never one of ours */
	enum jkind kind;
	char str[128];      /* J_STR, truncated */
	double num;         /* J_NUM */
};

struct jreader {
	const char *p, *end;
	const char *err;
};

static void skip_ws(struct jreader *r)
{
	while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
		r->p++;
}

static bool fail(struct jreader *r, const char *why)
{
	if (!r->err)
		r->err = why;
	return false;
}

static int hex4(const char *p)
{
	int v = 0;
	for (int i = 0; i < 4; i++) {
		int c = (unsigned char)p[i], d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return -1;
		v = v << 4 | d;
	}
	return v;
}

/* Append one byte to a bounded output; remember when it did not fit. */
static void put(char *out, size_t cap, size_t *n, bool *trunc, char c)
{
	if (*n + 1 < cap)
		out[(*n)++] = c;
	else
		*trunc = true;
}

static void put_utf8(char *out, size_t cap, size_t *n, bool *trunc, unsigned cp)
{
	if (cp < 0x80) {
		put(out, cap, n, trunc, (char)cp);
	} else if (cp < 0x800) {
		put(out, cap, n, trunc, (char)(0xc0 | cp >> 6));
		put(out, cap, n, trunc, (char)(0x80 | (cp & 0x3f)));
	} else if (cp < 0x10000) {
		put(out, cap, n, trunc, (char)(0xe0 | cp >> 12));
		put(out, cap, n, trunc, (char)(0x80 | ((cp >> 6) & 0x3f)));
		put(out, cap, n, trunc, (char)(0x80 | (cp & 0x3f)));
	} else {
		put(out, cap, n, trunc, (char)(0xf0 | cp >> 18));
		put(out, cap, n, trunc, (char)(0x80 | ((cp >> 12) & 0x3f)));
		put(out, cap, n, trunc, (char)(0x80 | ((cp >> 6) & 0x3f)));
		put(out, cap, n, trunc, (char)(0x80 | (cp & 0x3f)));
	}
}

/* A string at r->p (the opening quote), unescaped into out (NUL-terminated,
 * truncated to cap - 1 bytes with *trunc set). out may be NULL: validate only. */
static bool read_string(struct jreader *r, char *out, size_t cap, bool *trunc)
{
	char scratch[1];
	size_t n = 0;
	bool t = false;
	if (!out) {
		out = scratch;
		cap = 1;
	}
	if (r->p >= r->end || *r->p != '"')
		return fail(r, "expected a string");
	r->p++;
	for (;;) {
		if (r->p >= r->end)
			return fail(r, "unterminated string");
		unsigned char c = (unsigned char)*r->p++;
		if (c == '"')
			break;
		if (c < 0x20)
			return fail(r, "control character in a string");
		if (c != '\\') {
			put(out, cap, &n, &t, (char)c);
			continue;
		}
		if (r->p >= r->end)
			return fail(r, "unterminated string");
		char e = *r->p++;
		static const char escapes[] = "\"\\/bfnrt", meaning[] = "\"\\/\b\f\n\r\t";
		const char *simple = e ? strchr(escapes, e) : NULL;
		if (simple) {
			put(out, cap, &n, &t, meaning[simple - escapes]);
			continue;
		}
		if (e != 'u' || r->end - r->p < 4)
			return fail(r, "bad escape in a string");
		int cp = hex4(r->p);
		if (cp < 0)
			return fail(r, "bad \\u escape");
		r->p += 4;
		if (cp >= 0xdc00 && cp <= 0xdfff)
			return fail(r, "lone low surrogate");
		if (cp >= 0xd800 && cp <= 0xdbff) {
			if (r->end - r->p < 6 || r->p[0] != '\\' || r->p[1] != 'u')
				return fail(r, "lone high surrogate");
			int lo = hex4(r->p + 2);
			if (lo < 0xdc00 || lo > 0xdfff)
				return fail(r, "lone high surrogate");
			r->p += 6;
			cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
		}
		put_utf8(out, cap, &n, &t, (unsigned)cp);
	}
	out[n < cap ? n : cap - 1] = '\0';
	if (trunc)
		*trunc = t;
	return true;
}

/* RFC 8259 number grammar, then strtod on a bounded copy. */
static bool read_number(struct jreader *r, double *out)
{
	const char *s = r->p, *p = s;
	if (p < r->end && *p == '-')
		p++;
	if (p >= r->end || !isdigit((unsigned char)*p))
		return fail(r, "bad number");
	if (*p == '0')
		p++;
	else
		while (p < r->end && isdigit((unsigned char)*p))
			p++;
	if (p < r->end && *p == '.') {
		p++;
		if (p >= r->end || !isdigit((unsigned char)*p))
			return fail(r, "bad number");
		while (p < r->end && isdigit((unsigned char)*p))
			p++;
	}
	if (p < r->end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < r->end && (*p == '+' || *p == '-'))
			p++;
		if (p >= r->end || !isdigit((unsigned char)*p))
			return fail(r, "bad number");
		while (p < r->end && isdigit((unsigned char)*p))
			p++;
	}
	char buf[64];
	if ((size_t)(p - s) >= sizeof buf)
		return fail(r, "number too long");
	memcpy(buf, s, (size_t)(p - s));
	buf[p - s] = '\0';
	*out = strtod(buf, NULL);
	r->p = p;
	return true;
}

static bool literal(struct jreader *r, const char *word)
{
	size_t n = strlen(word);
	if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0)
		return fail(r, "unexpected character");
	r->p += n;
	return true;
}

static bool skip_value(struct jreader *r, int depth);

/* An array or object we do not interpret: checked for form, then dropped. */
static bool skip_container(struct jreader *r, int depth)
{
	if (depth > JSON_MAX_DEPTH)
		return fail(r, "nested too deeply");
	char close = *r->p == '{' ? '}' : ']';
	bool object = close == '}';
	r->p++;
	skip_ws(r);
	if (r->p < r->end && *r->p == close) {
		r->p++;
		return true;
	}
	for (;;) {
		skip_ws(r);
		if (object) {
			if (!read_string(r, NULL, 0, NULL))
				return false;
			skip_ws(r);
			if (r->p >= r->end || *r->p++ != ':')
				return fail(r, "expected ':'");
		}
		if (!skip_value(r, depth + 1))
			return false;
		skip_ws(r);
		if (r->p >= r->end)
			return fail(r, "unterminated array or object");
		char c = *r->p++;
		if (c == close)
			return true;
		if (c != ',')
			return fail(r, "expected ',' or the end of an array or object");
	}
}

static bool skip_value(struct jreader *r, int depth)
{
	double d;
	skip_ws(r);
	if (r->p >= r->end)
		return fail(r, "expected a value");
	switch (*r->p) {
	case '"': return read_string(r, NULL, 0, NULL);
	case '{': case '[': return skip_container(r, depth);
	case 't': return literal(r, "true");
	case 'f': return literal(r, "false");
	case 'n': return literal(r, "null");
	default: return read_number(r, &d);
	}
}

static bool read_value(struct jreader *r, struct jmember *m)
{
	skip_ws(r);
	if (r->p >= r->end)
		return fail(r, "expected a value");
	switch (*r->p) {
	case '"': {
		bool t;
		m->kind = J_STR;
		return read_string(r, m->str, sizeof m->str, &t);
	}
	case '{': case '[':
		m->kind = J_NESTED;
		return skip_container(r, 1);
	case 't': case 'f': case 'n':
		m->kind = J_LIT;
		return skip_value(r, 1);
	default:
		m->kind = J_NUM;
		return read_number(r, &m->num);
	}
}

typedef bool (*member_fn)(const struct jmember *m, void *arg);

/* Call fn for each member of the one object that must fill buf. */
static bool json_object_each(const char *buf, size_t len, member_fn fn, void *arg, const char **err)
{
	struct jreader r = { buf, buf + len, NULL };
	struct jmember m;
	skip_ws(&r);
	if (r.p >= r.end || *r.p++ != '{') {
		*err = "not a JSON object";
		return false;
	}
	skip_ws(&r);
	bool empty = r.p < r.end && *r.p == '}';
	if (empty)
		r.p++;
	while (!empty) {
		skip_ws(&r);
		memset(&m, 0, sizeof m);
		if (!read_string(&r, m.key, sizeof m.key, &m.key_long))
			break;
		skip_ws(&r);
		if (r.p >= r.end || *r.p++ != ':') {
			fail(&r, "expected ':'");
			break;
		}
		if (!read_value(&r, &m))
			break;
		if (!fn(&m, arg)) {
			fail(&r, "");
			break;
		}
		skip_ws(&r);
		if (r.p >= r.end) {
			fail(&r, "unterminated object");
			break;
		}
		char c = *r.p++;
		if (c == '}')
			break;
		if (c != ',') {
			fail(&r, "expected ',' or '}'");
			break;
		}
	}
	skip_ws(&r);
	if (!r.err && r.p != r.end)
		fail(&r, "bytes after the object");
	*err = r.err;
	return !r.err;
}

static bool key_is(const struct jmember *m, const char *k) { return !m->key_long && strcmp(m->key, k) == 0; }

/* ---- the token ---- */

struct parsed {
	unsigned seen;            /* bit per member we act on: a second one is refused */
	enum jwt_status status;   /* set by a member callback that refuses */
	char why[96];
	char alg[24], typ[24];
	bool has_alg, has_typ, has_crit;
	struct jwt_claims *claims;
};

static void printable(char *dst, size_t cap, const char *src)
{
	size_t i = 0;
	for (; src[i] && i + 1 < cap; i++)
		dst[i] = src[i] >= 0x20 && src[i] < 0x7f ? src[i] : '?';
	dst[i] = '\0';
}

static bool once(struct parsed *P, unsigned bit, const char *key)
{
	if (P->seen & bit) {
		P->status = JWT_MALFORMED;
		snprintf(P->why, sizeof P->why, "duplicate '%s'", key);
		return false;
	}
	P->seen |= bit;
	return true;
}

static bool wrong_type(struct parsed *P, const char *key, const char *want)
{
	P->status = JWT_MALFORMED;
	snprintf(P->why, sizeof P->why, "'%s' is not a %s", key, want);
	return false;
}

static bool header_member(const struct jmember *m, void *arg)
{
	struct parsed *P = arg;
	if (key_is(m, "alg")) {
		if (!once(P, 1, "alg"))
			return false;
		if (m->kind != J_STR)
			return wrong_type(P, "alg", "string");
		printable(P->alg, sizeof P->alg, m->str);
		P->has_alg = true;
	} else if (key_is(m, "typ")) {
		if (!once(P, 2, "typ"))
			return false;
		if (m->kind != J_STR)
			return wrong_type(P, "typ", "string");
		printable(P->typ, sizeof P->typ, m->str);
		P->has_typ = true;
	} else if (key_is(m, "crit")) {
		P->has_crit = true;
	}
	return true;
}

/* A NumericDate: seconds, possibly fractional; kept to the whole second below. */
static bool numeric_date(struct parsed *P, const struct jmember *m, const char *key, unsigned bit, bool *has,
			 int64_t *out)
{
	if (!once(P, bit, key))
		return false;
	if (m->kind != J_NUM)
		return wrong_type(P, key, "number");
	if (!isfinite(m->num) || fabs(m->num) > 1e15) {
		P->status = JWT_MALFORMED;
		snprintf(P->why, sizeof P->why, "'%s' is out of range", key);
		return false;
	}
	*out = (int64_t)floor(m->num);
	*has = true;
	return true;
}

static bool claims_member(const struct jmember *m, void *arg)
{
	struct parsed *P = arg;
	struct jwt_claims *c = P->claims;
	if (key_is(m, "exp"))
		return numeric_date(P, m, "exp", 4, &c->has_exp, &c->exp);
	if (key_is(m, "nbf"))
		return numeric_date(P, m, "nbf", 8, &c->has_nbf, &c->nbf);
	if (key_is(m, "iat"))
		return numeric_date(P, m, "iat", 16, &c->has_iat, &c->iat);
	if (key_is(m, "sub")) {
		if (!once(P, 32, "sub"))
			return false;
		if (m->kind != J_STR)
			return wrong_type(P, "sub", "string");
		snprintf(c->sub, sizeof c->sub, "%s", m->str);
	}
	return true;
}

/* Decode one base64url part and read it as a JSON object. */
static enum jwt_status parse_part(const char *what, const char *b64, size_t len, member_fn fn, struct parsed *P,
				  char *reason, size_t reasonlen)
{
	unsigned char *json = xmalloc(b64_decoded_max(len));
	size_t n = 0;
	const char *err = NULL;
	enum jwt_status st = JWT_OK;
	P->status = JWT_OK;
	if (b64url_decode(b64, len, json, &n) < 0) {
		snprintf(reason, reasonlen, "malformed token: %s is not base64url", what);
		st = JWT_MALFORMED;
	} else if (!json_object_each((const char *)json, n, fn, P, &err)) {
		st = P->status != JWT_OK ? P->status : JWT_MALFORMED;
		if (P->status != JWT_OK)
			snprintf(reason, reasonlen, "malformed token: %s: %s", what, P->why);
		else
			snprintf(reason, reasonlen, "malformed token: %s: %s", what, err);
	}
	free(json);
	return st;
}

static enum jwt_status check_header(const char *b64, size_t len, char *reason, size_t reasonlen)
{
	struct parsed P;
	memset(&P, 0, sizeof P);
	enum jwt_status st = parse_part("header", b64, len, header_member, &P, reason, reasonlen);
	if (st != JWT_OK)
		return st;
	if (!P.has_alg) {
		snprintf(reason, reasonlen, "malformed token: the header has no alg");
		return JWT_MALFORMED;
	}
	if (strcmp(P.alg, "HS256") != 0) {
		snprintf(reason, reasonlen, "token algorithm '%s' is not accepted (HS256 only)", P.alg);
		return JWT_BAD_ALG;
	}
	if (P.has_typ && strcasecmp(P.typ, "JWT") != 0) {
		snprintf(reason, reasonlen, "malformed token: typ '%s' is not JWT", P.typ);
		return JWT_MALFORMED;
	}
	if (P.has_crit) { /* RFC 7515 4.1.11: extensions we do not understand must be refused */
		snprintf(reason, reasonlen, "malformed token: critical header extensions are not supported");
		return JWT_MALFORMED;
	}
	return JWT_OK;
}

static void hmac_sha256(const void *key, size_t keylen, const void *data, size_t len, unsigned char out[SIG_LEN])
{
	unsigned int n = SIG_LEN;
	static const unsigned char nokey[1];
	if (!HMAC(EVP_sha256(), keylen ? key : nokey, (int)keylen, data, len, out, &n) || n != SIG_LEN)
		fatalx("OpenSSL: HMAC-SHA256 failed");
}

static enum jwt_status check_signature(const char *token, size_t signed_len, const char *sig, size_t siglen,
				       const void *secret, size_t secret_len, char *reason, size_t reasonlen)
{
	unsigned char got[SIG_LEN + 3], want[SIG_LEN];
	size_t n = 0;
	if (siglen != b64url_encoded_len(SIG_LEN) || b64url_decode(sig, siglen, got, &n) < 0 || n != SIG_LEN) {
		snprintf(reason, reasonlen, "bad token signature (not an HMAC-SHA256)");
		return JWT_BAD_SIGNATURE;
	}
	hmac_sha256(secret, secret_len, token, signed_len, want);
	int diff = CRYPTO_memcmp(got, want, SIG_LEN);
	crypto_wipe(want, sizeof want);
	if (diff) {
		snprintf(reason, reasonlen, "bad token signature");
		return JWT_BAD_SIGNATURE;
	}
	return JWT_OK;
}

enum jwt_status jwt_verify(const char *token, size_t len, const void *secret, size_t secret_len, int64_t now,
			   struct jwt_claims *claims, char *reason, size_t reasonlen)
{
	struct jwt_claims scratch;
	if (!claims)
		claims = &scratch;
	memset(claims, 0, sizeof *claims);
	snprintf(reason, reasonlen, "ok");
	if (len > JWT_MAX_LEN) {
		snprintf(reason, reasonlen, "malformed token: longer than %d bytes", JWT_MAX_LEN);
		return JWT_MALFORMED;
	}
	const char *d1 = memchr(token, '.', len);
	const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
	if (!d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token))) {
		snprintf(reason, reasonlen, "malformed token: expected three parts separated by dots");
		return JWT_MALFORMED;
	}
	enum jwt_status st = check_header(token, (size_t)(d1 - token), reason, reasonlen);
	if (st != JWT_OK)
		return st;
	if (!secret_len) {
		snprintf(reason, reasonlen, "no JWT secret is configured");
		return JWT_BAD_SIGNATURE;
	}
	st = check_signature(token, (size_t)(d2 - token), d2 + 1, len - (size_t)(d2 + 1 - token), secret, secret_len,
			     reason, reasonlen);
	if (st != JWT_OK)
		return st;
	/* Only a signed token gets its claims read: strangers learn nothing from the parser. */
	struct parsed P;
	memset(&P, 0, sizeof P);
	P.claims = claims;
	st = parse_part("claims", d1 + 1, (size_t)(d2 - d1 - 1), claims_member, &P, reason, reasonlen);
	if (st != JWT_OK)
		return st;
	if (claims->has_exp && now >= claims->exp + JWT_LEEWAY_S) {
		snprintf(reason, reasonlen, "token expired");
		return JWT_EXPIRED;
	}
	if (claims->has_nbf && now < claims->nbf - JWT_LEEWAY_S) {
		snprintf(reason, reasonlen, "token not valid yet");
		return JWT_NOT_YET_VALID;
	}
	return JWT_OK;
}

/* ---- minting ---- */

static size_t json_escape(const char *s, char *out)
{
	size_t n = 0;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			out[n++] = '\\';
			out[n++] = (char)c;
		} else if (c < 0x20) {
			n += (size_t)sprintf(out + n, "\\u%04x", c);
		} else {
			out[n++] = (char)c;
		}
	}
	out[n] = '\0';
	return n;
}

char *jwt_mint_at(const void *secret, size_t secret_len, const char *subject, int64_t now, unsigned ttl_s)
{
	static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	size_t sublen = subject ? strlen(subject) : 0;
	char *esc = xmalloc(sublen * 6 + 1);
	json_escape(subject ? subject : "", esc);
	char *claims = subject ? xasprintf("{\"sub\":\"%s\",\"iat\":%lld,\"exp\":%lld}", esc, (long long)now,
					   (long long)(now + ttl_s))
			       : xasprintf("{\"iat\":%lld,\"exp\":%lld}", (long long)now, (long long)(now + ttl_s));
	free(esc);
	size_t hl = strlen(header), cl = strlen(claims);
	size_t total = b64url_encoded_len(hl) + 1 + b64url_encoded_len(cl) + 1 + b64url_encoded_len(SIG_LEN);
	char *tok = xmalloc(total + 1);
	size_t n = b64url_encode(header, hl, tok);
	tok[n++] = '.';
	n += b64url_encode(claims, cl, tok + n);
	free(claims);
	unsigned char sig[SIG_LEN];
	hmac_sha256(secret, secret_len, tok, n, sig);
	tok[n++] = '.';
	b64url_encode(sig, SIG_LEN, tok + n);
	return tok;
}

char *jwt_mint(const char *secret, const char *subject, unsigned ttl_s)
{
	return jwt_mint_at(secret, strlen(secret), subject, (int64_t)time(NULL), ttl_s);
}
