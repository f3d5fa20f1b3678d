// An engine's transmit side: the TX doorbell, completions, the drain at close, and the
// background doorbell (the pusher). In copy mode the kernel sends only inside a doorbell
// (sendto): frames a doorbell could not hand over (the device's queue full or stopped)
// would wait on the TX ring for the application's next send, or be lost at close. The
// pusher thread, started the first time that happens, rings again every
// NKB_PUSH_EVERY_US until the device has taken them, as a NIC empties its TX ring.
// Meanwhile sends put their frames on the ring and leave the ringing to it.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/if_xdp.h>
#include <sys/socket.h>
#include <time.h>

#include "lock_order.h"
#include "xsk.h"

#define NKB_KICK_STALLS 4u  // doorbells in a row that moved nothing: the device stopped
#define NKB_PUSH_EVERY_US 100u
#define NKB_PUSH_STALLS 4u  // doorbells in a row that moved nothing: wait, then ring again

void nkb_pusher_init(nkb_pusher_t *p) {
  assert(p != 0);
  pthread_mutex_init(&p->lock, 0);
  pthread_cond_init(&p->cv, 0);
  p->started = 0;
  p->failed = 0;
  p->behind = 0;
  p->stop = 0;
}

// Waits until frames are behind or the engine closes: false when it closes.
static bool nkb_pusher_wait(nkb_pusher_t *p) {
  assert(p != 0);
  nkb_lock(&p->lock, NKB_RANK_PUSHER);
  while (p->behind == 0 && p->stop == 0) pthread_cond_wait(&p->cv, &p->lock);
  assert(p->behind == 1 || p->stop == 1);
  bool go_on = p->stop == 0;
  nkb_unlock(&p->lock, NKB_RANK_PUSHER);
  return go_on;
}

static void *nkb_pusher_main(void *arg) {
  nkb_engine_t *e = arg;
  assert(e != 0 && e->xsk[0].tx.map != 0);
  // One pass per doorbell, for as long as the engine lives (stop ends it).
  while (nkb_pusher_wait(&e->pusher)) {
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)NKB_PUSH_EVERY_US * 1000L};
    nanosleep(&ts, 0);  // the device needs time to make room
    // Each doorbell rings outside the TX lock (nkb_engine_push_tx): a send on the event
    // loop never waits for the kernel to transmit one. Ringing under it, a 2048-frame
    // backlog after the link came back held a sender 7.7 ms on a 2-core VM (event_loop's
    // link-flap phase): the pusher took the lock back before the waiting sender woke, for
    // doorbell after doorbell of 1.2-2.7 ms each.
    uint32_t stalls = 0;
    for (uint32_t i = 0; i < NKB_KICK_MAX && stalls < NKB_PUSH_STALLS; i++) {
      bool moved = false;
      if (!nkb_engine_push_tx(e, &moved)) break;
      stalls = moved ? 0u : stalls + 1u;
    }
  }
  assert(e->pusher.stop == 1);
  return 0;
}

bool nkb_pusher_rings(const nkb_engine_t *e) {
  assert(e != 0);
  // Frames are behind only in copy mode (zero copy's driver empties the ring by itself).
  assert(e->tx_behind == 0 || e->zero_copy == 0);
  return e->tx_behind != 0 && __atomic_load_n(&e->pusher.started, __ATOMIC_ACQUIRE) != 0;
}

void nkb_pusher_note(nkb_engine_t *e, bool behind) {
  assert(e != 0);
  // Most doorbells leave nothing behind, and left nothing before: no lock then.
  if ((uint32_t)behind == e->tx_behind) return;
  e->tx_behind = behind;
  nkb_pusher_t *p = &e->pusher;
  nkb_lock(&p->lock, NKB_RANK_PUSHER);
  p->behind = behind;
  if (behind && p->started == 0 && p->failed == 0 && p->stop == 0) {
    int rc = pthread_create(&p->thread, 0, nkb_pusher_main, e);
    __atomic_store_n(&p->started, rc == 0 ? 1u : 0u, __ATOMIC_RELEASE);
    p->failed = rc != 0;  // then the next send or the close rings instead
  }
  if (behind) pthread_cond_signal(&p->cv);
  nkb_unlock(&p->lock, NKB_RANK_PUSHER);
  assert(p->started + p->failed <= 1u);
}

