/* The control commands: one table, one handler each. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "supervisor/commands.h"
#include "supervisor/budget.h"
#include "supervisor/control.h"
#include "supervisor/ctlargs.h"
#include "supervisor/http.h"
#include "supervisor/monitor.h"
#include "supervisor/stats.h"
#include "supervisor/spool.h"
#include "supervisor/proctab.h"
#include "supervisor/router.h"
#include "supervisor/servers.h"
#include "supervisor/sup.h"

typedef void (*cmd_fn)(struct client *c, const struct msg *req, const struct ctlargs *a);

static void pack_proc(msgpack_packer *pk, const struct proc *p)
{
	msgpack_pack_map(pk, 13);
	pk_kv_str(pk, "name", p->name);
	pk_kv_bool(pk, "paused", router_paused(p->name));
	pk_kv_u64(pk, "pid", (uint64_t)(p->pid > 0 ? p->pid : 0));
	pk_kv_str(pk, "state", proc_state_str(p->state));
	pk_kv_u64(pk, "generation", p->gen);
	pk_kv_u64(pk, "restarts", p->restarts);
	pk_kv_str(pk, "last_exit", p->last_exit);
	pk_kv_u64(pk, "uptime_ms", p->pid > 0 ? now_ms() - p->start_ms : 0);
	pk_kv_bool(pk, "connected", p->connected);
	pk_kv_str(pk, "health", p->health);
	pk_kv_u64(pk, "inflight", p->inflight);
	pk_kv_u64(pk, "rtt_us", p->rtt_us);
	servers_pack(pk, p);
}

static void pack_workers(msgpack_packer *pk)
{
	unsigned n = 0;
	for (struct proc *p = proctab_first(); p; p = p->next)
		n++;
	msgpack_pack_array(pk, n);
	for (struct proc *p = proctab_first(); p; p = p->next)
		pack_proc(pk, p);
}

static void cmd_workers(struct client *c, const struct msg *req, const struct ctlargs *a)
{
	struct body b;
	control_body_init(&b);
	pack_workers(&b.pk);
	control_reply(c->cid, req->seq, true, NULL, &b);
	control_body_free(&b);
}

static void pack_spool(msgpack_packer *pk)
{
	struct spool_stats st;
	spool_stats(&st);
	msgpack_pack_map(pk, 17);
	struct router_counts rc;
	router_counts(&rc);
	pk_kv_u64(pk, "depth", rc.depth);
	pk_kv_u64(pk, "bytes", rc.bytes);
	pk_kv_u64(pk, "oldest_age_ms", rc.oldest_wall_ms ? wall_ms() - rc.oldest_wall_ms : 0);
	pk_kv_u64(pk, "waiting", rc.waiting);
	pk_kv_u64(pk, "dead", rc.dead);
	pk_kv_u64(pk, "accepted", rc.accepted);
	pk_kv_u64(pk, "dropped", rc.dropped);
	pk_kv_u64(pk, "expired", rc.expired);
	pk_kv_u64(pk, "rejected_full", rc.rejected_full);
	pk_kv_u64(pk, "segments", st.segments);
	pk_kv_u64(pk, "disk_bytes", st.disk_bytes);
	pk_kv_u64(pk, "corrupt_segments", st.corrupt_segments);
	pk_kv_u64(pk, "corrupt_records", st.corrupt_records);
	pk_kv_u64(pk, "written_bytes", st.written_bytes); /* since start: the flash's wear */
	pk_kv_u64(pk, "stray_files_removed", st.stray_files_removed); /* at start */
	pk_kv_u64(pk, "stray_bytes_removed", st.stray_bytes_removed);
	pk_kv_u64(pk, "reflinks", st.reflinks); /* files snapshotted without a copy */
}

