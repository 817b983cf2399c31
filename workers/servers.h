/* A protocol's list of servers (rest.base_url, mqtt.broker_url: one or many)
 * and the policy that picks one: failover (the first that works, back to an
 * earlier one after failback_s) or spread (in turn over those that work).
 * Each server keeps its own health, round trip and counters, which the worker
 * reports to the supervisor in the health frame's body (status, stats,
 * /metrics and the dashboard show them). The protocol file says what "works"
 * means: it calls servers_up/servers_down on its connections' fate and
 * servers_delivered/servers_failed on each job's. */
#ifndef UCGW_SERVERS_H
#define UCGW_SERVERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

#define SERVERS_MAX CFG_SERVERS_MAX

/* Read key (a CFG_SERVERS key), servers_policy and failback_s of the
 * section; 0, or -1 with err. */
int servers_init(const struct cfg_section *cfg, const char *key, char *err, size_t errlen);
size_t servers_count(void);
const char *servers_url(size_t i);
/* The server the next connection or request goes to: failover's current one,
 * or spread's next in turn among those not failed (the one failed longest
 * ago when all have). */
size_t servers_pick(void);
/* After a failure on server i, the next to try for the same message or
 * connection: the next one in the list not known down, or i itself when
 * there is no other. */
size_t servers_next(size_t i);
/* Connection (or request) to server i worked, with a round trip when one was measured. */
void servers_up(size_t i, uint64_t rtt_us);
/* Server i could not be reached or stopped answering: failover moves on to
 * the next, spread leaves it out for failback_s. */
void servers_down(size_t i, const char *why);
void servers_delivered(size_t i, uint64_t rtt_us);
void servers_failed(size_t i);
bool servers_is_up(size_t i);
/* failover: on a later server for failback_s, so it is time to try the first
 * again; servers_failback() makes the first current (the caller moves its
 * connections; a failure there moves on again). */
bool servers_failback_due(void);
void servers_failback(void);
bool servers_failover(void);
/* failover: i is the current server, as a worker that tries the servers in
 * turn by itself found out (sftp's thread, rsync's runs). */
void servers_use(size_t i);
/* One item of an SSH host list (sftp.host, rsync.remote_host): host,
 * host:port or [IPv6]:port, defport when it has none; key names the setting
 * in err. 0, or -1 with err. */
int servers_host_port(const char *s, int defport, const char *key, char *out, size_t outlen, int *outport, char *err,
		      size_t errlen);
/* Send the per-server state to the supervisor (at most once a second unless
 * force, and only when something changed). */
void servers_report(bool force);

#endif
