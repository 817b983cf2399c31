/* What a configuration names outside itself, checked when it is loaded (at
 * start, by `ucgwd -n` and at every reload), with the function that opens the
 * files later (cf_open): a FIFO, a device, a directory or a loop of links in
 * place of a key, a certificate or known_hosts is an error naming the key and
 * the path, not a daemon that hangs at the first start of a worker. A file
 * that does not exist yet is a warning: the worker that needs it says so. The
 * checks run as the user that runs them: `ucgwd -n` in the unit runs as the
 * daemon's own user (User= in ucgw.service). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/cfgfile.h"
#include "common/crypto.h"
#include "common/log.h"
#include "common/util.h"
#include "config/internal.h"

struct checker {
	struct config *cfg;
	const char *path; /* the configuration file, for FILE:LINE:COL */
	char *err;
	size_t errlen;
};

static void where(const struct checker *C, const struct cfg_section *sec, const struct cfg_value *v, int *line,
		  int *col)
{
	*line = v->line ? v->line : sec->line ? sec->line : 1;
	*col = v->line ? v->col : sec->line ? sec->col : 1;
}

static int fail(const struct checker *C, const struct cfg_section *sec, const struct cfg_value *v, const char *why)
{
	int line, col;
	where(C, sec, v, &line, &col);
	snprintf(C->err, C->errlen, "%s:%d:%d: %s", C->path, line, col, why);
	return -1;
}

static void warn(const struct checker *C, const struct cfg_section *sec, const struct cfg_value *v, const char *why,
		 const char *then)
{
	int line, col;
	where(C, sec, v, &line, &col);
	struct config *c = C->cfg;
	c->warnings = xrealloc(c->warnings, (c->nwarnings + 1) * sizeof *c->warnings);
	c->warnings[c->nwarnings++] = xasprintf("%s:%d:%d: %s; %s", C->path, line, col, why, then);
}

/* Open it as it will be opened, and close it again (or with CF_WHOLE in
 * kinds read it as a worker's start will, time limit included): 1 it is
 * there, 0 it is not (ENOENT), -1 anything else (err set). */
#define CF_WHOLE 0x100u
static int probe(const struct checker *C, const struct cfg_section *sec, const char *key, int flags, unsigned kinds,
		 uint64_t max, char *why, size_t whylen)
{
	const struct cfg_value *v = cfg_get(sec, key);
	char what[128];
	snprintf(what, sizeof what, "%s.%s", sec->schema->name, key);
	struct stat st;
	if (kinds & CF_WHOLE) {
		size_t len;
		char *data = cf_read(what, v->s, (size_t)max, &len, &st, why, whylen);
		if (data) {
			explicit_bzero(data, len);
			free(data);
			return 1;
		}
	} else {
		int fd = cf_open(what, v->s, flags, kinds, max, &st, why, whylen);
		if (fd >= 0) {
			close(fd);
			return 1;
		}
	}
	if (errno == ENOENT)
		return 0;
	return fail(C, sec, v, why);
}

/* ca_file, cert_file, key_file, known_hosts: read at every start of the worker. */
static int check_worker_files(const struct checker *C, const struct cfg_section *sec)
{
	const struct cfg_schema_section *sc = sec->schema;
	char why[900];
	for (size_t i = 0; i < sc->nkeys; i++) {
		const struct cfg_value *v = &sec->values[i];
		if (!(sc->keys[i].flags & CFG_READ) || !v->set || !*v->s)
			continue;
		int rc = probe(C, sec, sc->keys[i].key, O_RDONLY, CF_REG | CF_WHOLE, CFG_READ_MAX, why, sizeof why);
		if (rc < 0)
			return -1;
		if (rc == 0 && v->line) { /* named in the file, not a default such as /etc/ucgw/known_hosts */
			char then[160];
			snprintf(then, sizeof then, "the %s worker refuses to start without it", sc->name);
			warn(C, sec, v, why, then);
		}
	}
	return 0;
}

static int check_dirs(const struct checker *C)
{
	static const char *const dirs[][2] = {
		{ "gateway", "state_dir" }, { "gateway", "crash_dir" }, { "gateway", "worker_dir" }, { "spool", "dir" },
	};
	char why[900];
	for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
		const struct cfg_section *sec = config_section(C->cfg, dirs[i][0]);
		const struct cfg_value *v = cfg_get(sec, dirs[i][1]);
		if (v->set && *v->s && probe(C, sec, dirs[i][1], O_RDONLY, CF_DIR, 0, why, sizeof why) < 0)
			return -1;
	}
	return 0;
}

/* The key is loaded when a message asks for encryption: a key missing now is
 * a warning, one that is there must be a usable key. */
static int check_encryption_key(const struct checker *C)
{
	const struct cfg_section *sec = config_section(C->cfg, "security");
	const struct cfg_value *v = cfg_get(sec, "encryption_key_file");
	char why[900];
	if (!v->set || !*v->s)
		return 0;
	int rc = probe(C, sec, "encryption_key_file", O_RDONLY, CF_REG, 0, why, sizeof why);
	if (rc == 0)
		warn(C, sec, v, why, "a message sent with encrypt fails until it can be read");
	if (rc <= 0)
		return rc;
	unsigned char key[CRYPTO_KEY_LEN];
	rc = crypto_key_load(v->s, key, why, sizeof why);
	crypto_wipe(key, sizeof key);
	return rc < 0 ? fail(C, sec, v, why) : 0;
}

