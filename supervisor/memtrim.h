#ifndef UCGW_MEMTRIM_H
#define UCGW_MEMTRIM_H
/* Every second: once a backlog of many messages has drained to a quarter
 * of its peak, the heap's free pages go back to the system (memtrim.c). */
void memtrim_start(void);
#endif