static void pack_network(msgpack_packer *pk)
{
	unsigned n = 0;
	for (struct proc *p = proctab_first(); p; p = p->next)
		n++;
	msgpack_pack_map(pk, n);
	for (struct proc *p = proctab_first(); p; p = p->next) {
		pk_key(pk, p->name);
		msgpack_pack_map(pk, 4);
		pk_kv_str(pk, "quality", monitor_quality_str(monitor_quality(p->slot->idx)));
		pk_kv_f64(pk, "rtt_ms", (double)monitor_rtt_us(p->slot->idx) / 1000.0);
		pk_kv_f64(pk, "loss", monitor_loss(p->slot->idx));
		pk_kv_str(pk, "cooling", router_cooling(p->name));
	}
}

static void cmd_status(struct client *c, const struct msg *req, const struct ctlargs *a)
{
	struct body b;
	control_body_init(&b);
	msgpack_packer *pk = &b.pk;
	msgpack_pack_map(pk, 12);
	pk_kv_str(pk, "version", UCGW_VERSION);
	pk_kv_u64(pk, "pid", (uint64_t)getpid());
	pk_kv_u64(pk, "uptime_ms", now_ms() - sup.start_ms);
	pk_kv_str(pk, "config", sup.config_path);
	pk_kv_str(pk, "device_id", config_str(sup.cfg, "gateway", "device_id"));
	pk_kv_str(pk, "state", sup.stopping ? "stopping" : "running");
	pk_kv_u64(pk, "reloads", sup.reloads);
	pk_kv_u64(pk, "inflight", router_inflight());
	pk_key(pk, "spool");
	pack_spool(pk);
	pk_key(pk, "network");
	pack_network(pk);
	pk_key(pk, "workers");
	pack_workers(pk);
	pk_key(pk, "link"); /* byte budgets and the rate cap (budget.c) */
	budget_pack(pk);
	control_reply(c->cid, req->seq, true, NULL, &b);
	control_body_free(&b);
}

static void cmd_restart(struct client *c, const struct msg *req, const struct ctlargs *a)
{
	char name[64];
	ctlargs_str(a, "name", name, sizeof name); /* required */
	struct proc *p = proctab_find(name);
	if (!p) {
		char list[256] = "";
		for (struct proc *q = proctab_first(); q; q = q->next)
			snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", list[0] ? ", " : "", q->name);
		control_fail(c->cid, req->seq, CTL_E_NOT_FOUND, "restart: no worker named '%s' (workers: %s)", name,
			     list[0] ? list : "none");
		return;
	}
	proctab_restart(p);
	control_reply(c->cid, req->seq, true, NULL, NULL);
}

static void cmd_pause_resume(struct client *c, const struct msg *req, const struct ctlargs *a, bool pause)
{
	const char *what = pause ? "pause" : "resume";
	char name[64];
	ctlargs_str(a, "name", name, sizeof name); /* required */
	if (router_pause(name, pause) < 0) {
		char list[256];
		router_protocol_names(list, sizeof list);
		control_fail(c->cid, req->seq, CTL_E_NOT_FOUND, "%s: no protocol named '%s' (protocols: %s)", what, name,
			     list[0] ? list : "none");
		return;
	}
	control_reply(c->cid, req->seq, true, NULL, NULL);
}

static void cmd_pause(struct client *c, const struct msg *req, const struct ctlargs *a)
{
	cmd_pause_resume(c, req, a, true);
}
static void cmd_resume(struct client *c, const struct msg *req, const struct ctlargs *a)
{
	cmd_pause_resume(c, req, a, false);
}

struct reload_ticket {
	uint64_t cid, seq;
};

static void reloaded(const char *err, void *arg)
{
	struct reload_ticket *t = arg;
	if (err)
		control_fail(t->cid, t->seq, CTL_E_CONFIG, "reload failed, keeping the old configuration: %s", err);
	else
		control_reply(t->cid, t->seq, true, NULL, NULL);
	free(t);
}

/* Answered once the file is read (off the loop) and swapped in. */
static void cmd_reload(struct client *c, const struct msg *req, const struct ctlargs *a)
{
	struct reload_ticket *t = xcalloc(1, sizeof *t);
	t->cid = c->cid;
	t->seq = req->seq;
	sup_reload(reloaded, t);
}