static int check_audit_log(const struct checker *C)
{
	const struct cfg_section *sec = config_section(C->cfg, "security");
	const struct cfg_value *v = cfg_get(sec, "audit_log");
	char why[900];
	if (!v->set || !*v->s)
		return 0;
	/* opened O_NOFOLLOW (auth.c): a link there is refused there too */
	return probe(C, sec, "audit_log", O_RDONLY | O_NOFOLLOW, CF_REG | CF_CHR, 0, why, sizeof why) < 0 ? -1 : 0;
}

/* The control socket's path must fit a socket address, and what is there must
 * be a socket: control_listen removes a stale one before it binds. */
static int check_control_socket(const struct checker *C)
{
	const struct cfg_section *sec = config_section(C->cfg, "gateway");
	const struct cfg_value *v = cfg_get(sec, "control_socket");
	struct sockaddr_un sa;
	char why[900];
	struct stat st;
	if (strlen(v->s) >= sizeof sa.sun_path) {
		snprintf(why, sizeof why, "gateway.control_socket is too long: %s has %zu bytes, at most %zu fit a unix "
					  "socket address", v->s, strlen(v->s), sizeof sa.sun_path - 1);
		return fail(C, sec, v, why);
	}
	if (lstat(v->s, &st) == 0 && !S_ISSOCK(st.st_mode)) {
		snprintf(why, sizeof why, "gateway.control_socket %s exists and is not a socket (it is %s): ucgwd "
					  "would have to remove it to listen there", v->s, cf_kind(st.st_mode));
		return fail(C, sec, v, why);
	}
	return 0;
}

static int check_listen(const struct checker *C)
{
	const struct cfg_section *sec = config_section(C->cfg, "metrics");
	const struct cfg_value *v = cfg_get(sec, "listen");
	struct sockaddr_storage sa;
	char why[600];
	if (!v->set || !*v->s || cfg_parse_listen(v->s, cfg_bool(sec, "allow_remote"), &sa, why, sizeof why) == 0)
		return 0;
	return fail(C, sec, v, why);
}

int cfg_check_files(struct config *cfg, const char *path, char *err, size_t errlen)
{
	struct checker C = { cfg, path, err, errlen };
	for (size_t i = 0; i < cfg_schema_len; i++)
		if (config_protocol_enabled(cfg, cfg_schema[i].name) && check_worker_files(&C, &cfg->sections[i]) < 0)
			return -1;
	if (check_dirs(&C) < 0 || check_encryption_key(&C) < 0 || check_audit_log(&C) < 0 ||
	    check_control_socket(&C) < 0)
		return -1;
	return check_listen(&C);
}

/* A wildcard or another host's address: served to the network. */
static int remote_listen(const char *listen, const char *host, long port, bool allow, struct sockaddr_storage *sa,
			 char *err, size_t errlen)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)sa;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)sa;
	bool v4 = inet_pton(AF_INET, host, &s4->sin_addr) == 1;
	if (!v4 && inet_pton(AF_INET6, host, &s6->sin6_addr) != 1) {
		memset(sa, 0, sizeof *sa);
		snprintf(err, errlen, "metrics.listen '%s': '%s' is not an IP address, expected HOST:PORT such as "
				      "127.0.0.1:9630 (a name is not resolved)", listen, host);
		return -1;
	}
	if (!allow) {
		memset(sa, 0, sizeof *sa);
		snprintf(err, errlen, "metrics.listen '%s' is not a loopback address: the metrics and the dashboard are "
				      "served on 127.0.0.0/8 or ::1 unless metrics.allow_remote is true (then /metrics and "
				      "the read-only dashboard answer anyone who can reach it; actions stay loopback only)",
			 listen);
		return -1;
	}
	if (v4) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
	} else {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
	}
	return 0;
}

int cfg_parse_listen(const char *listen, bool allow_remote, struct sockaddr_storage *sa, char *err, size_t errlen)
{
	char host[64];
	const char *colon = strrchr(listen, ':');
	char *end = NULL;
	long port = colon ? strtol(colon + 1, &end, 10) : 0;
	memset(sa, 0, sizeof *sa);
	if (!colon || colon == listen || (size_t)(colon - listen) >= sizeof host || !colon[1] || *end || port <= 0 ||
	    port > 65535) {
		snprintf(err, errlen, "metrics.listen '%s': expected HOST:PORT on loopback, e.g. 127.0.0.1:9630", listen);
		return -1;
	}
	snprintf(host, sizeof host, "%.*s", (int)(colon - listen), listen);
	if (host[0] == '[') { /* [::1] */
		memmove(host, host + 1, strlen(host));
		host[strcspn(host, "]")] = '\0';
	}
	struct sockaddr_in *s4 = (struct sockaddr_in *)sa;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)sa;
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1 && (ntohl(s4->sin_addr.s_addr) >> 24) == 127) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1 && IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr)) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		return 0;
	}
	memset(sa, 0, sizeof *sa);
	return remote_listen(listen, host, port, allow_remote, sa, err, errlen);
}
