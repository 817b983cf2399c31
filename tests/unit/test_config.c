/* The config loader: the reference design's file, defaults, every error path
 * with its FILE:LINE:COL, secrets from files, and the packed form workers get. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "config/config.h"

static char dir[] = "/tmp/ucgw-test-config-XXXXXX";

static const char *write_file(const char *name, const char *text, int mode)
{
	static char path[512];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
	chmod(path, (mode_t)mode);
	return path;
}

static struct config *load_ok(const char *text)
{
	char err[1024] = "";
	struct config *c = NULL;
	int rc = config_load(write_file("ok.yaml", text, 0644), &c, err, sizeof err);
	if (rc != 0)
		fprintf(stderr, "  unexpected error: %s\n", err);
	CHECK(rc == 0);
	return c;
}

/* Loading fails with an error that starts "PATH:LINE:COL:" and contains words. */
static void load_fails(const char *text, int line, int col, const char *words)
{
	char err[1024] = "", prefix[600];
	struct config *c = NULL;
	const char *path = write_file("bad.yaml", text, 0644);
	CHECK(config_load(path, &c, err, sizeof err) == -1);
	snprintf(prefix, sizeof prefix, "%s:%d:%d: ", path, line, col);
	bool ok = strncmp(err, prefix, strlen(prefix)) == 0 && strstr(err, words);
	if (!ok)
		fprintf(stderr, "  got '%s'\n  wanted prefix '%s' and '%s'\n", err, prefix, words);
	CHECK(ok);
	CHECK(!strchr(err, '\n'));
}

static const char seed[] =
	"# communication_config.yaml\n"
	"websocket:\n  server_url: \"ws://lprserver:8765\"\n  reconnect_attempts: 3\n  reconnect_delay: 5\n\n"
	"rest:\n  base_url: \"http://lprserver:8000\"\n  timeout: 30\n  retry_attempts: 3\n\n"
	"mqtt:\n  broker_url: \"lprserver\"\n  client_id: \"aicamera-edge-001\"\n  username: \"edge_user\"\n"
	"  password: \"secure_password\"\n\n"
	"sftp:\n  host: \"lprserver\"\n  username: \"edge_user\"\n  key_file: \"/home/camuser/.ssh/id_rsa\"\n"
	"  remote_path: \"/data/lpr_images\"\n\n"
	"rsync:\n  remote_host: \"lprserver\"\n  remote_user: \"edge_user\"\n  remote_path: \"/data/lpr_images\"\n"
	"  options: [\"-azP\", \"--delete\"]\n\n"
	"protocol_selection:\n  auto_select: true\n  priority_based: true\n  network_aware: true\n\n"
	"fallback:\n  enabled: true\n  max_attempts: 3\n";

static void test_seed_loads(void)
{
	struct config *c = load_ok(seed);
	if (!c)
		return;
	CHECK(strcmp(config_str(c, "mqtt", "broker_url"), "lprserver") == 0);
	CHECK(strcmp(config_str(c, "mqtt", "password"), "secure_password") == 0);
	CHECK(config_int(c, "websocket", "reconnect_attempts") == 3);
	CHECK(cfg_num(config_section(c, "rest"), "timeout") == 30.0);
	const struct cfg_value *opts = cfg_get(config_section(c, "rsync"), "options");
	CHECK(opts->nitems == 2 && strcmp(opts->items[1], "--delete") == 0);
	const struct cfg_value *chains = cfg_get(config_section(c, "fallback"), "chains");
	CHECK(chains->nitems == 5 && strcmp(chains->items[0], "websocket") == 0 && chains->sub[0].nitems == 2 &&
	      strcmp(chains->sub[0].items[1], "mqtt") == 0);
	CHECK(config_protocol_enabled(c, "mqtt") && config_protocol_enabled(c, "sftp"));
	CHECK(!config_protocol_enabled(c, "testworker"));
	/* defaults */
	CHECK(strcmp(config_str(c, "gateway", "control_socket"), "/run/ucgw/control.sock") == 0);
	CHECK(config_int(c, "mqtt", "qos") == 1);
	CHECK(strcmp(config_str(c, "spool", "fsync"), "batch") == 0);
	CHECK(config_str(c, "mqtt", "ca_file") == NULL);
	config_free(c);
}

