// The host-wide registry's writer side (layout and rules: registry.h). The process maps
// its own file once; a socket's counters live in its slot, so publishing them costs the
// data path nothing: the increments it always did now land in shared memory.
#define _GNU_SOURCE
#include "registry.h"

#include <arpa/inet.h>
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "host_clock.h"

#define NKB_REG_MAX_DIR_ENTRIES 8192u  // bound on the dead-file sweep
#define NKB_REG_PATH_MAX 512u
#define NKB_REG_ASIDE_TRIES 8u  // renames of a squatted directory before giving up

_Static_assert(NKB_REG_SLOTS == NKB_MAX_SOCKS, "one slot per socket table entry");
_Static_assert(NKB_REG_QUEUE_LIMIT == NKB_FILTER_QUEUES, "the parser's queue bound");
// A slot's reason with its NUL: nkb_reg_note's bound on the bytes it reads.
#define NKB_REG_REASON_LEN ((uint32_t)sizeof(((nkb_reg_slot_t *)0)->reason))
_Static_assert(NKB_REG_REASON_LEN == 32u, "ffi/nkb.h documents 31 bytes and a NUL");

static pthread_once_t g_reg_once = PTHREAD_ONCE_INIT;
static nkb_reg_header_t *g_reg = 0;  // null: no registry
static int g_reg_dirfd = -1;         // R/<euid>, kept for the process's life
static char g_reg_name[NKB_REG_NAME_MAX];
static char g_reg_path[NKB_REG_PATH_MAX];
static pid_t g_reg_pid = 0;

static nkb_reg_slot_t *nkb_reg_slot(uint32_t idx) {
  assert(g_reg != 0 && idx < NKB_REG_SLOTS);
  return (nkb_reg_slot_t *)((uint8_t *)g_reg + NKB_REG_HEADER_SIZE +
                            (size_t)idx * NKB_REG_SLOT_SIZE);
}

// One line on stderr: the registry is an observability aid, its failures never fail the
// caller, but they are never silent either.
__attribute__((format(printf, 1, 2))) static void nkb_reg_warn(const char *fmt, ...) {
  char line[640];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  if (n < 0) return;
  fprintf(stderr, "nkb: warning: registry: %s\n", line);
}

static uint64_t nkb_unix_ms(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return 0;
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t nkb_start_ticks(int32_t pid) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  return nkb_proc_start_ticks(path);  // host ticks, 0 gone, NKB_START_UNKNOWN (host_clock.h)
}

// True when /proc is our pid namespace's (it names us by getpid()): only then do its
// /proc/<pid> entries say which of our namespace's processes live.
static bool nkb_proc_is_ours(void) {
  char link[32];
  ssize_t n = readlink("/proc/self", link, sizeof(link) - 1);
  if (n <= 0) return false;
  link[n] = 0;
  char *end = 0;
  long pid = strtol(link, &end, 10);
  return *end == 0 && pid == (long)getpid();
}

// "<pidns>-<pid>-<start>.reg" into its parts; false for any other name.
static bool nkb_reg_name_parse(const char *name, uint64_t *pidns, uint64_t *pid,
                               uint64_t *start) {
  uint64_t v[3] = {0, 0, 0};
  const char *p = name;
  for (uint32_t i = 0; i < 3u; i++) {
    if (*p < '0' || *p > '9') return false;
    char *end = 0;
    errno = 0;
    v[i] = strtoull(p, &end, 10);
    if (errno != 0 || end == p) return false;
    if (*end != (i < 2u ? '-' : '.')) return false;
    p = end + 1;
  }
  if (strcmp(p, "reg") != 0 || v[1] == 0 || v[1] > INT32_MAX) return false;
  *pidns = v[0], *pid = v[1], *start = v[2];
  return true;
}

