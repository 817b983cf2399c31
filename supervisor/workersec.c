#include "supervisor/workersec.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <msgpack.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cfgfile.h"
#include "common/log.h"
#include "common/util.h"
#include "proto/proto.h"

void worker_creds_resolve(const struct config *cfg, struct worker_creds *c)
{
	memset(c, 0, sizeof *c);
	c->sandbox = config_bool(cfg, "security", "sandbox");
	/* One descriptor per file job in hand (gateway.window), plus the
	 * connections, the libraries' own and rsync's pipes. */
	c->nofile = (unsigned long)config_int(cfg, "gateway", "window") + 1024;
	if (geteuid() != 0)
		return; /* not root: nothing to drop, worker_user is not used */
	const char *name = config_str(cfg, "security", "worker_user");
	struct passwd *pw = NULL;
	if (name) {
		pw = getpwnam(name);
		if (!pw) {
			snprintf(c->error, sizeof c->error, "security.worker_user '%s' does not exist", name);
			return;
		}
	} else if (!(pw = getpwnam("ucgw")) && !(pw = getpwnam("nobody"))) {
		snprintf(c->error, sizeof c->error,
			 "security.worker_user is not set and neither user 'ucgw' nor 'nobody' exists");
		return;
	}
	if (pw->pw_uid == 0)
		return; /* worker_user: root, warned about by worker_sandbox_announce */
	c->drop = true;
	c->uid = pw->pw_uid;
	c->gid = pw->pw_gid;
}

/* async-signal-safe: a fixed text and a number, no stdio. */
static void child_fail(const char *worker, const char *what, const char *detail, int err)
{
	char buf[512];
	size_t n = 0;
	const char *parts[] = { "<3>ucgwd: cannot start worker ", worker, ": ", what, detail ? detail : "",
				err ? ": " : "", err ? strerror(err) : "", "\n" };
	for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
		for (const char *s = parts[i]; *s && n < sizeof buf - 1; s++)
			buf[n++] = *s;
	if (write(2, buf, n) < 0) {
	}
	_exit(UCGW_EXIT_CONFIG);
}

void worker_creds_apply(const struct worker_creds *c, const char *worker)
{
	if (c->error[0])
		child_fail(worker, c->error, NULL, 0);
	if (c->drop) {
		/* Only the user's own group: root's supplementary groups (disk, adm...)
		 * must not follow the worker. The order matters: groups and gid while
		 * we still may, the uid last. */
		if (setgroups(1, &c->gid) < 0)
			child_fail(worker, "setgroups", NULL, errno);
		if (setresgid(c->gid, c->gid, c->gid) < 0)
			child_fail(worker, "setresgid", NULL, errno);
		if (setresuid(c->uid, c->uid, c->uid) < 0)
			child_fail(worker, "setresuid", NULL, errno);
		/* Verify that root cannot be had back (a kernel or a libc that kept a
		 * saved uid 0 would let a compromised worker regain everything). */
		if (setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0)
			child_fail(worker, "the privilege drop did not hold: uid 0 could be regained", NULL, 0);
		if (getuid() != c->uid || geteuid() != c->uid || getgid() != c->gid || getegid() != c->gid)
			child_fail(worker, "the privilege drop did not hold: ids differ from worker_user's", NULL, 0);
	}
	if (!c->sandbox)
		return;
	/* No exec of the worker, rsync or ssh may gain privileges (setuid
	 * binaries, file capabilities); also required for an unprivileged
	 * process to install its seccomp filter. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		child_fail(worker, "prctl(PR_SET_NO_NEW_PRIVS)", NULL, errno);
	/* Resource limits; each with why:
	 * - RLIMIT_CORE 0: a core would hold the keys and payloads in memory; the
	 *   crash log has the backtrace instead.
	 * - RLIMIT_NOFILE: window + 1024 (set by worker_creds_resolve), never above
	 *   the current hard limit.
	 * - RLIMIT_NPROC 512: counts every process and thread of the worker's user
	 *   (all workers share it; rsync runs rsync and ssh, libcurl resolves in a
	 *   thread, sftp has one): enough for those, not for a fork bomb. Root is
	 *   not subject to it, so it bites only after the drop.
	 * - no RLIMIT_AS: AddressSanitizer reserves terabytes of address space, and
	 *   OpenSSL and glibc arenas make any fixed figure a guess; memory is better
	 *   limited by the service manager (MemoryMax=). */
	struct rlimit r = { 0, 0 };
	if (setrlimit(RLIMIT_CORE, &r) < 0)
		child_fail(worker, "setrlimit(RLIMIT_CORE)", NULL, errno);
	if (getrlimit(RLIMIT_NOFILE, &r) == 0) {
		rlim_t want = (rlim_t)c->nofile;
		if (r.rlim_max != RLIM_INFINITY && want > r.rlim_max)
			want = r.rlim_max;
		r.rlim_cur = r.rlim_max = want;
		if (setrlimit(RLIMIT_NOFILE, &r) < 0)
			child_fail(worker, "setrlimit(RLIMIT_NOFILE)", NULL, errno);
	}
	if (getrlimit(RLIMIT_NPROC, &r) == 0) {
		rlim_t want = 512;
		if (r.rlim_max != RLIM_INFINITY && want > r.rlim_max)
			want = r.rlim_max;
		r.rlim_cur = r.rlim_max = want;
		if (setrlimit(RLIMIT_NPROC, &r) < 0)
			child_fail(worker, "setrlimit(RLIMIT_NPROC)", NULL, errno);
	}
}

void *worker_config_body(const struct cfg_section *sec, bool sandbox, size_t *len, char *hung, size_t hunglen)
{
	hung[0] = '\0';
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	pk_kv_bool(&pk, "sandbox", sandbox);
	pk_key(&pk, "files");
	size_t n = 0;
	const struct cfg_schema_section *sc = sec->schema;
	for (size_t i = 0; i < sc->nkeys; i++)
		if ((sc->keys[i].flags & CFG_READ) && sec->values[i].set)
			n++;
	msgpack_pack_map(&pk, n);
	for (size_t i = 0; i < sc->nkeys; i++) {
		if (!(sc->keys[i].flags & CFG_READ) || !sec->values[i].set)
			continue;
		pk_key(&pk, sc->keys[i].key);
		char why[512], what[96];
		size_t flen = 0;
		struct stat st;
		snprintf(what, sizeof what, "%s.%s", sc->name, sc->keys[i].key);
		char *data = cf_read(what, sec->values[i].s, CFG_READ_MAX, &flen, &st, why, sizeof why);
		if (data) {
			msgpack_pack_bin(&pk, flen);
			msgpack_pack_bin_body(&pk, data, flen);
			explicit_bzero(data, flen); /* it may be a private key */
			free(data);
		} else {
			if (errno == ETIMEDOUT && !hung[0])
				snprintf(hung, hunglen, "%s", why);
			pk_str(&pk, why);
		}
	}
	*len = sb.size;
	return sb.data;
}

void worker_sandbox_announce(const struct config *cfg)
{
	if (!config_bool(cfg, "security", "sandbox"))
		log_warnx("security.sandbox is false: workers run WITHOUT their seccomp filter, no_new_privs and "
			  "resource limits (for debugging only)");
	const char *name = config_str(cfg, "security", "worker_user");
	if (geteuid() == 0 && name) {
		struct passwd *pw = getpwnam(name);
		if (pw && pw->pw_uid == 0)
			log_warnx("security.worker_user is %s: workers run as root", name);
	}
}