void nkb_pusher_stop(nkb_engine_t *e) {
  assert(e != 0);
  nkb_pusher_t *p = &e->pusher;
  nkb_lock(&p->lock, NKB_RANK_PUSHER);
  p->stop = 1;
  bool join = p->started != 0;
  __atomic_store_n(&p->started, 0u, __ATOMIC_RELEASE);  // sends ring for themselves again
  pthread_cond_signal(&p->cv);
  nkb_unlock(&p->lock, NKB_RANK_PUSHER);
  if (join) (void)pthread_join(p->thread, 0);
  assert(p->started == 0 && p->stop == 1);
}

int32_t nkb_engine_kick_tx(nkb_engine_t *e) {
  nkb_xsk_t *x = &e->xsk[0];
  assert(x->tx.map != 0);
  // Copy-mode drivers send only inside this call; zero-copy ones say when they need it.
  if (e->zero_copy && !(__atomic_load_n(x->tx.flags, __ATOMIC_ACQUIRE) & XDP_RING_NEED_WAKEUP)) {
    return 0;
  }
  if (sendto(x->fd, 0, 0, MSG_DONTWAIT, 0, 0) >= 0) return 0;
  int32_t err = errno;
  // Copy mode: EBUSY is the device refusing the one frame it was given (NET_XMIT_DROP: a
  // veth whose peer's queue is full), which the kernel completes as sent and counts nowhere
  // we read. Count it here, never hide it.
  if (err == EBUSY && !e->zero_copy) {
    __atomic_add_fetch(&e->tx_dropped, 1u, __ATOMIC_RELAXED);
    return NKB_TX_REFUSED;
  }
  if (err == EAGAIN || err == EBUSY || err == ENOBUFS || err == EINTR) return 0;
  return -err;
}

static bool nkb_tx_ring_empty(const nkb_engine_t *e) {
  const nkb_ring_t *tx = &e->xsk[0].tx;
  return __atomic_load_n(tx->consumer, __ATOMIC_ACQUIRE) == tx->cached_prod;
}

int32_t nkb_engine_kick_all(nkb_engine_t *e, uint32_t max_rings) {
  nkb_xsk_t *x = &e->xsk[0];
  assert(x->tx.map != 0);
  assert(max_rings >= 1u && max_rings <= NKB_KICK_MAX);
  int32_t rc = 0;
  uint32_t stalls = 0;
  // Zero copy: the driver empties the ring by itself once woken.
  uint32_t rings = e->zero_copy ? 1u : max_rings;
  for (uint32_t i = 0; i < rings && !nkb_tx_ring_empty(e); i++) {
    // One doorbell moves at most the TX budget (256 frames).
    uint32_t before = __atomic_load_n(x->tx.consumer, __ATOMIC_ACQUIRE);
    rc = nkb_engine_kick_tx(e);
    (void)nkb_engine_reap_tx(e);
    // A device that dropped a frame or stopped taking them is full: ringing again at
    // once would only drop more. The pusher rings again shortly.
    if (rc != 0) break;
    stalls = __atomic_load_n(x->tx.consumer, __ATOMIC_ACQUIRE) == before ? stalls + 1u : 0u;
    if (stalls >= NKB_KICK_STALLS) break;
  }
  assert(rc <= NKB_TX_REFUSED);
  // Zero copy: the driver asks for a doorbell (NEED_WAKEUP) only when one is due, and
  // every send looks: frames never wait there for want of one. An error (the link is
  // down) keeps them on the ring until the link is back (nkb_sock_flush).
  nkb_pusher_note(e, rc >= 0 && !e->zero_copy && !nkb_tx_ring_empty(e));
  return rc < 0 ? rc : 0;
}

int32_t nkb_engine_kick_app(nkb_engine_t *e) {
  assert(e != 0 && e->xsk[0].tx.map != 0);
  // In copy mode the kernel transmits inside the doorbell, up to the TX budget (256
  // frames, 1.2-2.7 ms on a 2-core VM): with a backlog behind, the pusher rings for it
  // off the event loop, and it takes this send's frame in its turn (the ring keeps the
  // order). Ringing here too would transmit the backlog on the application's thread, or
  // wait in the kernel for the pusher's doorbell to end.
  if (nkb_pusher_rings(e)) {
    (void)nkb_engine_reap_tx(e);
    return 0;
  }
  return nkb_engine_kick_all(e, NKB_KICK_APP);
}

