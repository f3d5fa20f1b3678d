// The engine's background doorbell. In copy mode the kernel sends only inside a
// doorbell (sendto): frames a doorbell could not hand over (the device's queue full
// or stopped) would wait on the TX ring for the application's next send, or be lost
// at close. This thread, started the first time that happens, rings again every
// NKB_PUSH_EVERY_US until the device has taken them, as a NIC empties its TX ring.
// Meanwhile sends put their frames on the ring and leave the ringing to it.
#define _GNU_SOURCE
#include <errno.h>
#include <time.h>

#include "lock_order.h"
#include "xsk.h"

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
