// Checks the four ring functions of ffi/xsk.h (reserve/submit on the producer side,
// peek/release on the consumer side) against rings in plain memory, without root or a
// kernel: the other side of each ring is played here, as the kernel plays it.
//   - a model check: random batches on both sides of a producer ring (fill, TX) and of a
//     consumer ring (RX, completion), indices starting just below 2^32 so that every
//     round wraps them, checked entry by entry against a plain queue;
//   - full and empty: a full producer ring reserves nothing, an empty consumer ring peeks
//     nothing, and both recover after one slot moves;
//   - two threads: a producer and a consumer move 4,000,000 sequence numbers through a
//     small ring with the library's functions on both sides; every number arrives once,
//     in order.
// Built with UBSan traps and assertions on by tests/ring.test.ts; prints one line per
// check and exits 0 when all hold.
#include <assert.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../../ffi/xsk.h"

#define SIZE 64u              // a small ring: wraps often
#define ROUNDS 200000u
#define THREAD_ITEMS 4000000u

static uint32_t rng_state = 0x9e3779b9u;

static uint32_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}

typedef struct {
  uint32_t producer;
  uint32_t consumer;
  uint32_t flags;
  uint64_t entries[SIZE];
} shared_ring_t;

// A ring over `sh` as nkb_ring_map sets it up, indices starting at `start`.
static void ring_init(nkb_ring_t *r, shared_ring_t *sh, uint32_t start, bool producer_side) {
  memset(sh, 0, sizeof(*sh));
  memset(r, 0, sizeof(*r));
  sh->producer = start;
  sh->consumer = start;
  r->size = SIZE;
  r->mask = SIZE - 1u;
  r->producer = &sh->producer;
  r->consumer = &sh->consumer;
  r->flags = &sh->flags;
  r->entries = sh->entries;
  r->map = sh;
  r->cached_prod = start;
  r->cached_cons = start;
  // nkb_ring_init_producer: a producer ring starts with every slot free.
  if (producer_side) r->cached_cons += r->size;
}

// The library produces (fill or TX), the "kernel" consumes: random batches both sides.
static uint32_t check_producer_ring(void) {
  shared_ring_t sh;
  nkb_ring_t r;
  ring_init(&r, &sh, 0xffffffffu - 5u * SIZE, true);
  uint64_t next_put = 1, next_get = 1;
  uint32_t failures = 0;
  for (uint32_t round = 0; round < ROUNDS; round++) {
    uint32_t idx;
    uint32_t want = rng() % (SIZE + 8u);
    uint32_t got = nkb_ring_reserve(&r, want, &idx);
    uint32_t in_flight = sh.producer - sh.consumer;
    // Reserve gives min(want, free), free being what the consumer index says now.
    uint32_t expect = SIZE - in_flight < want ? SIZE - in_flight : want;
    if (got != expect || idx != sh.producer) failures++;
    for (uint32_t i = 0; i < got; i++) *nkb_ring_addr(&r, idx + i) = next_put++;
    nkb_ring_submit(&r, got);
    // The kernel takes some of what is published, checking order.
    uint32_t take = rng() % (sh.producer - sh.consumer + 1u);
    for (uint32_t i = 0; i < take; i++) {
      if (sh.entries[(sh.consumer + i) & (SIZE - 1u)] != next_get++) failures++;
    }
    __atomic_store_n(&sh.consumer, sh.consumer + take, __ATOMIC_RELEASE);
  }
  printf("producer ring: %u rounds, %llu entries, failures %u\n", ROUNDS,
         (unsigned long long)(next_get - 1), failures);
  return failures;
}

// The "kernel" produces (RX or completion), the library consumes.
static uint32_t check_consumer_ring(void) {
  shared_ring_t sh;
  nkb_ring_t r;
  ring_init(&r, &sh, 0xffffffffu - 3u * SIZE, false);
  uint64_t next_put = 1, next_get = 1;
  uint32_t failures = 0;
  for (uint32_t round = 0; round < ROUNDS; round++) {
    uint32_t room = SIZE - (sh.producer - sh.consumer);
    uint32_t put = rng() % (room + 1u);
    for (uint32_t i = 0; i < put; i++) sh.entries[(sh.producer + i) & (SIZE - 1u)] = next_put++;
    __atomic_store_n(&sh.producer, sh.producer + put, __ATOMIC_RELEASE);
    uint32_t idx;
    uint32_t want = rng() % (SIZE + 8u);
    uint32_t got = nkb_ring_peek(&r, want, &idx);
    // Peek refreshes from the producer only when its cache is exhausted: what it gives
    // is never more than published, nor more than wanted, and starts at the consumer.
    uint32_t published = sh.producer - sh.consumer;
    if (got > want || got > published || idx != sh.consumer) failures++;
    if (want > 0 && published > 0 && got == 0) failures++;  // nothing while there is some
    for (uint32_t i = 0; i < got; i++) {
      if (*nkb_ring_addr(&r, idx + i) != next_get++) failures++;
    }
    nkb_ring_release(&r, got);
    if (sh.consumer != r.cached_cons) failures++;
  }
  printf("consumer ring: %u rounds, %llu entries, failures %u\n", ROUNDS,
         (unsigned long long)(next_get - 1), failures);
  return failures;
}

