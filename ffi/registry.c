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
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sock.h"

#define NKB_REG_FILE_SIZE (NKB_REG_HEADER_SIZE + (size_t)NKB_REG_SLOTS * NKB_REG_SLOT_SIZE)
#define NKB_REG_MAX_DIR_ENTRIES 8192u  // bound on the dead-file sweep
#define NKB_REG_PATH_MAX 512u

_Static_assert(NKB_REG_SLOTS == NKB_MAX_SOCKS, "one slot per socket table entry");

static pthread_once_t g_reg_once = PTHREAD_ONCE_INIT;
static nkb_reg_header_t *g_reg = 0;  // null: no registry
static char g_reg_path[NKB_REG_PATH_MAX];
static pid_t g_reg_pid = 0;

static nkb_reg_slot_t *nkb_reg_slot(uint32_t idx) {
  assert(g_reg != 0 && idx < NKB_REG_SLOTS);
  return (nkb_reg_slot_t *)((uint8_t *)g_reg + NKB_REG_HEADER_SIZE +
                            (size_t)idx * NKB_REG_SLOT_SIZE);
}

static uint64_t nkb_unix_ms(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return 0;
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

// Field 22 of /proc/<pid>/stat (start time in clock ticks): 0 when the process is gone.
static uint64_t nkb_start_ticks(int32_t pid) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[1024];
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  const char *p = strrchr(buf, ')');  // comm may hold spaces and parentheses
  if (p == 0) return 0;
  p++;
  for (uint32_t field = 2; field < 21 && p != 0; field++) p = strchr(p + 1, ' ');
  if (p == 0) return 0;
  return strtoull(p + 1, 0, 10);
}

// Reads a small /proc file into buf (at most len bytes): its length, or 0.
static uint32_t nkb_read_small(const char *path, uint8_t *buf, uint32_t len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  uint32_t off = 0;
  for (uint32_t i = 0; i < 64u && off < len; i++) {
    ssize_t n = read(fd, buf + off, len - off);
    if (n <= 0) break;
    off += (uint32_t)n;
  }
  close(fd);
  return off;
}

// Removes the files of processes that are gone (a file whose pid lives on with another
// start time is stale too). Files we may not remove stay; readers skip them.
static void nkb_reg_sweep(const char *dir) {
  DIR *d = opendir(dir);
  if (d == 0) return;
  for (uint32_t i = 0; i < NKB_REG_MAX_DIR_ENTRIES; i++) {
    struct dirent *ent = readdir(d);
    if (ent == 0) break;
    char *end = 0;
    long pid = strtol(ent->d_name, &end, 10);
    if (end == ent->d_name || strcmp(end, ".reg") != 0 || pid <= 0 || pid > INT32_MAX) continue;
    int fd = openat(dirfd(d), ent->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) continue;
    nkb_reg_header_t h;
    ssize_t n = pread(fd, &h, offsetof(nkb_reg_header_t, comm), 0);
    close(fd);
    bool ours = n == (ssize_t)offsetof(nkb_reg_header_t, comm) &&
                memcmp(h.magic, NKB_REG_MAGIC, 8) == 0 && h.pid == (uint32_t)pid;
    if (!ours) continue;  // not a registry file we understand: leave it to a reader's warning
    if (nkb_start_ticks((int32_t)pid) == h.start_ticks) continue;  // alive
    (void)unlinkat(dirfd(d), ent->d_name, 0);
  }
  closedir(d);
}

