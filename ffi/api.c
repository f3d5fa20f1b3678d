// Control entries of the shim for a socket's life: open, the kernel socket calls and
// options, shutdown and free (with the socket's owner thread), and the process-wide
// entries (ABI, pin, environment). Nothing here runs per datagram.
#define _GNU_SOURCE
#include <assert.h>
#include <dlfcn.h>
#include <errno.h>
#include <linux/capability.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "attach.h"
#include "core.h"
#include "registry.h"

#define NKB_ENV_MAX_LEN 256u

double nkb_now_ms(void) {
  return (double)nkb_now_ns() / 1e6;
}

int32_t nkb_abi_version(void) { return NKB_ABI_VERSION; }

// Deno unloads the library (dlclose) when the last isolate that opened it goes: a
// terminated Worker that alone loaded it. A thread still inside the library then runs
// unmapped code: a receive() pending in nkb_wait on Deno's FFI pool, an engine's thread
// (SIGSEGV, exit 139, reproduced by repro/worker_terminate.ts). And the process-wide
// tables (sockets, engines, XDP filters, the registry) outlive any one isolate anyway.
// So the copy the loader keeps pins itself (RTLD_NODELETE: until the process exits), when
// the loader says so, not when it is mapped: two isolates loading the prebuilt library at
// once each map a copy and keep only the first (src/load.ts); the other must stay
// unpinned to go with its dlclose. (A constructor that asked the dynamic linker which copy
// is first, from inside its own dlopen, kept engine threads alive after close.)
int32_t nkb_pin(void) {
  static int32_t pinned = 0;  // process-wide by design: it describes the mapping itself
  if (__atomic_load_n(&pinned, __ATOMIC_ACQUIRE)) return 0;
  Dl_info info;
  memset(&info, 0, sizeof(info));
  void *self = 0;
  if (dladdr((const void *)&nkb_now_ns, &info) != 0 && info.dli_fname != 0) {
    self = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
  }
  // Not fatal: the library works; only its unloading under a running thread would crash.
  if (self == 0) {
    fprintf(stderr, "nkb: warning: cannot pin libnkb.so in memory: terminating the only "
                    "Worker that loaded it during a receive may crash the process\n");
    return -1;
  }
  __atomic_store_n(&pinned, 1, __ATOMIC_RELEASE);
  return 0;
}

int32_t nkb_env_int(const uint8_t *name, uint32_t name_len, int32_t fallback) {
  if (name == 0 || name_len == 0) return fallback;
  // The name comes from JavaScript: a terminator inside the buffer it really gave, and a bound.
  uint32_t scan = name_len < NKB_ENV_MAX_LEN ? name_len : NKB_ENV_MAX_LEN;
  if (memchr(name, 0, scan) == 0) return fallback;
  const char *v = getenv((const char *)name);
  if (v == 0 || *v == 0) return fallback;
  char *end = 0;
  errno = 0;
  long n = strtol(v, &end, 10);
  if (errno != 0 || *end != 0 || n < INT32_MIN || n > INT32_MAX) return fallback;
  return (int32_t)n;
}

static int32_t nkb_setsockopt_int(int32_t fd, int32_t level, int32_t name, int32_t value) {
  if (setsockopt(fd, level, name, &value, sizeof(value)) != 0) return -errno;
  return 0;
}

// Deno's sockets as it opens them: sends to a broadcast address allowed (SO_BROADCAST),
// and multicast not looped back to local sockets (its `loopback` option, default false;
// Linux's default is on). The bypass path cannot loop multicast back either.
static int32_t nkb_sock_defaults(int32_t fd) {
  assert(fd >= 0);
  int32_t rc = nkb_setsockopt_int(fd, SOL_SOCKET, SO_BROADCAST, 1);
  if (rc < 0) return rc;
  return nkb_setsockopt_int(fd, IPPROTO_IP, IP_MULTICAST_LOOP, 0);
}

// The inode of socket fd's network namespace (the one its creating thread was in): the
// kernel's own answer (SIOCGSKNS), else this thread's namespace; 0 when neither says.
static uint64_t nkb_sock_netns(int32_t fd) {
  struct stat st;
  int ns = ioctl(fd, SIOCGSKNS);
  if (ns >= 0) {
    uint64_t ino = fstat(ns, &st) == 0 ? (uint64_t)st.st_ino : 0u;
    close(ns);
    if (ino != 0) return ino;
  }
  return stat("/proc/thread-self/ns/net", &st) == 0 ? (uint64_t)st.st_ino : 0u;
}

