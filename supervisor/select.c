/* Which protocol carries a message: the reference design's ProtocolSelector
 * rules (or its LoadBalancer's round robin), then the fallback chain, walked to
 * its end. A protocol that is not up is passed over when another is. */
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "supervisor/monitor.h"
#include "supervisor/proctab.h"
#include "supervisor/router_int.h"
#include "supervisor/sup.h"

static bool can_carry(const struct rproto *rp, const struct smsg *m)
{
	return m->kind == JOB_FILE ? rp->files : rp->meta;
}

/* Enabled and not given up on (a failed or stopped worker cannot take jobs). */
static bool usable(const struct rproto *rp)
{
	struct proc *p = rp->slot->proc;
	return p && p->state != PROC_FAILED && p->state != PROC_STOPPED;
}

static int64_t sel_int(const char *key) { return config_int(sup.cfg, "protocol_selection", key); }

static const char *sel_str(const char *key) { return config_str(sup.cfg, "protocol_selection", key); }

/* Is the network good for this kind of message? The rules judge it by the
 * server of the protocol whose descriptor says so (its `network`). */
static bool network_good(unsigned kind)
{
	if (!config_bool(sup.cfg, "protocol_selection", "network_aware"))
		return true;
	const struct slot *judge = slot_network_judge(kind);
	return !judge || monitor_quality_at_least_good(monitor_quality(judge->idx));
}

/* The seed's rules, with its flaw fixed: "excellent" counts as at least "good".
 * What each rule picks is configurable; the defaults are the seed's choices,
 * which the descriptors give (`picks`). */
static const char *rules_choice(const struct smsg *m)
{
	bool prio = config_bool(sup.cfg, "protocol_selection", "priority_based");
	if (m->kind == JOB_FILE) {
		bool good = network_good(PROTO_FILES);
		if (prio && m->priority == PRIO_HIGH)
			return sel_str("file_high_priority");
		if ((int64_t)m->size < sel_int("file_small_bytes"))
			return sel_str(good ? "file_small" : "file_small_poor");
		return sel_str("file_large");
	}
	bool good = network_good(PROTO_META);
	if (prio && m->priority == PRIO_HIGH)
		return sel_str(good ? "high_priority" : "high_priority_poor");
	if ((int64_t)m->size < sel_int("small_bytes"))
		return sel_str(good ? "small" : "small_poor");
	if ((int64_t)m->size < sel_int("medium_bytes"))
		return sel_str("medium");
	return sel_str("large");
}

static struct rproto *round_robin(const struct smsg *m)
{
	for (int k = 0; k < router_state.nprotos; k++) {
		struct rproto *rp = &router_state.protos[(router_state.rr_next + (unsigned)k) % (unsigned)router_state.nprotos];
		if (can_carry(rp, m) && rproto_up(rp) && !rp->slot->proto->test_only) {
			router_state.rr_next = (unsigned)rp->idx + 1;
			return rp;
		}
	}
	return NULL;
}

/* The chain that starts at protocol `first`: itself, then its fallbacks. */
static int chain_of(const struct rproto *first, struct rproto **out, int max)
{
	int n = 0;
	out[n++] = (struct rproto *)first;
	if (!config_bool(sup.cfg, "fallback", "enabled"))
		return n;
	const struct cfg_value *chains = cfg_get(config_section(sup.cfg, "fallback"), "chains");
	for (size_t i = 0; chains && i < chains->nitems; i++) {
		if (strcmp(chains->items[i], first->name) != 0)
			continue;
		const struct cfg_value *l = &chains->sub[i];
		for (size_t j = 0; j < l->nitems && n < max; j++) {
			struct rproto *rp = rproto_by_name(l->items[j]);
			if (rp && rp != first)
				out[n++] = rp;
		}
	}
	return n;
}

/* Among the chain from `first`, the first candidate up, else the first usable. */
static struct rproto *best_in_chain(const struct smsg *m, struct rproto *first, uint32_t skip)
{
	struct rproto *chain[MAX_PROTOS + 1], *fallback = NULL;
	int n = chain_of(first, chain, MAX_PROTOS + 1);
	for (int i = 0; i < n; i++) {
		struct rproto *rp = chain[i];
		if ((skip >> rp->idx) & 1u || !can_carry(rp, m) || !usable(rp))
			continue;
		if (rproto_up(rp))
			return rp;
		if (!fallback)
			fallback = rp;
	}
	return fallback;
}

