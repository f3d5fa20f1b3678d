// Giving up a queue for a newcomer that asked for one (give.c), run by the refresher.
#ifndef NKB_GIVE_H
#define NKB_GIVE_H

#include <stdbool.h>

// One round: when a pending ask is on an interface where this process has a whole-interface
// engine of more than one queue, takes the ask and gives up that engine's highest queue.
// Else takes back a queue given up earlier that has been free a while, nobody asking.
// Never waits for the setup lock (a busy one skips the round). True when a queue went.
bool nkb_give_round(void);

#endif
