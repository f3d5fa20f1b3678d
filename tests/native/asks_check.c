// Checks ffi/ring_groups.c's queue requests (nkb_ctl_t.asks) with a control block in
// shared anonymous memory instead of the filter's map, and forked children as the other
// processes: one record per process however often it asks; a holder takes each live ask
// once; a dead or stale asker costs no queue; a record given long ago is asked again; a
// full table hears nobody more until a record frees; nkb_group_waiting counts the others'
// given asks only. Built with UBSan traps and assertions on by tests/asks_native.test.ts;
// prints one line per check and exits 0 when all hold.
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nkb_net.h"

#define CHILD_WAIT_MS 10000  // a child quits when its parent says nothing for this long

static uint32_t g_failures;

static void check(int ok, const char *what) {
  if (!ok) {
    g_failures++;
    printf("  FAILED: %s\n", what);
  }
}

static void sleep_ms(uint32_t ms) {
  struct timespec ts = {.tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L};
  nanosleep(&ts, 0);
}

// Records whose pid is set (whether live or not).
static uint32_t records_set(const nkb_ctl_t *ctl) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < NKB_FILTER_ASKERS; i++) n += ctl->asks[i].who.pid != 0;
  return n;
}

static uint32_t records_of(const nkb_ctl_t *ctl, uint32_t pid) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < NKB_FILTER_ASKERS; i++) n += ctl->asks[i].who.pid == pid;
  return n;
}

// Another process: a child that runs one command byte at a time and answers a byte.
typedef struct asker {
  pid_t pid;
  int cmd;   // parent writes commands
  int resp;  // parent reads answers
} asker_t;

static void child_loop(nkb_filter_t *f, int cmd, int resp) {
  for (uint32_t round = 0; round < 1000u; round++) {
    struct pollfd p = {.fd = cmd, .events = POLLIN};
    if (poll(&p, 1, CHILD_WAIT_MS) <= 0) _exit(2);
    char c = 0;
    if (read(cmd, &c, 1) != 1) _exit(0);
    char out = 'k';
    if (c == 'a') nkb_group_ask(f);
    else if (c == 'u') nkb_group_unask(f);
    else if (c == 'w') out = (char)('0' + nkb_group_waiting(f));
    else if (c == 'q') _exit(0);
    if (write(resp, &out, 1) != 1) _exit(3);
  }
  _exit(0);
}

static asker_t asker_start(nkb_filter_t *f) {
  int to[2], from[2];
  if (pipe(to) != 0 || pipe(from) != 0) abort();
  asker_t a = {.pid = fork(), .cmd = to[1], .resp = from[0]};
  if (a.pid < 0) abort();
  if (a.pid == 0) {
    close(to[1]);
    close(from[0]);
    child_loop(f, to[0], from[1]);
  }
  close(to[0]);
  close(from[1]);
  return a;
}

static char asker_do(const asker_t *a, char c) {
  if (write(a->cmd, &c, 1) != 1) return 0;
  struct pollfd p = {.fd = a->resp, .events = POLLIN};
  if (poll(&p, 1, CHILD_WAIT_MS) <= 0) return 0;
  char out = 0;
  if (read(a->resp, &out, 1) != 1) return 0;
  return out;
}

// A child that has asked once.
static asker_t asker_asked(nkb_filter_t *f) {
  asker_t a = asker_start(f);
  check(asker_do(&a, 'a') == 'k', "child asks");
  return a;
}

static void asker_end(asker_t *a) {
  (void)asker_do(a, 'q');
  int st = 0;
  (void)waitpid(a->pid, &st, 0);
  close(a->cmd);
  close(a->resp);
  a->pid = 0;
}

static void reset(nkb_ctl_t *ctl) { memset(ctl->asks, 0, sizeof(ctl->asks)); }

