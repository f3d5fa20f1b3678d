// The process's refresher thread: every NKB_REFRESH_MS it copies what only the kernel and
// the rings know into each socket's counters and registry slot: the interface's drop
// counters (XDP_STATISTICS), the device's send drops, and the datagrams waiting (recv_q).
// The receive path cannot be the one to do it: an application that does not call
// receive, or is busy in JavaScript (no timer runs then), would show stale counters to
// `nkb stat` and to its own `stats()`. It runs while the process has an engine: the
// first attach starts it, the close of the last engine stops and joins it.
//
// Each period it also gives up a queue when a newcomer asked for one (give.c).
//
// It never waits for the table lock (a give round does, briefly: it holds the setup lock
// then, so no stop, whose callers hold that lock, is waiting for this thread): it tries, and a stop request ends the tries. It is
// the only writer of recv_q;
// the drop counters only ever rise (nkb_stat_raise), whoever copies them.
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "core.h"
#include "give.h"
#include "refresh.h"
#include "registry.h"

#define NKB_REFRESH_LOCK_TRIES 50u  // 1 ms apart: a pass is skipped after 50 ms of contention

typedef struct nkb_refresher {
  pthread_mutex_t lock;
  pthread_cond_t cv;
  pthread_t thread;
  uint32_t running;  // under lock: the thread exists (joined by nkb_refresh_stop)
  uint32_t stop;     // under lock, read atomically by the thread's lock tries
} nkb_refresher_t;

static nkb_refresher_t g_refresh = {
    .lock = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .running = 0, .stop = 0};

static bool nkb_refresh_stopping(void) {
  return __atomic_load_n(&g_refresh.stop, __ATOMIC_ACQUIRE) != 0;
}

// Takes the table lock by trying: a stop request ends the tries.
static bool nkb_refresh_lock(nkb_core_t *c) {
  for (uint32_t i = 0; i < NKB_REFRESH_LOCK_TRIES; i++) {
    if (nkb_refresh_stopping()) return false;
    if (nkb_trylock(&c->table_lock, NKB_RANK_TABLE)) return true;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 1000000L};
    nanosleep(&ts, 0);
  }
  return false;
}

// Entries the kernel put on engine e's RX rings that no receive has read yet.
static uint32_t nkb_rx_waiting(const nkb_engine_t *e) {
  uint32_t total = 0;
  for (uint32_t q = 0; q < e->queue_count && q < NKB_MAX_QUEUES; q++) {
    const nkb_ring_t *r = &e->xsk[q].rx;
    if (r->map == 0) continue;
    uint32_t n = __atomic_load_n(r->producer, __ATOMIC_ACQUIRE) -
                 __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);
    total += n <= r->size ? n : r->size;  // a torn pair of loads: never more than the ring
  }
  assert(total <= NKB_MAX_QUEUES * NKB_RING_SIZE);
  return total;
}

// One pass over the tables (table lock held): each engine's kernel counters read once.
static void nkb_refresh_pass(nkb_core_t *c) {
  assert(nkb_holds(NKB_RANK_TABLE));
  uint64_t drops[NKB_MAX_ENGINES];
  uint32_t waiting[NKB_MAX_ENGINES];
  for (uint32_t i = 0; i < NKB_MAX_ENGINES; i++) {
    nkb_engine_t *e = c->engines[i].engine;
    drops[i] = e != 0 ? nkb_engine_kernel_drops(e) : 0;
    waiting[i] = e != 0 ? nkb_rx_waiting(e) : 0;
  }
  for (uint32_t idx = 0; idx < NKB_MAX_SOCKS; idx++) {
    nkb_sock_t *s = c->socks[idx];
    if (s == 0 || __atomic_load_n(&c->gen[idx], __ATOMIC_ACQUIRE) == 0) continue;
    uint32_t parked = __atomic_load_n(&s->park_tail, __ATOMIC_ACQUIRE) -
                      __atomic_load_n(&s->park_head, __ATOMIC_ACQUIRE);
    if (parked > NKB_PENDING) parked = NKB_PENDING;  // loads torn by a racing receive
    uint32_t recv_q = parked;
    const nkb_engine_slot_t *es = s->eng;
    if (es != 0) {
      uint32_t at = (uint32_t)(es - c->engines);
      assert(at < NKB_MAX_ENGINES && es->engine != 0);
      nkb_stat_raise(&s->stats[NKB_ST_ENGINE_DROPS], drops[at]);
      nkb_stat_raise(&s->stats[NKB_ST_ENGINE_TX_DROPS], nkb_engine_tx_drops(es->engine));
      recv_q += waiting[at];
    }
    nkb_reg_recv_q(idx, recv_q);
  }
}