static uint32_t check_full_and_empty(void) {
  uint32_t failures = 0;
  shared_ring_t sh;
  nkb_ring_t r;
  uint32_t idx;
  // Producer ring: fill it, then nothing more until the consumer moves one.
  ring_init(&r, &sh, 0xfffffff0u, true);
  failures += nkb_ring_reserve(&r, SIZE + 1u, &idx) != SIZE;
  nkb_ring_submit(&r, SIZE);
  failures += nkb_ring_reserve(&r, 1, &idx) != 0;
  __atomic_store_n(&sh.consumer, sh.consumer + 1u, __ATOMIC_RELEASE);
  failures += nkb_ring_reserve(&r, 4, &idx) != 1;
  failures += idx != sh.producer;
  failures += nkb_ring_reserve(&r, 0, &idx) != 0;
  // Consumer ring: empty gives nothing; one published gives one; released, nothing.
  ring_init(&r, &sh, 0xfffffffeu, false);
  failures += nkb_ring_peek(&r, 8, &idx) != 0;
  sh.entries[sh.producer & (SIZE - 1u)] = 42;
  __atomic_store_n(&sh.producer, sh.producer + 1u, __ATOMIC_RELEASE);
  failures += nkb_ring_pending(&r) != 1;
  failures += nkb_ring_peek(&r, 8, &idx) != 1;
  failures += *nkb_ring_addr(&r, idx) != 42;
  nkb_ring_release(&r, 1);
  failures += nkb_ring_peek(&r, 8, &idx) != 0;
  failures += nkb_ring_pending(&r) != 0;
  // Full consumer ring: all of it in one peek, across the wrap of the indices.
  for (uint32_t i = 0; i < SIZE; i++) sh.entries[(sh.producer + i) & (SIZE - 1u)] = 100u + i;
  __atomic_store_n(&sh.producer, sh.producer + SIZE, __ATOMIC_RELEASE);
  failures += nkb_ring_peek(&r, SIZE * 2u, &idx) != SIZE;
  for (uint32_t i = 0; i < SIZE; i++) failures += *nkb_ring_addr(&r, idx + i) != 100u + i;
  nkb_ring_release(&r, SIZE);
  printf("full and empty: failures %u\n", failures);
  return failures;
}

typedef struct {
  nkb_ring_t prod_view;  // the producer thread's view
  nkb_ring_t cons_view;  // the consumer thread's view
  shared_ring_t sh;
  uint32_t failures;
} spsc_t;

// Seconds since `start` (CLOCK_MONOTONIC): the threads' loops end after TIME_LIMIT_S.
static double since(const struct timespec *start) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

#define TIME_LIMIT_S 20.0

static void *producer_thread(void *arg) {
  spsc_t *t = arg;
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  uint32_t state = 0x2545f491u;  // its own generator: rng() is the main thread's
  uint64_t next = 1;
  for (uint64_t spins = 0; next <= THREAD_ITEMS; spins++) {
    if (spins % 4096u == 0 && since(&start) > TIME_LIMIT_S) break;
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    uint32_t idx;
    uint32_t got = nkb_ring_reserve(&t->prod_view, 1u + state % 16u, &idx);
    uint32_t i = 0;
    for (; i < got && next <= THREAD_ITEMS; i++) *nkb_ring_addr(&t->prod_view, idx + i) = next++;
    nkb_ring_submit(&t->prod_view, i);
  }
  return 0;
}

static uint32_t check_two_threads(void) {
  static spsc_t t;
  ring_init(&t.prod_view, &t.sh, 0xffffff00u, true);
  t.cons_view = t.prod_view;
  t.cons_view.cached_cons = 0xffffff00u;  // the consumer's own cache
  pthread_t th;
  if (pthread_create(&th, 0, producer_thread, &t) != 0) return 1;
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  uint64_t expect = 1;
  uint32_t failures = 0;
  for (uint64_t spins = 0; expect <= THREAD_ITEMS; spins++) {
    if (spins % 4096u == 0 && since(&start) > TIME_LIMIT_S + 1.0) break;
    uint32_t idx;
    uint32_t got = nkb_ring_peek(&t.cons_view, 1u + (uint32_t)(spins % 16u), &idx);
    for (uint32_t i = 0; i < got; i++) {
      if (*nkb_ring_addr(&t.cons_view, idx + i) != expect) failures++;
      expect++;
    }
    nkb_ring_release(&t.cons_view, got);
  }
  pthread_join(th, 0);
  printf("two threads: %llu of %u in order, failures %u\n", (unsigned long long)(expect - 1),
         THREAD_ITEMS, failures);
  return failures + (expect - 1 != THREAD_ITEMS);
}

int main(void) {
  uint32_t failures = 0;
  failures += check_producer_ring();
  failures += check_consumer_ring();
  failures += check_full_and_empty();
  failures += check_two_threads();
  printf("failures %u\n", failures);
  return failures == 0 ? 0 : 1;
}
