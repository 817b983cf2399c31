#include "supervisor/jsoncheck.h"

#include <stdio.h>
#include <stdint.h>
#include <string.h>

struct jp {
	const unsigned char *p, *end, *start;
	const char *why;
	int depth;
};

static void ws(struct jp *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static bool fail(struct jp *j, const char *why)
{
	if (!j->why)
		j->why = why;
	return false;
}

static bool value(struct jp *j);

static bool literal(struct jp *j, const char *word)
{
	size_t n = strlen(word);
	if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0)
		return fail(j, "unexpected character");
	j->p += n;
	return true;
}

/* RFC 3629's table: the second byte's range depends on the first, which is
 * what excludes overlong forms (E0 80..9F, F0 80..8F), the surrogates
 * (ED A0..BF: U+D800..DFFF) and code points above U+10FFFF (F4 90..BF, F5..FF);
 * C0, C1 (overlong two-byte forms) never lead. */
static bool utf8_seq(struct jp *j)
{
	unsigned c = *j->p, need, lo = 0x80, hi = 0xbf;
	if (c >= 0xc2 && c <= 0xdf)
		need = 1;
	else if (c >= 0xe0 && c <= 0xef)
		need = 2, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
	else if (c >= 0xf0 && c <= 0xf4)
		need = 3, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
	else
		return fail(j, "invalid UTF-8");
	if ((size_t)(j->end - j->p) <= need || j->p[1] < lo || j->p[1] > hi)
		return fail(j, "invalid UTF-8");
	for (unsigned i = 2; i <= need; i++)
		if ((j->p[i] & 0xc0) != 0x80)
			return fail(j, "invalid UTF-8");
	j->p += need + 1;
	return true;
}

static bool string(struct jp *j)
{
	j->p++; /* the opening quote */
	while (j->p < j->end) {
		/* Most of a payload is plain ASCII: step over it eight bytes at a time
		 * while none of them is a quote, a backslash, a control character or
		 * above 0x7f (the usual tests for a zero byte and a byte below n in a
		 * 64-bit word: exact as to whether any byte is one), then a byte at a time. */
		const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
		while (j->end - j->p >= 8) {
			uint64_t w, q, b;
			memcpy(&w, j->p, 8);
			q = w ^ (ones * '"');
			b = w ^ (ones * '\\');
			if ((w | ((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((b - ones) & ~b)) & highs)
				break;
			j->p += 8;
		}
		while (j->p < j->end && *j->p >= 0x20 && *j->p < 0x80 && *j->p != '"' && *j->p != '\\')
			j->p++;
		if (j->p >= j->end)
			break;
		unsigned char c = *j->p;
		if (c == '"') {
			j->p++;
			return true;
		}
		if (c < 0x20)
			return fail(j, "control character in a string");
		if (c == '\\') {
			if (++j->p >= j->end)
				break;
			if (*j->p == 'u') {
				for (int i = 1; i <= 4; i++)
					if (j->p + i >= j->end || !strchr("0123456789abcdefABCDEF", j->p[i]) || !j->p[i])
						return fail(j, "bad \\u escape");
				j->p += 5;
			} else if (strchr("\"\\/bfnrt", *j->p) && *j->p) {
				j->p++;
			} else {
				return fail(j, "bad escape");
			}
			continue;
		}
		if (c >= 0x80) {
			if (!utf8_seq(j))
				return false;
			continue;
		}
		j->p++;
	}
	return fail(j, "unterminated string");
}

static bool digits(struct jp *j)
{
	const unsigned char *s = j->p;
	while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
		j->p++;
	return j->p > s || fail(j, "bad number");
}

static bool number(struct jp *j)
{
	if (*j->p == '-')
		j->p++;
	if (j->p < j->end && *j->p == '0')
		j->p++;
	else if (!digits(j))
		return false;
	if (j->p < j->end && *j->p == '.') {
		j->p++;
		if (!digits(j))
			return false;
	}
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		if (!digits(j))
			return false;
	}
	return true;
}

static bool container(struct jp *j, char close)
{
	if (++j->depth > 256)
		return fail(j, "nested too deeply");
	j->p++;
	ws(j);
	if (j->p < j->end && *j->p == close) {
		j->p++;
		j->depth--;
		return true;
	}
	for (;;) {
		ws(j);
		if (close == '}') {
			if (j->p >= j->end || *j->p != '"')
				return fail(j, "expected a string key");
			if (!string(j))
				return false;
			ws(j);
			if (j->p >= j->end || *j->p++ != ':')
				return fail(j, "expected ':'");
		}
		if (!value(j))
			return false;
		ws(j);
		if (j->p < j->end && *j->p == ',') {
			j->p++;
			continue;
		}
		if (j->p < j->end && *j->p == close) {
			j->p++;
			j->depth--;
			return true;
		}
		return fail(j, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
	}
}

static bool value(struct jp *j)
{
	ws(j);
	if (j->p >= j->end)
		return fail(j, "unexpected end");
	switch (*j->p) {
	case '{': return container(j, '}');
	case '[': return container(j, ']');
	case '"': return string(j);
	case 't': return literal(j, "true");
	case 'f': return literal(j, "false");
	case 'n': return literal(j, "null");
	default:
		if (*j->p == '-' || (*j->p >= '0' && *j->p <= '9'))
			return number(j);
		return fail(j, "unexpected character");
	}
}

bool json_check(const char *buf, size_t len, char *err, size_t errlen)
{
	struct jp j = { (const unsigned char *)buf, (const unsigned char *)buf + len, (const unsigned char *)buf, NULL, 0 };
	bool ok = value(&j);
	if (ok) {
		ws(&j);
		if (j.p != j.end)
			ok = fail(&j, "text after the JSON value");
	}
	if (!ok)
		snprintf(err, errlen, "%s at byte %zu", j.why, (size_t)(j.p - j.start));
	return ok;
}

bool utf8_valid(const char *s, size_t len)
{
	struct jp j = { (const unsigned char *)s, (const unsigned char *)s + len, (const unsigned char *)s, NULL, 0 };
	while (j.p < j.end) {
		if (*j.p < 0x80)
			j.p++;
		else if (!utf8_seq(&j))
			return false;
	}
	return true;
}
