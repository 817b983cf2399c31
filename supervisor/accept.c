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
#include "supervisor/jsoncheck.h"
#include "supervisor/router.h"
#include "supervisor/router_int.h"
#include "supervisor/spool.h"
#include "supervisor/sup.h"

static bool carries(const struct rproto *rp, bool files) { return files ? rp->files : rp->meta; }

/* The enabled protocols that can carry this kind: written to buf ("valid:
 * auto, sftp, rsync", or that none is, for error messages) when buf is given,
 * and how many. */
static int enabled_protocols(bool files, char *buf, size_t len)
{
	int n = 0;
	if (buf)
		snprintf(buf, len, "valid: auto");
	for (int i = 0; i < router_state.nprotos; i++) {
		const struct rproto *rp = &router_state.protos[i];
		if (carries(rp, files) && rproto_enabled(rp)) {
			if (buf)
				snprintf(buf + strlen(buf), len - strlen(buf), ", %s", rp->name);
			n++;
		}
	}
	if (buf && !n)
		snprintf(buf, len, "no %s protocol is enabled in the configuration: %s", files ? "file" : "metadata",
			 files ? "sftp, rsync" : "websocket, rest, mqtt");
	return n;
}

static int check_protocol(const char *name, bool files, char *err, size_t errlen)
{
	char list[200];
	const char *kind = files ? "file" : "metadata";
	bool is_auto = strcmp(name, "auto") == 0;
	struct rproto *rp = is_auto ? NULL : rproto_by_name(name);
	if (is_auto ? enabled_protocols(files, NULL, 0) > 0 : rp && carries(rp, files) && rproto_enabled(rp))
		return 0;
	enabled_protocols(files, list, sizeof list); /* for the error text only */
	if (is_auto)
		snprintf(err, errlen, "nothing can carry it: %s", list);
	else if (rp && !carries(rp, files))
		snprintf(err, errlen, "protocol '%s' carries %s, not %s (%s)", name, files ? "metadata" : "files",
			 files ? "files" : "metadata", list);
	else if (!rp)
		snprintf(err, errlen, "unknown %s protocol '%s' (%s)", kind, name, list);
	else
		snprintf(err, errlen, "protocol '%s' is disabled in the configuration (%s)", name, list);
	return -1;
}

/* Text from a client repeated in an error: one line of UTF-8 whatever it
 * holds (the reply is a msgpack str, which clients decode as UTF-8). */
static void shown_safe(char *s)
{
	bool utf8 = utf8_valid(s, strlen(s));
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f || (!utf8 && (unsigned char)*s >= 0x80))
			*s = '?';
}

struct common_args {
	char protocol[16], priority[16], topic[256], endpoint[256], remote_name[256];
	bool wait, encrypt, has_topic, has_endpoint, has_remote;
	uint64_t ttl_s;
	bool has_ttl;
};

/* A text field of a request: 0 absent, 1 copied into buf, -1 refused with
 * why (a C string cut at a NUL or at the buffer's end would be a different
 * topic or endpoint than the one the client meant). */
static int text_field(const msgpack_object *a, const char *key, char *buf, size_t len, char *err, size_t errlen)
{
	const msgpack_object *v = obj_get(a, key);
	if (!v)
		return 0;
	if (v->type != MSGPACK_OBJECT_STR) {
		snprintf(err, errlen, "%s must be a string", key);
		return -1;
	}
	if (v->via.str.size >= len) {
		snprintf(err, errlen, "%s of %u bytes is longer than the %zu allowed", key, (unsigned)v->via.str.size,
			 len - 1);
		return -1;
	}
	if (memchr(v->via.str.ptr, '\0', v->via.str.size)) {
		snprintf(err, errlen, "%s contains a NUL character", key);
		return -1;
	}
	memcpy(buf, v->via.str.ptr, v->via.str.size);
	buf[v->via.str.size] = '\0';
	return 1;
}

/* What MQTT (3.1.1 and 5, section 4.7) refuses in a topic name: empty,
 * wildcards, NUL (refused above), malformed UTF-8; control characters it
 * advises against and brokers may close the connection for. Empty levels
 * ("a//b", "/a") are valid topics. */
static int check_topic(const char *t, char *err, size_t errlen)
{
	size_t n = strlen(t);
	const char *bad = !n ? "is empty"
		: strpbrk(t, "+#") ? "contains a wildcard (+ or #); a message is published to one topic"
		: !utf8_valid(t, n) ? "is not valid UTF-8"
		: NULL;
	for (size_t i = 0; !bad && i < n; i++)
		if ((unsigned char)t[i] < 0x20 || t[i] == 0x7f)
			bad = "contains a control character";
	if (!bad)
		return 0;
	snprintf(err, errlen, "MQTT topic '%s' %s", t, bad);
	shown_safe(err);
	return -1;
}

