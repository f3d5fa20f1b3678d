// Queues as the contract's ring groups, across processes: the shared filter's control
// block (nkb_ctl_t) names the process holding each queue's XSK. The kernel lets one XSK
// bind a queue, so the record is advice: it tells a queue a live process holds (setup
// fails at once, with the typed reason, instead of retrying a bind for 400 ms) from one
// whose holder is gone (the kernel frees a closed socket's queue after 15-25 ms: the bind
// retries). A holder killed without closing leaves its record, and any nkb process can
// write the block: a record is believed only while its process is seen alive (pid and
// start time, in the reader's pid namespace). One of another pid namespace cannot be
// checked: the bind decides.
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "host_clock.h"
#include "nkb_net.h"

// The start time of process pid in the host's ticks, 0 when it is gone or /proc cannot say.
static uint64_t nkb_start_ticks(uint32_t pid) {
  char path[32];
  snprintf(path, sizeof(path), "/proc/%u/stat", pid);
  uint64_t start = nkb_proc_start_ticks(path);
  return start == NKB_START_UNKNOWN ? 0 : start;
}

static uint32_t nkb_pidns_lo(void) { return (uint32_t)nkb_ns_ino("/proc/self/ns/pid"); }

// This process's identity, read once per thread (two /proc reads) and again after a fork:
// a read that failed once (EMFILE) must not make the process a stranger to its own records
// (a second ask record, its own given ask counted as owed to another, a queue never
// released). Per thread: no lock, and a copy a fork inherits is told by its pid.
// A fork's child forgets it (the only thread there is the forking one): a grandchild that
// got a dead process's pid must not take its identity from a copy its parent inherited.
static __thread nkb_group_owner_t nkb_self_cached __attribute__((tls_model("initial-exec")));
static pthread_once_t nkb_self_once = PTHREAD_ONCE_INIT;

static void nkb_self_forget(void) { memset(&nkb_self_cached, 0, sizeof(nkb_self_cached)); }

static void nkb_self_watch_forks(void) { (void)pthread_atfork(0, 0, nkb_self_forget); }

static nkb_group_owner_t nkb_self(void) {
  (void)pthread_once(&nkb_self_once, nkb_self_watch_forks);
  uint32_t pid = (uint32_t)getpid();
  if (nkb_self_cached.pid == pid && nkb_self_cached.start_ticks != 0) return nkb_self_cached;
  nkb_group_owner_t me = {.pid = pid, .pidns = nkb_pidns_lo(), .start_ticks = nkb_start_ticks(pid)};
  if (me.start_ticks != 0 && me.pidns != 0) nkb_self_cached = me;
  return me;
}

// A copy of queue q's record, read word by word (another process may be writing it).
static nkb_group_owner_t nkb_owner_read(const nkb_ctl_t *ctl, uint32_t q) {
  const nkb_group_owner_t *o = &ctl->owners[q];
  nkb_group_owner_t r = {
      .pid = __atomic_load_n(&o->pid, __ATOMIC_ACQUIRE),
      .pidns = __atomic_load_n(&o->pidns, __ATOMIC_ACQUIRE),
      .start_ticks = __atomic_load_n(&o->start_ticks, __ATOMIC_ACQUIRE),
  };
  return r;
}

static bool nkb_same(const nkb_group_owner_t *a, const nkb_group_owner_t *b) {
  return a->pid == b->pid && a->pidns == b->pidns && a->start_ticks == b->start_ticks;
}

// nkb_group_held, with this process's identity read once by the caller (two /proc reads).
static bool nkb_held_by(const nkb_filter_t *f, uint32_t q, const nkb_group_owner_t *me) {
  if (f->ctl == NULL || q >= NKB_FILTER_QUEUES) return false;
  nkb_group_owner_t o = nkb_owner_read(f->ctl, q);
  if (o.pid == 0) return false;
  if (nkb_same(&o, me)) return true;       // another engine of this process
  if (o.pidns != me->pidns) return false;  // cannot be checked from here: the bind decides
  return o.start_ticks != 0 && nkb_ticks_near(nkb_start_ticks(o.pid), o.start_ticks);
}

