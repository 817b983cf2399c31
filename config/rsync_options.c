/* rsync.options: what the rsync worker cannot let rsync do. The worker answers a
 * file ok only when rsync proved it is on the server under its final name, and
 * follows rsync's output while it runs; these options would delete files on the
 * server, show it a half file under the final name, let rsync skip a file and
 * still exit 0, or hide the output the worker reads. The loader warns of them
 * (FILE:LINE:COL, see config.c); the worker refuses them at its start. */
#include <stdio.h>
#include <string.h>

#include "config/config.h"

#define DELETES "it can delete files on the server"
#define HALF "rsync would write under the final name, so the server could see a half file"
#define TEMPDIR "on another file system rsync copies the file into place under its final name, so the server " \
		"could see a half file"
#define NOTHING "rsync would not send the files and still exit 0, so each would be answered ok"
#define SKIPS "it can make rsync skip a file and still exit 0, so the file would be answered ok unsent"
#define REMOTE "it passes options to the server's rsync, which the worker cannot check"
#define QUIET "it hides the output the worker reads (the files rsync finished, its progress)"
#define SOURCE "it deletes what was sent: the worker's staged links, so every run would fail"

static const struct {
	const char *name; /* "--inplace"; "--delete*": any option that starts with "--delete" */
	const char *why;
} refused_long[] = {
	{ "--delete*", DELETES },
	{ "--del", DELETES },
	{ "--force", DELETES }, /* a directory in the way of a file goes, contents and all */
	{ "--remove-source-files", SOURCE },
	{ "--remove-sent-files", SOURCE },
	{ "--inplace", HALF },
	{ "--append", HALF },
	{ "--append-verify", HALF },
	{ "--write-devices", HALF }, /* implies --inplace */
	{ "--temp-dir", TEMPDIR },
	{ "--dry-run", NOTHING },
	{ "--list-only", NOTHING },
	{ "--only-write-batch", NOTHING },
	{ "--read-batch", NOTHING },
	{ "--existing", SKIPS },
	{ "--ignore-non-existing", SKIPS },
	{ "--ignore-missing-args", SKIPS },
	{ "--max-size", SKIPS },
	{ "--min-size", SKIPS },
	{ "--exclude", SKIPS },
	{ "--exclude-from", SKIPS },
	{ "--filter", SKIPS },
	{ "--cvs-exclude", SKIPS },
	{ "--remote-option", REMOTE },
	{ "--quiet", QUIET },
	{ "--msgs2stderr", QUIET },
};

static const struct {
	char letter;
	const char *why;
} refused_short[] = {
	{ 'n', NOTHING }, /* --dry-run */
	{ 'T', TEMPDIR },
	{ 'f', SKIPS },   /* --filter */
	{ 'F', SKIPS },   /* --filter='dir-merge /.rsync-filter' */
	{ 'C', SKIPS },   /* --cvs-exclude */
	{ 'M', REMOTE },
	{ 'q', QUIET },
};

/* Short options that take an argument: the rest of the item ("-B1024"), or the
 * next item when the letter ends it. */
static const char short_with_argument[] = "BefMT@";

static bool long_matches(const char *opt, const char *name)
{
	size_t n = strlen(name);
	if (name[n - 1] == '*')
		return strncmp(opt, name, n - 1) == 0;
	return strncmp(opt, name, n) == 0 && (opt[n] == '\0' || opt[n] == '=');
}

const char *cfg_rsync_refused(char *const *items, size_t nitems, size_t *at, char *opt, size_t optlen)
{
	for (size_t i = 0; i < nitems; i++) {
		const char *o = items[i];
		*at = i;
		if (strncmp(o, "--", 2) == 0) {
			for (size_t r = 0; r < sizeof refused_long / sizeof refused_long[0]; r++)
				if (long_matches(o, refused_long[r].name)) {
					snprintf(opt, optlen, "%.*s", (int)strcspn(o, "="), o);
					return refused_long[r].why;
				}
			/* --stderr=errors is rsync's default; all and client move the
			 * lines the worker reads to stderr */
			if (strncmp(o, "--stderr=", 9) == 0 && o[9] != 'e') {
				snprintf(opt, optlen, "%s", o);
				return QUIET;
			}
			continue;
		}
		if (o[0] != '-')
			continue; /* an option's argument */
		for (const char *c = o + 1; *c; c++) {
			for (size_t r = 0; r < sizeof refused_short / sizeof refused_short[0]; r++)
				if (*c == refused_short[r].letter) {
					snprintf(opt, optlen, "-%c", *c);
					return refused_short[r].why;
				}
			if (strchr(short_with_argument, *c)) {
				if (!c[1])
					i++; /* "-e" "ssh ...": the next item is its argument */
				break;
			}
		}
	}
	return NULL;
}
