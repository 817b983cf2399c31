/* Each worker's servers (rest.base_url, mqtt.broker_url as a list): their
 * state as the worker last reported it in a health frame's body, and its
 * rendering in status/workers, /metrics and the dashboard. */
#ifndef UCGW_SUP_SERVERS_H
#define UCGW_SUP_SERVERS_H

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

struct proc;
struct strbuf;

struct server_state {
	char url[256];
	bool tried, up, active;          /* tried: the worker has tried it (else up says nothing) */
	uint64_t rtt_us, delivered, failed, downs;
	char detail[200];
};

/* body: {"servers": [...]} from the worker; ignored (logged) when malformed. */
void servers_update(struct proc *p, const msgpack_object *body);
void servers_forget(struct proc *p);  /* the worker exited: its report is stale */
void servers_pack(msgpack_packer *pk, const struct proc *p);     /* "servers": [...]; p may be NULL */
void servers_metrics(struct strbuf *b);                          /* ucgw_server_* families */
void servers_json(struct strbuf *b, const struct proc *p);       /* ,"servers":[...] */

#endif