bool nkb_group_held(const nkb_filter_t *f, uint32_t q) {
  assert(f != NULL);
  nkb_group_owner_t me = nkb_self();
  return nkb_held_by(f, q, &me);
}

// Whether queue q's record names a process of another pid namespace (cannot be checked).
static bool nkb_held_elsewhere(const nkb_filter_t *f, uint32_t q, const nkb_group_owner_t *me) {
  if (f->ctl == NULL || q >= NKB_FILTER_QUEUES) return false;
  nkb_group_owner_t o = nkb_owner_read(f->ctl, q);
  return o.pid != 0 && o.pidns != me->pidns;
}

// The longest run within [first, first + count) of queues neither held nor, with
// strict, named by a process of another pid namespace.
static uint32_t nkb_free_run(const nkb_filter_t *f, uint32_t first, uint32_t count,
                             const nkb_group_owner_t *me, bool strict, uint32_t *run_first) {
  uint32_t best = 0, best_first = first, len = 0;
  for (uint32_t i = 0; i < count && first + i < NKB_FILTER_QUEUES; i++) {
    uint32_t q = first + i;
    if (nkb_held_by(f, q, me) || (strict && nkb_held_elsewhere(f, q, me))) {
      len = 0;
      continue;
    }
    len++;
    if (len > best) {
      best = len;
      best_first = first + i + 1u - len;
    }
  }
  assert(best <= count && (best == 0 || best_first >= first));
  *run_first = best_first;
  return best;
}

uint32_t nkb_group_free_run(const nkb_filter_t *f, uint32_t first, uint32_t count,
                           bool known_free, uint32_t *run_first) {
  assert(f != NULL && run_first != NULL);
  nkb_group_owner_t me = nkb_self();
  return nkb_free_run(f, first, count, &me, known_free, run_first);
}

uint32_t nkb_group_state(const nkb_filter_t *f, uint32_t q, uint32_t *pid) {
  assert(f != NULL && pid != NULL);
  *pid = 0;
  if (f->ctl == NULL || q >= NKB_FILTER_QUEUES) return NKB_GROUP_FREE;
  nkb_group_owner_t me = nkb_self();
  nkb_group_owner_t o = nkb_owner_read(f->ctl, q);
  if (o.pid == 0) return NKB_GROUP_FREE;
  *pid = o.pid;
  if (o.pidns != me.pidns) return NKB_GROUP_OTHER_NS;
  return nkb_held_by(f, q, &me) ? NKB_GROUP_LIVE : NKB_GROUP_GONE;
}

void nkb_group_claim(nkb_filter_t *f, uint32_t q) {
  assert(f != NULL);
  if (f->ctl == NULL || q >= NKB_FILTER_QUEUES) return;
  nkb_group_owner_t me = nkb_self();
  nkb_group_owner_t *o = &f->ctl->owners[q];
  // Our XSK holds the queue now, so the record is ours whatever it said. Plain stores, pid
  // last: a reader that sees it sees the rest (a torn record names no live process).
  __atomic_store_n(&o->pid, 0u, __ATOMIC_RELEASE);
  __atomic_store_n(&o->pidns, me.pidns, __ATOMIC_RELEASE);
  __atomic_store_n(&o->start_ticks, me.start_ticks, __ATOMIC_RELEASE);
  __atomic_store_n(&o->pid, me.pid, __ATOMIC_RELEASE);
}

void nkb_group_release(nkb_filter_t *f, uint32_t q) {
  assert(f != NULL);
  if (f->ctl == NULL || q >= NKB_FILTER_QUEUES) return;
  nkb_group_owner_t me = nkb_self();
  uint32_t pid = me.pid;
  nkb_group_owner_t now = nkb_owner_read(f->ctl, q);
  // Only our own record: another process may have bound the queue since our XSK closed.
  if (!nkb_same(&now, &me)) return;
  (void)__atomic_compare_exchange_n(&f->ctl->owners[q].pid, &pid, 0u, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE);
}