static void test_errors(void)
{
	load_fails("mqtt:\n  brokr_url: x\n", 2, 3, "unknown key 'brokr_url' in section 'mqtt' (did you mean 'broker_url'?)");
	load_fails("mqqt:\n  broker_url: x\n", 1, 1, "unknown section 'mqqt' (did you mean 'mqtt'?)");
	load_fails("mqtt:\n  broker_url: x\n  zzzzzzzzzz: 1\n", 3, 3, "unknown key 'zzzzzzzzzz'");
	load_fails("gateway:\n  window: lots\n", 2, 11, "window: expected an integer");
	load_fails("mqtt:\n  broker_url: x\n  qos: 3\n", 3, 8, "expected an integer from 0 to 2");
	load_fails("fallback:\n  enabled: maybe\n", 2, 12, "expected true or false");
	load_fails("spool:\n  fsync: sometimes\n", 2, 10, "expected one of: always, batch, never");
	load_fails("rsync:\n  remote_host: h\n  remote_user: u\n  options: -a\n", 4, 12, "expected a list of strings");
	load_fails("rest:\n  base_url: [1, 2]\n", 2, 13, "expected a string");
	load_fails("mqtt:\n  client_id: x\n", 1, 1, "section 'mqtt' needs 'broker_url'");
	load_fails("mqtt:\n  broker_url: a\n  broker_url: b\n", 3, 3, "given twice");
	load_fails("mqtt:\n  broker_url: a\nmqtt:\n  broker_url: b\n", 3, 1, "section 'mqtt' given twice");
	load_fails("gateway: [1\n", 2, 1, "");
	load_fails("", 1, 1, "the file is empty");
	load_fails("- a\n- b\n", 1, 1, "expected a mapping of sections");
	load_fails("gateway: 5\n", 1, 10, "expected a mapping");
	load_fails("rest:\n  base_url: x\n  timeout: -1\n", 3, 12, "expected a number from");
	char err[512];
	struct config *c;
	CHECK(config_load("/nonexistent/ucgw.yaml", &c, err, sizeof err) == -1);
	CHECK(strstr(err, "cannot open /nonexistent/ucgw.yaml: No such file or directory") != NULL);
	/* a disabled section need not be complete */
	c = load_ok("mqtt:\n  enabled: false\n");
	CHECK(c && !config_protocol_enabled(c, "mqtt"));
	config_free(c);
}

static void test_secret_files(void)
{
	char text[512];
	const char *pw = write_file("pw", "s3cret\n", 0600);
	snprintf(text, sizeof text, "mqtt:\n  broker_url: x\n  password_file: %s\n", pw);
	struct config *c = load_ok(text);
	CHECK(c && strcmp(config_str(c, "mqtt", "password"), "s3cret") == 0);
	config_free(c);
	pw = write_file("pw2", "s3cret\n", 0644);
	snprintf(text, sizeof text, "mqtt:\n  broker_url: x\n  password_file: %s\n", pw);
	load_fails(text, 3, 18, "is readable or writable by others (mode 0644); chmod 600 it");
	pw = write_file("pw3", "s3cret\n", 0600);
	snprintf(text, sizeof text, "mqtt:\n  broker_url: x\n  password: a\n  password_file: %s\n", pw);
	load_fails(text, 4, 3, "given twice");
	load_fails("mqtt:\n  broker_url: x\n  password_file: /nonexistent\n", 3, 18, "cannot read /nonexistent");
	/* only secrets have a _file form */
	load_fails("mqtt:\n  broker_url_file: /x\n", 2, 3, "unknown key 'broker_url_file'");
}

static void test_pack_unpack(void)
{
	struct config *a = load_ok(seed);
	char text[sizeof seed + 64];
	snprintf(text, sizeof text, "%s", seed);
	char *q = strstr(text, "qos");
	(void)q;
	struct config *b = load_ok(seed);
	struct config *d = load_ok("mqtt:\n  broker_url: \"lprserver\"\n  client_id: \"other\"\n");
	if (!a || !b || !d)
		return;
	const struct cfg_section *ma = config_section(a, "mqtt");
	CHECK(cfg_section_equal(ma, config_section(b, "mqtt")));
	CHECK(!cfg_section_equal(ma, config_section(d, "mqtt")));
	struct cfg_section w;
	char err[256];
	CHECK(cfg_section_unpack("mqtt", ma->packed, ma->packed_len, &w, err, sizeof err) == 0);
	CHECK(strcmp(cfg_str(&w, "client_id"), "aicamera-edge-001") == 0 && cfg_int(&w, "qos") == 1);
	CHECK(cfg_section_equal(ma, &w));
	cfg_section_free(&w);
	const struct cfg_section *ra = config_section(a, "rsync");
	CHECK(cfg_section_unpack("rsync", ra->packed, ra->packed_len, &w, err, sizeof err) == 0);
	CHECK(cfg_get(&w, "options")->nitems == 2);
	cfg_section_free(&w);
	/* garbage, truncation, trailing bytes, a wrong type: refused */
	CHECK(cfg_section_unpack("mqtt", "\xc1", 1, &w, err, sizeof err) == -1);
	CHECK(cfg_section_unpack("mqtt", ma->packed, ma->packed_len - 1, &w, err, sizeof err) == -1);
	char *longer = malloc(ma->packed_len + 1);
	memcpy(longer, ma->packed, ma->packed_len);
	longer[ma->packed_len] = '\xc0';
	CHECK(cfg_section_unpack("mqtt", longer, ma->packed_len + 1, &w, err, sizeof err) == -1);
	free(longer);
	CHECK(cfg_section_unpack("mqtt", "\x81\xa3qos\xa1x", 7, &w, err, sizeof err) == -1);
	CHECK(cfg_section_unpack("nosuch", ma->packed, ma->packed_len, &w, err, sizeof err) == -1);
	config_free(a);
	config_free(b);
	config_free(d);
}

static void test_reference(void)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	config_write_reference(f);
	fclose(f);
	for (size_t i = 0; i < cfg_schema_len; i++) {
		char head[64];
		snprintf(head, sizeof head, "## `%s`", cfg_schema[i].name);
		CHECK(strstr(buf, head) != NULL);
	}
	CHECK(strstr(buf, "| `broker_url` | string, required |") != NULL);
	free(buf);
}

int main(void)
{
	if (!mkdtemp(dir))
		return 1;
	test_seed_loads();
	test_errors();
	test_secret_files();
	test_pack_unpack();
	test_reference();
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd) != 0)
		return 1;
	return CHECK_DONE();
}
