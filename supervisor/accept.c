/* Step 1 of a message's life: check a `send` or `send-file` request, give the
 * message an id (or take the client's), and hand it to admission.c, which
 * spools it, answers and routes it. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "common/log.h"
#include "ipc/channel.h"
#include "supervisor/admission.h"
#include "supervisor/clock.h"
#include "supervisor/commands.h"
#include "supervisor/control.h"
#include "supervisor/ctlargs.h"
#include "supervisor/jsoncheck.h"
#include "supervisor/router.h"
#include "supervisor/slot.h"
#include "supervisor/spool.h"
#include "supervisor/sup.h"

static bool carries(const struct router_proto *rp, bool files) { return files ? rp->files : rp->meta; }

/* The enabled protocols that can carry this kind: written to buf ("valid:
 * auto, " and their names, or that none is, for error messages) when buf is
 * given, and how many. */
static int enabled_protocols(bool files, char *buf, size_t len)
{
	int n = 0;
	if (buf)
		snprintf(buf, len, "valid: auto");
	for (int i = 0; i < router_nprotos(); i++) {
		struct router_proto rp;
		router_proto(i, &rp);
		if (carries(&rp, files) && rp.enabled) {
			if (buf)
				snprintf(buf + strlen(buf), len - strlen(buf), ", %s", rp.name);
			n++;
		}
	}
	if (buf && !n) {
		char names[160];
		protocol_names(files ? PROTO_FILES : PROTO_META, ", ", names, sizeof names);
		snprintf(buf, len, "no %s protocol is enabled in the configuration: %s", files ? "file" : "metadata",
			 names);
	}
	return n;
}

/* 0, or an error code (enum ctl_code) with err said. */
static int check_protocol(const char *name, bool files, char *err, size_t errlen)
{
	char list[200];
	const char *kind = files ? "file" : "metadata";
	bool is_auto = strcmp(name, "auto") == 0;
	const struct slot *slot = is_auto ? NULL : slot_find(name);
	struct router_proto view, *rp = NULL;
	if (slot) {
		router_proto(slot->idx, &view);
		rp = &view;
	}
	if (is_auto ? enabled_protocols(files, NULL, 0) > 0 : rp && carries(rp, files) && rp->enabled)
		return 0;
	enabled_protocols(files, list, sizeof list); /* for the error text only */
	if (is_auto) {
		snprintf(err, errlen, "nothing can carry it: %s", list);
		return CTL_E_UNAVAILABLE;
	}
	if (rp && !carries(rp, files)) {
		snprintf(err, errlen, "protocol '%s' carries %s, not %s (%s)", name, files ? "metadata" : "files",
			 files ? "files" : "metadata", list);
		return CTL_E_BAD_REQUEST;
	}
	if (!rp) {
		snprintf(err, errlen, "unknown %s protocol '%s' (%s)", kind, name, list);
		return CTL_E_NOT_FOUND;
	}
	snprintf(err, errlen, "protocol '%s' is disabled in the configuration (%s)", name, list);
	return CTL_E_UNAVAILABLE;
}

struct common_args {
	char protocol[16], priority[16], topic[256], endpoint[256], remote_name[256];
	bool wait, encrypt, has_topic, has_endpoint, has_remote;
	uint64_t ttl_s;
	bool has_ttl;
};

/* The arguments send and send-file share, read by ctlargs.c; the checks that
 * need the configuration. 0, or an error code with err said. */
static int read_common(const struct ctlargs *a, struct common_args *ca, bool files, char *err, size_t errlen)
{
	memset(ca, 0, sizeof *ca);
	if (!ctlargs_str(a, "protocol", ca->protocol, sizeof ca->protocol))
		strcpy(ca->protocol, "auto");
	if (!ctlargs_str(a, "priority", ca->priority, sizeof ca->priority))
		strcpy(ca->priority, "normal");
	if (!files) {
		ca->has_topic = ctlargs_str(a, "topic", ca->topic, sizeof ca->topic);
		ca->has_endpoint = ctlargs_str(a, "endpoint", ca->endpoint, sizeof ca->endpoint);
	} else {
		ca->has_remote = ctlargs_str(a, "remote_name", ca->remote_name, sizeof ca->remote_name);
	}
	ca->has_ttl = ctlargs_u64(a, "ttl_s", &ca->ttl_s);
	ctlargs_bool(a, "wait", &ca->wait);
	ctlargs_bool(a, "encrypt", &ca->encrypt);
	int code = check_protocol(ca->protocol, files, err, errlen);
	if (code)
		return code;
	if (ca->encrypt && files) {
		snprintf(err, errlen, "send-file: encrypt is for metadata only; files are sent as they are "
				      "(the file protocols' own transport protects them)");
		return CTL_E_BAD_REQUEST;
	}
	if (ca->encrypt && !config_str(sup.cfg, "security", "encryption_key_file")) {
		snprintf(err, errlen, "cannot encrypt: security.encryption_key_file is not set");
		return CTL_E_UNAVAILABLE;
	}
	return 0;
}