/* An endpoint is appended to rest.base_url: a path (and query), with only the
 * characters RFC 3986 allows there; CR, LF, a space or a control character
 * would make another request line or a URL the server refuses. */
static int check_endpoint(const char *e, char *err, size_t errlen)
{
	static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
				 "-._~!$&'()*+,;=:@/?%";
	size_t bad = strspn(e, ok);
	if (e[0] == '/' && !e[bad])
		return 0;
	if (e[0] != '/')
		snprintf(err, errlen, "endpoint '%s' must be a path starting with '/'", e);
	else
		snprintf(err, errlen, "endpoint '%s' has a character not allowed in a URL path (byte 0x%02x at %zu): "
				      "no space, CR, LF or control character; percent-encode others",
			 e, (unsigned char)e[bad], bad);
	shown_safe(err);
	return -1;
}

/* ttl_s: 0 (never expires) up to a hundred years, as ucgwctl --ttl. */
#define TTL_MAX_S 3153600000u

static int read_ttl(const msgpack_object *a, struct common_args *ca, char *err, size_t errlen)
{
	const msgpack_object *v = obj_get(a, "ttl_s");
	if (!v)
		return 0;
	if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= TTL_MAX_S) {
		ca->ttl_s = v->via.u64;
		ca->has_ttl = true;
		return 0;
	}
	if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		snprintf(err, errlen, "ttl_s %lld is negative, expected seconds from 0 (never expires) to %u",
			 (long long)v->via.i64, TTL_MAX_S);
	else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		snprintf(err, errlen, "ttl_s %llu is too large, expected seconds from 0 (never expires) to %u",
			 (unsigned long long)v->via.u64, TTL_MAX_S);
	else
		snprintf(err, errlen, "ttl_s must be a whole number of seconds from 0 (never expires) to %u", TTL_MAX_S);
	return -1;
}

static int read_texts(const msgpack_object *a, struct common_args *ca, char *err, size_t errlen)
{
	int rc;
	if ((rc = text_field(a, "protocol", ca->protocol, sizeof ca->protocol, err, errlen)) < 0)
		return -1;
	if (!rc)
		strcpy(ca->protocol, "auto");
	if ((rc = text_field(a, "priority", ca->priority, sizeof ca->priority, err, errlen)) < 0)
		return -1;
	if (!rc)
		strcpy(ca->priority, "normal");
	if ((rc = text_field(a, "topic", ca->topic, sizeof ca->topic, err, errlen)) < 0)
		return -1;
	ca->has_topic = rc;
	if ((rc = text_field(a, "endpoint", ca->endpoint, sizeof ca->endpoint, err, errlen)) < 0)
		return -1;
	ca->has_endpoint = rc;
	if ((rc = text_field(a, "remote_name", ca->remote_name, sizeof ca->remote_name, err, errlen)) < 0)
		return -1;
	ca->has_remote = rc;
	return 0;
}

