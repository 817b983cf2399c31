/* What /metrics and /api/dashboard say: counters and gauges from the router,
 * the process table, the spool and the network monitor. */
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "supervisor/budget.h"
#include "supervisor/crashlog.h"
#include "supervisor/errors.h"
#include "supervisor/history.h"
#include "supervisor/http.h"
#include "supervisor/monitor.h"
#include "supervisor/proctab.h"
#include "supervisor/servers.h"
#include "supervisor/router.h"
#include "supervisor/spool.h"
#include "supervisor/sup.h"

static void head(struct strbuf *b, const char *name, const char *type, const char *help)
{
	http_sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void per_protocol(struct strbuf *b, const char *name, const char *type, const char *help, size_t off)
{
	head(b, name, type, help);
	for (int i = 0; i < router_nprotos(); i++) {
		struct router_proto rp;
		router_proto(i, &rp);
		if (!rp.enabled)
			continue;
		const uint64_t *v = (const uint64_t *)((const char *)rp.stats + off);
		http_sb_printf(b, "%s{protocol=\"%s\"} %llu\n", name, rp.name, (unsigned long long)*v);
	}
}

static void messages(struct strbuf *b)
{
	head(b, "ucgw_messages_total", "counter", "Attempts answered by a worker, by result.");
	static const struct { const char *result; size_t off; } res[] = {
		{ "ok", offsetof(struct proto_stats, success) },
		{ "retry", offsetof(struct proto_stats, retries) },
		{ "permfail", offsetof(struct proto_stats, failure) },
	};
	for (int i = 0; i < router_nprotos(); i++) {
		struct router_proto rp;
		router_proto(i, &rp);
		for (size_t k = 0; k < 3 && rp.enabled; k++)
			http_sb_printf(b, "ucgw_messages_total{protocol=\"%s\",result=\"%s\"} %llu\n", rp.name,
				  res[k].result, (unsigned long long)*(const uint64_t *)((const char *)rp.stats + res[k].off));
	}
}

static void latency(struct strbuf *b)
{
	head(b, "ucgw_latency_seconds", "summary", "Time from handing a job to a worker to the server's acknowledgement.");
	static const double qs[] = { 0.5, 0.9, 0.99 };
	for (int i = 0; i < router_nprotos(); i++) {
		struct router_proto rp;
		router_proto(i, &rp);
		if (!rp.enabled)
			continue;
		for (int k = 0; k < 3; k++)
			http_sb_printf(b, "ucgw_latency_seconds{protocol=\"%s\",quantile=\"%g\"} %.6f\n", rp.name, qs[k],
				  (double)stats_latency_quantile(&rp.stats->lat, qs[k]) / 1e6);
		http_sb_printf(b, "ucgw_latency_seconds_sum{protocol=\"%s\"} %.6f\n", rp.name, (double)rp.stats->lat.sum_us / 1e6);
		http_sb_printf(b, "ucgw_latency_seconds_count{protocol=\"%s\"} %llu\n", rp.name,
			  (unsigned long long)rp.stats->lat.count);
	}
}

static void workers(struct strbuf *b)
{
	head(b, "ucgw_worker_up", "gauge", "1 when the worker is ready and reaches its server.");
	for (struct proc *p = proctab_first(); p; p = p->next)
		http_sb_printf(b, "ucgw_worker_up{worker=\"%s\"} %d\n", p->name, p->state == PROC_READY && p->connected);
	head(b, "ucgw_worker_restarts_total", "counter", "Restarts of the worker since the daemon started.");
	for (struct proc *p = proctab_first(); p; p = p->next)
		http_sb_printf(b, "ucgw_worker_restarts_total{worker=\"%s\"} %u\n", p->name, p->restarts);
	head(b, "ucgw_worker_state", "gauge", "1 for the worker's current state.");
	static const char *const states[] = { "starting", "ready", "backoff", "failed", "stopped" };
	for (struct proc *p = proctab_first(); p; p = p->next)
		for (int s = 0; s < 5; s++)
			http_sb_printf(b, "ucgw_worker_state{worker=\"%s\",state=\"%s\"} %d\n", p->name, states[s],
				  (int)p->state == s);
}

static void queues(struct strbuf *b)
{
	static const struct { const char *name, *help; } gauges[] = {
		{ "ucgw_queue_depth", "Messages queued for the protocol's worker." },
		{ "ucgw_inflight", "Jobs a worker holds." },
		{ "ucgw_window", "Jobs a worker may hold now (the adaptive window)." },
	};
	for (int g = 0; g < 3; g++) {
		head(b, gauges[g].name, "gauge", gauges[g].help);
		for (int i = 0; i < router_nprotos(); i++) {
			struct router_proto rp;
			router_proto(i, &rp);
			uint64_t v = g == 0 ? rp.queued : g == 1 ? rp.inflight : rp.window;
			if (rp.enabled)
				http_sb_printf(b, "%s{protocol=\"%s\"} %llu\n", gauges[g].name, rp.name, (unsigned long long)v);
		}
	}
}

static void spool(struct strbuf *b)
{
	struct spool_stats st;
	struct router_counts rc;
	spool_stats(&st);
	router_counts(&rc);
	head(b, "ucgw_spool_messages", "gauge", "Messages in the spool, waiting or in flight.");
	http_sb_printf(b, "ucgw_spool_messages %llu\n", (unsigned long long)rc.depth);
	head(b, "ucgw_spool_bytes", "gauge", "Payload bytes in the spool.");
	http_sb_printf(b, "ucgw_spool_bytes %llu\n", (unsigned long long)rc.bytes);
	head(b, "ucgw_spool_oldest_age_seconds", "gauge", "Age of the oldest message in the spool.");
	http_sb_printf(b, "ucgw_spool_oldest_age_seconds %.3f\n",
		  rc.oldest_wall_ms ? (double)(wall_ms() - rc.oldest_wall_ms) / 1000 : 0.0);
	head(b, "ucgw_spool_dead_messages", "gauge", "Messages in the dead-letter area.");
	http_sb_printf(b, "ucgw_spool_dead_messages %llu\n", (unsigned long long)rc.dead);
	head(b, "ucgw_spool_rejected_total", "counter", "Messages refused because the spool was full.");
	http_sb_printf(b, "ucgw_spool_rejected_total %llu\n", (unsigned long long)rc.rejected_full);
	head(b, "ucgw_spool_written_bytes_total", "counter", "Bytes written to spool segments.");
	http_sb_printf(b, "ucgw_spool_written_bytes_total %llu\n", (unsigned long long)st.written_bytes);
	head(b, "ucgw_spool_corrupt_segments_total", "counter", "Segments moved aside after a failed checksum.");
	http_sb_printf(b, "ucgw_spool_corrupt_segments_total %llu\n", (unsigned long long)st.corrupt_segments);
	head(b, "ucgw_spool_corrupt_records_total", "counter", "Damaged stretches skipped when the spool was replayed.");
	http_sb_printf(b, "ucgw_spool_corrupt_records_total %llu\n", (unsigned long long)st.corrupt_records);
	head(b, "ucgw_spool_stray_files_removed_total", "counter",
	     "Copies in the spool's file area that no message referred to, removed at start.");
	http_sb_printf(b, "ucgw_spool_stray_files_removed_total %llu\n", (unsigned long long)st.stray_files_removed);
}

static void network(struct strbuf *b)
{
	head(b, "ucgw_network_rtt_seconds", "gauge", "Average round trip to the protocol's server, recent samples.");
	for (struct proc *p = proctab_first(); p; p = p->next)
		http_sb_printf(b, "ucgw_network_rtt_seconds{server=\"%s\"} %.6f\n", p->name,
			  (double)monitor_rtt_us(p->slot->idx) / 1e6);
	head(b, "ucgw_network_quality", "gauge", "0 unknown, 1 poor, 2 fair, 3 good, 4 excellent.");
	for (struct proc *p = proctab_first(); p; p = p->next)
		http_sb_printf(b, "ucgw_network_quality{server=\"%s\"} %d\n", p->name, (int)monitor_quality(p->slot->idx));
	servers_metrics(b);
}

void metrics_prometheus(struct strbuf *b)
{
	messages(b);
	per_protocol(b, "ucgw_fallbacks_out_total", "counter", "Messages sent on to another protocol after a failure.",
		     offsetof(struct proto_stats, fallback_out));
	per_protocol(b, "ucgw_fallbacks_in_total", "counter", "Messages taken over from another protocol.",
		     offsetof(struct proto_stats, fallback_in));
	per_protocol(b, "ucgw_bytes_total", "counter", "Payload bytes delivered.", offsetof(struct proto_stats, bytes));
	per_protocol(b, "ucgw_dropped_total", "counter", "Messages dropped because the spool was full (drop_oldest).",
		     offsetof(struct proto_stats, dropped));
	per_protocol(b, "ucgw_expired_total", "counter", "Messages whose time to live passed.",
		     offsetof(struct proto_stats, expired));
	per_protocol(b, "ucgw_dead_total", "counter", "Messages dead-lettered.", offsetof(struct proto_stats, dead));
	latency(b);
	queues(b);
	workers(b);
	spool(b);
	network(b);
	budget_metrics(b);
}

/* What the dashboard shows as the state of a protocol, in words (the page adds
 * colour and an icon, never colour alone). */
static const char *proto_status(const struct router_proto *rp, const struct proc *p)
{
	if (!p)
		return "stopped";
	switch (p->state) {
	case PROC_FAILED: return "failed";
	case PROC_BACKOFF: return "restarting";
	case PROC_STARTING: return p->restarts ? "restarting" : "starting";
	case PROC_STOPPED: return "stopped";
	case PROC_READY: break;
	}
	if (rp && rp->paused)
		return "paused";
	if (!p->connected)
		return "down";
	if (rp && rp->cooling)
		return "cooling";
	return "up";
}

static const char *worker_status(const struct proc *p)
{
	switch (p->state) {
	case PROC_READY: return "ready";
	case PROC_BACKOFF: return "restarting";
	case PROC_STARTING: return p->restarts ? "restarting" : "starting";
	case PROC_FAILED: return "failed";
	case PROC_STOPPED: return "stopped";
	}
	return "?";
}

static void dash_gateway(struct strbuf *b)
{
	http_sb_printf(b, "\"gateway\":{\"version\":\"%s\",\"device_id\":", UCGW_VERSION);
	http_sb_json_str(b, config_str(sup.cfg, "gateway", "device_id"));
	http_sb_printf(b, ",\"pid\":%d,\"state\":\"%s\",\"uptime_s\":%llu,\"time_ms\":%llu,\"reloads\":%llu,"
		     "\"actions\":%s,\"auth_required\":%s,\"inflight\":%u}",
		  (int)getpid(), sup.stopping ? "stopping" : "running",
		  (unsigned long long)((now_ms() - sup.start_ms) / 1000), (unsigned long long)wall_ms(),
		  (unsigned long long)sup.reloads, config_bool(sup.cfg, "metrics", "dashboard_actions") ? "true" : "false",
		  config_bool(sup.cfg, "security", "require_auth") ? "true" : "false", router_inflight());
}

static void dash_protocols(struct strbuf *b)
{
	http_sb_printf(b, ",\"protocol_stats\":{");
	bool first = true;
	for (int i = 0; i < router_nprotos(); i++) {
		struct router_proto view, *rp = &view;
		router_proto(i, rp);
		if (!rp->enabled)
			continue;
		const struct proto_stats *s = rp->stats;
		uint64_t total = s->success + s->failure, ok10, r10, f10, ok60, r60, f60;
		history_sum(i, 10, &ok10, &r10, &f10);
		history_sum(i, 60, &ok60, &r60, &f60);
		unsigned span = history_len() < 10 ? history_len() : 10;
		http_sb_printf(b, "%s\"%s\":{\"success_rate\":%.4f,\"total_attempts\":%llu,\"average_latency\":%.6f,"
			     "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"success\":%llu,\"failure\":%llu,\"retries\":%llu,"
			     "\"fallback_out\":%llu,\"fallback_in\":%llu,\"bytes\":%llu,\"queued\":%llu,\"inflight\":%llu,"
			     "\"dead\":%llu,\"expired\":%llu,\"dropped\":%llu,\"rate_per_s\":%.2f,\"attempts_60s\":%llu,",
			  first ? "" : ",", rp->name, total ? (double)s->success / (double)total : 0.0,
			  (unsigned long long)(total + s->retries), s->lat.count ? (double)s->lat.sum_us / s->lat.count / 1e6 : 0.0,
			  (double)stats_latency_quantile(&s->lat, 0.5) / 1000, (double)stats_latency_quantile(&s->lat, 0.99) / 1000,
			  (unsigned long long)s->success, (unsigned long long)s->failure, (unsigned long long)s->retries,
			  (unsigned long long)s->fallback_out, (unsigned long long)s->fallback_in, (unsigned long long)s->bytes,
			  (unsigned long long)rp->queued, (unsigned long long)rp->inflight, (unsigned long long)s->dead, (unsigned long long)s->expired,
			  (unsigned long long)s->dropped, span ? (double)ok10 / span : 0.0,
			  (unsigned long long)(ok60 + r60 + f60));
		if (ok60 + r60 + f60)
			http_sb_printf(b, "\"success_rate_60s\":%.4f,", (double)ok60 / (double)(ok60 + r60 + f60));
		else
			http_sb_printf(b, "\"success_rate_60s\":null,");
		http_sb_printf(b, "\"window\":%u,\"window_state\":", rp->window);
		http_sb_json_str(b, rp->window_phase);
		http_sb_printf(b, ",");
		/* a backlog spread: what it took over from other protocols' queues, and they from its own */
		http_sb_printf(b, "\"taken_over\":%llu,\"given\":%llu,", (unsigned long long)s->stolen,
			  (unsigned long long)s->given);
		http_sb_printf(b, "\"status\":\"%s\",\"paused\":%s,\"cooling\":", proto_status(rp, slot_at(i)->proc),
			  rp->paused ? "true" : "false");
		if (rp->cooling)
			http_sb_json_str(b, rp->cooling);
		else
			http_sb_printf(b, "null");
		http_sb_printf(b, "}");
		first = false;
	}
	http_sb_printf(b, "}");
}

static void dash_network(struct strbuf *b)
{
	http_sb_printf(b, ",\"network_quality\":{");
	bool first = true;
	for (struct proc *p = proctab_first(); p; p = p->next, first = false) {
		char server[300] = "";
		probe_target(p->slot->idx, server, sizeof server);
		http_sb_printf(b, "%s\"%s\":{\"quality\":\"%s\",\"rtt_ms\":%.3f,\"loss\":%.3f,\"up\":%s,\"server\":",
			  first ? "" : ",", p->name, monitor_quality_str(monitor_quality(p->slot->idx)),
			  (double)monitor_rtt_us(p->slot->idx) / 1000, monitor_loss(p->slot->idx),
			  p->state == PROC_READY && p->connected ? "true" : "false");
		http_sb_json_str(b, server);
		http_sb_printf(b, ",\"health\":");
		http_sb_json_str(b, p->health);
		http_sb_printf(b, "}");
	}
	http_sb_printf(b, "},\"active_connections\":{");
	first = true;
	for (struct proc *p = proctab_first(); p; p = p->next, first = false)
		http_sb_printf(b, "%s\"%s\":%d", first ? "" : ",", p->name, p->state == PROC_READY && p->connected);
	http_sb_printf(b, "}");
}

static void dash_workers(struct strbuf *b)
{
	http_sb_printf(b, ",\"workers\":[");
	bool first = true;
	for (struct proc *p = proctab_first(); p; p = p->next, first = false) {
		struct router_proto view, *rp = &view;
		router_proto(p->slot->idx, rp);
		http_sb_printf(b, "%s{\"name\":\"%s\",\"state\":\"%s\",\"status\":\"%s\",\"pid\":%d,\"restarts\":%u,"
			     "\"connected\":%s,\"paused\":%s,\"inflight\":%u,\"uptime_s\":%llu,\"last_exit\":",
			  first ? "" : ",", p->name, proc_state_str(p->state), worker_status(p), (int)(p->pid > 0 ? p->pid : 0),
			  p->restarts, p->connected ? "true" : "false", rp && rp->paused ? "true" : "false", p->inflight,
			  (unsigned long long)(p->pid > 0 ? (now_ms() - p->start_ms) / 1000 : 0));
		http_sb_json_str(b, p->last_exit);
		http_sb_printf(b, ",\"health\":");
		http_sb_json_str(b, p->health);
		servers_json(b, p);
		struct crash_summary cs;
		if (crashlog_newest(p->name, &cs)) {
			http_sb_printf(b, ",\"crash\":{\"file\":");
			http_sb_json_str(b, cs.file);
			http_sb_printf(b, ",\"time\":");
			http_sb_json_str(b, cs.time);
			http_sb_printf(b, ",\"summary\":");
			http_sb_json_str(b, cs.summary);
			http_sb_printf(b, "}}");
		} else {
			http_sb_printf(b, ",\"crash\":null}");
		}
	}
	http_sb_printf(b, "]");
}

static void dash_spool(struct strbuf *b)
{
	long long maxm = (long long)config_int(sup.cfg, "spool", "max_messages");
	long long maxb = (long long)config_int(sup.cfg, "spool", "max_bytes");
	struct router_counts rc;
	router_counts(&rc);
	double fm = maxm > 0 ? (double)rc.depth / (double)maxm : 0, fb = maxb > 0 ? (double)rc.bytes / (double)maxb : 0;
	double fill = fm > fb ? fm : fb;
	http_sb_printf(b, ",\"spool\":{\"depth\":%llu,\"bytes\":%llu,\"dead\":%llu,\"waiting\":%llu,\"oldest_age_ms\":%llu,"
		     "\"max_messages\":%lld,\"max_bytes\":%lld,\"full_policy\":\"%s\",\"rejected_full\":%llu,"
		     "\"dropped\":%llu,\"accepted\":%llu,\"fill\":%.4f,\"near_limit\":%s,\"full\":%s}",
		  (unsigned long long)rc.depth, (unsigned long long)rc.bytes, (unsigned long long)rc.dead,
		  (unsigned long long)rc.waiting, (unsigned long long)(rc.oldest_wall_ms ? wall_ms() - rc.oldest_wall_ms : 0),
		  maxm, maxb, config_str(sup.cfg, "spool", "full_policy"), (unsigned long long)rc.rejected_full,
		  (unsigned long long)rc.dropped, (unsigned long long)rc.accepted, fill,
		  fill >= SPOOL_NEAR_LIMIT ? "true" : "false", fill >= 1.0 ? "true" : "false");
}

static void dash_errors(struct strbuf *b)
{
	http_sb_printf(b, ",\"recent_errors\":[");
	const struct recent_error *e;
	for (unsigned i = 0; (e = errors_get(i)); i++) {
		http_sb_printf(b, "%s{\"time\":%llu,\"protocol\":", i ? "," : "", (unsigned long long)e->wall_ms);
		http_sb_json_str(b, e->protocol);
		http_sb_printf(b, ",\"id\":");
		http_sb_json_str(b, e->id);
		http_sb_printf(b, ",\"message\":");
		http_sb_json_str(b, e->reason);
		http_sb_printf(b, "}");
	}
	http_sb_printf(b, "]");
}

/* The newest n samples of the last minutes, one array per series. */
static void dash_history(struct strbuf *b, unsigned n)
{
	unsigned len = history_len();
	if (n > len)
		n = len;
	http_sb_printf(b, ",\"history\":{\"step_s\":1,\"end_s\":%llu,\"len\":%u,\"protocols\":{",
		  (unsigned long long)history_end_s(), n);
	static const char *const series[] = { "ok", "retry", "fail", "p50_ms", "p99_ms" };
	bool first = true;
	for (int i = 0; i < router_nprotos(); i++) {
		struct router_proto rp;
		router_proto(i, &rp);
		if (!rp.enabled)
			continue;
		http_sb_printf(b, "%s\"%s\":{", first ? "" : ",", rp.name);
		for (int k = 0; k < 5; k++) {
			http_sb_printf(b, "%s\"%s\":[", k ? "," : "", series[k]);
			for (unsigned j = len - n; j < len; j++) {
				const struct history_sample *h = history_get(i, j);
				const char *sep = j > len - n ? "," : "";
				switch (k) {
				case 0: http_sb_printf(b, "%s%u", sep, h->ok); break;
				case 1: http_sb_printf(b, "%s%u", sep, h->retry); break;
				case 2: http_sb_printf(b, "%s%u", sep, h->fail); break;
				case 3: http_sb_printf(b, "%s%.3f", sep, h->p50_us / 1000.0); break;
				case 4: http_sb_printf(b, "%s%.3f", sep, h->p99_us / 1000.0); break;
				}
			}
			http_sb_printf(b, "]");
		}
		http_sb_printf(b, "}");
		first = false;
	}
	http_sb_printf(b, "}}");
}

/* The reference design's CommunicationDashboard.get_dashboard_data(), and what
 * the dashboard page shows: history_samples of the per-second history (0: none). */
void metrics_dashboard_json(struct strbuf *b, unsigned history_samples)
{
	http_sb_printf(b, "{");
	dash_gateway(b);
	dash_protocols(b);
	dash_network(b);
	dash_workers(b);
	dash_spool(b);
	budget_dashboard_json(b);
	dash_errors(b);
	dash_history(b, history_samples);
	http_sb_printf(b, "}\n");
}