struct rproto *select_protocol(struct smsg *m)
{
	if (strcmp(m->protocol, "auto") != 0) {
		struct rproto *asked = rproto_by_name(m->protocol);
		if (!asked || !can_carry(asked, m) || !rproto_enabled(asked))
			return NULL;
		return asked; /* the chain takes over if it cannot deliver */
	}
	struct rproto *pick = NULL;
	bool rr = strcmp(config_str(sup.cfg, "protocol_selection", "policy"), "round_robin") == 0;
	if (rr && m->priority != PRIO_HIGH)
		pick = round_robin(m);
	if (!pick && config_bool(sup.cfg, "protocol_selection", "auto_select")) {
		struct rproto *first = rproto_by_name(rules_choice(m));
		if (first && usable(first))
			pick = best_in_chain(m, first, 0);
		else if (first)
			pick = best_in_chain(m, first, 1u << first->idx);
	}
	for (int i = 0; !pick && i < router_state.nprotos; i++) /* anything enabled that can carry it */
		if (can_carry(&router_state.protos[i], m) && usable(&router_state.protos[i]) && rproto_up(&router_state.protos[i]))
			pick = &router_state.protos[i];
	for (int i = 0; !pick && i < router_state.nprotos; i++)
		if (can_carry(&router_state.protos[i], m) && usable(&router_state.protos[i]))
			pick = &router_state.protos[i];
	return pick;
}

struct rproto *select_next_in_chain(struct smsg *m, struct rproto *failed)
{
	if (!config_bool(sup.cfg, "fallback", "enabled"))
		return NULL;
	if (m->attempts >= (unsigned)config_int(sup.cfg, "fallback", "max_attempts"))
		return NULL;
	return best_in_chain(m, &router_state.protos[m->round_primary], m->tried);
}

bool select_chain_all_permfail(const struct smsg *m) { return !m->round_retry; }

bool select_chain_has(const struct smsg *m, const char *name)
{
	struct rproto *chain[MAX_PROTOS + 1];
	int n = chain_of(&router_state.protos[m->round_primary], chain, MAX_PROTOS + 1);
	for (int i = 0; i < n; i++)
		if (strcmp(chain[i]->name, name) == 0)
			return true;
	return false;
}

/* A delivery: the protocol works. After a cool-down (this was the probe) the
 * messages that wait for it go out now, not when their backoff ends. */
void rproto_success(struct rproto *rp)
{
	bool was_down = rp->probing || rp->cool_until;
	rp->consecutive_failures = 0;
	rp->cool_until = 0;
	rp->probing = false;
	if (was_down) {
		log_info("protocol %s delivers again; waiting messages go out now", rp->name);
		router_wake(rp->name);
	}
}

/* K failures in a row: cool the protocol down (not chosen) for a while. When
 * that ends, one message probes it (router.c, end_cooling); a success puts it
 * back, a failure cools it down again at once. */
void rproto_failure(struct rproto *rp, enum job_status st, const char *err)
{
	if (st != JOB_RETRY)
		return;
	unsigned k = (unsigned)config_int(sup.cfg, "fallback", "cool_after_failures");
	uint64_t ms = (uint64_t)config_int(sup.cfg, "fallback", "cool_down_ms");
	if (++rp->consecutive_failures < k || now_ms() < rp->cool_until)
		return;
	rp->cool_until = now_ms() + ms;
	rp->probing = false;
	snprintf(rp->cool_reason, sizeof rp->cool_reason, "%s", err ? err : "failures");
	log_warnx("protocol %s cooling down for %.1f s after %u failures in a row: %s", rp->name, (double)ms / 1000,
		  rp->consecutive_failures, rp->cool_reason);
}

bool select_chain_may_take(const struct smsg *m, const struct rproto *rp)
{
	return can_carry(rp, m) && !m->permfail[rp->idx] && select_chain_has(m, rp->name);
}

