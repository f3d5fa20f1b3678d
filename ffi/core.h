// The process's context: the socket, engine and interface tables and the two locks that
// guard their membership. Entries resolve a handle here once, at the FFI edge, and pass
// the socket (and its engine) down; the data path reads no table and takes neither lock.
#ifndef NKB_CORE_H
#define NKB_CORE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "lock_order.h"
#include "sock.h"

#define NKB_PROG_HISTORY 64u  // program ids of filters this process attached, newest last

typedef struct nkb_core {
  pthread_mutex_t setup_lock;  // NKB_RANK_SETUP: engines and filters open and close under it
  pthread_mutex_t table_lock;  // NKB_RANK_TABLE: the tables' membership
  // A socket's memory, allocated the first time its index is used and reused by the
  // index's next socket, never freed: a wait that pins a socket by handle on another
  // thread never touches freed memory, whatever a close does meanwhile.
  nkb_sock_t *socks[NKB_MAX_SOCKS];
  uint32_t gen[NKB_MAX_SOCKS];       // atomic: the live socket's generation, 0 while free
  uint32_t last_gen[NKB_MAX_SOCKS];  // table lock: the generation handed out last
  uint32_t pins[NKB_MAX_SOCKS];      // atomic: waits running on other threads
  nkb_engine_slot_t engines[NKB_MAX_ENGINES];
  nkb_iface_t ifaces[NKB_MAX_ENGINES];
  uint32_t prog_history[NKB_PROG_HISTORY];  // table lock
  uint32_t prog_history_next;               // table lock; total ever recorded
  uint32_t filter_opening;  // atomic: the ifindex whose filter is being opened, or 0
} nkb_core_t;

// The process's one context (entries are plain C functions called by handle).
nkb_core_t *nkb_core(void);

// Handle (generation << 10 | index) to its socket, or null when stale, forged or closing.
nkb_sock_t *nkb_sock_get(int32_t h);
// The same, closing sockets included (shutdown, wake and free look at those).
nkb_sock_t *nkb_sock_get_any(int32_t h);
// The handle of a live socket (table lock held, or the socket's own thread).
int32_t nkb_sock_handle(const nkb_sock_t *s);

// A wait's reference: while pinned the socket is not freed and not detached (both
// answer -EBUSY). Null when the handle is no open socket. Takes no lock.
nkb_sock_t *nkb_sock_pin(int32_t h);
void nkb_sock_unpin(nkb_sock_t *s);
// Whether a wait pins s: a pin that is failing (a stale handle, a closing socket) counts
// for an instant, so the count is looked at until it is 0, a bounded while.
bool nkb_sock_pinned(const nkb_sock_t *s);

// Puts a prepared socket in a free slot (table lock not held: taken here). Returns its
// handle, or -EMFILE when the table is full; *out is the slot's socket, filled from
// *proto (the slot's memory, allocated on its first use: -ENOMEM).
int32_t nkb_sock_insert(const nkb_sock_t *proto, nkb_sock_t **out);
// Takes closing socket s out of the table (table lock held; nkb_sock_pinned was false).
void nkb_sock_remove_locked(nkb_sock_t *s);

#endif
