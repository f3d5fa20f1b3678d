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

bool nkb_group_held(const nkb_filter_t *f, uint32_t q) {
  assert(f != NULL);
  if (f->ctl == NULL || q >= NKB_FILTER_QUEUES) return false;
  nkb_group_owner_t o = nkb_owner_read(f->ctl, q);
  if (o.pid == 0) return false;
  nkb_group_owner_t me = nkb_self();
  if (nkb_same(&o, &me)) return true;     // another engine of this process
  if (o.pidns != me.pidns) return false;  // cannot be checked from here: the bind decides
  return o.start_ticks != 0 && nkb_start_ticks(o.pid) == o.start_ticks;
}

uint32_t nkb_group_free_run(const nkb_filter_t *f, uint32_t first, uint32_t count,
                           uint32_t *run_first) {
  assert(f != NULL && run_first != NULL);
  uint32_t best = 0, best_first = first, len = 0;
  for (uint32_t i = 0; i < count && first + i < NKB_FILTER_QUEUES; i++) {
    if (nkb_group_held(f, first + i)) {
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