// ---- queue requests ---------------------------------------------------------------------
// nkb_ctl_t.asks: a record per asking process, written by that process alone except for
// given_ms, which a holder sets. A record is claimed by a compare-and-swap of its pid and
// filled in, its deadline last. Two claimers can still race for a record whose deadline
// passed (the second sees it half written): both then write it, the one that finds
// another's identity in it at its next renewal claims a new one, and a holder that reads
// it half written gives a queue for an asker that does wait. Every retry checks again.

// A copy of ask record i, read word by word; the deadline first, so that a record claimed
// meanwhile reads as stale rather than as the new asker's with the old deadline.
static nkb_group_ask_t nkb_ask_read(const nkb_ctl_t *ctl, uint32_t i) {
  assert(i < NKB_FILTER_ASKERS);
  const nkb_group_ask_t *a = &ctl->asks[i];
  nkb_group_ask_t r;
  r.until_ms = __atomic_load_n(&a->until_ms, __ATOMIC_ACQUIRE);
  r.who.pid = __atomic_load_n(&a->who.pid, __ATOMIC_ACQUIRE);
  r.who.pidns = __atomic_load_n(&a->who.pidns, __ATOMIC_ACQUIRE);
  r.who.start_ticks = __atomic_load_n(&a->who.start_ticks, __ATOMIC_ACQUIRE);
  r.given_ms = __atomic_load_n(&a->given_ms, __ATOMIC_ACQUIRE);
  return r;
}

// Whether record r is an ask still waiting: renewed in time by a process not seen dead
// (one of another pid namespace cannot be checked: its deadline decides).
static bool nkb_ask_live(const nkb_group_ask_t *r, const nkb_group_owner_t *me, uint32_t now) {
  // Renewed within NKB_ASK_TTL_MS: until lies at most that far ahead (unsigned gap: one
  // passed wraps to a huge one, as does a deadline far ahead that another process wrote).
  // 0 marks a record being claimed or let go.
  if (r->who.pid == 0 || r->until_ms == 0 || r->until_ms - now > NKB_ASK_TTL_MS) return false;
  if (nkb_same(&r->who, me) || r->who.pidns != me->pidns) return true;
  if (r->who.start_ticks == 0) return false;
  return nkb_ticks_near(nkb_start_ticks(r->who.pid), r->who.start_ticks);
}

// This process's record, or NKB_FILTER_ASKERS.
static uint32_t nkb_ask_mine(const nkb_ctl_t *ctl, const nkb_group_owner_t *me) {
  for (uint32_t i = 0; i < NKB_FILTER_ASKERS; i++) {
    nkb_group_ask_t r = nkb_ask_read(ctl, i);
    if (nkb_same(&r.who, me)) return i;
  }
  return NKB_FILTER_ASKERS;
}

// A renewal's deadline, never 0 (the mark of a record being claimed or let go).
static uint32_t nkb_ask_deadline(uint32_t now) {
  uint32_t until = now + NKB_ASK_TTL_MS;
  return until == 0 ? 1u : until;
}

