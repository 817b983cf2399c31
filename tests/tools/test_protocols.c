/* The rows of the test build (workers/protocols.h): compiled into the
 * descriptor table only with UCGW_TEST_PROTOCOLS (on by default, off for the
 * packages), so that no release binary, schema or document knows them.
 *
 *   testworker  crashes, hangs, answers late or retry on command (ucgw-testworker.c)
 *   toyproto    a protocol added through its descriptor alone: its worker
 *               (ucgw-toyproto.c) delivers over a plain TCP connection, and the
 *               supervisor, the schema, the sandbox and the network monitor
 *               learn of it from the row below and from nothing else */
#include "config/keys.h"
#include "workers/protocols.h"

static const struct cfg_key testworker[] = {
	ENABLED,
	ENUM("mode", "normal", "normal|crash|exit2|hang|slow", "what the test worker does"),
	INT("delay_ms", "0", 0, 3600000, "answer each job after this long"),
	INT("ready_delay_ms", "0", 0, 3600000, "sleep this long before ready"),
	PATH("record", NULL, "append one line per delivered job here"),
	PATH("down_file", NULL, "while this file exists, every job is answered retry (a server that is down)"),
};

static const char *const testworker_calls[] = {
	/* mode hang: pause() forever */
	"pause",
	NULL,
};

static const struct protocol testworker_row = {
	.name = "testworker", .exe = "ucgw-testworker", .help = "A worker for the tests only.",
	.carries = PROTO_META | PROTO_FILES, SECTION_KEYS(testworker),
	.sandbox = { .calls = testworker_calls },
	.test_only = true,
};

static const struct cfg_key toyproto[] = {
	ENABLED,
	REQUIRED("server", "host:port of the TCP peer (an IPv4 address): each message is written to it as a line "
			   "\"ID SIZE\", then its bytes and a newline"),
};

static const char *const toyproto_calls[] = { NULL }; /* libuv's TCP: the framework's and network lists suffice */

static const struct protocol toyproto_row = {
	.name = "toyproto", .exe = "ucgw-toyproto", .help = "Metadata and files over a plain TCP connection (a test).",
	.carries = PROTO_META | PROTO_FILES, SECTION_KEYS(toyproto),
	.server = { .key = "server", .port = "9" },
	.sandbox = { .calls = toyproto_calls, .network = true, .threads = true },
	.test_only = true,
};

const struct protocol *const test_protocols[] = { &testworker_row, &toyproto_row, NULL };
