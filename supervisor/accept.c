/* Step 1 of a message's life: check a `send` or `send-file` request, give the
 * message an id (or take the client's), and hand it to admission.c, which
 * spools it, answers and routes it. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "ipc/channel.h"
#include "supervisor/admission.h"
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
	for (int i = 0; i < R.nprotos; i++) {
		const struct rproto *rp = &R.protos[i];
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

struct common_args {
	char protocol[16], priority[16], topic[256], endpoint[256], remote_name[256];
	bool wait, encrypt, has_topic, has_endpoint, has_remote;
	uint64_t ttl_s;
	bool has_ttl;
};

static int read_common(const msgpack_object *a, struct common_args *ca, bool files, char *err, size_t errlen)
{
	memset(ca, 0, sizeof *ca);
	if (!obj_get_str(a, "protocol", ca->protocol, sizeof ca->protocol))
		strcpy(ca->protocol, "auto");
	if (!obj_get_str(a, "priority", ca->priority, sizeof ca->priority))
		strcpy(ca->priority, "normal");
	ca->has_topic = obj_get_str(a, "topic", ca->topic, sizeof ca->topic);
	ca->has_endpoint = obj_get_str(a, "endpoint", ca->endpoint, sizeof ca->endpoint);
	ca->has_remote = obj_get_str(a, "remote_name", ca->remote_name, sizeof ca->remote_name);
	obj_get_bool(a, "wait", &ca->wait);
	obj_get_bool(a, "encrypt", &ca->encrypt);
	ca->has_ttl = obj_get_u64(a, "ttl_s", &ca->ttl_s);
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
	if (ca->has_topic && (strpbrk(ca->topic, "+#") || !ca->topic[0])) {
		snprintf(err, errlen, "MQTT topic '%s' %s", ca->topic,
			 ca->topic[0] ? "contains a wildcard (+ or #); a message is published to one topic"
				      : "is empty");
		return -1;
	}
	if (ca->has_endpoint && ca->endpoint[0] != '/') {
		snprintf(err, errlen, "endpoint '%s' must start with '/'", ca->endpoint);
		return -1;
	}
	if (ca->has_remote && (strchr(ca->remote_name, '/') || !ca->remote_name[0] ||
			       strcmp(ca->remote_name, ".") == 0 || strcmp(ca->remote_name, "..") == 0)) {
		snprintf(err, errlen, "remote name '%s' must be a plain file name", ca->remote_name);
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
	if (payload && R.bytes + len <= PAYLOAD_MEMORY_BUDGET) {
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
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, sizeof err, "%s is not a regular file", path[0] ? path : "the descriptor");
		goto fail_msg;
	}
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
void accept_recovered(struct smsg *m)
{
	router_adopt(m);
	if (m->state == SM_DEAD) {
		list_push(&R.dead, m);
		return;
	}
	router_route(m);
}
