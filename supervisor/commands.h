#ifndef UCGW_COMMANDS_H
#define UCGW_COMMANDS_H
#include "supervisor/control.h"
struct smsg;
struct ctlargs;
/* accept.c: the two commands that take a message, their arguments read. */
void cmd_send(struct client *c, const struct msg *req, const struct ctlargs *a);
void cmd_send_file(struct client *c, const struct msg *req, const struct ctlargs *a);
#endif