static struct smsg *new_smsg(const struct common_args *ca, enum job_kind kind, uint64_t size)
{
	struct smsg *m = xcalloc(1, sizeof *m);
	id_new(m->id);
	m->state = SM_LIMBO; /* on no list until the router takes it */
	m->kind = kind;
	m->priority = (enum priority)priority_parse(ca->priority);
	str_copy(m->protocol, sizeof m->protocol, ca->protocol);
	m->topic = ca->has_topic ? xstrdup(ca->topic) : NULL;
	m->endpoint = ca->has_endpoint ? xstrdup(ca->endpoint) : NULL;
	m->remote_name = ca->has_remote ? xstrdup(ca->remote_name) : NULL;
	m->encrypt = ca->encrypt;
	m->created_wall_ms = wall_ms();
	clock_stamp(m);
	uint64_t ttl = ca->has_ttl ? ca->ttl_s : (uint64_t)config_int(sup.cfg, "spool", "ttl_s");
	m->expires_wall_ms = ttl ? m->created_wall_ms + ttl * 1000 : 0;
	m->size = size;
	return m;
}

/* Spool it (admission.c answers, routes it once durable). A client-given id
 * already known answers this send with that message's state instead. */
static void admit(struct client *c, const struct msg *req, const struct ctlargs *a, struct smsg *m,
		  const struct common_args *ca, const void *payload, size_t len, int fd)
{
	char err[512];
	bool given = ctlargs_str(a, "id", m->id, sizeof m->id); /* a ULID: the table checks it */
	if (given && admission_known(c->cid, req->seq, m->id, ca->wait)) {
		smsg_free(m);
		return;
	}
	int code = router_make_room(m->size, err, sizeof err);
	if (code) {
		control_fail(c->cid, req->seq, (enum ctl_code)code, "%s", err);
		smsg_free(m);
		return;
	}
	/* Keep the bytes at hand only while the backlog is small: a long outage
	 * must not fill memory; the router reads them back from the spool. */
	if (payload && router_payload_fits(len)) {
		m->payload = xmalloc(len + 1);
		memcpy(m->payload, payload, len);
		m->payload[len] = '\0';
	}
	admission_start(c->cid, req->seq, m, ca->wait, payload, len, fd);
}

void cmd_send(struct client *c, const struct msg *req, const struct ctlargs *a)
{
	char err[512], format[16] = "json";
	struct common_args ca;
	const struct ctlargs_val *data = ctlargs_get(a, "data"); /* required */
	const char *p = data->s;
	size_t len = data->len;
	ctlargs_str(a, "format", format, sizeof format); /* json or raw */
	uint64_t max = (uint64_t)config_int(sup.cfg, "gateway", "max_message_bytes");
	int code = read_common(a, &ca, false, err, sizeof err);
	if (code) {
		control_fail(c->cid, req->seq, (enum ctl_code)code, "%s", err);
		return;
	}
	if (len > max) {
		control_fail(c->cid, req->seq, CTL_E_TOO_LARGE,
			     "message of %zu bytes is larger than gateway.max_message_bytes (%llu)", len,
			     (unsigned long long)max);
		return;
	}
	if (len == 0) {
		control_fail(c->cid, req->seq, CTL_E_BAD_REQUEST, "send: the message is empty");
		return;
	}
	if (strcmp(format, "json") == 0 && !json_check(p, len, err, sizeof err)) {
		control_fail(c->cid, req->seq, CTL_E_BAD_REQUEST, "payload is not valid JSON: %s", err);
		return;
	}
	admit(c, req, a, new_smsg(&ca, JOB_META, len), &ca, p, len, -1);
}