// Removes the files of our pid namespace's processes that are gone (or whose pid lives
// on with another start time): names only, no file is opened. Other namespaces' files
// are not ours to judge.
static void nkb_reg_sweep(int dirfd, uint64_t pidns) {
  if (!nkb_proc_is_ours()) return;
  int fd = dup(dirfd);
  if (fd < 0) return;
  DIR *d = fdopendir(fd);
  if (d == 0) {
    close(fd);
    return;
  }
  rewinddir(d);
  for (uint32_t i = 0; i < NKB_REG_MAX_DIR_ENTRIES; i++) {
    struct dirent *ent = readdir(d);
    if (ent == 0) break;
    uint64_t ns = 0, pid = 0, start = 0;
    if (!nkb_reg_name_parse(ent->d_name, &ns, &pid, &start) || ns != pidns) continue;
    uint64_t now = nkb_start_ticks((int32_t)pid);
    // Alive (a tick either way: host_clock.h), or cannot tell.
    if (nkb_ticks_near(now, start) || now == NKB_START_UNKNOWN) continue;
    (void)unlinkat(dirfd, ent->d_name, 0);
  }
  closedir(d);
}

static void nkb_reg_fill_header(nkb_reg_header_t *h, uint64_t start, uint64_t pidns) {
  h->version = NKB_REG_VERSION;
  h->header_size = NKB_REG_HEADER_SIZE;
  h->slot_size = NKB_REG_SLOT_SIZE;
  h->slot_count = NKB_REG_SLOTS;
  h->pid = (uint32_t)getpid();
  h->uid = (uint32_t)geteuid();
  h->start_ticks = start;
  h->created_ms = nkb_unix_ms();
  h->netns_ino = nkb_ns_ino("/proc/self/ns/net");
  h->pidns_ino = pidns;
  // The magic last: a reader that sees it sees the rest.
  __atomic_thread_fence(__ATOMIC_RELEASE);
  memcpy(h->magic, NKB_REG_MAGIC, 8);
}

static uint32_t nkb_reg_mode(void) {
  const char *m = getenv("NKB_REGISTRY_MODE");
  if (m == 0 || *m == 0) return NKB_REG_DEFAULT_MODE;
  char *end = 0;
  unsigned long v = strtoul(m, &end, 8);
  // Owner read-write always; nobody else may write another process's counters.
  if (*end != 0 || v > 0777u) return NKB_REG_DEFAULT_MODE;
  return ((uint32_t)v & 0644u) | 0600u;
}

static bool nkb_reg_set_aside(int rfd, const char *dir, const char *name,
                              const struct stat *judged, bool loud);