static void cmd_shutdown(struct client *c, const struct msg *req, const struct ctlargs *a)
{
	control_reply(c->cid, req->seq, true, NULL, NULL);
	sup_shutdown("ucgwctl shutdown");
}

static void cmd_stats(struct client *c, const struct msg *req, const struct ctlargs *a)
{
	struct body b;
	control_body_init(&b);
	stats_pack(&b.pk);
	control_reply(c->cid, req->seq, true, NULL, &b);
	control_body_free(&b);
}


/* The answer of the `all` actions: {KEY: how many}. */
static void reply_count(const struct client *c, const struct msg *req, const char *key, uint64_t n)
{
	struct body b;
	control_body_init(&b);
	msgpack_pack_map(&b.pk, 1);
	pk_kv_u64(&b.pk, key, n);
	control_reply(c->cid, req->seq, true, NULL, &b);
	control_body_free(&b);
}

/* queue [list|dead|retry ID|all|purge ID|requeue ID|all]; list and dead stop
 * at `limit` messages (1000 unless asked). The action is checked first. */
static void cmd_queue(struct client *c, const struct msg *req, const struct ctlargs *a)
{
	char action[32] = "list", id[64] = "";
	ctlargs_str(a, "action", action, sizeof action); /* one of the table's choices */
	ctlargs_str(a, "id", id, sizeof id);
	bool dead_only = strcmp(action, "dead") == 0, listing = dead_only || strcmp(action, "list") == 0;
	bool takes_all = strcmp(action, "retry") == 0 || strcmp(action, "requeue") == 0;
	if (!listing && !id[0]) {
		control_fail(c->cid, req->seq, CTL_E_BAD_REQUEST, "queue %s: which message? give its id%s", action,
			     takes_all ? ", or all" : "");
		return;
	}
	if (strcmp(action, "purge") == 0 && strcmp(id, "all") == 0) {
		control_fail(c->cid, req->seq, CTL_E_BAD_REQUEST, "queue purge: one message at a time (purge takes no 'all')");
		return;
	}
	uint64_t limit = QUEUE_LIMIT_DEFAULT;
	ctlargs_u64(a, "limit", &limit);
	if (listing) {
		struct body b;
		control_body_init(&b);
		router_pack_queue(&b.pk, limit, dead_only);
		control_reply(c->cid, req->seq, true, NULL, &b);
		control_body_free(&b);
		return;
	}
	if (strcmp(action, "retry") == 0 && strcmp(id, "all") == 0) {
		reply_count(c, req, "retried", router_retry_all());
		return;
	}
	if (strcmp(action, "requeue") == 0 && strcmp(id, "all") == 0) {
		uint64_t n = router_requeue_all();
		if (n)
			log_info("%llu dead letters requeued by an operator (uid %d)", (unsigned long long)n, (int)c->uid);
		reply_count(c, req, "requeued", n);
		return;
	}
	struct smsg *m = router_find(id);
	if (!m) {
		control_fail(c->cid, req->seq, CTL_E_NOT_FOUND, "queue %s: no message with id '%s' in the spool", action, id);
		return;
	}
	if (strcmp(action, "retry") == 0) {
		if (m->state != SM_WAITING) {
			control_fail(c->cid, req->seq, CTL_E_CONFLICT, "queue retry: message %s is %s, not waiting", id,
				     m->state == SM_DEAD ? "dead (use queue requeue)" : "already on its way");
			return;
		}
		router_retry(m);
	} else if (strcmp(action, "purge") == 0) {
		if (m->state == SM_INFLIGHT) {
			control_fail(c->cid, req->seq, CTL_E_CONFLICT, "queue purge: message %s is in flight; try again", id);
			return;
		}
		log_info("message %s purged by an operator (uid %d)", id, (int)c->uid);
		snprintf(m->last_error, sizeof m->last_error, "purged by an operator");
		router_forget(m, "failed", "purged");
	} else { /* requeue */
		if (m->state != SM_DEAD) {
			control_fail(c->cid, req->seq, CTL_E_CONFLICT, "queue requeue: message %s is not dead", id);
			return;
		}
		router_requeue(m);
	}
	control_reply(c->cid, req->seq, true, NULL, NULL);
}

