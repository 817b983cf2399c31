/* The control socket: a unix stream socket speaking proto/ frames. Requests
 * carry the protocol version and a request id (seq); replies are routed back by
 * client id and seq, so a reply that outlives its client is dropped safely. */
#ifndef UCGW_CONTROL_H
#define UCGW_CONTROL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/proto.h"

#define CONTROL_MAX_CLIENTS 256 /* connections at once (docs/operations.md, "Limits") */

struct client {
	uint64_t cid;
	struct channel *ch;
	uid_t uid;
	gid_t gid;
	pid_t pid;
	unsigned version; /* the control protocol version of its latest request (0: none read yet) */
	unsigned waiting; /* requests not answered yet (send --wait, or a command running) */
	uint64_t active_ms;    /* the last request or reply: the idle timeout counts from here */
	uint64_t written_mark; /* channel_bytes_written at progress_ms */
	uint64_t progress_ms;  /* when the client last took some of its replies (or had none waiting) */
	struct local_reply *capture; /* control_local: replies land here, not on a socket */
	struct client *next;
};

/* A reply or event body under construction. */
struct body {
	msgpack_sbuffer sb;
	msgpack_packer pk;
};
void control_body_init(struct body *b);
void control_body_free(struct body *b);

/* Listen on gateway.control_socket; refuses when another instance answers. */
int control_listen(char *err, size_t errlen);
void control_stop_accepting(void);
void control_close_all(void);
/* After a reload: connected clients get the new gateway.max_frame_bytes. */
void control_config_changed(void);
struct client *control_client(uint64_t cid);
/* b may be NULL. A client gone away is not an error. An error reply (ok
 * false) made here has the code CTL_E_INTERNAL: say which with control_fail. */
void control_reply(uint64_t cid, uint64_t seq, bool ok, const char *error, const struct body *b);
void control_event(uint64_t cid, uint64_t seq, const char *name, const struct body *b);
/* Printf-style error reply with its code (proto/ctl.h). */
void control_fail(uint64_t cid, uint64_t seq, enum ctl_code code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* A request from inside the daemon on behalf of someone not on the control
 * socket (the dashboard's buttons): the same checks as a client's request (auth
 * with these credentials, the refusal while stopping), then the same command.
 * The reply is captured; a command that would answer later answers nobody. */
struct local_reply {
	bool answered, ok;
	int code;         /* enum ctl_code: CTL_OK, or why it was refused */
	char error[512];
	char *body;       /* msgpack, malloc'd (free it), NULL when none */
	size_t body_len;
};
void control_local(uid_t uid, gid_t gid, pid_t pid, const struct msg *req, struct local_reply *out);

/* auth.c: may this client run this request? 0, or -1 with a reason for the
 * client (the refusal is also written to the audit log). */
int auth_check(const struct client *c, const struct msg *req, char *err, size_t errlen);

/* commands.c: dispatch one decoded request from a client: its body is read
 * against the command's table (ctlargs.c) before the command runs. */
void commands_dispatch(struct client *c, const struct msg *req);

#endif