// R is not a directory: a link, a file or a FIFO another user planted before any nkb
// process ran (else every root process would publish nothing: root's sockets hidden).
// A root process renames another user's object aside in R's parent, as it does a squatted
// R/<uid>; true when the caller should look again (moved, or gone meanwhile).
static bool nkb_reg_root_aside(const char *dir) {
  char parent[NKB_REG_PATH_MAX];
  int n = snprintf(parent, sizeof(parent), "%s", dir);
  if (n <= 0 || (uint32_t)n >= sizeof(parent)) return false;
  char *slash = strrchr(parent, '/');
  const char *base = slash == 0 ? dir : dir + (slash - parent) + 1;
  if (*base == 0 || strcmp(base, ".") == 0 || strcmp(base, "..") == 0) return false;
  if (slash == 0) snprintf(parent, sizeof(parent), ".");
  else slash[slash == parent ? 1 : 0] = 0;  // "/nkb": the parent is "/"
  int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (pfd < 0) return false;
  struct stat judged;
  bool again = true;
  if (fstatat(pfd, base, &judged, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(judged.st_mode)) {
    // Root's own link or file there is root's choice: left alone (no registry, warned).
    again = judged.st_uid != 0 && nkb_reg_set_aside(pfd, parent, base, &judged, true);
  }
  close(pfd);
  return again;
}

// R: a real directory, created 01777 (sticky, like /tmp) by whoever comes first. A root
// process takes it back from any other owner through the opened fd (no path race): the
// owner of R could otherwise rename or delete root's entries. A non-root process accepts
// R owned by root or by itself only.
static int nkb_reg_open_root(const char *dir) {
  bool made = false;
  int fd = -1;
  for (uint32_t t = 0; t < NKB_REG_ASIDE_TRIES && fd < 0; t++) {
    made = mkdir(dir, 01777) == 0;
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0 || (errno != ENOTDIR && errno != ELOOP) || geteuid() != 0) break;
    if (!nkb_reg_root_aside(dir)) break;
  }
  if (fd < 0) {
    nkb_reg_warn("%s: cannot open it as a directory (%s): no registry", dir, strerror(errno));
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISDIR(st.st_mode)) {
    nkb_reg_warn("%s: not a directory: no registry", dir);
    close(fd);
    return -1;
  }
  uid_t euid = geteuid();
  bool ok = true;
  errno = 0;
  if (euid == 0 && st.st_uid != 0) {
    nkb_reg_warn("%s: owned by uid %u, taken back (root, 01777)", dir, (unsigned)st.st_uid);
    ok = fchown(fd, 0, 0) == 0 && fchmod(fd, 01777) == 0;
  } else if (st.st_uid != 0 && st.st_uid != euid) {
    nkb_reg_warn("%s: owned by uid %u (neither root nor us): no registry", dir,
                 (unsigned)st.st_uid);
    close(fd);
    return -1;
  } else if (made || ((st.st_mode & 0002) != 0 && (st.st_mode & S_ISVTX) == 0)) {
    // Our umask trimmed the mode, or anyone may rename others' entries: sticky it is.
    ok = st.st_uid != euid || fchmod(fd, made ? 01777 : (st.st_mode & 07777) | S_ISVTX) == 0;
  }
  if (!ok) {
    if (errno != 0) nkb_reg_warn("%s: cannot secure it (%s): no registry", dir, strerror(errno));
    close(fd);
    return -1;
  }
  return fd;
}

// renameat2(2) through syscall(2): glibc wraps it only from 2.28, and the prebuilt library
// targets glibc 2.27 (the oldest Deno runs on). The system call exists since Linux 3.15.
#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1u << 0)  // <linux/fs.h>; glibc's headers have it from 2.28
#endif
static int nkb_rename_noreplace(int dfd, const char *from, const char *to) {
  return (int)syscall(SYS_renameat2, dfd, from, dfd, to, RENAME_NOREPLACE);
}

// Renames the squatter of R/<uid> (the object judged, identified by its inode) aside,
// root only, to ".<uid>.squatted.<pid>.<random>". Two root writers may judge the same
// squatter at once: when the one that renames second finds it moved the other's fresh
// directory instead, it puts that back. loud: a line on stderr (a writer's; a reader
// says it in its scan's warnings instead).
static bool nkb_reg_set_aside(int rfd, const char *dir, const char *name,
                              const struct stat *judged, bool loud) {
  for (uint32_t t = 0; t < NKB_REG_ASIDE_TRIES; t++) {
    uint32_t r = 0;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) {
      r = (uint32_t)nkb_unix_ms() ^ (t * 2654435761u);
    }
    char aside[64];
    snprintf(aside, sizeof(aside), ".%s.squatted.%d.%08x", name, (int)getpid(), r);
    if (nkb_rename_noreplace(rfd, name, aside) == 0) {
      struct stat moved;
      if (fstatat(rfd, aside, &moved, AT_SYMLINK_NOFOLLOW) == 0 &&
          (moved.st_ino != judged->st_ino || moved.st_dev != judged->st_dev)) {
        // Another root writer's fresh directory: put it back. Someone may have taken the
        // name meanwhile (R is 01777): then it stays aside, and this says so.
        if (nkb_rename_noreplace(rfd, aside, name) == 0) return true;
        if (loud) nkb_reg_warn("%s/%s: cannot put %s back (%s)", dir, name, aside, strerror(errno));
        return false;
      }
      if (loud) nkb_reg_warn("%s/%s: squatted by another user, renamed to %s", dir, name, aside);
      return true;
    }
    if (errno == ENOENT) return true;  // already moved (by another root writer): look again
    if (errno != EEXIST) break;
  }
  if (loud) {
    nkb_reg_warn("%s/%s: squatted and cannot be renamed aside (%s): no registry", dir, name,
                 strerror(errno));
  }
  return false;
}