void nkb_group_ask(nkb_filter_t *f) {
  assert(f != NULL);
  if (f->ctl == NULL) return;
  nkb_group_owner_t me = nkb_self();
  if (me.start_ticks == 0) return;  // cannot name itself: not heard (the next retry asks again)
  uint32_t now = nkb_host_mono_ms();
  nkb_ctl_t *ctl = f->ctl;
  uint32_t mine = nkb_ask_mine(ctl, &me);
  if (mine < NKB_FILTER_ASKERS) {
    nkb_group_ask_t *a = &ctl->asks[mine];
    __atomic_store_n(&a->until_ms, nkb_ask_deadline(now), __ATOMIC_RELEASE);
    // Given a while ago and still no free queue here: another process took it. Asked again.
    uint32_t given = __atomic_load_n(&a->given_ms, __ATOMIC_ACQUIRE);
    if (given != 0 && now - given > NKB_GIVE_GRACE_MS) {  // one ahead of now: wraps, cleared
      (void)__atomic_compare_exchange_n(&a->given_ms, &given, 0u, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE);
    }
    return;
  }
  for (uint32_t i = 0; i < NKB_FILTER_ASKERS; i++) {
    nkb_group_ask_t r = nkb_ask_read(ctl, i);
    if (nkb_ask_live(&r, &me, now)) continue;
    nkb_group_ask_t *a = &ctl->asks[i];
    uint32_t pid = r.who.pid;
    if (!__atomic_compare_exchange_n(&a->who.pid, &pid, me.pid, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
      continue;  // another asker claimed it first
    }
    __atomic_store_n(&a->until_ms, 0u, __ATOMIC_RELEASE);
    __atomic_store_n(&a->who.pidns, me.pidns, __ATOMIC_RELEASE);
    __atomic_store_n(&a->who.start_ticks, me.start_ticks, __ATOMIC_RELEASE);
    __atomic_store_n(&a->given_ms, 0u, __ATOMIC_RELEASE);
    __atomic_store_n(&a->until_ms, nkb_ask_deadline(now), __ATOMIC_RELEASE);
    return;
  }
  // NKB_FILTER_ASKERS processes ask already: this one is not heard until one of them stops.
}

void nkb_group_unask(nkb_filter_t *f) {
  assert(f != NULL);
  if (f->ctl == NULL) return;
  nkb_group_owner_t me = nkb_self();
  uint32_t mine = nkb_ask_mine(f->ctl, &me);
  if (mine == NKB_FILTER_ASKERS) return;
  nkb_group_ask_t *a = &f->ctl->asks[mine];
  __atomic_store_n(&a->until_ms, 0u, __ATOMIC_RELEASE);
  uint32_t pid = me.pid;
  (void)__atomic_compare_exchange_n(&a->who.pid, &pid, 0u, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE);
}

bool nkb_group_take_ask(nkb_filter_t *f) {
  assert(f != NULL);
  if (f->ctl == NULL) return false;
  nkb_group_owner_t me = nkb_self();
  uint32_t now = nkb_host_mono_ms();
  for (uint32_t i = 0; i < NKB_FILTER_ASKERS; i++) {
    nkb_group_ask_t r = nkb_ask_read(f->ctl, i);
    if (r.given_ms != 0 || nkb_same(&r.who, &me) || !nkb_ask_live(&r, &me, now)) continue;
    uint32_t zero = 0;
    uint32_t stamp = now == 0 ? 1u : now;  // 0 means "not given"
    if (__atomic_compare_exchange_n(&f->ctl->asks[i].given_ms, &zero, stamp, false,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
      return true;  // another holder may have taken it first: then the next record
    }
  }
  return false;
}

// Live records of other processes; only those a holder gave a queue for, with given_only.
static uint32_t nkb_ask_count(const nkb_filter_t *f, bool given_only) {
  assert(f != NULL);
  if (f->ctl == NULL) return 0;
  nkb_group_owner_t me = nkb_self();
  uint32_t now = nkb_host_mono_ms(), n = 0;
  for (uint32_t i = 0; i < NKB_FILTER_ASKERS; i++) {
    nkb_group_ask_t r = nkb_ask_read(f->ctl, i);
    if (given_only && r.given_ms == 0) continue;
    if (!nkb_same(&r.who, &me) && nkb_ask_live(&r, &me, now)) n++;
  }
  assert(n <= NKB_FILTER_ASKERS);
  return n;
}

uint32_t nkb_group_waiting(const nkb_filter_t *f) { return nkb_ask_count(f, true); }

uint32_t nkb_group_askers(const nkb_filter_t *f) { return nkb_ask_count(f, false); }
