/* Who may use the control socket, checked for every request:
 *
 * 1. The peer's credentials (SO_PEERCRED, taken at accept) against
 *    security.allowed_users and security.allowed_groups, when either is set. No
 *    user is special: root too must be listed then. A group admits its members
 *    and any process whose primary group it is.
 * 2. When security.require_auth is on, the request's `auth` field: an API key,
 *    compared in constant time against every configured key (SHA-256 of both, so
 *    not even the length leaks), or an HS256 JWT signed with security.jwt_secret.
 *    With require_auth off, credentials are not looked at, so clients can be
 *    given keys before the daemon starts to demand them.
 *
 * Every refusal gets a reply that says why ("unauthorized: token expired") and
 * one audit line (security.audit_log, else the daemon log) with the time, the
 * peer, the command, the kind of credential and the reason, never the credential.
 * Nothing here sleeps or blocks on the network: user and group names are
 * resolved when the configuration is (re)loaded, not per request. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "common/cfgfile.h"
#include "common/crypto.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/util.h"
#include "supervisor/control.h"
#include "supervisor/sup.h"

#define AUTH_MAX_LEN JWT_MAX_LEN /* no API key or token is longer */

/* The security section as auth needs it, rebuilt when the configuration changes. */
static struct {
	bool loaded;
	const struct config *cfg;
	uint64_t reloads;
	bool require_auth;
	unsigned char (*keys)[SHA256_DIGEST_LENGTH]; /* digests of the API keys */
	size_t nkeys;
	char *jwt_secret;
	size_t jwt_secret_len;
	bool restrict_peers;
	uid_t *uids;    /* allowed_users */
	size_t nuids;
	gid_t *gids;    /* allowed_groups */
	size_t ngids;
	uid_t *members; /* users listed as members of allowed_groups */
	size_t nmembers;
	int audit_fd;   /* -1: the daemon log */
} A = { .audit_fd = -1 };

static void forget(void)
{
	free(A.keys);
	if (A.jwt_secret)
		crypto_wipe(A.jwt_secret, A.jwt_secret_len);
	free(A.jwt_secret);
	free(A.uids);
	free(A.gids);
	free(A.members);
	if (A.audit_fd >= 0)
		close(A.audit_fd);
	memset(&A, 0, sizeof A);
	A.audit_fd = -1;
}

static bool all_digits(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

static void load_users(const struct cfg_value *v)
{
	A.uids = xcalloc(v->nitems ? v->nitems : 1, sizeof *A.uids);
	for (size_t i = 0; i < v->nitems; i++) {
		const struct passwd *pw = getpwnam(v->items[i]);
		if (pw)
			A.uids[A.nuids++] = pw->pw_uid;
		else if (all_digits(v->items[i]))
			A.uids[A.nuids++] = (uid_t)strtoul(v->items[i], NULL, 10);
		else
			log_warnx("security.allowed_users: there is no user '%s'; it admits nobody", v->items[i]);
	}
}

static void add_member(const char *name)
{
	const struct passwd *pw = getpwnam(name);
	if (!pw)
		return;
	A.members = xrealloc(A.members, (A.nmembers + 1) * sizeof *A.members);
	A.members[A.nmembers++] = pw->pw_uid;
}

static void load_groups(const struct cfg_value *v)
{
	A.gids = xcalloc(v->nitems ? v->nitems : 1, sizeof *A.gids);
	for (size_t i = 0; i < v->nitems; i++) {
		const struct group *gr = getgrnam(v->items[i]);
		if (!gr && all_digits(v->items[i])) {
			A.gids[A.ngids++] = (gid_t)strtoul(v->items[i], NULL, 10);
			continue;
		}
		if (!gr) {
			log_warnx("security.allowed_groups: there is no group '%s'; it admits nobody", v->items[i]);
			continue;
		}
		A.gids[A.ngids++] = gr->gr_gid;
		/* copy the names first: getpwnam may reuse what getgrnam returned */
		size_t n = 0;
		while (gr->gr_mem && gr->gr_mem[n])
			n++;
		char **names = xcalloc(n + 1, sizeof *names);
		for (size_t j = 0; j < n; j++)
			names[j] = xstrdup(gr->gr_mem[j]);
		for (size_t j = 0; j < n; j++) {
			add_member(names[j]);
			free(names[j]);
		}
		free(names);
	}
}

static void load_keys(const struct cfg_value *v)
{
	A.keys = xcalloc(v->nitems ? v->nitems : 1, sizeof *A.keys);
	for (size_t i = 0; i < v->nitems; i++) {
		size_t len = strlen(v->items[i]);
		if (len == 0) {
			log_warnx("security.api_keys: an empty key is ignored");
			continue;
		}
		SHA256((const unsigned char *)v->items[i], len, A.keys[A.nkeys++]);
	}
}

static void open_audit(const char *path)
{
	char *dir = xstrdup(path), *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		mkdir_p(dir, 0750);
	}
	free(dir);
	char why[600];
	struct stat st;
	A.audit_fd = cf_open("security.audit_log", path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW, CF_REG | CF_CHR, 0,
			     &st, why, sizeof why);
	if (A.audit_fd < 0)
		log_warnx("%s; refusals go to this log instead", why);
}

/* Read the security section once per configuration. A reload also reopens the
 * audit log, which is what log rotation needs. */