static void nkb_reg_fill_header(nkb_reg_header_t *h) {
  h->version = NKB_REG_VERSION;
  h->header_size = NKB_REG_HEADER_SIZE;
  h->slot_size = NKB_REG_SLOT_SIZE;
  h->slot_count = NKB_REG_SLOTS;
  h->pid = (uint32_t)getpid();
  h->uid = (uint32_t)getuid();
  h->start_ticks = nkb_start_ticks(getpid());
  h->created_ms = nkb_unix_ms();
  struct stat st;
  h->netns_ino = stat("/proc/self/ns/net", &st) == 0 ? (uint64_t)st.st_ino : 0;
  uint32_t n = nkb_read_small("/proc/self/comm", (uint8_t *)h->comm, sizeof(h->comm) - 1);
  if (n > 0 && h->comm[n - 1] == '\n') n--;
  h->comm[n] = 0;
  h->cmdline_len = nkb_read_small("/proc/self/cmdline", h->cmdline, NKB_REG_CMDLINE_MAX);
  assert(h->cmdline_len <= NKB_REG_CMDLINE_MAX);
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

static void nkb_reg_open(void) {
  const char *dir = getenv("NKB_REGISTRY_DIR");
  if (dir != 0 && strcmp(dir, "off") == 0) return;
  if (dir == 0 || *dir == 0) dir = NKB_REG_DEFAULT_DIR;
  if (strlen(dir) > NKB_REG_PATH_MAX - 32u) return;
  // Shared by every user, like /tmp: sticky, so that only a file's owner removes it.
  if (mkdir(dir, 01777) == 0) (void)chmod(dir, 01777);
  struct stat st;
  if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return;
  nkb_reg_sweep(dir);
  pid_t pid = getpid();
  char path[NKB_REG_PATH_MAX];
  snprintf(path, sizeof(path), "%s/%d.reg", dir, (int)pid);
  (void)unlink(path);  // our pid: any file of that name is a dead process's
  uint32_t mode = nkb_reg_mode();
  int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) return;
  void *map = MAP_FAILED;
  if (fchmod(fd, mode) == 0 && ftruncate(fd, (off_t)NKB_REG_FILE_SIZE) == 0) {
    map = mmap(0, NKB_REG_FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  close(fd);
  if (map == MAP_FAILED) {
    (void)unlink(path);
    return;
  }
  nkb_reg_fill_header((nkb_reg_header_t *)map);
  if (((nkb_reg_header_t *)map)->start_ticks == 0) {
    // Without our start time every reader would take the file for a dead process's.
    (void)munmap(map, NKB_REG_FILE_SIZE);
    (void)unlink(path);
    return;
  }
  memcpy(g_reg_path, path, sizeof(g_reg_path));
  g_reg_pid = pid;
  __atomic_store_n(&g_reg, (nkb_reg_header_t *)map, __ATOMIC_RELEASE);
}

// The file goes with the process (a killed one leaves it to the sweep).
__attribute__((destructor)) static void nkb_reg_remove(void) {
  if (g_reg != 0 && g_reg_pid == getpid()) (void)unlink(g_reg_path);
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

uint64_t *nkb_reg_take(uint32_t idx, uint64_t *fallback) {
  nkb_reg_init();
  if (g_reg == 0 || idx >= NKB_REG_SLOTS) return fallback;
  nkb_reg_slot_t *sl = nkb_reg_slot(idx);
  nkb_slot_begin(sl);
  uint32_t seq = sl->seq;
  memset(sl, 0, NKB_REG_SLOT_SIZE);
  sl->seq = seq;
  sl->created_ms = nkb_unix_ms();
  sl->in_use = 1;
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

int32_t nkb_reg_note(int32_t h, uint32_t flags, uint32_t recv_mode, const uint8_t *reason_z) {
  int32_t idx = nkb_sock_index(h);
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0 || idx < 0) return -EBADF;
  if (reason_z == 0 || memchr(reason_z, 0, 32) == 0) return -EINVAL;
  if (g_reg == 0) return 0;
  struct sockaddr_in local;
  socklen_t len = sizeof(local);
  memset(&local, 0, sizeof(local));
  if (getsockname(s->fd, (struct sockaddr *)&local, &len) != 0) memset(&local, 0, sizeof(local));
  pthread_mutex_lock(&g_lock);
  nkb_reg_slot_t *sl = nkb_reg_slot((uint32_t)idx);
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
  if (s->engine >= 0) {
    const nkb_engine_t *e = g_engines[s->engine].engine;
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
  snprintf(sl->reason, sizeof(sl->reason), "%s", (const char *)reason_z);
  nkb_slot_end(sl);
  pthread_mutex_unlock(&g_lock);
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
