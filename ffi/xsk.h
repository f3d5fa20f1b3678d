// AF_XDP rings and the per-interface engine that owns them.
// Ring access is four tiny functions over cached indices (reserve/submit on the
// producer side, peek/release on the consumer side); everything else is setup.
#ifndef NKB_XSK_H
#define NKB_XSK_H

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "nkb_net.h"

#define NKB_MAX_QUEUES 8u      // receive queues covered per interface
#define NKB_RX_FRAMES 8192u    // frames per queue owned by the fill/RX side (slack for pauses)
#define NKB_TX_FRAMES 2048u    // frames owned by the TX side (queue 0 only)
#define NKB_RING_SIZE 8192u    // entries in the rings the kernel produces: RX, completion
// Rings we produce (fill, TX) have twice as many slots as frames: the kernel publishes a
// new RX (or completion) entry before it publishes the consumer index of the fill (or TX)
// ring that the frame came from, so a frame can come back before its old slot is free.
#define NKB_PROD_RING_SIZE (2u * NKB_RING_SIZE)
#define NKB_XDP_HEADROOM 256u  // the kernel puts RX data this far into a chunk

_Static_assert((NKB_RING_SIZE & (NKB_RING_SIZE - 1u)) == 0, "ring sizes are powers of two");
_Static_assert(NKB_RX_FRAMES <= NKB_RING_SIZE, "the RX ring holds every RX frame");
_Static_assert(NKB_TX_FRAMES <= NKB_RING_SIZE, "the completion ring holds every TX frame");

// One ring as mapped from the kernel: producer and consumer are shared with it.
typedef struct nkb_ring {
  uint32_t cached_prod;
  uint32_t cached_cons;
  uint32_t mask;
  uint32_t size;
  uint32_t *producer;
  uint32_t *consumer;
  uint32_t *flags;
  void *entries;       // u64 addresses (fill, completion) or struct xdp_desc (rx, tx)
  void *map;           // what munmap needs
  uint64_t map_len;
} nkb_ring_t;

typedef struct nkb_xsk {
  int32_t fd;
  uint32_t queue;
  nkb_ring_t fill;
  nkb_ring_t comp;
  nkb_ring_t rx;
  nkb_ring_t tx;       // mapped on queue 0 only
  uint64_t rx_frame_base;   // first UMEM byte of this queue's RX frames
  uint32_t claimed;         // the filter's ring-group record names us for this queue
} nkb_xsk_t;

// The engine's background doorbell (tx.c): started the first time a doorbell left
// frames the device had not taken, it rings again every NKB_PUSH_EVERY_US until they are.
typedef struct nkb_pusher {
  pthread_mutex_t lock;
  pthread_cond_t cv;
  pthread_t thread;
  uint32_t started;  // atomic: the thread runs (joined at close)
  uint32_t failed;   // pthread_create refused: the next send or close rings instead
  uint32_t behind;   // under lock: frames wait on the TX ring
  uint32_t stop;     // under lock: the engine closes
} nkb_pusher_t;

typedef struct nkb_engine {
  uint32_t ifindex;
  // Queues in use: lowered (never raised) when one is given up, under the table lock and
  // rx_lock both; waits read it without a lock (atomic load).
  uint32_t queue_count;
  uint32_t frame_size;      // UMEM chunk size: 2048 or 4096
  uint32_t zero_copy;       // 1 when the driver gave us zero-copy
  uint8_t *umem;
  uint64_t umem_len;
  uint32_t first_queue;     // queues [first_queue, first_queue + queue_count) are ours
  uint32_t requested_first; // what was asked for: a whole-interface engine takes the
  uint32_t requested_queues; // longest run of free queues within it (other processes hold some)
  nkb_filter_t *filter;     // the interface's XDP filter, shared by its engines
  nkb_xsk_t xsk[NKB_MAX_QUEUES];
  // TX frame pool (queue 0): a stack of free chunk addresses.
  uint64_t tx_free[NKB_TX_FRAMES];
  uint32_t tx_free_count;
  uint32_t tx_outstanding;  // frames on the TX or completion ring
  uint16_t ip_id;
  // Frames the device dropped after the doorbell handed them over: in copy mode the
  // kernel says so with EBUSY, one frame each time (a veth whose peer's queue is full).
  uint64_t tx_dropped;
  uint64_t rx_retired;      // under rx_lock: frames of a given-up queue that came back
  uint32_t umem_queues;     // queues the UMEM has RX frames for (the count at open)
  // Per queue index given up: its RX frames users still held at its close (set then), and
  // how many of those came back since (under rx_lock). Equal: every frame of its part of
  // the UMEM is idle, and the queue can be taken back (nkb_engine_reopen_queue).
  uint32_t given_out[NKB_MAX_QUEUES];
  uint32_t given_back[NKB_MAX_QUEUES];
  uint64_t retired_drops;   // atomic: XDP_STATISTICS drops of given-up queues, at their close
  uint32_t tx_behind;       // under tx_lock: the last doorbell left frames on the TX ring
  nkb_pusher_t pusher;
  // rtnetlink link and address notifications: an MTU change, a link going down or an
  // address leaving is seen within a millisecond of sending, not at the next watch.
  int32_t nl_fd;
  uint32_t link_gen;        // bumped on every notification about our interface
  uint64_t nl_next_ns;      // when the send path looks at nl_fd next
  pthread_mutex_t rx_lock;
  pthread_mutex_t tx_lock;
} nkb_engine_t;

