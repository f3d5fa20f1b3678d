// attach.c: sockets onto engines (one per interface and set of queues, shared by the
// sockets on it), engines onto their interface's XDP filter, and the filter's flows.
#ifndef NKB_ATTACH_H
#define NKB_ATTACH_H

#include "core.h"

// Takes socket s off its engine (setup lock held; takes the table lock). The engine
// closes with its last socket, after the table lock is let go. -ENOTCONN when not
// attached, -EBUSY while a wait pins it.
int32_t nkb_detach(nkb_sock_t *s);
// Socket s closes while it asks for a queue (nkb_sock_attach's NKB_ATTACH_ASK): its ask goes
// (setup lock held), so that no holder gives up a queue for it.
void nkb_ask_drop(nkb_sock_t *s);

#endif
