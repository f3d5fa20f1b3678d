// Checks ffi/ring_groups.c nkb_self's per-thread identity cache (nkb_self_cached), found
// wrong by a review:
// the cache is believed when its pid equals getpid(). A grandchild forked from a child that
// never called into ring_groups inherits the grandparent's cached identity; when the
// grandchild gets the grandparent's pid (the grandparent exited and its pid was reused:
// forced here with /proc/sys/kernel/ns_last_pid, root only), it names itself with the old
// process's start time. Its claimed queue then reads GONE to every other process, and its
// asks read as a dead process's. Prints "stale identity: failures N" and exits 0 when the
// grandchild's claim reads LIVE, as a fresh identity would make it.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nkb_net.h"

#define REUSE_TRIES 40u

typedef struct shared {
  volatile uint32_t p_pid;   // the grandparent, which cached its identity
  volatile uint32_t g_pid;   // the grandchild that got p_pid again (0: not yet)
  volatile uint32_t g_done;  // the grandchild claimed queue 1
  volatile uint32_t quit;    // the grandchild may exit
} shared_t;

static void sleep_ms(uint32_t ms) {
  struct timespec ts = {.tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L};
  nanosleep(&ts, 0);
}

static int set_last_pid(uint32_t pid) {
  int fd = open("/proc/sys/kernel/ns_last_pid", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[16];
  int n = snprintf(buf, sizeof(buf), "%u", pid);
  int ok = write(fd, buf, (size_t)n) == n ? 0 : -1;
  close(fd);
  return ok;
}

// The child C: forks until a grandchild gets P's pid; that one claims queue 1.
static void child_c(nkb_filter_t *f, shared_t *sh) {
  for (uint32_t i = 0; i < 200u && kill((pid_t)sh->p_pid, 0) == 0; i++) sleep_ms(10);
  sleep_ms(100);  // start times count in clock ticks (10 ms): the grandchild's must differ
  for (uint32_t t = 0; t < REUSE_TRIES; t++) {
    if (set_last_pid(sh->p_pid - 1u) != 0) _exit(4);
    pid_t g = fork();
    if (g < 0) _exit(5);
    if (g == 0) {
      if ((uint32_t)getpid() != sh->p_pid) _exit(9);
      nkb_group_claim(f, 1);  // its identity: the cached one, inherited from P
      sh->g_pid = (uint32_t)getpid();
      __atomic_store_n(&sh->g_done, 1u, __ATOMIC_SEQ_CST);
      for (uint32_t i = 0; i < 1000u && !sh->quit; i++) sleep_ms(10);
      _exit(0);
    }
    int st = 0;
    if ((uint32_t)g == sh->p_pid) {
      (void)waitpid(g, &st, 0);
      _exit(0);
    }
    (void)waitpid(g, &st, 0);
  }
  _exit(6);
}

int main(void) {
  setvbuf(stdout, 0, _IOLBF, 0);
  nkb_ctl_t *ctl = mmap(0, sizeof(nkb_ctl_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                        -1, 0);
  shared_t *sh = mmap(0, sizeof(shared_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                      -1, 0);
  if (ctl == MAP_FAILED || sh == MAP_FAILED) return 1;
  memset(ctl, 0, sizeof(*ctl));
  memset(sh, 0, sizeof(*sh));
  nkb_filter_t f;
  memset(&f, 0, sizeof(f));
  f.ctl = ctl;
  (void)prctl(PR_SET_CHILD_SUBREAPER, 1);  // C, orphaned when P exits, stays ours to reap
  pid_t p = fork();
  if (p < 0) return 1;
  if (p == 0) {
    // P: an nkb process; its thread caches its identity at the first record it writes.
    nkb_group_claim(&f, 0);
    nkb_group_release(&f, 0);
    sh->p_pid = (uint32_t)getpid();
    pid_t c = fork();  // C never calls into ring_groups: its copy of the cache stays P's
    if (c < 0) _exit(3);
    if (c == 0) child_c(&f, sh);
    _exit(0);
  }
  int st = 0;
  (void)waitpid(p, &st, 0);  // P's pid is free from here on
  for (uint32_t i = 0; i < 1000u && !__atomic_load_n(&sh->g_done, __ATOMIC_SEQ_CST); i++) {
    sleep_ms(10);
  }
  uint32_t failures = 0;
  if (!sh->g_done) {
    printf("  FAILED: no grandchild got pid %u again (setup)\n", sh->p_pid);
    failures++;
  } else {
    uint32_t pid = 0;
    uint32_t state = nkb_group_state(&f, 1, &pid);
    printf("grandchild pid %u (P was %u): queue 1 state %u (live %u, gone %u)\n", sh->g_pid,
           sh->p_pid, state, (uint32_t)NKB_GROUP_LIVE, (uint32_t)NKB_GROUP_GONE);
    if (state != NKB_GROUP_LIVE) {
      printf("  FAILED: a live holder's queue reads as a dead one's (stale cached identity)\n");
      failures++;
    }
    if (!nkb_group_held(&f, 1)) {
      printf("  FAILED: nkb_group_held: the queue reads free to others\n");
      failures++;
    }
  }
  sh->quit = 1;
  for (uint32_t i = 0; i < 8u; i++) {
    if (waitpid(-1, &st, 0) < 0 && errno == ECHILD) break;
  }
  printf("stale identity: failures %u\n", failures);
  return failures == 0 ? 0 : 2;
}