// Consumer side: how many entries are ready (at most want), refreshing the cache
// from the kernel's producer index only when the cache is exhausted.
static inline uint32_t nkb_ring_peek(nkb_ring_t *r, uint32_t want, uint32_t *idx) {
  uint32_t ready = r->cached_prod - r->cached_cons;
  if (ready == 0) {
    r->cached_prod = __atomic_load_n(r->producer, __ATOMIC_ACQUIRE);
    ready = r->cached_prod - r->cached_cons;
  }
  assert(ready <= r->size);
  if (ready > want) ready = want;
  *idx = r->cached_cons;
  return ready;
}

static inline void nkb_ring_release(nkb_ring_t *r, uint32_t n) {
  assert(n <= r->cached_prod - r->cached_cons);
  r->cached_cons += n;
  __atomic_store_n(r->consumer, r->cached_cons, __ATOMIC_RELEASE);
}

// Producer side: free slots (at most want). cached_cons is kept as consumer + size
// so that free = cached_cons - cached_prod, as in the kernel's own idiom.
static inline uint32_t nkb_ring_reserve(nkb_ring_t *r, uint32_t want, uint32_t *idx) {
  uint32_t free_slots = r->cached_cons - r->cached_prod;
  if (free_slots < want) {
    r->cached_cons = __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE) + r->size;
    free_slots = r->cached_cons - r->cached_prod;
  }
  assert(free_slots <= r->size);
  if (free_slots > want) free_slots = want;
  *idx = r->cached_prod;
  return free_slots;
}

static inline void nkb_ring_submit(nkb_ring_t *r, uint32_t n) {
  assert(n <= r->size);
  r->cached_prod += n;
  __atomic_store_n(r->producer, r->cached_prod, __ATOMIC_RELEASE);
}

// Entries without a cached index refresh: what the kernel has published right now.
static inline uint32_t nkb_ring_pending(const nkb_ring_t *r) {
  if (r->map == 0) return 0;
  uint32_t prod = __atomic_load_n(r->producer, __ATOMIC_ACQUIRE);
  return prod - r->cached_cons;
}

static inline uint64_t *nkb_ring_addr(nkb_ring_t *r, uint32_t idx) {
  return &((uint64_t *)r->entries)[idx & r->mask];
}

// Open an engine on ifindex covering queue_count queues (1..NKB_MAX_QUEUES) from
// first_queue, with chunks of frame_size bytes, registering its sockets in the
// interface's filter. 0 or -errno (-EBUSY: another engine or process has a queue). A
// queue the kernel still holds (its last socket closed moments ago) is bound again for up
// to 400 ms; with nowait, bound once, after waiting up to release_wait_ms for the kernel
// to say the queues are free (nkb_queues_xsk_bound, asked every ms before any setup):
// -EINPROGRESS when it still says bound, or the bind still found one held (the caller
// tries again later).
#define NKB_RELEASE_WAIT_MAX_MS 50u
int32_t nkb_engine_open(nkb_engine_t *e, nkb_filter_t *filter, uint32_t ifindex,
                        uint32_t first_queue, uint32_t queue_count, uint32_t frame_size,
                        bool nowait, uint32_t release_wait_ms);