/* A protocol of m's chain (before rp only, if ahead_only), not rp, that may
 * carry it, is up and was not tried this round while up: untried, or tried
 * while it was down and back since. */
bool select_chain_back(const struct smsg *m, const struct rproto *rp, bool ahead_only)
{
	struct rproto *chain[MAX_PROTOS + 1];
	int n = chain_of(&router_state.protos[m->round_primary], chain, MAX_PROTOS + 1);
	for (int i = 0; i < n && !(ahead_only && chain[i] == rp); i++) {
		const struct rproto *q = chain[i];
		uint32_t bit = 1u << q->idx;
		bool fresh = !(m->tried & bit) || (m->tried_down & bit);
		if (q != rp && fresh && can_carry(q, m) && !m->permfail[q->idx] && rproto_up(q))
			return true;
	}
	return false;
}

/* The protocols enabled in the configuration that could carry m (the one it
 * asks for, or any for auto), each with why it cannot take it now. */
bool select_carriers_configured(const struct smsg *m, char *why, size_t whylen)
{
	bool any = false;
	size_t used = 0;
	why[0] = '\0';
	for (int i = 0; i < router_state.nprotos; i++) {
		struct rproto *rp = &router_state.protos[i];
		if (!can_carry(rp, m) || !rproto_enabled(rp) ||
		    (strcmp(m->protocol, "auto") != 0 && strcmp(m->protocol, rp->name) != 0))
			continue;
		struct proc *p = rp->slot->proc;
		int k = snprintf(why + used, whylen - used, "%s%s %s", any ? ", " : "", rp->name,
				 p ? proc_state_str(p->state) : "not started");
		if (k > 0 && (size_t)k < whylen - used)
			used += (size_t)k;
		any = true;
	}
	return any;
}

/* What select_protocol would pick now for a message of this kind, size and
 * priority, and the chain that follows it (the `select` control command; the
 * Python client's protocol_selector and fallback_manager). `asked` names a
 * protocol instead of "auto" for its chain alone. Nothing is routed or
 * counted; only the round robin's next pick is left as a real choice leaves it. */
static void select_pack_dry_run(msgpack_packer *pk, enum job_kind kind, enum priority prio, uint64_t size,
				const char *asked)
{
	struct smsg m = { .kind = kind, .priority = prio, .size = size };
	snprintf(m.protocol, sizeof m.protocol, "%s", asked);
	unsigned rr = router_state.rr_next;
	struct rproto *pick = strcmp(asked, "auto") == 0 ? select_protocol(&m) : rproto_by_name(asked);
	router_state.rr_next = rr;
	struct rproto *chain[MAX_PROTOS + 1];
	int n = pick ? chain_of(pick, chain, MAX_PROTOS + 1) : 0, carry = 0;
	for (int i = 0; i < n; i++)
		carry += can_carry(chain[i], &m) && rproto_enabled(chain[i]);
	msgpack_pack_map(pk, 2);
	pk_kv_str(pk, "protocol", pick ? pick->name : NULL);
	pk_key(pk, "chain");
	msgpack_pack_array(pk, (size_t)carry);
	for (int i = 0; i < n; i++)
		if (can_carry(chain[i], &m) && rproto_enabled(chain[i]))
			pk_str(pk, chain[i]->name);
}

int router_select_dry_run(msgpack_packer *pk, bool file, int priority, uint64_t size, const char *asked, char *err,
			  size_t errlen)
{
	if (strcmp(asked, "auto") != 0 && !rproto_by_name(asked)) {
		snprintf(err, errlen, "unknown protocol '%s'", asked);
		return -1;
	}
	select_pack_dry_run(pk, file ? JOB_FILE : JOB_META, (enum priority)priority, size, asked);
	return 0;
}

void router_protocol_names(char *out, size_t len)
{
	out[0] = '\0';
	for (int i = 0; i < router_state.nprotos; i++) /* a test build's protocol only where it runs */
		if (rproto_enabled(&router_state.protos[i]) || !router_state.protos[i].slot->proto->test_only)
			snprintf(out + strlen(out), len - strlen(out), "%s%s", out[0] ? ", " : "", router_state.protos[i].name);
}
