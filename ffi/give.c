// Queues given up (issue 16's ring groups): a process takes every free queue of an interface
// when its first whole-interface socket opens, gives one up for each newcomer process that
// found none and asked (ring_groups.c's records), down to one, and takes it back when it is
// free again (below). The refresher looks each period.
//
// Giving up queue index q of an engine, in this order, so that no datagram is lost:
//  1. under the table lock: this engine's flow keys for the queue go; the filter passes that
//     queue's datagrams to the kernel from then on, where each socket's companion socket
//     receives them;
//  2. a grace period (membarrier: RCU), so that every frame the filter redirected before
//     the keys went is on the ring;
//  3. receives go on reading the ring meanwhile: up to NKB_GIVE_DRAIN_MS for it to empty;
//  4. under the table and rx locks: queue_count drops to q. No receive reads ring q from
//     then on, and a frame of q that comes back to the engine (parked, in a receive's
//     hands) is retired, not refilled; the registry slots show the new count;
//  5. every wait of the engine's sockets is woken: a wait asleep in poll() holds the
//     queue's socket, which its close would then not free (a bind stays EBUSY until it
//     returns: measured 2.9 s behind a 3 s poll);
//  5b. the queue's keys go again (a flow added meanwhile saw the old count), and another
//     grace period;
//  6. under the rx lock: what is still on ring q is parked for its owner sockets (a park
//     holds 256 per socket: a backlog beyond that is counted in rxDropped);
//  7. the queue's XSK closes (its drop counters kept): the device queue and its ring-group
//     record go free.
// Only the setup lock is held throughout (engines do not close meanwhile).
#define _GNU_SOURCE
#include "give.h"

#include <assert.h>
#include <netinet/in.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "registry.h"

#define NKB_GIVE_SETTLE_NS 2000000L  // without membarrier: redirects in flight land within this
#define NKB_GIVE_DRAIN_MS 50u        // receives empty the ring meanwhile, at most this long

// The engine of this process to give up a queue, with an ask taken for it, or null: a
// whole-interface engine (a queue-affine one keeps the queue it was asked for) of more
// than one queue on an interface where another process asks. One per round.
static nkb_engine_slot_t *nkb_give_find(nkb_core_t *c) {
  assert(nkb_holds(NKB_RANK_SETUP));
  for (uint32_t i = 0; i < NKB_MAX_ENGINES; i++) {
    nkb_engine_slot_t *es = &c->engines[i];
    const nkb_engine_t *e = es->engine;
    if (e == 0 || e->requested_queues < 2u || e->queue_count < 2u) continue;
    // Taken last: an ask taken is a queue owed.
    if (nkb_group_take_ask(&es->iface->filter)) return es;
  }
  return 0;
}

// Step 1 (table lock held).
static void nkb_give_keys(nkb_engine_slot_t *es, uint32_t q) {
  assert(nkb_holds(NKB_RANK_TABLE));
  nkb_filter_t *f = &es->iface->filter;
  uint16_t queue = (uint16_t)(es->engine->first_queue + q);
  for (uint32_t i = 0; i < NKB_MAX_ATTACH; i++) {
    const nkb_flow_t *fl = &es->flows[i];
    if (fl->sock != 0) (void)nkb_filter_del_flow(f, fl->ip_be, htons(fl->port), queue);
  }
}

// Step 2: RCU's grace period, which every redirect of the program runs inside; a host
// without membarrier's global command gets a pause instead.
static void nkb_give_grace(void) {
  if (syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) == 0) return;
  struct timespec ts = {.tv_sec = 0, .tv_nsec = NKB_GIVE_SETTLE_NS};
  nanosleep(&ts, 0);
}

// Step 3: ring q's entries not yet read, as the two indices say.
static uint32_t nkb_give_unread(const nkb_engine_t *e, uint32_t q) {
  const nkb_ring_t *r = &e->xsk[q].rx;
  if (r->map == 0) return 0;
  uint32_t n = __atomic_load_n(r->producer, __ATOMIC_ACQUIRE) -
               __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);
  return n <= r->size ? n : r->size;
}

// Steps 4 and 5 (table lock held).
static void nkb_give_count(nkb_core_t *c, nkb_engine_slot_t *es, uint32_t q) {
  assert(nkb_holds(NKB_RANK_TABLE));
  nkb_engine_t *e = es->engine;
  nkb_lock(&e->rx_lock, NKB_RANK_RX);
  assert(q + 1u == e->queue_count);
  __atomic_store_n(&e->queue_count, q, __ATOMIC_RELEASE);
  nkb_unlock(&e->rx_lock, NKB_RANK_RX);
  for (uint32_t idx = 0; idx < NKB_MAX_SOCKS; idx++) {
    nkb_sock_t *s = c->socks[idx];
    if (s == 0 || __atomic_load_n(&c->gen[idx], __ATOMIC_ACQUIRE) == 0 || s->eng != es) continue;
    nkb_reg_queues(idx, e->first_queue, q);
    nkb_sock_rouse(s);
  }
  assert(e->queue_count == q);
}

