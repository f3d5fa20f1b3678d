// The process's context (core.h): socket slots and their handles, pins, and the
// engine and interface tables that attach.c fills. It calls no other file of the shim.
#define _GNU_SOURCE
#include "core.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define NKB_INDEX_BITS 10u
#define NKB_GEN_MAX 0x1fffffu

_Static_assert(NKB_MAX_SOCKS == (1u << NKB_INDEX_BITS), "handle layout");

static nkb_core_t g_core = {
    .setup_lock = PTHREAD_MUTEX_INITIALIZER,
    .table_lock = PTHREAD_MUTEX_INITIALIZER,
};

nkb_core_t *nkb_core(void) { return &g_core; }

// The slot's socket when h names its live generation, closing or not.
static nkb_sock_t *nkb_sock_lookup(const nkb_core_t *c, int32_t h) {
  if (h <= 0) return 0;
  uint32_t idx = (uint32_t)h & (NKB_MAX_SOCKS - 1u);
  uint32_t gen = (uint32_t)h >> NKB_INDEX_BITS;
  nkb_sock_t *s = __atomic_load_n(&c->socks[idx], __ATOMIC_ACQUIRE);
  if (s == 0 || __atomic_load_n(&c->gen[idx], __ATOMIC_ACQUIRE) != gen) return 0;
  assert(s->index == idx && gen != 0);
  return s;
}

nkb_sock_t *nkb_sock_get_any(int32_t h) { return nkb_sock_lookup(&g_core, h); }

nkb_sock_t *nkb_sock_get(int32_t h) {
  nkb_sock_t *s = nkb_sock_lookup(&g_core, h);
  if (s == 0 || __atomic_load_n(&s->closing, __ATOMIC_ACQUIRE)) return 0;
  return s;
}

int32_t nkb_sock_handle(const nkb_sock_t *s) {
  assert(s != 0 && s->index < NKB_MAX_SOCKS);
  uint32_t gen = __atomic_load_n(&g_core.gen[s->index], __ATOMIC_ACQUIRE);
  assert(gen != 0 && gen <= NKB_GEN_MAX);
  return (int32_t)(gen << NKB_INDEX_BITS | s->index);
}

static bool nkb_pin_valid(const nkb_sock_t *s, uint32_t idx, uint32_t gen) {
  return __atomic_load_n(&g_core.gen[idx], __ATOMIC_SEQ_CST) == gen &&
         __atomic_load_n(&s->closing, __ATOMIC_SEQ_CST) == 0 &&
         __atomic_load_n(&g_core.gen[idx], __ATOMIC_SEQ_CST) == gen;  // not freed and reused between
}

// Pairs with nkb_sock_pinned: the pin is counted before closing and the generation are
// read again, and a free or detach reads the count after closing (or the engine) changed,
// so one of the two always sees the other (sequentially consistent on both sides). A pin
// that fails counts for a moment too; the first look keeps that to the rare race.
nkb_sock_t *nkb_sock_pin(int32_t h) {
  if (h <= 0) return 0;
  uint32_t idx = (uint32_t)h & (NKB_MAX_SOCKS - 1u);
  uint32_t gen = (uint32_t)h >> NKB_INDEX_BITS;
  nkb_sock_t *s = __atomic_load_n(&g_core.socks[idx], __ATOMIC_ACQUIRE);
  if (s == 0 || !nkb_pin_valid(s, idx, gen)) return 0;
  __atomic_add_fetch(&g_core.pins[idx], 1u, __ATOMIC_SEQ_CST);
  if (!nkb_pin_valid(s, idx, gen)) {
    __atomic_sub_fetch(&g_core.pins[idx], 1u, __ATOMIC_SEQ_CST);
    return 0;
  }
  assert(s->index == idx);
  return s;
}

#define NKB_PIN_SETTLE_NS 20000u  // a failing pin lets go within instructions
#define NKB_PIN_SETTLE_TRIES 100000u

bool nkb_sock_pinned(const nkb_sock_t *s) {
  assert(s != 0 && s->index < NKB_MAX_SOCKS);
  uint64_t until = nkb_now_ns() + NKB_PIN_SETTLE_NS;
  for (uint32_t i = 0; i < NKB_PIN_SETTLE_TRIES; i++) {
    if (__atomic_load_n(&g_core.pins[s->index], __ATOMIC_SEQ_CST) == 0) return false;
    if (nkb_now_ns() > until) break;
  }
  return true;  // a wait runs on another thread (or a failing pin was preempted: rare)
}

void nkb_sock_unpin(nkb_sock_t *s) {
  assert(s != 0 && s->index < NKB_MAX_SOCKS);
  uint32_t before = __atomic_fetch_sub(&g_core.pins[s->index], 1u, __ATOMIC_SEQ_CST);
  assert(before > 0);
}

int32_t nkb_sock_insert(const nkb_sock_t *proto, nkb_sock_t **out) {
  nkb_core_t *c = &g_core;
  int32_t h = -EMFILE;
  nkb_lock(&c->table_lock, NKB_RANK_TABLE);
  for (uint32_t i = 0; i < NKB_MAX_SOCKS; i++) {
    if (__atomic_load_n(&c->gen[i], __ATOMIC_ACQUIRE) != 0) continue;
    nkb_sock_t *s = c->socks[i];
    if (s == 0) s = calloc(1, sizeof(*s));
    if (s == 0) {
      h = -ENOMEM;
      break;
    }
    // A free slot's generation is 0, which no handle carries: a stale pin that reads the
    // slot while it is filled sees a mismatch and lets go.
    *s = *proto;
    s->index = i;
    s->stats = s->stats_private;  // until the registry gives it a slot (api.c)
    __atomic_store_n(&c->socks[i], s, __ATOMIC_RELEASE);
    c->last_gen[i] = c->last_gen[i] % NKB_GEN_MAX + 1u;
    __atomic_store_n(&c->gen[i], c->last_gen[i], __ATOMIC_RELEASE);
    h = (int32_t)(c->last_gen[i] << NKB_INDEX_BITS | i);
    *out = s;
    break;
  }
  nkb_unlock(&c->table_lock, NKB_RANK_TABLE);
  assert(h != 0);
  return h;
}

void nkb_sock_remove_locked(nkb_sock_t *s) {
  nkb_core_t *c = &g_core;
  assert(nkb_holds(NKB_RANK_TABLE));
  assert(s != 0 && c->socks[s->index] == s);
  // Closing is set, so no pin succeeds from here on; one that fails only reads the slot's
  // memory, which stays. The caller saw no successful pin (nkb_sock_pinned).
  assert(__atomic_load_n(&s->closing, __ATOMIC_SEQ_CST) != 0);
  assert(s->eng == 0);
  __atomic_store_n(&c->gen[s->index], 0u, __ATOMIC_RELEASE);
}