// A Worker that is terminated runs no more JavaScript: nothing would close its sockets, and
// their ports, XDP program and registry slots would stay taken until the process exits
// (Deno frees a terminated Worker's sockets). The thread that opened a socket owns it;
// when that thread exits (a Worker's does on terminate; the main thread never does before
// the process), this destructor closes what it still owns, as close() would.
#define NKB_OWNER_FREE_TRIES 1000u  // 1 ms apart: a wait on another thread ends at shutdown

static pthread_key_t g_owner_key;
static bool g_owner_key_ok = false;
static pthread_once_t g_owner_once = PTHREAD_ONCE_INIT;

static void nkb_owner_exit(void *arg) {
  (void)arg;
  pthread_t self = pthread_self();
  int32_t handles[NKB_MAX_SOCKS];
  uint32_t n = 0;
  nkb_core_t *c = nkb_core();
  nkb_lock(&c->table_lock, NKB_RANK_TABLE);
  for (uint32_t i = 0; i < NKB_MAX_SOCKS; i++) {
    nkb_sock_t *s = c->socks[i];
    if (s == 0 || __atomic_load_n(&c->gen[i], __ATOMIC_ACQUIRE) == 0) continue;
    if (!pthread_equal(s->owner, self)) continue;
    handles[n++] = nkb_sock_handle(s);
  }
  nkb_unlock(&c->table_lock, NKB_RANK_TABLE);
  assert(n <= NKB_MAX_SOCKS);
  for (uint32_t k = 0; k < n; k++) {
    (void)nkb_sock_shutdown(handles[k]);  // -EBADF: close() already shut it down
    // A wait running on a pool thread returns at the shutdown's wake-up; then it is freed.
    for (uint32_t t = 0; t < NKB_OWNER_FREE_TRIES; t++) {
      if (nkb_sock_free(handles[k]) != -EBUSY) break;
      struct timespec ts = {.tv_sec = 0, .tv_nsec = 1000000L};
      nanosleep(&ts, 0);
    }
  }
}

static void nkb_owner_key_init(void) {
  g_owner_key_ok = pthread_key_create(&g_owner_key, nkb_owner_exit) == 0;
}

// Marks the calling thread as an owner: its exit then runs nkb_owner_exit (a key's
// destructor runs only for a thread whose value is not NULL).
static void nkb_owner_mark(void) {
  (void)pthread_once(&g_owner_once, nkb_owner_key_init);
  if (g_owner_key_ok) (void)pthread_setspecific(g_owner_key, (void *)1);
}

// The socket is prepared here, then copied into its slot (core.c).
int32_t nkb_sock_open(void) {
  nkb_sock_t *s = calloc(1, sizeof(*s));
  if (s == 0) return -ENOMEM;
  s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  s->park_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  int32_t opt_rc = s->fd < 0 ? 0 : nkb_sock_defaults(s->fd);
  if (s->fd < 0 || s->wake_fd < 0 || s->park_fd < 0 || opt_rc < 0) {
    int32_t rc = opt_rc < 0 ? opt_rc : -errno;
    if (s->fd >= 0) close(s->fd);
    if (s->wake_fd >= 0) close(s->wake_fd);
    if (s->park_fd >= 0) close(s->park_fd);
    free(s);
    return rc;
  }
  s->eng = 0;
  s->owner = pthread_self();
  nkb_owner_mark();
  s->busy_wait_cnt = 15;
  s->ttl = 64;
  s->mcast_ttl = 1;
  nkb_reg_init();  // first socket: map the registry file (outside any lock: file I/O)
  // The kernel socket's inode goes in the slot: readers believe a slot only when the
  // process holds that socket (a forged file cannot name one its process does not hold).
  struct stat st;
  uint64_t sock_ino = fstat(s->fd, &st) == 0 ? (uint64_t)st.st_ino : 0u;
  uint64_t netns_ino = nkb_sock_netns(s->fd);
  nkb_sock_t *slot = 0;
  int32_t h = nkb_sock_insert(s, &slot);
  if (h < 0) {
    close(s->fd);
    close(s->wake_fd);
    close(s->park_fd);
  } else {
    // The index is this socket's now. Its registry slot is written under the table lock,
    // as every writer of a slot does (one seqlock writer at a time).
    nkb_core_t *c = nkb_core();
    nkb_lock(&c->table_lock, NKB_RANK_TABLE);
    assert(slot != 0 && slot->stats == slot->stats_private);
    slot->stats = nkb_reg_take(slot->index, sock_ino, netns_ino, slot->stats_private);
    nkb_unlock(&c->table_lock, NKB_RANK_TABLE);
  }
  free(s);
  assert(h != 0);
  return h;
}