static void cmd_trace(struct client *c, const struct msg *req, const struct ctlargs *a)
{
	char id[64] = "";
	ctlargs_str(a, "id", id, sizeof id); /* required */
	struct smsg *m = router_find(id);
	struct body b;
	control_body_init(&b);
	if (m) {
		router_pack_trace(&b.pk, m, NULL);
	} else {
		if (!router_recent_trace(id, &b.pk)) {
			control_body_free(&b);
			control_fail(c->cid, req->seq, CTL_E_NOT_FOUND,
				     "trace: no message with id '%s' in the spool or among the last finished ones", id);
			return;
		}
	}
	control_reply(c->cid, req->seq, true, NULL, &b);
	control_body_free(&b);
}

/* What `auto` would pick now, and the fallback chain after it: nothing is sent. */
static void cmd_select(struct client *c, const struct msg *req, const struct ctlargs *a)
{
	char kind[16] = "metadata", prio[16] = "normal", asked[16] = "auto";
	uint64_t size = 0;
	ctlargs_str(a, "kind", kind, sizeof kind); /* metadata or file */
	ctlargs_str(a, "priority", prio, sizeof prio);
	ctlargs_str(a, "protocol", asked, sizeof asked);
	ctlargs_u64(a, "size", &size);
	bool file = strcmp(kind, "file") == 0;
	struct body b;
	char err[128];
	control_body_init(&b);
	if (router_select_dry_run(&b.pk, file, priority_parse(prio), size, asked, err, sizeof err) < 0)
		control_fail(c->cid, req->seq, CTL_E_NOT_FOUND, "select: %s", err);
	else
		control_reply(c->cid, req->seq, true, NULL, &b);
	control_body_free(&b);
}

/* The dashboard's document (GET /api/dashboard) as JSON text, without the history. */
static void cmd_dashboard(struct client *c, const struct msg *req, const struct ctlargs *a)
{
	struct strbuf s = { 0 };
	metrics_dashboard_json(&s, 0);
	struct body b;
	control_body_init(&b);
	msgpack_pack_str_with_body(&b.pk, s.p, s.len);
	free(s.p);
	control_reply(c->cid, req->seq, true, NULL, &b);
	control_body_free(&b);
}

static const struct command {
	const char *name;
	cmd_fn fn;
} commands[] = {
	{ "status", cmd_status },
	{ "workers", cmd_workers },
	{ "restart", cmd_restart },
	{ "pause", cmd_pause },
	{ "resume", cmd_resume },
	{ "reload", cmd_reload },
	{ "shutdown", cmd_shutdown },
	{ "send", cmd_send },
	{ "send-file", cmd_send_file },
	{ "queue", cmd_queue },
	{ "stats", cmd_stats },
	{ "trace", cmd_trace },
	{ "select", cmd_select },
	{ "dashboard", cmd_dashboard },
};

void commands_dispatch(struct client *c, const struct msg *req)
{
	char err[512];
	const struct ctlargs_cmd *spec = ctlargs_command(req->name);
	if (!spec) {
		char list[512];
		ctlargs_command_names(list, sizeof list);
		control_fail(c->cid, req->seq, CTL_E_BAD_REQUEST, "unknown command '%s' (commands: %s)", req->name, list);
		return;
	}
	struct ctlargs a;
	int code = ctlargs_read(spec, req->body, (unsigned)req->version, &a, err, sizeof err);
	if (code) {
		control_fail(c->cid, req->seq, (enum ctl_code)code, "%s", err);
		return;
	}
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		if (strcmp(commands[i].name, spec->name) == 0) {
			commands[i].fn(c, req, &a);
			return;
		}
	control_fail(c->cid, req->seq, CTL_E_INTERNAL, "%s: no handler for this command", req->name);
}