static const char *kind_of(mode_t m)
{
	return S_ISDIR(m) ? "a directory" : S_ISFIFO(m) ? "a FIFO" : S_ISCHR(m) ? "a character device"
		: S_ISBLK(m) ? "a block device" : S_ISSOCK(m) ? "a socket" : "not a file";
}

/* The file of a send-file: a regular file whose size is what it holds. Files
 * of /proc, /sys and their kind say 0 (or 4096) whatever they hold: one was
 * delivered as 0 bytes and answered ok. */
static int check_file(int fd, const char *name, struct stat *st, char *err, size_t errlen)
{
	struct statfs fs;
	char probe;
	if (fstat(fd, st) < 0 || fstatfs(fd, &fs) < 0) {
		snprintf(err, errlen, "cannot read the size of %s: %s", name, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st->st_mode)) {
		snprintf(err, errlen, "%s is not a regular file (it is %s)", name, kind_of(st->st_mode));
		return -1;
	}
	static const unsigned long pseudo[] = { PROC_SUPER_MAGIC, SYSFS_MAGIC, DEBUGFS_MAGIC, TRACEFS_MAGIC,
						SECURITYFS_MAGIC, CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, BPF_FS_MAGIC };
	bool is_pseudo = false;
	for (size_t i = 0; i < sizeof pseudo / sizeof pseudo[0]; i++)
		is_pseudo |= (unsigned long)fs.f_type == pseudo[i];
	if (is_pseudo || (st->st_size == 0 && pread(fd, &probe, 1, 0) > 0)) {
		snprintf(err, errlen, "the size of %s cannot be read: it is on a file system whose sizes say nothing of "
				      "what a file holds (/proc, /sys...); copy it to a regular file first", name);
		return -1;
	}
	return 0;
}

void cmd_send_file(struct client *c, const struct msg *req, const struct ctlargs *a)
{
	char err[512], path[4096] = "";
	struct common_args ca;
	bool passed = false;
	int code = CTL_E_BAD_REQUEST;
	ctlargs_bool(a, "fd", &passed);
	int fd = passed ? channel_take_fd(c->ch) : -1;
	if (!ctlargs_str(a, "path", path, sizeof path) && fd < 0) {
		control_fail(c->cid, req->seq, CTL_E_BAD_REQUEST, "send-file: no file given (path, or a descriptor with "
								  "fd true)");
		return;
	}
	if ((code = read_common(a, &ca, true, err, sizeof err)) != 0)
		goto fail_msg;
	/* A path alone is opened with the daemon's rights, which may read what the
	 * client may not (its SSH key, say): only root and the daemon's own user
	 * may ask for that. Everyone else passes the open file, as ucgwctl and the
	 * client libraries do, and so proves it may read it. */
	if (fd < 0 && c->uid != 0 && c->uid != geteuid()) {
		snprintf(err, sizeof err, "send-file: a path without the open file is accepted only from root and "
					  "uid %d; pass the file descriptor (ucgwctl and the client libraries do)",
			 (int)geteuid());
		code = CTL_E_FORBIDDEN;
		goto fail_msg;
	}
	if (fd < 0 && (fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0) {
		snprintf(err, sizeof err, "cannot open %s: %s", path, strerror(errno));
		code = errno == ENOENT || errno == ENOTDIR ? CTL_E_NOT_FOUND
		       : errno == EACCES || errno == EPERM ? CTL_E_FORBIDDEN : CTL_E_BAD_REQUEST;
		goto fail_msg;
	}
	struct stat st;
	code = CTL_E_BAD_REQUEST;
	if (check_file(fd, path[0] ? path : "the descriptor", &st, err, sizeof err) < 0)
		goto fail_msg;
	if (!ca.has_remote && path[0]) {
		char *copy = xstrdup(path);
		snprintf(ca.remote_name, sizeof ca.remote_name, "%s", basename(copy));
		ca.has_remote = true;
		free(copy);
	}
	admit(c, req, a, new_smsg(&ca, JOB_FILE, (uint64_t)st.st_size), &ca, NULL, 0, fd);
	close(fd);
	return;
fail_msg:
	if (fd >= 0)
		close(fd);
	control_fail(c->cid, req->seq, (enum ctl_code)code, "%s", err);
}

/* A message read back from the spool at start. */