int main(void) {
  setvbuf(stdout, 0, _IOLBF, 0);
  nkb_ctl_t *ctl = mmap(0, sizeof(nkb_ctl_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                        -1, 0);
  if (ctl == MAP_FAILED) return 1;
  memset(ctl, 0, sizeof(*ctl));
  nkb_filter_t f;
  memset(&f, 0, sizeof(f));
  f.ctl = ctl;
  uint32_t me = (uint32_t)getpid();

  uint32_t before = g_failures;
  {
    for (uint32_t i = 0; i < 5u; i++) nkb_group_ask(&f);
    check(records_set(ctl) == 1 && records_of(ctl, me) == 1, "five asks, one record");
    check(!nkb_group_take_ask(&f), "a process never takes its own ask");
    check(nkb_group_waiting(&f) == 0, "its own ask is not owed to it");
    nkb_group_unask(&f);
    check(records_set(ctl) == 0, "unasked: no record");
    nkb_group_unask(&f);  // twice: harmless
    check(records_set(ctl) == 0, "unasked twice");
  }
  printf("one record per process: failures %u\n", g_failures - before);

  before = g_failures;
  {
    asker_t a = asker_asked(&f);
    check(records_of(ctl, (uint32_t)a.pid) == 1, "the child's record");
    check(nkb_group_take_ask(&f), "a holder takes a live ask");
    check(!nkb_group_take_ask(&f), "and only once");
    check(nkb_group_waiting(&f) == 1, "the given ask is owed to the child");
    check(asker_do(&a, 'w') == '0', "not owed by the child to itself");
    check(asker_do(&a, 'a') == 'k', "renewed within the grace");
    check(!nkb_group_take_ask(&f), "still given");
    sleep_ms(NKB_GIVE_GRACE_MS + 100u);
    check(asker_do(&a, 'a') == 'k', "renewed after the grace, no queue yet");
    check(nkb_group_take_ask(&f), "asked again: taken again");
    check(asker_do(&a, 'u') == 'k', "child unasks (got its queue)");
    check(records_set(ctl) == 0 && nkb_group_waiting(&f) == 0, "nothing left");
    asker_end(&a);
  }
  printf("live asker: failures %u\n", g_failures - before);

  before = g_failures;
  {
    reset(ctl);
    asker_t a = asker_asked(&f);
    asker_end(&a);  // gone, its record left behind (as after SIGKILL)
    check(records_set(ctl) == 1, "a dead asker's record stays");
    check(!nkb_group_take_ask(&f), "no queue for a dead asker");
    check(nkb_group_waiting(&f) == 0, "nothing owed to a dead asker");
    asker_t b = asker_asked(&f);
    check(records_set(ctl) == 1 && records_of(ctl, (uint32_t)b.pid) == 1, "it reuses the record");
    check(nkb_group_take_ask(&f), "its ask is taken");
    asker_end(&b);
  }
  printf("dead asker: failures %u\n", g_failures - before);

  before = g_failures;
  {
    reset(ctl);
    asker_t a = asker_asked(&f);
    sleep_ms(NKB_ASK_TTL_MS + 100u);  // alive, but no longer renewing
    check(!nkb_group_take_ask(&f), "no queue for a stale ask");
    asker_t b = asker_asked(&f);
    check(records_of(ctl, (uint32_t)b.pid) == 1 && records_set(ctl) == 1, "it reuses the record");
    check(asker_do(&a, 'a') == 'k', "the first renews");
    check(records_set(ctl) == 2, "and asks afresh");
    check(nkb_group_take_ask(&f) && nkb_group_take_ask(&f) && !nkb_group_take_ask(&f),
          "two live asks, each taken once");
    check(nkb_group_waiting(&f) == 2, "both owed");
    asker_end(&a);
    asker_end(&b);
    check(nkb_group_waiting(&f) == 0, "gone: nothing owed");
  }
  printf("stale asker: failures %u\n", g_failures - before);

  before = g_failures;
  {
    reset(ctl);
    asker_t kids[NKB_FILTER_ASKERS + 1u];
    for (uint32_t i = 0; i <= NKB_FILTER_ASKERS; i++) {
      kids[i] = asker_start(&f);
      check(asker_do(&kids[i], 'a') == 'k', "child asks");
    }
    check(records_set(ctl) == NKB_FILTER_ASKERS, "every record taken");
    check(records_of(ctl, (uint32_t)kids[NKB_FILTER_ASKERS].pid) == 0, "one too many: not heard");
    check(asker_do(&kids[0], 'u') == 'k', "one unasks");
    check(asker_do(&kids[NKB_FILTER_ASKERS], 'a') == 'k', "the last asks again");
    check(records_of(ctl, (uint32_t)kids[NKB_FILTER_ASKERS].pid) == 1, "heard now");
    uint32_t taken = 0;
    for (uint32_t i = 0; i < 2u * NKB_FILTER_ASKERS && nkb_group_take_ask(&f); i++) taken++;
    check(taken == NKB_FILTER_ASKERS, "each live ask taken once");
    for (uint32_t i = 0; i <= NKB_FILTER_ASKERS; i++) asker_end(&kids[i]);
  }
  printf("full table: failures %u\n", g_failures - before);

  before = g_failures;
  {
    // Written by a hostile process: deadlines far ahead or marked 0 are no live ask, and a
    // given time ahead of now is cleared at the asker's next renewal.
    reset(ctl);
    asker_t a = asker_asked(&f);
    uint32_t i = 0;
    while (i < NKB_FILTER_ASKERS && ctl->asks[i].who.pid != (uint32_t)a.pid) i++;
    check(i < NKB_FILTER_ASKERS, "its record");
    if (i < NKB_FILTER_ASKERS) {
      uint32_t until = ctl->asks[i].until_ms;
      ctl->asks[i].until_ms = until + 10u * NKB_ASK_TTL_MS;
      check(!nkb_group_take_ask(&f), "a deadline far ahead is not believed");
      ctl->asks[i].until_ms = 0;
      check(!nkb_group_take_ask(&f), "a record being claimed is no ask");
      check(asker_do(&a, 'a') == 'k', "renewed");
      ctl->asks[i].given_ms = until + 100000u;
      check(asker_do(&a, 'a') == 'k', "renewed again");
      check(ctl->asks[i].given_ms == 0 && nkb_group_take_ask(&f), "a given time ahead is cleared");
    }
    asker_end(&a);
  }
  printf("hostile records: failures %u\n", g_failures - before);

  before = g_failures;
  {
    reset(ctl);
    nkb_group_claim(&f, 2);  // held by this process
    uint32_t first = 9;
    check(nkb_group_free_run(&f, 0, 4, true, &first) == 2 && first == 0, "free run before a held queue");
    check(nkb_group_held(&f, 2) && !nkb_group_held(&f, 3), "held and free");
    ctl->owners[3] = ctl->owners[2];
    ctl->owners[3].pid = 0x3ffffff0u;  // this namespace, no such process: free
    check(!nkb_group_held(&f, 3), "a dead holder's queue is free");
    ctl->owners[3].pidns ^= 1u;  // another pid namespace: cannot be checked, the bind decides
    check(!nkb_group_held(&f, 3), "another namespace's record is advice");
    uint32_t pid = 0;
    check(nkb_group_state(&f, 3, &pid) == NKB_GROUP_OTHER_NS && pid == 0x3ffffff0u, "state: other");
    ctl->owners[3].pidns ^= 1u;
    check(nkb_group_state(&f, 3, &pid) == NKB_GROUP_GONE, "state: gone");
    check(nkb_group_state(&f, 2, &pid) == NKB_GROUP_LIVE && pid == me, "state: live");
    check(nkb_group_state(&f, 1, &pid) == NKB_GROUP_FREE && pid == 0, "state: free");
    check(nkb_group_state(&f, 64, &pid) == NKB_GROUP_FREE, "state: past the table");
    nkb_group_release(&f, 2);
    check(!nkb_group_held(&f, 2) && nkb_group_free_run(&f, 0, 4, true, &first) == 4, "released");
    // Another pid namespace's queues: free only for the bind to decide (nkb_engine_open tries
    // a longer run through them first, then the known-free one).
    nkb_group_owner_t other = ctl->owners[3];
    other.pid = 4242u;
    other.pidns ^= 1u;
    ctl->owners[1] = other;
    check(nkb_group_free_run(&f, 0, 4, true, &first) == 2 && first == 2, "known free");
    check(nkb_group_free_run(&f, 0, 4, false, &first) == 4 && first == 0, "the bind decides");
    for (uint32_t q = 0; q < 4u; q++) ctl->owners[q] = other;
    check(nkb_group_free_run(&f, 0, 4, true, &first) == 0, "none known free");
    check(nkb_group_free_run(&f, 0, 4, false, &first) == 4 && first == 0, "all for the bind");
    ctl->owners[3].pid = 0;
    check(nkb_group_free_run(&f, 0, 4, true, &first) == 1 && first == 3, "the one given up");
    memset(ctl->owners, 0, sizeof(ctl->owners));
  }
  printf("owners: failures %u\n", g_failures - before);

  // The contract with src/phys.ts's GROUP_STATE (tests/asks_native.test.ts compares).
  printf("state.free %u\nstate.live %u\nstate.otherNamespace %u\nstate.gone %u\n",
         NKB_GROUP_FREE, NKB_GROUP_LIVE, NKB_GROUP_OTHER_NS, NKB_GROUP_GONE);
  printf("failures %u\n", g_failures);
  return g_failures == 0 ? 0 : 1;
}