// Checks an opened R/<uid>: ours and writable by nobody else (fixing our own mode).
static bool nkb_reg_user_dir_ok(int fd, uint32_t dmode, bool made) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid()) return false;
  uint32_t want = made ? dmode : (((uint32_t)st.st_mode & 0755u) | dmode);
  if (((uint32_t)st.st_mode & 07777u) != want && fchmod(fd, want) != 0) return false;
  return true;
}

// R/<euid>: created dmode, opened without following links, owned by us. Squatted (another
// owner, a link, a file): a root process renames it aside and retries (bounded); any
// other process publishes nothing.
static int nkb_reg_open_user(int rfd, const char *dir, uint32_t mode) {
  char name[16];
  snprintf(name, sizeof(name), "%u", (unsigned)geteuid());
  uint32_t dmode = (mode & 0044u) != 0 ? 0755u : 0700u;
  for (uint32_t t = 0; t < NKB_REG_ASIDE_TRIES; t++) {
    bool made = mkdirat(rfd, name, dmode) == 0;
    int fd = openat(rfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    struct stat judged;  // the squatter, as judged: only this object is renamed aside
    if (fd >= 0) {
      if (nkb_reg_user_dir_ok(fd, dmode, made)) return fd;
      int rc = fstat(fd, &judged);
      close(fd);
      if (rc != 0) continue;
    } else if (errno == ENOTDIR || errno == ELOOP) {
      if (fstatat(rfd, name, &judged, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone meanwhile
    } else {
      nkb_reg_warn("%s/%s: cannot open (%s): no registry", dir, name, strerror(errno));
      return -1;
    }
    if (geteuid() != 0) {
      nkb_reg_warn("%s/%s: squatted (not our directory, or writable by others): no registry",
                   dir, name);
      return -1;
    }
    if (!nkb_reg_set_aside(rfd, dir, name, &judged, true)) return -1;
  }
  nkb_reg_warn("%s/%s: squatted again after %u renames: no registry", dir, name,
               NKB_REG_ASIDE_TRIES);
  return -1;
}

// R/<uid> of another user, judged as a reader judges it (ffi/registry_read.c): a
// directory owned by uid, closed to group and others. Anything else (another owner's
// directory, a link, a file, a FIFO) hides uid's processes from every reader and, since
// uid's own writer cannot rename a squatter away, for good: root sets it aside so that
// uid's next process publishes. 0: fine or absent; 1: set aside (or gone meanwhile);
// -EPERM (not root), another -errno, or -EBUSY (could not rename it aside).
int32_t nkb_reg_repair_user(int rfd, const char *dir, uint32_t uid, bool loud) {
  assert(rfd >= 0 && dir != 0);
  if (geteuid() != 0) return -EPERM;
  char name[16];
  snprintf(name, sizeof(name), "%u", (unsigned)uid);
  struct stat judged;  // only this object is renamed aside
  int fd = openat(rfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd >= 0) {
    int rc = fstat(fd, &judged);
    int err = errno;
    close(fd);
    if (rc != 0) return -err;
    if (S_ISDIR(judged.st_mode) && judged.st_uid == uid && (judged.st_mode & 0022) == 0) {
      return 0;
    }
  } else if (errno == ENOTDIR || errno == ELOOP) {
    if (fstatat(rfd, name, &judged, AT_SYMLINK_NOFOLLOW) != 0) return errno == ENOENT ? 1 : -errno;
  } else {
    return errno == ENOENT ? 0 : -errno;
  }
  return nkb_reg_set_aside(rfd, dir, name, &judged, loud) ? 1 : -EBUSY;
}

// A root writer at start repairs every other user's squatted R/<uid> (its own is
// nkb_reg_open_user's): one bounded pass over R's names, one fstat per numeric name.
static void nkb_reg_repair_tree(int rfd, const char *dir) {
  assert(geteuid() == 0);
  int fd = dup(rfd);
  if (fd < 0) return;
  DIR *d = fdopendir(fd);
  if (d == 0) {
    close(fd);
    return;
  }
  uint32_t repaired = 0;
  for (uint32_t i = 0; i < NKB_REG_MAX_DIR_ENTRIES; i++) {
    struct dirent *ent = readdir(d);
    if (ent == 0) break;
    const char *n = ent->d_name;
    char *end = 0;
    errno = 0;
    unsigned long long uid = strtoull(n, &end, 10);
    // Canonical decimal uids only ("0", "65534"; never "007", "+1", ".0.squatted...").
    if (*n < '0' || *n > '9' || (*n == '0' && n[1] != 0) || *end != 0 || errno != 0 ||
        uid > UINT32_MAX || uid == 0) {
      continue;
    }
    if (nkb_reg_repair_user(rfd, dir, (uint32_t)uid, true) == 1) repaired++;
  }
  closedir(d);
  assert(repaired <= NKB_REG_MAX_DIR_ENTRIES);
}

// Creates and maps our file in R/<euid>, its whole size reserved first: a full file
// system is an error here (a warning, no registry), never a SIGBUS on a later write.
static nkb_reg_header_t *nkb_reg_create(int dfd, const char *where, uint32_t mode) {
  const char *name = g_reg_name;
  int fd = openat(dfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0 && errno == EEXIST) {  // our own directory: a leftover of this very process
    (void)unlinkat(dfd, name, 0);
    fd = openat(dfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  }
  if (fd < 0) {
    nkb_reg_warn("%s/%s: cannot create (%s): no registry", where, name, strerror(errno));
    return 0;
  }
  struct stat st;
  int err = 0;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) err = EPERM;
  if (err == 0 && fchmod(fd, mode) != 0) err = errno;
  if (err == 0) err = posix_fallocate(fd, 0, (off_t)NKB_REG_FILE_SIZE);
  void *map = MAP_FAILED;
  if (err == 0) {
    map = mmap(0, NKB_REG_FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) err = errno;
  }
  close(fd);
  if (err != 0) {
    (void)unlinkat(dfd, name, 0);
    nkb_reg_warn("%s/%s: cannot reserve %u bytes (%s): no registry for this process, "
                 "bypass unaffected", where, name, (unsigned)NKB_REG_FILE_SIZE, strerror(err));
    return 0;
  }
  assert(map != MAP_FAILED);
  return (nkb_reg_header_t *)map;
}

static void nkb_reg_open(void) {
  const char *dir = getenv("NKB_REGISTRY_DIR");
  if (dir != 0 && strcmp(dir, "off") == 0) return;
  if (dir == 0 || *dir == 0) dir = NKB_REG_DEFAULT_DIR;
  if (strlen(dir) > NKB_REG_PATH_MAX - NKB_REG_NAME_MAX - 16u) {
    nkb_reg_warn("NKB_REGISTRY_DIR is longer than %u bytes: no registry",
                 NKB_REG_PATH_MAX - NKB_REG_NAME_MAX - 16u);
    return;
  }
  uint64_t start = nkb_proc_start_ticks("/proc/self/stat");
  uint64_t pidns = nkb_ns_ino("/proc/self/ns/pid");
  if (start == 0 || start == NKB_START_UNKNOWN || pidns == 0) {
    // Without them no reader could tell our file from a dead process's.
    nkb_reg_warn("cannot read /proc/self (start time, pid namespace): no registry");
    return;
  }
  int rfd = nkb_reg_open_root(dir);
  if (rfd < 0) return;
  if (geteuid() == 0) nkb_reg_repair_tree(rfd, dir);
  uint32_t mode = nkb_reg_mode();
  int ufd = nkb_reg_open_user(rfd, dir, mode);
  close(rfd);
  if (ufd < 0) return;
  nkb_reg_sweep(ufd, pidns);
  pid_t pid = getpid();
  snprintf(g_reg_name, sizeof(g_reg_name), "%llu-%d-%llu.reg", (unsigned long long)pidns,
           (int)pid, (unsigned long long)start);
  char where[NKB_REG_PATH_MAX];
  snprintf(where, sizeof(where), "%s/%u", dir, (unsigned)geteuid());
  nkb_reg_header_t *map = nkb_reg_create(ufd, where, mode);
  if (map == 0) {
    close(ufd);
    return;
  }
  nkb_reg_fill_header(map, start, pidns);
  snprintf(g_reg_path, sizeof(g_reg_path), "%s/%s", where, g_reg_name);
  g_reg_dirfd = ufd;
  g_reg_pid = pid;
  __atomic_store_n(&g_reg, map, __ATOMIC_RELEASE);
}

// The file goes with the process (a killed one leaves it to the sweep).
__attribute__((destructor)) static void nkb_reg_remove(void) {
  if (g_reg != 0 && g_reg_pid == getpid()) (void)unlinkat(g_reg_dirfd, g_reg_name, 0);
}

void nkb_reg_init(void) {
  int rc = pthread_once(&g_reg_once, nkb_reg_open);
  assert(rc == 0);
  (void)rc;
}

static void nkb_slot_begin(nkb_reg_slot_t *sl) {
  uint32_t seq = __atomic_load_n(&sl->seq, __ATOMIC_RELAXED);
  assert((seq & 1u) == 0);
  __atomic_store_n(&sl->seq, seq + 1u, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_RELEASE);
}

static void nkb_slot_end(nkb_reg_slot_t *sl) {
  uint32_t seq = __atomic_load_n(&sl->seq, __ATOMIC_RELAXED);
  assert((seq & 1u) == 1u);
  __atomic_store_n(&sl->seq, seq + 1u, __ATOMIC_RELEASE);
}

uint64_t *nkb_reg_take(uint32_t idx, uint64_t sock_ino, uint64_t netns_ino, uint64_t *fallback) {
  nkb_reg_init();
  if (g_reg == 0 || idx >= NKB_REG_SLOTS) return fallback;
  nkb_reg_slot_t *sl = nkb_reg_slot(idx);
  nkb_slot_begin(sl);
  // Everything but seq: a reader must never see it even (stable) while the slot is written.
  memset((uint8_t *)sl + offsetof(nkb_reg_slot_t, in_use), 0,
         NKB_REG_SLOT_SIZE - offsetof(nkb_reg_slot_t, in_use));
  assert((__atomic_load_n(&sl->seq, __ATOMIC_RELAXED) & 1u) == 1u);
  sl->created_ms = nkb_unix_ms();
  sl->in_use = 1;
  sl->sock_ino = sock_ino;
  sl->netns_ino = netns_ino;
  nkb_slot_end(sl);
  return sl->stats;
}

void nkb_reg_release(uint32_t idx) {
  if (g_reg == 0 || idx >= NKB_REG_SLOTS) return;
  nkb_reg_slot_t *sl = nkb_reg_slot(idx);
  nkb_slot_begin(sl);
  sl->in_use = 0;
  nkb_slot_end(sl);
}

void nkb_reg_groups(uint32_t idx, uint32_t group_be, uint32_t groups) {
  if (g_reg == 0 || idx >= NKB_REG_SLOTS) return;
  nkb_core_t *c = nkb_core();
  nkb_lock(&c->table_lock, NKB_RANK_TABLE);
  nkb_reg_slot_t *sl = nkb_reg_slot(idx);
  nkb_slot_begin(sl);
  memcpy(sl->group, &group_be, 4);
  sl->groups = groups;
  nkb_slot_end(sl);
  nkb_unlock(&c->table_lock, NKB_RANK_TABLE);
}

void nkb_reg_recv_q(uint32_t idx, uint32_t datagrams) {
  if (g_reg == 0 || idx >= NKB_REG_SLOTS) return;
  // A gauge, as the counters are: one aligned word, no seqlock.
  __atomic_store_n(&nkb_reg_slot(idx)->recv_q, datagrams, __ATOMIC_RELAXED);
}

void nkb_reg_queues(uint32_t idx, uint32_t first_queue, uint32_t queue_count) {
  assert(nkb_holds(NKB_RANK_TABLE));
  if (g_reg == 0 || idx >= NKB_REG_SLOTS) return;
  nkb_reg_slot_t *sl = nkb_reg_slot(idx);
  // Two words a reader must see together: under the slot's sequence, as nkb_reg_note's.
  nkb_slot_begin(sl);
  sl->first_queue = first_queue;
  sl->queue_count = queue_count;
  nkb_slot_end(sl);
}

int32_t nkb_reg_note(int32_t h, uint32_t flags, uint32_t recv_mode, const uint8_t *reason_z,
                     uint32_t reason_len) {
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0) return -EBADF;
  uint32_t idx = s->index;
  // The NUL within the bytes given, and within what a slot's reason holds.
  uint32_t scan = reason_len < NKB_REG_REASON_LEN ? reason_len : NKB_REG_REASON_LEN;
  if (reason_z == 0 || scan == 0 || memchr(reason_z, 0, scan) == 0) return -EINVAL;
  if (g_reg == 0) return 0;
  struct sockaddr_in local;
  socklen_t len = sizeof(local);
  memset(&local, 0, sizeof(local));
  if (getsockname(s->fd, (struct sockaddr *)&local, &len) != 0) memset(&local, 0, sizeof(local));
  nkb_core_t *c = nkb_core();
  nkb_lock(&c->table_lock, NKB_RANK_TABLE);
  nkb_reg_slot_t *sl = nkb_reg_slot(idx);
  nkb_slot_begin(sl);
  uint32_t f = flags & (NKB_REG_F_BYPASS | NKB_REG_F_AFFINE);
  memcpy(sl->local_ip, &local.sin_addr.s_addr, 4);
  sl->local_port = ntohs(local.sin_port);
  if (sl->local_port != 0) f |= NKB_REG_F_BOUND;
  memcpy(sl->remote_ip, &s->peer_be, 4);
  sl->remote_port = (uint16_t)s->peer_port;
  if (s->peer_port != 0) f |= NKB_REG_F_CONNECTED;
  sl->ifindex = sl->first_queue = sl->queue_count = 0;
  memset(sl->ifname, 0, sizeof(sl->ifname));
  if (s->eng != 0) {
    const nkb_engine_t *e = s->eng->engine;
    sl->ifindex = e->ifindex;
    sl->first_queue = e->first_queue;
    sl->queue_count = e->queue_count;
    char name[IF_NAMESIZE];
    if (if_indextoname(e->ifindex, name) != 0) {
      snprintf(sl->ifname, sizeof(sl->ifname), "%s", name);
    }
  }
  sl->flags = f;
  sl->recv_mode = recv_mode;
  // The NUL was found within NKB_REG_REASON_LEN bytes above: the copy reads no further.
  snprintf(sl->reason, sizeof(sl->reason), "%s", (const char *)reason_z);
  nkb_slot_end(sl);
  nkb_unlock(&c->table_lock, NKB_RANK_TABLE);
  return 0;
}

int32_t nkb_reg_path(uint8_t *out, uint32_t len) {
  nkb_reg_init();
  if (out == 0 || len == 0) return -EINVAL;
  if (g_reg == 0) return -ENOENT;
  size_t n = strlen(g_reg_path);
  if (n + 1 > len) return -ENOSPC;
  memcpy(out, g_reg_path, n + 1);
  return (int32_t)n;
}