static struct sockaddr_in nkb_sin(uint32_t ip_be, uint32_t port) {
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof(sin));
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = ip_be;
  sin.sin_port = htons((uint16_t)port);
  return sin;
}

int32_t nkb_sock_bind(int32_t h, uint32_t ip_be, uint32_t port) {
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0) return -EBADF;
  if (port > 65535u) return -EINVAL;
  struct sockaddr_in sin = nkb_sin(ip_be, port);
  if (bind(s->fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) return -errno;
  return 0;
}

int32_t nkb_sock_connect(int32_t h, uint32_t ip_be, uint32_t port) {
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0) return -EBADF;
  if (port > 65535u) return -EINVAL;
  struct sockaddr_in sin = nkb_sin(ip_be, port);
  if (ip_be == 0 && port == 0) sin.sin_family = AF_UNSPEC;  // dissolve the association
  if (connect(s->fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) return -errno;
  s->peer_be = ip_be;
  s->peer_port = port;
  return 0;
}

int32_t nkb_sock_name(int32_t h, uint32_t *out2, uint32_t out_len) {
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0) return -EBADF;
  if (!nkb_buf_ok(out2, out_len, 2u * sizeof(uint32_t), sizeof(uint32_t))) return -EINVAL;
  struct sockaddr_in sin;
  socklen_t len = sizeof(sin);
  if (getsockname(s->fd, (struct sockaddr *)&sin, &len) != 0) return -errno;
  out2[0] = sin.sin_addr.s_addr;
  out2[1] = ntohs(sin.sin_port);
  return 0;
}

int32_t nkb_sock_setopt(int32_t h, uint32_t opt, int32_t value) {
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0) return -EBADF;
  switch (opt) {
    case NKB_OPT_BUSY_WAIT_CNT:
      if (value < 0 || value > 1000000) return -EINVAL;
      s->busy_wait_cnt = (uint32_t)value;
      return 0;
    case NKB_OPT_TTL:
      if (value < 1 || value > 255) return -EINVAL;
      s->ttl = (uint8_t)value;
      return nkb_setsockopt_int(s->fd, IPPROTO_IP, IP_TTL, value);
    case NKB_OPT_TOS:
      if (value < 0 || value > 255) return -EINVAL;
      s->tos = (uint8_t)value;
      return nkb_setsockopt_int(s->fd, IPPROTO_IP, IP_TOS, value);
    case NKB_OPT_MCAST_TTL:
      if (value < 0 || value > 255) return -EINVAL;
      s->mcast_ttl = (uint8_t)value;
      return nkb_setsockopt_int(s->fd, IPPROTO_IP, IP_MULTICAST_TTL, value);
    case NKB_OPT_MCAST_LOOP:
      return nkb_setsockopt_int(s->fd, IPPROTO_IP, IP_MULTICAST_LOOP, value != 0);
    case NKB_OPT_REUSEADDR:
      return nkb_setsockopt_int(s->fd, SOL_SOCKET, SO_REUSEADDR, value != 0);
    case NKB_OPT_REUSEPORT:
      return nkb_setsockopt_int(s->fd, SOL_SOCKET, SO_REUSEPORT, value != 0);
    case NKB_OPT_RCVBUF:
      return nkb_setsockopt_int(s->fd, SOL_SOCKET, SO_RCVBUF, value);
    case NKB_OPT_SNDBUF:
      return nkb_setsockopt_int(s->fd, SOL_SOCKET, SO_SNDBUF, value);
    case NKB_OPT_BROADCAST:
      return nkb_setsockopt_int(s->fd, SOL_SOCKET, SO_BROADCAST, value != 0);
    case NKB_OPT_MTU:
      // Frames must fit a UMEM chunk behind the XDP headroom: cap at what the engine holds.
      if (value < 68 || value > 65535) return -EINVAL;
      if (s->eng != 0) {
        uint32_t cap = nkb_sock_engine(s)->frame_size - NKB_XDP_HEADROOM - NKB_ETH_LEN;
        s->mtu = (uint32_t)value < cap ? (uint32_t)value : cap;
      } else {
        s->mtu = (uint32_t)value;
      }
      return 0;

    default:
      return -ENOPROTOOPT;
  }
}