static int read_common(const msgpack_object *a, struct common_args *ca, bool files, char *err, size_t errlen)
{
	memset(ca, 0, sizeof *ca);
	if (read_texts(a, ca, err, errlen) < 0 || read_ttl(a, ca, err, errlen) < 0)
		return -1;
	obj_get_bool(a, "wait", &ca->wait);
	obj_get_bool(a, "encrypt", &ca->encrypt);
	if (priority_parse(ca->priority) < 0) {
		snprintf(err, errlen, "unknown priority '%s' (valid: high, normal, low)", ca->priority);
		return -1;
	}
	if (check_protocol(ca->protocol, files, err, errlen) < 0)
		return -1;
	if (ca->encrypt && files) {
		snprintf(err, errlen, "send-file: encrypt is for metadata only; files are sent as they are "
				      "(over SFTP or rsync, inside SSH)");
		return -1;
	}
	if (ca->encrypt && !config_str(sup.cfg, "security", "encryption_key_file")) {
		snprintf(err, errlen, "cannot encrypt: security.encryption_key_file is not set");
		return -1;
	}
	if (ca->has_topic && check_topic(ca->topic, err, errlen) < 0)
		return -1;
	if (ca->has_endpoint && check_endpoint(ca->endpoint, err, errlen) < 0)
		return -1;
	if (ca->has_remote && (strchr(ca->remote_name, '/') || !ca->remote_name[0] ||
			       strcmp(ca->remote_name, ".") == 0 || strcmp(ca->remote_name, "..") == 0)) {
		snprintf(err, errlen, "remote name '%s' must be a plain file name", ca->remote_name);
		shown_safe(err);
		return -1;
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
static void admit(struct client *c, const struct msg *req, struct smsg *m, const struct common_args *ca,
		  const void *payload, size_t len, int fd)
{
	char err[512];
	int given = admission_client_id(req->body, m->id, err, sizeof err);
	if (given < 0) {
		control_fail(c->cid, req->seq, "%s: %s", req->name, err);
		smsg_free(m);
		return;
	}
	if (given && admission_known(c->cid, req->seq, m->id, ca->wait)) {
		smsg_free(m);
		return;
	}
	if (router_make_room(m->size, err, sizeof err) < 0) {
		control_fail(c->cid, req->seq, "%s", err);
		smsg_free(m);
		return;
	}
	/* Keep the bytes at hand only while the backlog is small: a long outage
	 * must not fill memory; the router reads them back from the spool. */
	if (payload && router_state.bytes + len <= PAYLOAD_MEMORY_BUDGET) {
		m->payload = xmalloc(len + 1);
		memcpy(m->payload, payload, len);
		m->payload[len] = '\0';
	}
	admission_start(c->cid, req->seq, m, ca->wait, payload, len, fd);
}

void cmd_send(struct client *c, const struct msg *req)
{
	char err[512], format[16] = "json";
	struct common_args ca;
	const msgpack_object *data = obj_get(req->body, "data");
	if (!data || (data->type != MSGPACK_OBJECT_BIN && data->type != MSGPACK_OBJECT_STR)) {
		control_fail(c->cid, req->seq, "send: no data given");
		return;
	}
	const char *p = data->type == MSGPACK_OBJECT_BIN ? data->via.bin.ptr : data->via.str.ptr;
	size_t len = data->type == MSGPACK_OBJECT_BIN ? data->via.bin.size : data->via.str.size;
	obj_get_str(req->body, "format", format, sizeof format);
	uint64_t max = (uint64_t)config_int(sup.cfg, "gateway", "max_message_bytes");
	if (read_common(req->body, &ca, false, err, sizeof err) < 0) {
		control_fail(c->cid, req->seq, "%s", err);
		return;
	}
	if (len > max) {
		control_fail(c->cid, req->seq, "message of %zu bytes is larger than gateway.max_message_bytes (%llu)",
			     len, (unsigned long long)max);
		return;
	}
	if (len == 0) {
		control_fail(c->cid, req->seq, "send: the message is empty");
		return;
	}
	if (strcmp(format, "json") == 0 && !json_check(p, len, err, sizeof err)) {
		control_fail(c->cid, req->seq, "payload is not valid JSON: %s", err);
		return;
	}
	if (strcmp(format, "json") != 0 && strcmp(format, "raw") != 0) {
		control_fail(c->cid, req->seq, "unknown format '%s' (valid: json, raw)", format);
		return;
	}
	admit(c, req, new_smsg(&ca, JOB_META, len), &ca, p, len, -1);
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

void cmd_send_file(struct client *c, const struct msg *req)
{
	char err[512], path[4096] = "";
	struct common_args ca;
	bool passed = false;
	obj_get_bool(req->body, "fd", &passed);
	int fd = passed ? channel_take_fd(c->ch) : -1;
	if (!obj_get_str(req->body, "path", path, sizeof path) && fd < 0) {
		control_fail(c->cid, req->seq, "send-file: no file given");
		return;
	}
	if (read_common(req->body, &ca, true, err, sizeof err) < 0)
		goto fail_msg;
	/* A path alone is opened with the daemon's rights, which may read what the
	 * client may not (its SSH key, say): only root and the daemon's own user
	 * may ask for that. Everyone else passes the open file, as ucgwctl and the
	 * client libraries do, and so proves it may read it. */
	if (fd < 0 && c->uid != 0 && c->uid != geteuid()) {
		snprintf(err, sizeof err, "send-file: a path without the open file is accepted only from root and "
					  "uid %d; pass the file descriptor (ucgwctl and the client libraries do)",
			 (int)geteuid());
		goto fail_msg;
	}
	if (fd < 0 && (fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0) {
		snprintf(err, sizeof err, "cannot open %s: %s", path, strerror(errno));
		goto fail_msg;
	}
	struct stat st;
	if (check_file(fd, path[0] ? path : "the descriptor", &st, err, sizeof err) < 0)
		goto fail_msg;
	if (!ca.has_remote && path[0]) {
		char *copy = xstrdup(path);
		snprintf(ca.remote_name, sizeof ca.remote_name, "%s", basename(copy));
		ca.has_remote = true;
		free(copy);
	}
	admit(c, req, new_smsg(&ca, JOB_FILE, (uint64_t)st.st_size), &ca, NULL, 0, fd);
	close(fd);
	return;
fail_msg:
	if (fd >= 0)
		close(fd);
	control_fail(c->cid, req->seq, "%s", err);
}

/* A message read back from the spool at start. */
