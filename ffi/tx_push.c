// The engine's background doorbell. In copy mode the kernel sends only inside a
// doorbell (sendto): frames a doorbell could not hand over (the device's queue full
// or stopped) would wait on the TX ring for the application's next send, or be lost
// at close. This thread, started the first time that happens, rings again every
// NKB_PUSH_EVERY_US until the device has taken them, as a NIC empties its TX ring.
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
    // One doorbell per hold of the TX lock: a send on the event loop waits for one (at
    // most the TX budget, 256 frames) and not for a whole backlog. Holding it for
    // NKB_KICK_MAX doorbells at once, a 2048-frame backlog after the link came back held
    // senders 7.7-8.2 ms on a slow VM (the event_loop test's link-flap phase).
    uint32_t stalls = 0;
    for (uint32_t i = 0; i < NKB_KICK_MAX && stalls < NKB_PUSH_STALLS; i++) {
      nkb_lock(&e->tx_lock, NKB_RANK_TX);
      uint32_t before = __atomic_load_n(e->xsk[0].tx.consumer, __ATOMIC_ACQUIRE);
      (void)nkb_engine_kick_all(e, 1u);  // notes whether frames are still behind
      bool moved = __atomic_load_n(e->xsk[0].tx.consumer, __ATOMIC_ACQUIRE) != before;
      bool behind = e->tx_behind != 0;
      nkb_unlock(&e->tx_lock, NKB_RANK_TX);
      if (!behind) break;
      stalls = moved ? 0u : stalls + 1u;
    }
  }
  assert(e->pusher.stop == 1);
  return 0;
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
    p->started = rc == 0;
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
  p->started = 0;
  pthread_cond_signal(&p->cv);
  nkb_unlock(&p->lock, NKB_RANK_PUSHER);
  if (join) (void)pthread_join(p->thread, 0);
  assert(p->started == 0 && p->stop == 1);
}