static void refresh(void)
{
	if (A.loaded && A.cfg == sup.cfg && A.reloads == sup.reloads)
		return;
	forget();
	A.loaded = true;
	A.cfg = sup.cfg;
	A.reloads = sup.reloads;
	const struct cfg_section *s = config_section(sup.cfg, "security");
	if (!s)
		return;
	A.require_auth = cfg_bool(s, "require_auth");
	load_keys(cfg_get(s, "api_keys"));
	const char *secret = cfg_str(s, "jwt_secret");
	if (secret && *secret) {
		A.jwt_secret = xstrdup(secret);
		A.jwt_secret_len = strlen(secret);
	}
	const struct cfg_value *users = cfg_get(s, "allowed_users"), *groups = cfg_get(s, "allowed_groups");
	A.restrict_peers = (users->set && users->nitems) || (groups->set && groups->nitems);
	if (users->set)
		load_users(users);
	if (groups->set)
		load_groups(groups);
	if (A.require_auth && !A.nkeys && !A.jwt_secret)
		log_warnx("security.require_auth is on but neither api_keys nor jwt_secret is set: "
			  "every control request will be refused");
	const char *audit = cfg_str(s, "audit_log");
	if (audit && *audit)
		open_audit(audit);
}

static bool contains_uid(const uid_t *v, size_t n, uid_t id)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] == id)
			return true;
	return false;
}

static bool peer_allowed(const struct client *c)
{
	if (contains_uid(A.uids, A.nuids, c->uid) || contains_uid(A.members, A.nmembers, c->uid))
		return true;
	for (size_t i = 0; i < A.ngids; i++)
		if (A.gids[i] == c->gid)
			return true;
	return false;
}

static bool api_key_matches(const char *key, size_t len)
{
	unsigned char h[SHA256_DIGEST_LENGTH];
	SHA256((const unsigned char *)key, len, h);
	int match = 0;
	for (size_t i = 0; i < A.nkeys; i++) /* every key, no early exit */
		match |= CRYPTO_memcmp(h, A.keys[i], sizeof h) == 0;
	return match;
}

/* A JWT has two dots; one that starts like a JSON header ("eyJ" is base64 of
 * '{"') but has another number of dots is a damaged token, not an API key. */
static bool looks_like_jwt(const char *s)
{
	int dots = 0;
	for (const char *p = s; *p && p - s <= AUTH_MAX_LEN; p++)
		dots += *p == '.';
	return dots == 2 || (dots && strncmp(s, "eyJ", 3) == 0);
}

/* 0 when the credential is good, else -1 with why. */
static int check_credential(const char *auth, const char **kind, char *why, size_t whylen)
{
	*kind = "none";
	if (!auth || !*auth) {
		snprintf(why, whylen, "missing credentials: this ucgwd requires an API key or a JWT "
				      "(ucgwctl --api-key-file, UCGW_API_KEY or UCGW_JWT)");
		return -1;
	}
	size_t len = strnlen(auth, AUTH_MAX_LEN + 1);
	if (len > AUTH_MAX_LEN) { /* refused unread: hashing megabytes per request would slow the daemon */
		snprintf(why, whylen, "credential longer than %d bytes", AUTH_MAX_LEN);
		return -1;
	}
	bool jwt = looks_like_jwt(auth);
	*kind = jwt ? "jwt" : "api-key";
	if (api_key_matches(auth, len))
		return 0;
	if (!jwt) {
		snprintf(why, whylen, "invalid API key");
		return -1;
	}
	if (!A.jwt_secret) {
		snprintf(why, whylen, "a JWT was given but this ucgwd has no security.jwt_secret");
		return -1;
	}
	struct jwt_claims claims;
	char reason[160];
	if (jwt_verify(auth, len, A.jwt_secret, A.jwt_secret_len, (int64_t)time(NULL), &claims, reason,
		       sizeof reason) != JWT_OK) {
		snprintf(why, whylen, "%s", reason);
		return -1;
	}
	return 0;
}

/* Text from a client goes into the audit log quoted, printable and short. */
static void clean(char *dst, size_t cap, const char *src)
{
	size_t n = 0;
	for (; src && *src && n + 4 < cap; src++) {
		unsigned char c = (unsigned char)*src;
		dst[n++] = c >= 0x20 && c < 0x7f && c != '"' && c != '\\' ? (char)c : '?';
	}
	if (src && *src) {
		memcpy(dst + n, "...", 3);
		n += 3;
	}
	dst[n] = '\0';
}

static void audit(const struct client *c, const struct msg *req, const char *kind, const char *why)
{
	char stamp[40], name[64], reason[256], line[512];
	uint64_t ms = wall_ms();
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&secs, &tm);
	size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(stamp + n, sizeof stamp - n, ".%03uZ", (unsigned)(ms % 1000));
	clean(name, sizeof name, req->name);
	clean(reason, sizeof reason, why);
	int len = snprintf(line, sizeof line,
			   "%s ucgwd auth refused: uid=%d gid=%d pid=%d command=\"%s\" credential=%s reason=\"%s\"\n",
			   stamp, (int)c->uid, (int)c->gid, (int)c->pid, name, kind, reason);
	if (len < 0 || (size_t)len >= sizeof line)
		len = (int)sizeof line - 1;
	if (A.audit_fd >= 0 && write(A.audit_fd, line, (size_t)len) == (ssize_t)len)
		return;
	line[len - 1] = '\0';
	log_warnx("%s", line);
}

int auth_check(const struct client *c, const struct msg *req, char *err, size_t errlen)
{
	refresh();
	char why[256];
	const char *kind = req->auth && *req->auth ? (looks_like_jwt(req->auth) ? "jwt" : "api-key") : "none";
	if (A.restrict_peers && !peer_allowed(c)) {
		snprintf(why, sizeof why, "uid %d is not in security.allowed_users or security.allowed_groups",
			 (int)c->uid);
	} else if (A.require_auth && check_credential(req->auth, &kind, why, sizeof why) < 0) {
		/* why is set */
	} else {
		return 0;
	}
	snprintf(err, errlen, "unauthorized: %s", why);
	audit(c, req, kind, why);
	return -1;
}
