// The shim's locks and the one order in which a thread may take them. A thread holding a
// lock takes only locks of a higher rank; every take asserts it (a thread-local mask of
// the ranks it holds), so an inversion fails the first time it runs, in any test, instead
// of deadlocking one day under load.
//
//   1 setup    (core.c)     engine and filter open/close, attach, detach, socket free:
//                           the slow work (bind retries, a 100 ms drain, thread joins).
//                           No receive, send or wait ever takes it.
//   2 table    (core.c)     membership of the socket, engine and interface tables; held
//                           for table updates and short reads, never across slow work.
//                           No receive, send or wait ever takes it either.
//   3 engine rx (xsk.h)     an engine's RX rings, fill rings and flow table.
//   4 engine tx (xsk.h)     an engine's TX ring, frame pool and link notifications.
//   5 pusher   (tx.c)       the background doorbell's hand-off (taken under tx).
//
// The data path takes one engine lock at a time (rank 3 or 4) and nothing else.
#ifndef NKB_LOCK_ORDER_H
#define NKB_LOCK_ORDER_H

#include <assert.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

enum {
  NKB_RANK_SETUP = 1,
  NKB_RANK_TABLE = 2,
  NKB_RANK_RX = 3,
  NKB_RANK_TX = 4,
  NKB_RANK_PUSHER = 5,
};

// Ranks the calling thread holds, one bit each (lock_order.c).
extern __thread uint32_t nkb_ranks_held __attribute__((tls_model("initial-exec")));

static inline void nkb_lock(pthread_mutex_t *m, uint32_t rank) {
  assert(rank >= NKB_RANK_SETUP && rank <= NKB_RANK_PUSHER);
  assert((nkb_ranks_held >> rank) == 0);  // nothing of this rank or above is held
  pthread_mutex_lock(m);
  nkb_ranks_held |= 1u << rank;
}

static inline bool nkb_trylock(pthread_mutex_t *m, uint32_t rank) {
  assert(rank >= NKB_RANK_SETUP && rank <= NKB_RANK_PUSHER);
  assert((nkb_ranks_held >> rank) == 0);
  if (pthread_mutex_trylock(m) != 0) return false;
  nkb_ranks_held |= 1u << rank;
  return true;
}

static inline void nkb_unlock(pthread_mutex_t *m, uint32_t rank) {
  assert((nkb_ranks_held & (1u << rank)) != 0);  // held by this thread
  nkb_ranks_held &= ~(1u << rank);
  pthread_mutex_unlock(m);
}

// Whether the calling thread holds a lock of this rank (for assertions).
static inline bool nkb_holds(uint32_t rank) { return (nkb_ranks_held & (1u << rank)) != 0; }

#endif