// Sleeps NKB_REFRESH_MS or until stopped: false when stopped.
static bool nkb_refresh_sleep(void) {
  struct timespec until;
  if (clock_gettime(CLOCK_MONOTONIC, &until) != 0) {
    // No deadline to wait for: a plain sleep, then the stop flag.
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)NKB_REFRESH_MS * 1000000L};
    nanosleep(&ts, 0);
    return !nkb_refresh_stopping();
  }
  until.tv_nsec += (long)NKB_REFRESH_MS * 1000000L;
  until.tv_sec += until.tv_nsec / 1000000000L;
  until.tv_nsec %= 1000000000L;
  pthread_mutex_lock(&g_refresh.lock);
  // Spurious wake-ups are bounded: the deadline passes or stop is set.
  for (uint32_t i = 0; i < 1000u && g_refresh.stop == 0; i++) {
    if (pthread_cond_timedwait(&g_refresh.cv, &g_refresh.lock, &until) != 0) break;  // ETIMEDOUT
  }
  bool go_on = g_refresh.stop == 0;
  pthread_mutex_unlock(&g_refresh.lock);
  return go_on;
}

static void *nkb_refresh_main(void *arg) {
  (void)arg;
  // One pass per period for as long as an engine lives (stop ends it).
  while (nkb_refresh_sleep()) {
    nkb_core_t *c = nkb_core();
    // A newcomer that found every queue held asked for one: given up here, if we hold more.
    (void)nkb_give_round();
    if (!nkb_refresh_lock(c)) continue;
    nkb_refresh_pass(c);
    nkb_unlock(&c->table_lock, NKB_RANK_TABLE);
  }
  assert(nkb_refresh_stopping());
  return 0;
}

// Makes g_refresh.cv wait on CLOCK_MONOTONIC (a wall-clock step must not stall the
// sleep), once per process; under g_refresh.lock, with no thread running (so no thread
// waits on the cv it replaces). False when the cv could not be made: no thread then.
static bool nkb_refresh_cv_monotonic(void) {
  static bool done = false;  // under g_refresh.lock
  if (done) return true;
  pthread_condattr_t attr;
  if (pthread_condattr_init(&attr) != 0) return false;
  bool ok = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0;
  if (ok) {
    pthread_cond_destroy(&g_refresh.cv);
    ok = pthread_cond_init(&g_refresh.cv, &attr) == 0;
    // A cv that could not be made again on the monotonic clock is made plain, so that
    // nkb_refresh_stop's signal never meets a destroyed one; done stays false (no thread).
    if (!ok) (void)pthread_cond_init(&g_refresh.cv, 0);
  }
  pthread_condattr_destroy(&attr);
  done = ok;
  return ok;
}

void nkb_refresh_start(void) {
  pthread_mutex_lock(&g_refresh.lock);
  if (g_refresh.running == 0) {
    g_refresh.stop = 0;
    // Without the thread, stats() still reads the kernel's counters itself.
    g_refresh.running = nkb_refresh_cv_monotonic() &&
                        pthread_create(&g_refresh.thread, 0, nkb_refresh_main, 0) == 0;
    // Named for operators (top -H, /proc/PID/task/*/comm) and for the tests that see it go.
    if (g_refresh.running) (void)pthread_setname_np(g_refresh.thread, "nkb-refresh");
  }
  pthread_mutex_unlock(&g_refresh.lock);
}

// Callers hold the setup lock, as nkb_refresh_start's do (attach, the last detach), so a
// start never runs between this stop's unlock and its join; the unload destructor is the
// one exception, when nothing attaches any more.
void nkb_refresh_stop(void) {
  pthread_mutex_lock(&g_refresh.lock);
  bool join = g_refresh.running != 0;
  g_refresh.running = 0;
  __atomic_store_n(&g_refresh.stop, 1u, __ATOMIC_RELEASE);
  pthread_cond_signal(&g_refresh.cv);
  pthread_mutex_unlock(&g_refresh.lock);
  if (join) (void)pthread_join(g_refresh.thread, 0);
  assert(g_refresh.running == 0);
}

// The library is pinned (RTLD_NODELETE, api.c); should that have failed, an unload must not
// leave the thread running unmapped code. At process exit this ends it too (bounded: it
// sleeps on g_refresh.cv or tries the table lock, and both look at stop).
__attribute__((destructor)) static void nkb_refresh_unload(void) { nkb_refresh_stop(); }
