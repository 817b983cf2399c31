/* libFuzzer: a control request as the supervisor handles it, as far as that
 * goes without a running daemon: decode (the request must be a REQUEST of our
 * version), auth_check against a configuration that demands credentials (API
 * keys, JWTs, allowed users), then the argument reading every command does and
 * the JSON check of `send`. The first input byte picks the peer (an allowed uid
 * or not); the rest is the frame body. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "supervisor/control.h"
#include "supervisor/ctlargs.h"
#include "supervisor/jsoncheck.h"
#include "supervisor/sup.h"

struct sup sup; /* what auth.c reads: the configuration in force */

static msgpack_zone zone;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char path[] = "/tmp/ucgw-fuzz-control-XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0)
		abort();
	dprintf(fd, "gateway:\n  device_id: fuzz\n"
		    "security:\n  require_auth: true\n  api_keys: [key-one, key-two]\n"
		    "  jwt_secret: fuzz-secret\n  allowed_users: [root, '%u']\n  audit_log: /dev/null\n",
		(unsigned)getuid());
	close(fd);
	char err[512];
	if (config_load(path, &sup.cfg, err, sizeof err) < 0) {
		fprintf(stderr, "%s\n", err);
		abort();
	}
	unlink(path);
	log_init("fuzz_control", LOG_LVL_ERR); /* refusals are expected: keep them quiet */
	msgpack_zone_init(&zone, 4096);
	return 0;
}

/* The strict reader every command's body goes through (its table, then the
 * command's own), and the JSON check of `send`. */
static void read_args(const struct msg *req)
{
	struct ctlargs a;
	char err[512];
	const struct ctlargs_cmd *cmd = ctlargs_command(req->name);
	if (!cmd)
		return;
	int code = ctlargs_read(cmd, req->body, (unsigned)req->version, &a, err, sizeof err);
	if (code && !ctl_code_name(code))
		abort(); /* every refusal has a code of proto/ctl.h */
	if (code || strcmp(cmd->name, "send") != 0)
		return;
	const struct ctlargs_val *data = ctlargs_get(&a, "data");
	char why[256];
	json_check(data->s, data->len, why, sizeof why);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	struct client c = { .cid = 1, .uid = data[0] & 1 ? getuid() : 4242, .gid = 4242, .pid = 1 };
	struct msg m;
	char err[256];
	msgpack_zone_clear(&zone);
	if (msg_decode(data + 1, size - 1, &m, &zone, err, sizeof err) < 0 || m.type != MSG_REQUEST)
		return 0;
	if (m.version < UCGW_CTL_VERSION_MIN || m.version > UCGW_CTL_VERSION)
		return 0;
	if (auth_check(&c, &m, err, sizeof err) < 0) {
		if (strncmp(err, "unauthorized: ", 14) != 0)
			abort();
		if (m.auth && strlen(m.auth) >= 8 && strstr(err, m.auth))
			abort(); /* a refusal never quotes the credential */
		return 0;
	}
	read_args(&m);
	return 0;
}
