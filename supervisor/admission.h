/* The admission of a checked `send` or `send-file`, and every reply to it.
 *
 * A message is routed only once its record is durable (spool.fsync): a
 * message delivered before its sync failed was answered "not accepted", and
 * its client sent it again. All replies to a send go out from here: the
 * refusal when it cannot be kept, "accepted" once durable, and with wait the
 * outcome (the router hands it over, admission_outcome).
 *
 * A client may give the message its id (a ULID, as ucgwd makes them). A second
 * send of an id ucgwd knows (being accepted, in the spool, or among the last
 * OUTCOMES_KEPT finished, which after a restart are those whose records the
 * spool still holds) makes no second message: it is answered with the first
 * one's state or outcome. A client that lost its connection before the reply
 * sends again with the same id, and the server gets the message once. */
#ifndef UCGW_ADMISSION_H
#define UCGW_ADMISSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "proto/proto.h"

#define OUTCOMES_KEPT 32768

struct smsg;

/* Is a message with this id known? Then this send is answered with its state
 * (or, with wait, its outcome, now or when it comes) and true returned. */
bool admission_known(uint64_t cid, uint64_t seq, const char *id, bool wait);
/* Spool m; answer "accepted" once durable and route it then (with wait, the
 * router answers the outcome). m belongs to the admission from now on. */
void admission_start(uint64_t cid, uint64_t seq, struct smsg *m, bool wait, const void *payload, size_t len,
		     int fd);
/* The router: m was delivered (status "ok") or given up ("failed"); answer
 * whoever waits for it. */
void admission_outcome(struct smsg *m, const char *status);
/* The router forgets m (state: "delivered", "expired", "dropped", "purged",
 * "not durable"): keep its outcome for a later send of its id. */
void admission_finished(const struct smsg *m, const char *status, const char *state);
/* The spool's replay read the DONE record of id (state as written, NULL in
 * records older than this). */
void admission_replayed_done(const char *id, const char *state);

#endif
