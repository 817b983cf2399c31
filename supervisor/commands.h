#ifndef UCGW_COMMANDS_H
#define UCGW_COMMANDS_H
#include "supervisor/control.h"
struct smsg;
void cmd_send(struct client *c, const struct msg *req);
void cmd_send_file(struct client *c, const struct msg *req);
#endif
