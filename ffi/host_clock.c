// The host's clocks and process start times, as seen from a time namespace (host_clock.h).
#define _GNU_SOURCE
#include "host_clock.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NKB_TIMENS_MAX 256u  // bytes of /proc/self/timens_offsets read: two lines of about 30
#define NKB_STAT_MAX 1024u   // bytes of /proc/PID/stat read: the line is about 300
// The kernel keeps offsets within +-KTIME_MAX/2 ns: anything beyond is not its file.
#define NKB_TIMENS_SEC_MAX 4611686018LL

typedef struct nkb_timens {
  int64_t mono_ms;     // this process's CLOCK_MONOTONIC minus the host's, in ms
  int64_t boot_ticks;  // the same for CLOCK_BOOTTIME, in clock ticks (USER_HZ)
  uint32_t known;      // 1 once read (no file, no time namespaces: zeros)
} nkb_timens_t;

// Per thread (no lock) and read once; forgotten in a fork's child, which may live in a time
// namespace its parent unshared (the namespace applies to children only).
static __thread nkb_timens_t nkb_timens_cached __attribute__((tls_model("initial-exec")));
static pthread_once_t nkb_timens_once = PTHREAD_ONCE_INIT;

// Nanoseconds per clock tick (USER_HZ, the unit of /proc start times).
static int64_t nkb_tick_ns(void) {
  long hz = sysconf(_SC_CLK_TCK);
  if (hz <= 0 || hz > 1000000000L) hz = 100;  // USER_HZ on every Linux Deno runs on
  return 1000000000LL / hz;
}

static void nkb_timens_forget(void) { memset(&nkb_timens_cached, 0, sizeof(nkb_timens_cached)); }

static void nkb_timens_watch_forks(void) { (void)pthread_atfork(0, 0, nkb_timens_forget); }

// The "NAME SECONDS NANOSECONDS" line of timens_offsets as ns; 0 when absent or not the
// kernel's format.
static int64_t nkb_timens_line(const char *buf, const char *name) {
  assert(buf != NULL && name != NULL);
  const size_t len = strlen(name);
  for (const char *p = buf; p != NULL && *p != 0; p = strchr(p, '\n')) {  // bounded: buf's lines
    if (*p == '\n') p++;
    if (strncmp(p, name, len) != 0 || (p[len] != ' ' && p[len] != '\t')) continue;
    long long sec = 0, nsec = 0;
    if (sscanf(p + len, " %lld %lld", &sec, &nsec) != 2) return 0;
    if (sec < -NKB_TIMENS_SEC_MAX || sec > NKB_TIMENS_SEC_MAX) return 0;
    if (nsec < 0 || nsec >= 1000000000LL) return 0;
    return (int64_t)sec * 1000000000LL + (int64_t)nsec;
  }
  return 0;
}

uint64_t nkb_ns_ino(const char *path) {
  assert(path != NULL);
  struct stat st;
  return stat(path, &st) == 0 ? (uint64_t)st.st_ino : 0u;
}

static nkb_timens_t nkb_timens(void) {
  (void)pthread_once(&nkb_timens_once, nkb_timens_watch_forks);
  if (nkb_timens_cached.known) return nkb_timens_cached;
  nkb_timens_t t = {.mono_ms = 0, .boot_ticks = 0, .known = 1};
  // timens_offsets shows the namespace of our children: after an unshare(CLONE_NEWTIME)
  // without a fork it is not ours, and our own offsets cannot be read (taken as none).
  uint64_t own = nkb_ns_ino("/proc/self/ns/time");
  if (own != 0 && own != nkb_ns_ino("/proc/self/ns/time_for_children")) {
    nkb_timens_cached = t;
    return t;
  }
  // Our own file: no other user writes it; O_NONBLOCK, no link followed all the same.
  int fd = open("/proc/self/timens_offsets", O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    // Without the file (no CONFIG_TIME_NS) there are no offsets; any other failure (out of
    // descriptors) is not remembered: the next call reads again.
    if (errno == ENOENT) nkb_timens_cached = t;
    t.known = 0;
    return t;
  }
  char buf[NKB_TIMENS_MAX + 1];
  ssize_t n = read(fd, buf, NKB_TIMENS_MAX);
  (void)close(fd);  // read only: nothing to report
  if (n <= 0) {
    t.known = 0;
    return t;  // not remembered either
  }
  buf[n] = 0;
  t.mono_ms = nkb_timens_line(buf, "monotonic") / 1000000LL;
  t.boot_ticks = nkb_timens_line(buf, "boottime") / nkb_tick_ns();
  nkb_timens_cached = t;
  assert(nkb_timens_cached.known == 1);
  return t;
}

uint32_t nkb_host_mono_ms(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return 0;  // never on Linux (vDSO clock)
  uint64_t own = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
  return (uint32_t)(own - (uint64_t)nkb_timens().mono_ms);
}

// A start time as /proc shows it to this process, in the host's ticks (host_clock.h). Never 0
// nor UINT64_MAX for a value that was neither: callers use both as marks.
static uint64_t nkb_host_start_ticks(uint64_t shown) {
  if (shown == 0 || shown == UINT64_MAX) return shown;
  const int64_t offset = nkb_timens().boot_ticks;
  // Under a negative offset, a process that started before the namespace's zero point shows
  // (2^64 + start + offset) ns in ticks: the kernel's arithmetic is unsigned.
  const uint64_t wrap = UINT64_MAX / (uint64_t)nkb_tick_ns();
  if (offset < 0 && shown > wrap / 2u) shown -= wrap;
  uint64_t host = shown - (uint64_t)offset;
  if (host == 0) return 1;
  if (host == UINT64_MAX) return UINT64_MAX - 1u;
  assert(host != 0 && host != UINT64_MAX);
  return host;
}

uint64_t nkb_proc_start_ticks(const char *path) {
  assert(path != NULL);
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) return errno == ENOENT || errno == ESRCH ? 0 : NKB_START_UNKNOWN;
  char buf[NKB_STAT_MAX + 1];
  ssize_t n = read(fd, buf, NKB_STAT_MAX);
  int read_errno = errno;
  (void)close(fd);  // read only: nothing to report
  if (n < 0 && read_errno == ESRCH) return 0;  // it exited between the open and the read
  if (n <= 0) return NKB_START_UNKNOWN;
  buf[n] = 0;
  // The command name may hold any byte, ')' and spaces included: fields start after the
  // last ')'; the start time is field 22, the 20th after it.
  const char *p = strrchr(buf, ')');
  for (uint32_t field = 2; field < 22 && p != NULL; field++) p = strchr(p + 1, ' ');
  if (p == NULL) return NKB_START_UNKNOWN;
  char *end = NULL;
  unsigned long long v = strtoull(p + 1, &end, 10);
  if (end == p + 1 || v == NKB_START_UNKNOWN) return NKB_START_UNKNOWN;  // not the kernel's
  // Shown with this reader's boottime offset added: in the host's ticks, a process in a time
  // namespace judges others, and names itself, as every other process does.
  return nkb_host_start_ticks((uint64_t)v);
}