bool nkb_engine_push_tx(nkb_engine_t *e, bool *moved) {
  nkb_xsk_t *x = &e->xsk[0];
  assert(x->tx.map != 0 && moved != 0);
  assert(!e->zero_copy);
  // Without tx_lock: the doorbell reads and writes nothing of ours but atomics (the TX
  // ring's indices, tx_dropped), and the kernel serializes doorbells on its own socket
  // lock. Sends meanwhile put frames on the ring and leave the ringing to the pusher.
  uint32_t before = __atomic_load_n(x->tx.consumer, __ATOMIC_ACQUIRE);
  int32_t rc = nkb_engine_kick_tx(e);
  *moved = __atomic_load_n(x->tx.consumer, __ATOMIC_ACQUIRE) != before;
  nkb_lock(&e->tx_lock, NKB_RANK_TX);
  (void)nkb_engine_reap_tx(e);
  // An error (the link went down) keeps the frames on the ring until it is back.
  nkb_pusher_note(e, rc >= 0 && !nkb_tx_ring_empty(e));
  bool behind = e->tx_behind != 0;
  nkb_unlock(&e->tx_lock, NKB_RANK_TX);
  assert(rc <= NKB_TX_REFUSED);
  return behind;
}

void nkb_engine_resume_tx(nkb_engine_t *e) {
  assert(e != 0 && e->xsk[0].tx.map != 0);
  if (e->zero_copy) {
    (void)nkb_engine_kick_all(e, 1u);  // the driver empties the ring once woken
    return;
  }
  nkb_pusher_note(e, !nkb_tx_ring_empty(e));
}

uint32_t nkb_engine_drain_tx(nkb_engine_t *e, uint32_t timeout_ms) {
  nkb_xsk_t *x = &e->xsk[0];
  if (x->tx.map == 0) return 0;
  bool empty = false;
  bool refused = false;
  // Ten doorbells a millisecond: the sleeps bound the time, the count bounds the loop. A
  // doorbell that fails (the link is down: ENETDOWN, ENXIO) moves nothing however often
  // it rings, and close() runs on the event loop: the frames left are dropped at once.
  for (uint32_t i = 0; i < timeout_ms * 10u && !empty && !refused; i++) {
    nkb_lock(&e->tx_lock, NKB_RANK_TX);
    refused = nkb_engine_kick_all(e, NKB_KICK_MAX) < 0;
    empty = nkb_tx_ring_empty(e);
    nkb_unlock(&e->tx_lock, NKB_RANK_TX);
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 100000L};
    if (!empty && !refused) nanosleep(&ts, 0);
  }
  nkb_lock(&e->tx_lock, NKB_RANK_TX);
  uint32_t left = x->tx.cached_prod - __atomic_load_n(x->tx.consumer, __ATOMIC_ACQUIRE);
  assert(left <= NKB_TX_FRAMES);
  __atomic_add_fetch(&e->tx_dropped, (uint64_t)left, __ATOMIC_RELAXED);
  nkb_unlock(&e->tx_lock, NKB_RANK_TX);
  return left;
}

uint32_t nkb_engine_reap_tx(nkb_engine_t *e) {
  nkb_xsk_t *x = &e->xsk[0];
  uint32_t idx = 0;
  uint32_t n = nkb_ring_peek(&x->comp, NKB_RING_SIZE, &idx);
  assert(n <= e->tx_outstanding);
  for (uint32_t i = 0; i < n; i++) {
    uint64_t addr = *nkb_ring_addr(&x->comp, idx + i);
    assert(e->tx_free_count < NKB_TX_FRAMES);
    e->tx_free[e->tx_free_count++] = addr - addr % e->frame_size;
  }
  if (n > 0) nkb_ring_release(&x->comp, n);
  e->tx_outstanding -= n;
  assert(e->tx_free_count + e->tx_outstanding == NKB_TX_FRAMES);
  return n;
}


uint64_t nkb_engine_tx_drops(const nkb_engine_t *e) {
  assert(e != 0);
  return __atomic_load_n(&e->tx_dropped, __ATOMIC_RELAXED);
}