void nkb_engine_close(nkb_engine_t *e);
// What nkb_engine_open answers when every queue it could take is held by live processes.
#define NKB_ENOQUEUE (-EXFULL)
// Queues in use, read without the locks (a wait's poll set, its look at the rings).
static inline uint32_t nkb_engine_queues(const nkb_engine_t *e) {
  return __atomic_load_n(&e->queue_count, __ATOMIC_ACQUIRE);
}
// Closes the XSK of queue index q, which was given up (queue_count already at or below q,
// its RX ring drained): the device queue and its ring-group record go free. The rings'
// addresses stay readable until nkb_engine_close (a wait that read the old count may still
// look at them) but hold zeros. 0, or -errno when that could not be done (the queue then
// stays bound, unused, until the engine closes).
int32_t nkb_engine_retire_queue(nkb_engine_t *e, uint32_t q);
// Whether queue index q, given up, can be taken back: its XSK closed and every RX frame of
// its part of the UMEM back (given_out, given_back). Under rx_lock.
bool nkb_engine_queue_idle(const nkb_engine_t *e, uint32_t q);
// Takes queue index q (= queue_count, given up earlier) back: a new XSK bound to device
// queue first_queue + q on the shared UMEM (one bind, no retries), its rings mapped where
// the old ones were, its fill ring full, its flow keys swept and its record claimed. The
// caller then raises queue_count. 0 or -errno (nothing of it left then).
int32_t nkb_engine_reopen_queue(nkb_engine_t *e, uint32_t q);
// Ring the TX doorbell (under tx_lock). 0, NKB_TX_REFUSED when the device dropped a
// frame (counted in tx_dropped), or -errno for errors that are not "try again".
#define NKB_TX_REFUSED 1
int32_t nkb_engine_kick_tx(nkb_engine_t *e);
// Rings the doorbell until the device has taken the TX ring's frames (under tx_lock), at
// most max_rings times (1..NKB_KICK_MAX), and it stops early when the device stops taking
// them or drops one; the pusher rings for what is left. 0 or the doorbell's -errno.
#define NKB_TX_SKB_BUDGET 256u  // frames one doorbell may move (XDP_MAX_TX_SKB_BUDGET)
// Doorbells per kick_all at most: enough to move every TX frame at the budget, twice over.
#define NKB_KICK_MAX (2u * NKB_TX_FRAMES / NKB_TX_SKB_BUDGET + 4u)
#define NKB_KICK_APP 1u  // rings of a send, on the application's thread
int32_t nkb_engine_kick_all(nkb_engine_t *e, uint32_t max_rings);
// A send's doorbell (under tx_lock, on the application's thread): rings NKB_KICK_APP
// times, or only reaps while the pusher rings for a backlog. 0 or the doorbell's -errno.
int32_t nkb_engine_kick_app(nkb_engine_t *e);
// The pusher's doorbell (copy mode, NOT under tx_lock: it takes the lock only to reap
// and note). Sets moved when the device took frames; returns whether frames are behind.
bool nkb_engine_push_tx(nkb_engine_t *e, bool *moved);
// The link is back (under tx_lock): what waited on the TX ring leaves. Zero copy: one
// doorbell; copy mode: the pusher thread rings (the kernel transmits inside the doorbell,
// a whole ring's worth: not on the application's thread).
void nkb_engine_resume_tx(nkb_engine_t *e);
// Closing: rings until the TX ring is empty, for at most timeout_ms; frames the device
// still has not taken then are counted as dropped. Returns how many those were.
uint32_t nkb_engine_drain_tx(nkb_engine_t *e, uint32_t timeout_ms);

// tx.c: the background doorbell.
void nkb_pusher_init(nkb_pusher_t *p);
// Under tx_lock, after each doorbell: whether frames are left (starts the thread once).
void nkb_pusher_note(nkb_engine_t *e, bool behind);
// Under tx_lock: frames are behind and the pusher thread rings for them, so a send on
// the application's thread leaves the doorbell to it.
bool nkb_pusher_rings(const nkb_engine_t *e);
// Stops and joins the thread (not under tx_lock); idempotent.
void nkb_pusher_stop(nkb_engine_t *e);
// Return completed TX frames to the pool. Returns how many were reaped.
uint32_t nkb_engine_reap_tx(nkb_engine_t *e);
// Give RX frame addr (any address inside its chunk) back to queue q's fill ring; a frame of
// a queue given up since it was read is retired (counted in rx_retired). Under rx_lock.
void nkb_engine_refill(nkb_engine_t *e, uint32_t q, uint64_t addr);
// Fill-ring need_wakeup (zero-copy drivers): poke the kernel.
void nkb_engine_wake_rx(nkb_engine_t *e, uint32_t q);
// Reads pending link/address notifications (at most every millisecond) and returns
// the generation of interface events; a socket that saw an older one re-checks.
uint32_t nkb_engine_link_gen(nkb_engine_t *e, uint64_t now_ns);
// XDP_STATISTICS summed over queues: rx_dropped + rx_invalid + rx_ring_full + fill empty.
uint64_t nkb_engine_kernel_drops(nkb_engine_t *e);
// Frames the device dropped on send since the engine opened (any thread may read).
uint64_t nkb_engine_tx_drops(const nkb_engine_t *e);

#endif