// A membership the kernel accepted (joined) or ended: kept for the registry's Group.
// A group joined while the list was full is not kept: once the kept ones are all left,
// the registry names none (its count still says how many the socket holds).
static void nkb_sock_groups(nkb_sock_t *s, bool joined, uint32_t group_be) {
  uint32_t kept = s->groups_kept;
  assert(kept <= NKB_GROUPS_KEPT && kept <= s->groups_joined);
  if (joined) {
    if (kept < NKB_GROUPS_KEPT) s->groups_be[kept++] = group_be;
    s->groups_joined++;
  } else if (s->groups_joined > 0) {
    uint32_t at = 0;
    while (at < kept && s->groups_be[at] != group_be) at++;
    // Kept groups stay oldest first; one not kept left no trace to remove.
    if (at < kept) {
      for (uint32_t i = at; i + 1u < kept; i++) s->groups_be[i] = s->groups_be[i + 1u];
      kept--;
    }
    s->groups_joined--;
  }
  s->groups_kept = kept;
  assert(kept <= NKB_GROUPS_KEPT && kept <= s->groups_joined);
  nkb_reg_groups(s->index, kept > 0 ? s->groups_be[0] : 0u, s->groups_joined);
}

int32_t nkb_sock_mcast(int32_t h, uint32_t op, uint32_t group_be, uint32_t iface_be) {
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0) return -EBADF;
  if (op == NKB_MCAST_IF) {
    struct in_addr a = {.s_addr = iface_be};
    if (setsockopt(s->fd, IPPROTO_IP, IP_MULTICAST_IF, &a, sizeof(a)) != 0) return -errno;
    return 0;
  }
  if (op != NKB_MCAST_JOIN && op != NKB_MCAST_LEAVE) return -EINVAL;
  // The kernel join programs the NIC's multicast list and sends IGMP for both paths.
  struct ip_mreq mreq = {.imr_multiaddr = {.s_addr = group_be}, .imr_interface = {.s_addr = iface_be}};
  int32_t name = op == NKB_MCAST_JOIN ? IP_ADD_MEMBERSHIP : IP_DROP_MEMBERSHIP;
  if (setsockopt(s->fd, IPPROTO_IP, name, &mreq, sizeof(mreq)) != 0) return -errno;
  nkb_sock_groups(s, op == NKB_MCAST_JOIN, group_be);
  return 0;
}

int32_t nkb_sock_shutdown(int32_t h) {
  nkb_sock_t *s = nkb_sock_get_any(h);
  if (s == 0) return -EBADF;
  // Sequentially consistent: a pin after this store fails (core.c).
  if (__atomic_exchange_n(&s->closing, 1u, __ATOMIC_SEQ_CST) != 0) return -EBADF;
  uint64_t one = 1;
  (void)!write(s->wake_fd, &one, sizeof(one));  // a full eventfd already wakes the waiter
  return 0;
}

int32_t nkb_sock_wake(int32_t h) {
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0) return -EBADF;
  nkb_sock_rouse(s);
  return 0;
}

// Setup lock first: the socket's engine may close with it (outside the table lock).
int32_t nkb_sock_free(int32_t h) {
  nkb_sock_t *s = nkb_sock_get_any(h);
  if (s == 0) return -EBADF;
  if (!__atomic_load_n(&s->closing, __ATOMIC_SEQ_CST)) return -EINVAL;  // shutdown first
  nkb_core_t *c = nkb_core();
  nkb_lock(&c->setup_lock, NKB_RANK_SETUP);
  // Looked up again under the lock: another thread may have freed it meanwhile.
  s = nkb_sock_get_any(h);
  int32_t rc = s == 0 ? -EBADF : 0;
  // A wait still runs on another thread: the caller frees it later. No new pin can
  // start (closing is set), so the socket stays unpinned from here on.
  if (rc == 0 && nkb_sock_pinned(s)) rc = -EBUSY;
  if (rc == 0 && s->eng != 0) rc = nkb_detach(s);
  if (rc == 0) nkb_ask_drop(s);
  if (rc == 0) {
    // The slot's memory stays for its next socket (core.c); its descriptors go before
    // the slot is free, so that they are never those of the next socket.
    close(s->fd);
    close(s->wake_fd);
    close(s->park_fd);
    s->fd = s->wake_fd = s->park_fd = -1;
    nkb_lock(&c->table_lock, NKB_RANK_TABLE);
    nkb_reg_release(s->index);
    nkb_sock_remove_locked(s);
    nkb_unlock(&c->table_lock, NKB_RANK_TABLE);
  }
  nkb_unlock(&c->setup_lock, NKB_RANK_SETUP);
  return rc;
}