static void nkb_give_queue(nkb_core_t *c, nkb_engine_slot_t *es) {
  nkb_engine_t *e = es->engine;
  uint32_t q = e->queue_count - 1u;  // the highest: index 0 (UMEM owner, TX ring) stays
  assert(q >= 1u && q < NKB_MAX_QUEUES);
  nkb_lock(&c->table_lock, NKB_RANK_TABLE);
  nkb_give_keys(es, q);
  nkb_unlock(&c->table_lock, NKB_RANK_TABLE);
  nkb_give_grace();
  for (uint32_t ms = 0; ms < NKB_GIVE_DRAIN_MS && nkb_give_unread(e, q) > 0; ms++) {
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 1000000L};
    nanosleep(&ts, 0);
  }
  nkb_lock(&c->table_lock, NKB_RANK_TABLE);
  nkb_give_count(c, es, q);
  // A flow added during the drain (under the table lock, with the old count) put a key on
  // this queue: it goes now, when no add can put one back, and the grace below lets its
  // redirects land on the ring before the last drain (they would be lost at the close).
  nkb_give_keys(es, q);
  nkb_unlock(&c->table_lock, NKB_RANK_TABLE);
  nkb_give_grace();
  nkb_lock(&e->rx_lock, NKB_RANK_RX);
  (void)nkb_rx_drain_queue(es, q);
  nkb_unlock(&e->rx_lock, NKB_RANK_RX);
  // The woken waits leave poll() within a scheduling slice; one still in it only delays
  // the device queue's release (the asker's bind retries, and asks on).
  struct timespec ts = {.tv_sec = 0, .tv_nsec = NKB_GIVE_SETTLE_NS};
  nanosleep(&ts, 0);
  // A failure leaves the queue bound but unused until the engine closes: the asker's bind
  // then fails, and it stays on the kernel path.
  (void)nkb_engine_retire_queue(e, q);
}

// ---- taking a queue back ------------------------------------------------------------------
// A queue given up comes back to its engine when nobody took it, or its taker left: free
// on the device by the records for NKB_TAKE_BACK_MS, nobody asking on the interface, and
// every RX frame of its part of the UMEM home (nkb_engine_queue_idle). Queues come back
// one per round, lowest first, so the engine's queues stay one run.
#define NKB_TAKE_BACK_MS 1000u

static bool nkb_take_back_ready(nkb_engine_slot_t *es, uint64_t now) {
  nkb_engine_t *e = es->engine;
  uint32_t q = e->queue_count;
  bool ready = false;
  if (e->requested_queues >= 2u && q < NKB_MAX_QUEUES) {
    nkb_lock(&e->rx_lock, NKB_RANK_RX);
    ready = nkb_engine_queue_idle(e, q);
    nkb_unlock(&e->rx_lock, NKB_RANK_RX);
  }
  nkb_filter_t *f = &es->iface->filter;
  ready = ready && !nkb_group_held(f, e->first_queue + q) && nkb_group_askers(f) == 0;
  if (!ready) {
    es->free_since_ns = 0;
    return false;
  }
  if (es->free_since_ns == 0) es->free_since_ns = now;
  return now - es->free_since_ns >= (uint64_t)NKB_TAKE_BACK_MS * 1000000ull;
}

static void nkb_take_back(nkb_core_t *c, nkb_engine_slot_t *es, uint64_t now) {
  nkb_engine_t *e = es->engine;
  uint32_t q = e->queue_count;
  if (nkb_engine_reopen_queue(e, q) != 0) {
    es->free_since_ns = now;  // tried again after another NKB_TAKE_BACK_MS
    return;
  }
  es->free_since_ns = 0;
  nkb_filter_t *f = &es->iface->filter;
  uint16_t queue = (uint16_t)(e->first_queue + q);
  nkb_lock(&c->table_lock, NKB_RANK_TABLE);
  // Receives read the ring before the filter sends it a frame.
  nkb_lock(&e->rx_lock, NKB_RANK_RX);
  __atomic_store_n(&e->queue_count, q + 1u, __ATOMIC_RELEASE);
  nkb_unlock(&e->rx_lock, NKB_RANK_RX);
  for (uint32_t i = 0; i < NKB_MAX_ATTACH; i++) {
    const nkb_flow_t *fl = &es->flows[i];
    // A failed key leaves that flow's datagrams on this queue to the kernel path, as before.
    if (fl->sock != 0) (void)nkb_filter_add_flow(f, fl->ip_be, htons(fl->port), queue);
  }
  for (uint32_t idx = 0; idx < NKB_MAX_SOCKS; idx++) {
    nkb_sock_t *s = c->socks[idx];
    if (s == 0 || __atomic_load_n(&c->gen[idx], __ATOMIC_ACQUIRE) == 0 || s->eng != es) continue;
    nkb_reg_queues(idx, e->first_queue, q + 1u);
    nkb_sock_rouse(s);  // a wait asleep in poll() polls the new queue's socket too
  }
  nkb_unlock(&c->table_lock, NKB_RANK_TABLE);
  assert(e->queue_count == q + 1u);
}

bool nkb_give_round(void) {
  nkb_core_t *c = nkb_core();
  if (!nkb_trylock(&c->setup_lock, NKB_RANK_SETUP)) return false;
  nkb_engine_slot_t *es = nkb_give_find(c);
  if (es != 0) nkb_give_queue(c, es);
  uint64_t now = nkb_now_ns();
  for (uint32_t i = 0; es == 0 && i < NKB_MAX_ENGINES; i++) {
    nkb_engine_slot_t *t = &c->engines[i];
    if (t->engine != 0 && nkb_take_back_ready(t, now)) nkb_take_back(c, t, now);
  }
  nkb_unlock(&c->setup_lock, NKB_RANK_SETUP);
  return es != 0;
}
