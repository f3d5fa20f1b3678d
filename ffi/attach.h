// attach.c: sockets onto engines (one per interface and set of queues, shared by the
// sockets on it), engines onto their interface's XDP filter, and the filter's flows.
#ifndef NKB_ATTACH_H
#define NKB_ATTACH_H

#include "core.h"

// Takes socket s off its engine (setup lock held; takes the table lock). The engine
// closes with its last socket, after the table lock is let go. -ENOTCONN when not
// attached, -EBUSY while a wait pins it.
int32_t nkb_detach(nkb_sock_t *s);

#endif
