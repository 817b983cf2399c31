/* The JSON check of `send`: strict UTF-8 (RFC 3629) inside strings. Each
 * refused sequence here was accepted before (and a WebSocket server then
 * closed the connection with 1007, dropping every message on it). */
#include <string.h>

#include "check.h"
#include "supervisor/jsoncheck.h"

struct row {
	const char *name, *json;
	bool valid;
};

static const struct row rows[] = {
	{ "ASCII", "{\"plate\":\"ABC123\"}", true },
	{ "2-byte e-acute", "\"\xc3\xa9\"", true },
	{ "3-byte euro", "\"\xe2\x82\xac\"", true },
	{ "3-byte U+0800, lowest", "\"\xe0\xa0\x80\"", true },
	{ "3-byte U+D7FF, below the surrogates", "\"\xed\x9f\xbf\"", true },
	{ "3-byte U+E000, above the surrogates", "\"\xee\x80\x80\"", true },
	{ "3-byte U+FFFF", "\"\xef\xbf\xbf\"", true },
	{ "4-byte emoji U+1F697", "\"\xf0\x9f\x9a\x97\"", true },
	{ "4-byte U+10000, lowest", "\"\xf0\x90\x80\x80\"", true },
	{ "4-byte U+10FFFF, highest", "\"\xf4\x8f\xbf\xbf\"", true },
	{ "after 8 ASCII bytes", "\"abcdefgh\xf0\x9f\x9a\x97ijklmnop\"", true },
	{ "overlong NUL C0 80", "\"\xc0\x80\"", false },
	{ "overlong C1 BF", "\"\xc1\xbf\"", false },
	{ "overlong 3-byte E0 80 80", "\"\xe0\x80\x80\"", false },
	{ "overlong 3-byte E0 9F BF", "\"\xe0\x9f\xbf\"", false },
	{ "overlong 4-byte F0 80 80 80", "\"\xf0\x80\x80\x80\"", false },
	{ "overlong 4-byte F0 8F BF BF", "\"\xf0\x8f\xbf\xbf\"", false },
	{ "surrogate U+D800 ED A0 80", "\"\xed\xa0\x80\"", false },
	{ "surrogate U+DFFF ED BF BF", "\"\xed\xbf\xbf\"", false },
	{ "surrogate pair as CESU-8", "\"\xed\xa0\xbd\xed\xb2\xa9\"", false },
	{ "U+110000 F4 90 80 80", "\"\xf4\x90\x80\x80\"", false },
	{ "F5 lead", "\"\xf5\x80\x80\x80\"", false },
	{ "FF byte", "\"\xff\"", false },
	{ "lone continuation", "\"\x80\"", false },
	{ "cut 3-byte", "\"\xe2\x82\"", false },
	{ "cut at the end", "\"\xe2\x82", false },
	{ "bad continuation", "\"\xe2\x28\xa1\"", false },
	{ "in a key", "{\"\xed\xa0\x80\":1}", false },
	{ "after 8 ASCII bytes", "\"abcdefgh\xe0\x80\x80\"", false },
};

int main(void)
{
	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		char err[128] = "";
		bool ok = json_check(rows[i].json, strlen(rows[i].json), err, sizeof err);
		if (ok != rows[i].valid)
			fprintf(stderr, "FAIL %s: %s%s\n", rows[i].name, ok ? "accepted" : "refused: ", ok ? "" : err);
		CHECK(ok == rows[i].valid);
		if (!rows[i].valid)
			CHECK(strncmp(err, "invalid UTF-8 at byte", 21) == 0 || strstr(err, "unterminated"));
	}
	return CHECK_DONE();
}
