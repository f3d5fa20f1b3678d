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
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nkb_net.h"

#define NKB_STAT_MAX 1024u  // bytes of /proc/PID/stat read: the line is about 300

// The start time (field 22) of process pid, or 0 when it is gone or unreadable.
static uint64_t nkb_start_ticks(uint32_t pid) {
  char path[32];
  snprintf(path, sizeof(path), "/proc/%u/stat", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) return 0;
  char buf[NKB_STAT_MAX + 1];
  ssize_t n = read(fd, buf, NKB_STAT_MAX);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  // The command name may hold any byte, ')' and spaces included: fields start after the last ')'.
  const char *p = strrchr(buf, ')');
  if (p == 0) return 0;
  // Fields 3.. follow; the start time is field 22, the 20th after the ')'.
  for (uint32_t field = 2; field < 22 && p != 0; field++) p = strchr(p + 1, ' ');
  if (p == 0) return 0;
  char *end = 0;
  unsigned long long v = strtoull(p + 1, &end, 10);
  return end == p + 1 ? 0 : (uint64_t)v;
}

static uint32_t nkb_pidns_lo(void) {
  struct stat st;
  return stat("/proc/self/ns/pid", &st) == 0 ? (uint32_t)st.st_ino : 0u;
}

static nkb_group_owner_t nkb_self(void) {
  uint32_t pid = (uint32_t)getpid();
  nkb_group_owner_t me = {.pid = pid, .pidns = nkb_pidns_lo(), .start_ticks = nkb_start_ticks(pid)};
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
  return o.start_ticks != 0 && nkb_start_ticks(o.pid) == o.start_ticks;
}

bool nkb_group_held(const nkb_filter_t *f, uint32_t q) {
  assert(f != NULL);
  nkb_group_owner_t me = nkb_self();
  return nkb_held_by(f, q, &me);
}

uint32_t nkb_group_free_run(const nkb_filter_t *f, uint32_t first, uint32_t count,
                           uint32_t *run_first) {
  assert(f != NULL && run_first != NULL);
  nkb_group_owner_t me = nkb_self();
  uint32_t best = 0, best_first = first, len = 0;
  for (uint32_t i = 0; i < count && first + i < NKB_FILTER_QUEUES; i++) {
    if (nkb_held_by(f, first + i, &me)) {
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
// nkb_ctl_t.asks: pending asks in the low half, queues given up for them (not yet taken) in
// the high half. Every change is a compare-and-swap of the whole word, retried at most
// NKB_ASK_CAS_TRIES times: a lost race means another process changed it meanwhile, and a
// process that loses that many in a row gives up this change (an ask lost that way is
// renewed by no one and expires; a count left over is cleared when it goes stale).
#define NKB_ASKS_MASK 0xffffu
#define NKB_GIVEN_ONE 0x10000u
#define NKB_ASK_CAS_TRIES 64u

static uint32_t nkb_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

// Replaces *w's expected value with next; false (and *w reloaded) when another process won.
static bool nkb_asks_cas(nkb_ctl_t *ctl, uint32_t *w, uint32_t next) {
  return __atomic_compare_exchange_n(&ctl->asks, w, next, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE);
}

void nkb_group_ask(nkb_filter_t *f, bool first) {
  assert(f != NULL);
  if (f->ctl == NULL) return;
  // The deadline before the count: a holder that sees the ask sees it alive.
  __atomic_store_n(&f->ctl->asks_until_ms, nkb_mono_ms() + NKB_ASK_TTL_MS, __ATOMIC_RELEASE);
  if (!first) return;
  uint32_t w = __atomic_load_n(&f->ctl->asks, __ATOMIC_ACQUIRE);
  for (uint32_t i = 0; i < NKB_ASK_CAS_TRIES && (w & NKB_ASKS_MASK) != NKB_ASKS_MASK; i++) {
    if (nkb_asks_cas(f->ctl, &w, w + 1u)) return;
  }
}

// A given-up queue was taken (got_queue) or the asker stopped without one: the first of the
// two counts that has one goes (got_queue: given-up queues first, else the asker's own ask,
// which is still pending when it got its queue another way, from a holder that left; without
// a queue: its own ask first, else the queue given up for it, which someone else took).
void nkb_group_settle(nkb_filter_t *f, bool got_queue) {
  assert(f != NULL);
  if (f->ctl == NULL) return;
  uint32_t w = __atomic_load_n(&f->ctl->asks, __ATOMIC_ACQUIRE);
  for (uint32_t i = 0; i < NKB_ASK_CAS_TRIES && w != 0; i++) {
    bool given = (w & ~NKB_ASKS_MASK) != 0, asked = (w & NKB_ASKS_MASK) != 0;
    uint32_t next = (got_queue ? given : !asked) ? w - NKB_GIVEN_ONE : w - 1u;
    if (nkb_asks_cas(f->ctl, &w, next)) return;
  }
}

bool nkb_group_take_ask(nkb_filter_t *f) {
  assert(f != NULL);
  if (f->ctl == NULL) return false;
  uint32_t w = __atomic_load_n(&f->ctl->asks, __ATOMIC_ACQUIRE);
  for (uint32_t i = 0; i < NKB_ASK_CAS_TRIES && w != 0; i++) {
    uint32_t until = __atomic_load_n(&f->ctl->asks_until_ms, __ATOMIC_ACQUIRE);
    bool stale = (int32_t)(nkb_mono_ms() - until) > 0;  // wraps every 49 days: compared as a gap
    if (!stale && (w & NKB_ASKS_MASK) == 0) return false;
    // Stale: every asker left without settling (closed or killed): nobody waits.
    uint32_t given = (w >> 16) < NKB_ASKS_MASK ? NKB_GIVEN_ONE : 0u;
    uint32_t next = stale ? 0u : w - 1u + given;
    if (nkb_asks_cas(f->ctl, &w, next)) return !stale;
  }
  return false;
}

uint32_t nkb_group_asks(const nkb_filter_t *f) {
  assert(f != NULL);
  return f->ctl == NULL ? 0u : __atomic_load_n(&f->ctl->asks, __ATOMIC_ACQUIRE);
}
