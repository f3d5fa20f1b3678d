// AF_XDP socket and UMEM setup for one interface: one XSK per receive queue,
// all sharing one UMEM, each with its own fill and completion ring.
#define _GNU_SOURCE
#include "xsk.h"

#include "lock_order.h"
#include "netdev_query.h"

#include <errno.h>
#include <linux/ethtool.h>
#include <linux/if_xdp.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef XDP_MAX_TX_SKB_BUDGET
#define XDP_MAX_TX_SKB_BUDGET 9
#endif

#define NKB_BIND_RETRY_MAX 40u      // a queue stays busy a while after its last user closed
#define NKB_BIND_RETRY_SLEEP_MS 10u
#define NKB_ELSEWHERE_REFUSED_MS 2000ull  // another pid namespace refused a bind: not retried before
#define NKB_CLOSE_DRAIN_MS 100u  // what a closing engine gives the device to take its frames

static void nkb_sleep_ms(uint32_t ms) {
  struct timespec ts = {.tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L};
  nanosleep(&ts, 0);
}

// UMEM pages count against RLIMIT_MEMLOCK unless CAP_IPC_LOCK: raise the soft
// limit to what we need when the hard limit allows it; the kernel decides the rest.
static void nkb_memlock_reserve(uint64_t len) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0) return;
  if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= len * 2) return;
  rlim_t want = (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > len * 2) ? len * 2 : rl.rlim_max;
  if (want > rl.rlim_cur) {
    rl.rlim_cur = want;
    (void)setrlimit(RLIMIT_MEMLOCK, &rl);
  }
}

static int32_t nkb_ring_size_opt(int32_t fd, int32_t opt, uint32_t size) {
  assert(fd >= 0);
  assert((size & (size - 1)) == 0);
  if (setsockopt(fd, SOL_XDP, opt, &size, sizeof(size)) != 0) return -errno;
  return 0;
}

static int32_t nkb_ring_map(nkb_ring_t *r, int32_t fd, const struct xdp_ring_offset *off,
                            uint64_t pgoff, uint32_t size, uint32_t entry_size) {
  assert(entry_size == sizeof(uint64_t) || entry_size == sizeof(struct xdp_desc));
  uint64_t len = off->desc + (uint64_t)size * entry_size;
  // A queue taken back: the new ring replaces the blank of the given-up one at the same
  // address, in one step (a wait that read an old queue count may still load its indices).
  void *at = r->map;
  if (at != 0 && r->map_len != len) return -EINVAL;
  int32_t flags = MAP_SHARED | MAP_POPULATE | (at != 0 ? MAP_FIXED : 0);
  void *m = mmap(at, len, PROT_READ | PROT_WRITE, flags, fd, (off_t)pgoff);
  if (m == MAP_FAILED) return -errno;
  assert(at == 0 || m == at);
  r->map = m;
  r->map_len = len;
  r->producer = (uint32_t *)((uint8_t *)m + off->producer);
  r->consumer = (uint32_t *)((uint8_t *)m + off->consumer);
  r->flags = (uint32_t *)((uint8_t *)m + off->flags);
  r->entries = (uint8_t *)m + off->desc;
  r->size = size;
  r->mask = size - 1;
  r->cached_prod = __atomic_load_n(r->producer, __ATOMIC_ACQUIRE);
  r->cached_cons = __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);
  return 0;
}

static void nkb_ring_unmap(nkb_ring_t *r) {
  if (r->map != 0) munmap(r->map, r->map_len);
  memset(r, 0, sizeof(*r));
}

// Producer rings (fill, tx) start with all slots free: keep cached_cons = consumer + size.
static void nkb_ring_init_producer(nkb_ring_t *r) {
  assert(r->map != 0);
  r->cached_cons += r->size;
}

static int32_t nkb_xsk_rings(nkb_xsk_t *x, bool with_tx) {
  int32_t rc = nkb_ring_size_opt(x->fd, XDP_UMEM_FILL_RING, NKB_PROD_RING_SIZE);
  if (rc == 0) rc = nkb_ring_size_opt(x->fd, XDP_UMEM_COMPLETION_RING, NKB_RING_SIZE);
  if (rc == 0) rc = nkb_ring_size_opt(x->fd, XDP_RX_RING, NKB_RING_SIZE);
  if (rc == 0 && with_tx) rc = nkb_ring_size_opt(x->fd, XDP_TX_RING, NKB_PROD_RING_SIZE);
  if (rc != 0) return rc;
  struct xdp_mmap_offsets off;
  memset(&off, 0, sizeof(off));
  socklen_t len = sizeof(off);
  if (getsockopt(x->fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &len) != 0) return -errno;
  if (len != sizeof(off)) return -EPROTO;
  rc = nkb_ring_map(&x->fill, x->fd, &off.fr, XDP_UMEM_PGOFF_FILL_RING, NKB_PROD_RING_SIZE,
                    8);
  if (rc == 0)
    rc = nkb_ring_map(&x->comp, x->fd, &off.cr, XDP_UMEM_PGOFF_COMPLETION_RING, NKB_RING_SIZE, 8);
  if (rc == 0)
    rc = nkb_ring_map(&x->rx, x->fd, &off.rx, XDP_PGOFF_RX_RING, NKB_RING_SIZE,
                      sizeof(struct xdp_desc));
  if (rc == 0 && with_tx)
    rc = nkb_ring_map(&x->tx, x->fd, &off.tx, XDP_PGOFF_TX_RING, NKB_PROD_RING_SIZE,
                      sizeof(struct xdp_desc));
  if (rc != 0) return rc;
  nkb_ring_init_producer(&x->fill);
  if (with_tx) nkb_ring_init_producer(&x->tx);
  return 0;
}

static int32_t nkb_xsk_bind(nkb_xsk_t *x, uint32_t ifindex, int32_t shared_fd, uint32_t tries) {
  struct sockaddr_xdp sxdp;
  memset(&sxdp, 0, sizeof(sxdp));
  sxdp.sxdp_family = AF_XDP;
  sxdp.sxdp_ifindex = ifindex;
  sxdp.sxdp_queue_id = x->queue;
  sxdp.sxdp_flags = XDP_USE_NEED_WAKEUP;
  if (shared_fd >= 0) {
    // The kernel takes XDP_SHARED_UMEM only alone: the rest comes from the owner.
    sxdp.sxdp_flags = XDP_SHARED_UMEM;
    sxdp.sxdp_shared_umem_fd = (uint32_t)shared_fd;
  }
  // A queue released by a process that just died stays busy for a few ms.
  assert(tries >= 1u && tries <= NKB_BIND_RETRY_MAX);
  for (uint32_t attempt = 0; attempt < tries; attempt++) {
    if (bind(x->fd, (struct sockaddr *)&sxdp, sizeof(sxdp)) == 0) return 0;
    if (errno != EBUSY) return -errno;
    if (attempt + 1u < tries) nkb_sleep_ms(NKB_BIND_RETRY_SLEEP_MS);
  }
  return -EBUSY;
}

static void nkb_xsk_fill_all(nkb_xsk_t *x, uint32_t frame_size) {
  uint32_t idx = 0;
  uint32_t n = nkb_ring_reserve(&x->fill, NKB_RX_FRAMES, &idx);
  assert(n == NKB_RX_FRAMES);  // NKB_RX_FRAMES < NKB_PROD_RING_SIZE, ring empty at start
  for (uint32_t i = 0; i < n; i++) {
    *nkb_ring_addr(&x->fill, idx + i) = x->rx_frame_base + (uint64_t)i * frame_size;
  }
  nkb_ring_submit(&x->fill, n);
}

static int32_t nkb_engine_umem(nkb_engine_t *e) {
  assert(e->umem_queues >= e->queue_count && e->umem_queues <= NKB_MAX_QUEUES);
  uint64_t frames = (uint64_t)NKB_RX_FRAMES * e->umem_queues + NKB_TX_FRAMES;
  e->umem_len = frames * e->frame_size;
  nkb_memlock_reserve(e->umem_len);
  void *m = mmap(0, e->umem_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                 -1, 0);
  if (m == MAP_FAILED) return -errno;
  e->umem = m;
  struct xdp_umem_reg reg;
  memset(&reg, 0, sizeof(reg));
  reg.addr = (uint64_t)(uintptr_t)m;
  reg.len = e->umem_len;
  reg.chunk_size = e->frame_size;
  if (setsockopt(e->xsk[0].fd, SOL_XDP, XDP_UMEM_REG, &reg, sizeof(reg)) != 0) return -errno;
  // TX frames live after every queue's RX frames.
  uint64_t tx_base = (uint64_t)NKB_RX_FRAMES * e->umem_queues * e->frame_size;
  for (uint32_t i = 0; i < NKB_TX_FRAMES; i++) {
    e->tx_free[i] = tx_base + (uint64_t)(NKB_TX_FRAMES - 1u - i) * e->frame_size;
  }
  e->tx_free_count = NKB_TX_FRAMES;
  return 0;
}

static int32_t nkb_engine_queue(nkb_engine_t *e, uint32_t q, uint32_t bind_tries) {
  nkb_xsk_t *x = &e->xsk[q];
  assert(x->fd >= 0);
  // q indexes our sockets and UMEM regions; x->queue is the device's queue.
  x->queue = e->first_queue + q;
  x->rx_frame_base = (uint64_t)NKB_RX_FRAMES * q * e->frame_size;
  int32_t rc = nkb_xsk_rings(x, q == 0);
  if (rc != 0) return rc;
  rc = nkb_xsk_bind(x, e->ifindex, q == 0 ? -1 : e->xsk[0].fd, bind_tries);
  if (rc != 0) return rc;
  nkb_xsk_fill_all(x, e->frame_size);
  // The queue is ours: flow keys left for it by a process that died holding it would send
  // its flows to our socket, which has no owner for them. They go before our XSK is in.
  rc = nkb_filter_sweep_queue(e->filter, (uint16_t)x->queue);
  if (rc < 0) return rc;
  rc = nkb_filter_set_xsk(e->filter, x->queue, x->fd);
  if (rc != 0) return rc;
  nkb_group_claim(e->filter, x->queue);
  x->claimed = 1;
  return 0;
}

static void nkb_xsk_close(nkb_filter_t *f, nkb_xsk_t *x) {
  // Unmap before close: mapped rings keep the socket, and its XSKMAP entry, alive.
  nkb_ring_unmap(&x->fill);
  nkb_ring_unmap(&x->comp);
  nkb_ring_unmap(&x->rx);
  nkb_ring_unmap(&x->tx);
  if (x->fd >= 0) close(x->fd);
  x->fd = -1;
  // After the close: the queue is free when the record says so.
  if (x->claimed) nkb_group_release(f, x->queue);
  x->claimed = 0;
  assert(x->rx.map == 0);
}

// A given-up queue's ring: its pages are replaced by anonymous zeros at the same address
// (MAP_FIXED swaps the mapping in one step), which lets go of the socket as an unmap would
// while a wait that read the old queue count may still load its indices.
static int32_t nkb_ring_blank(nkb_ring_t *r) {
  if (r->map == 0) return 0;
  void *m = mmap(r->map, r->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                 -1, 0);
  if (m == MAP_FAILED) return -errno;
  assert(m == r->map);
  return 0;
}

// XDP_STATISTICS of one XDP socket: its drops, 0 when it cannot say.
static uint64_t nkb_xsk_drops(int32_t fd) {
  struct xdp_statistics st;
  memset(&st, 0, sizeof(st));
  socklen_t len = sizeof(st);
  if (fd < 0 || getsockopt(fd, SOL_XDP, XDP_STATISTICS, &st, &len) != 0) return 0;
  // A drop for an empty fill ring is counted in rx_dropped and again in
  // rx_fill_ring_empty_descs: count it once.
  return st.rx_dropped + st.rx_invalid_descs + st.rx_ring_full;
}

int32_t nkb_engine_retire_queue(nkb_engine_t *e, uint32_t q) {
  assert(q > 0 && q < NKB_MAX_QUEUES);  // index 0 owns the UMEM and the TX ring: never given up
  assert(q >= e->queue_count);
  nkb_xsk_t *x = &e->xsk[q];
  assert(x->tx.map == 0);
  if (x->fd < 0) return 0;
  // Frames users took from the RX ring and did not give back to the fill ring: they come
  // back to the engine one by one (retired, given_back). The rest were the kernel's. Both
  // indices are this process's own; read before the blank hides them. A count that makes
  // no sense (more than the queue's frames) keeps the queue from ever being taken back.
  uint32_t fill_prod = __atomic_load_n(x->fill.producer, __ATOMIC_ACQUIRE);
  uint32_t rx_cons = __atomic_load_n(x->rx.consumer, __ATOMIC_ACQUIRE);
  uint32_t out = rx_cons - (fill_prod - NKB_RX_FRAMES);
  __atomic_store_n(&e->given_out[q], out <= NKB_RX_FRAMES ? out : UINT32_MAX, __ATOMIC_RELEASE);
  int32_t rc = nkb_ring_blank(&x->rx);
  if (rc == 0) rc = nkb_ring_blank(&x->fill);
  if (rc == 0) rc = nkb_ring_blank(&x->comp);
  if (rc != 0) return rc;  // a ring still maps the socket: closing it would free nothing
  int32_t fd = x->fd;
  __atomic_add_fetch(&e->retired_drops, nkb_xsk_drops(fd), __ATOMIC_RELAXED);
  __atomic_store_n(&x->fd, -1, __ATOMIC_RELEASE);
  close(fd);
  // After the close, as in nkb_xsk_close: the queue is free when the record says so.
  if (x->claimed) nkb_group_release(e->filter, x->queue);
  x->claimed = 0;
  return 0;
}

bool nkb_engine_queue_idle(const nkb_engine_t *e, uint32_t q) {
  assert(q < NKB_MAX_QUEUES);
  const nkb_xsk_t *x = &e->xsk[q];
  return q > 0 && q >= e->queue_count && q < e->umem_queues &&
         __atomic_load_n(&x->fd, __ATOMIC_ACQUIRE) < 0 &&
         __atomic_load_n(&e->given_out[q], __ATOMIC_ACQUIRE) ==
             __atomic_load_n(&e->given_back[q], __ATOMIC_ACQUIRE);
}

int32_t nkb_engine_reopen_queue(nkb_engine_t *e, uint32_t q) {
  assert(q > 0 && q == e->queue_count && q < e->umem_queues);
  nkb_xsk_t *x = &e->xsk[q];
  assert(x->fd < 0 && x->claimed == 0 && x->tx.map == 0);
  int32_t fd = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  x->fd = fd;
  // The queue was seen free for a while: one bind, no retries on the refresher's time.
  int32_t rc = nkb_engine_queue(e, q, 1u);
  if (rc == 0) {
    __atomic_store_n(&e->given_out[q], 0u, __ATOMIC_RELEASE);
    __atomic_store_n(&e->given_back[q], 0u, __ATOMIC_RELEASE);
    return 0;
  }
  // Undone: blanks again where rings were mapped (their addresses stay, as after a give),
  // then the socket closes and the record, if claimed, goes.
  if (nkb_ring_blank(&x->rx) != 0 || nkb_ring_blank(&x->fill) != 0 ||
      nkb_ring_blank(&x->comp) != 0) {
    return rc;  // a ring still maps the socket: it stays bound, unused, until the engine closes
  }
  __atomic_store_n(&x->fd, -1, __ATOMIC_RELEASE);
  close(fd);
  if (x->claimed) nkb_group_release(e->filter, x->queue);
  x->claimed = 0;
  return rc;
}

// Keeps queues [0, count) and closes the sockets of the others.
static void nkb_engine_trim(nkb_engine_t *e, uint32_t count) {
  assert(count > 0 && count <= e->queue_count);
  for (uint32_t q = count; q < e->queue_count; q++) nkb_xsk_close(e->filter, &e->xsk[q]);
  e->queue_count = count;
  e->umem_queues = count;  // the device has no more: never taken back
}

// A non-blocking rtnetlink socket subscribed to link and IPv4 address changes; -1 when
// it cannot be had (the periodic watch of the control plane still covers changes).
static int32_t nkb_link_events_open(void) {
  int32_t fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);
  if (fd < 0) return -1;
  struct sockaddr_nl sa;
  memset(&sa, 0, sizeof(sa));
  sa.nl_family = AF_NETLINK;
  sa.nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR;
  if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    close(fd);
    return -1;
  }
  assert(fd >= 0);
  return fd;
}

// True when the notification is about interface ifindex (or cannot be read safely).
static bool nkb_link_event_ours(const struct nlmsghdr *h, uint32_t ifindex) {
  if (h->nlmsg_type == RTM_NEWLINK || h->nlmsg_type == RTM_DELLINK) {
    if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifinfomsg))) return true;
    const struct ifinfomsg *ifi = NLMSG_DATA(h);
    return (uint32_t)ifi->ifi_index == ifindex;
  }
  if (h->nlmsg_type == RTM_NEWADDR || h->nlmsg_type == RTM_DELADDR) {
    if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifaddrmsg))) return true;
    const struct ifaddrmsg *ifa = NLMSG_DATA(h);
    return ifa->ifa_index == ifindex;
  }
  return false;
}

uint32_t nkb_engine_link_gen(nkb_engine_t *e, uint64_t now_ns) {
  if (e->nl_fd < 0 || now_ns < e->nl_next_ns) return e->link_gen;
  e->nl_next_ns = now_ns + 1000000ull;
  uint8_t buf[8192] __attribute__((aligned(8)));
  for (uint32_t i = 0; i < 16; i++) {
    ssize_t n = recv(e->nl_fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0) {
      // ENOBUFS: notifications were lost; assume one was ours.
      if (errno == ENOBUFS) e->link_gen++;
      break;
    }
    uint32_t left = (uint32_t)n;
    const struct nlmsghdr *h = (const struct nlmsghdr *)(void *)buf;
    for (uint32_t m = 0; m < 64 && NLMSG_OK(h, left); m++) {
      if (nkb_link_event_ours(h, e->ifindex)) e->link_gen++;
      h = NLMSG_NEXT(h, left);
    }
  }
  return e->link_gen;
}

// The receive queues the device runs (ethtool channels: rx-only plus combined), or 0 when
// it does not say. rtnetlink reports the allocated ones (a veth on a 2-CPU host: 2 allocated,
// 1 running); a UMEM sized for those holds frames no queue uses, and binding the extra
// queue fails only after its socket and rings are set up.
static uint32_t nkb_running_rx_queues(uint32_t ifindex) {
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  if (if_indextoname(ifindex, ifr.ifr_name) == 0) return 0;
  int32_t fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  struct ethtool_channels ch;
  memset(&ch, 0, sizeof(ch));
  ch.cmd = ETHTOOL_GCHANNELS;
  ifr.ifr_data = (void *)&ch;
  int32_t rc = ioctl(fd, SIOCETHTOOL, &ifr);
  close(fd);
  if (rc != 0) return 0;  // EOPNOTSUPP for drivers without channels: the bind tells instead
  uint64_t n = (uint64_t)ch.rx_count + ch.combined_count;
  return n > NKB_MAX_QUEUES ? NKB_MAX_QUEUES : (uint32_t)n;
}

static int32_t nkb_engine_opened(nkb_engine_t *e);

// Which of queues first .. first + count - 1 the kernel still has an AF_XDP socket bound on
// (nkb_queues_xsk_bound's bitmask), asked again every millisecond for up to wait_ms while
// any is: a queue whose socket closed moments ago is released 15-25 ms later. Negative: the
// kernel cannot say (the bind decides).
static int32_t nkb_release_wait(uint32_t ifindex, uint32_t first, uint32_t count,
                                uint32_t wait_ms) {
  assert(wait_ms <= NKB_RELEASE_WAIT_MAX_MS);
  int32_t bound = nkb_queues_xsk_bound(ifindex, first, count);
  for (uint32_t i = 0; bound > 0 && i < wait_ms; i++) {  // bounded: wait_ms tries
    nkb_sleep_ms(1);
    bound = nkb_queues_xsk_bound(ifindex, first, count);
  }
  return bound;
}

// The queues an engine opens on: count from first, less owed ones (which keep their part
// of the UMEM: one whose asker never comes for it is taken back like a given-up one).
static void nkb_engine_set_run(nkb_engine_t *e, uint32_t first, uint32_t count, uint32_t owed) {
  assert(count > owed && count <= NKB_MAX_QUEUES);
  e->first_queue = first;
  e->queue_count = count - owed;
  e->umem_queues = count;
}

// Opens the engine's sockets, UMEM and queues as nkb_engine_set_run chose them, binding each
// queue up to tries times. 0, or -errno with everything closed again (the run may be tried
// again with another).
static int32_t nkb_engine_bind_run(nkb_engine_t *e, uint32_t tries) {
  e->nl_fd = nkb_link_events_open();
  for (uint32_t q = 0; q < NKB_MAX_QUEUES; q++) e->xsk[q].fd = -1;
  nkb_pusher_init(&e->pusher);
  for (uint32_t q = 0; q < e->queue_count; q++) {
    e->xsk[q].fd = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (e->xsk[q].fd < 0) {
      int32_t rc = -errno;
      nkb_engine_close(e);
      return rc;
    }
  }
  int32_t rc = nkb_engine_umem(e);
  for (uint32_t q = 0; rc == 0 && q < e->queue_count; q++) {
    rc = nkb_engine_queue(e, q, tries);
    // rtnetlink reports allocated queues; bind refuses those beyond the real count.
    if (rc == -EINVAL && q > 0) {
      nkb_engine_trim(e, q);
      rc = 0;
      break;
    }
  }
  if (rc != 0) nkb_engine_close(e);
  return rc;
}

int32_t nkb_engine_open(nkb_engine_t *e, nkb_filter_t *filter, uint32_t ifindex,
                        uint32_t first_queue, uint32_t queue_count, uint32_t frame_size,
                        bool nowait, uint32_t release_wait_ms) {
  assert(e != 0 && filter != 0);
  if (queue_count == 0 || queue_count > NKB_MAX_QUEUES) return -EINVAL;
  if (first_queue >= filter->max_queues || queue_count > filter->max_queues - first_queue) {
    return -EINVAL;
  }
  if (frame_size != 2048u && frame_size != 4096u) return -EINVAL;
  memset(e, 0, sizeof(*e));
  e->ifindex = ifindex;
  e->first_queue = first_queue;
  e->queue_count = queue_count;
  e->requested_first = first_queue;
  e->requested_queues = queue_count;
  uint32_t running = nkb_running_rx_queues(ifindex);
  if (running > first_queue && queue_count > running - first_queue) {
    e->queue_count = running - first_queue;  // as the EINVAL trim below would, before any setup
  }
  assert(e->queue_count > 0 && e->queue_count <= queue_count);
  // Queues live nkb processes hold (the shared filter's record; this one's other engines
  // too) are theirs: a queue-affine engine fails at once; a whole-interface one takes the
  // longest run of the others, less one queue for each other process that a holder gave
  // one up for and has not taken it yet (it asked first). Those the record shows free but
  // the kernel still holds (a socket closed moments ago) the bind retries for.
  if (queue_count == 1 && nkb_group_held(filter, first_queue)) return -EBUSY;
  // Free by the record but still the kernel's (its socket closed moments ago, or an XSK that
  // is not nkb's): without waiting, said at once, before any UMEM is built for a bind that
  // would be refused.
  if (nowait && queue_count == 1 &&
      nkb_release_wait(ifindex, first_queue, 1, release_wait_ms) > 0) {
    return -EINPROGRESS;
  }
  e->frame_size = frame_size;
  e->filter = filter;
  pthread_mutex_init(&e->rx_lock, 0);
  pthread_mutex_init(&e->tx_lock, 0);
  uint32_t tries = nowait ? 1u : NKB_BIND_RETRY_MAX;
  int32_t rc = 0;
  if (queue_count > 1) {
    uint32_t owed = nkb_group_waiting(filter);
    uint32_t sure_first = first_queue, any_first = first_queue;
    uint32_t sure = nkb_group_free_run(filter, first_queue, e->queue_count, true, &sure_first);
    uint32_t any = nkb_group_free_run(filter, first_queue, e->queue_count, false, &any_first);
    // A longer run through queues that processes of another pid namespace recorded (this
    // one cannot tell whether they live): the bind decides, once per queue. Refused, the
    // run of queues known free (a holder there may have given one up) is tried next, and
    // for NKB_ELSEWHERE_REFUSED_MS those queues are not tried again: each try sets up the
    // run's whole UMEM, on the event loop when it is a retry.
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    bool refused = now < filter->elsewhere_refused_until_ns;
    if (any > sure && any > owed && !refused) {
      nkb_engine_set_run(e, any_first, any, owed);
      rc = nkb_engine_bind_run(e, 1u);
      if (rc != -EBUSY) return rc == 0 ? nkb_engine_opened(e) : rc;
      filter->elsewhere_refused_until_ns = now + NKB_ELSEWHERE_REFUSED_MS * 1000000ull;
      refused = true;
    }
    if (any > sure && refused && sure <= owed) return -EBUSY;  // held there: the caller may ask
    if (sure <= owed) return NKB_ENOQUEUE;  // every queue is held or owed: the caller may ask
    // The queues it would bind: the run less those owed to askers (nkb_engine_set_run).
    if (nowait && nkb_release_wait(ifindex, sure_first, sure - owed, release_wait_ms) > 0) {
      return -EINPROGRESS;
    }
    nkb_engine_set_run(e, sure_first, sure, owed);
  } else {
    nkb_engine_set_run(e, e->first_queue, e->queue_count, 0);
  }
  rc = nkb_engine_bind_run(e, tries);
  if (rc == -EBUSY && nowait) rc = -EINPROGRESS;  // known free, still the kernel's: not held
  return rc == 0 ? nkb_engine_opened(e) : rc;
}

// The engine opened: the device's options read (setup only).
static int32_t nkb_engine_opened(nkb_engine_t *e) {
  uint32_t budget = NKB_TX_SKB_BUDGET;  // fewer kicks per batch; old kernels refuse: harmless
  (void)setsockopt(e->xsk[0].fd, SOL_XDP, XDP_MAX_TX_SKB_BUDGET, &budget, sizeof(budget));
  struct xdp_options opts;
  socklen_t olen = sizeof(opts);
  if (getsockopt(e->xsk[0].fd, SOL_XDP, XDP_OPTIONS, &opts, &olen) == 0) {
    e->zero_copy = (opts.flags & XDP_OPTIONS_ZEROCOPY) ? 1u : 0u;
  }
  return 0;
}

void nkb_engine_close(nkb_engine_t *e) {
  assert(e != 0);
  // The background doorbell stops first (the drain rings by itself, and a stopped pusher
  // is never started again); then datagrams a send accepted leave before the socket
  // goes, as the kernel's would.
  nkb_pusher_stop(e);
  (void)nkb_engine_drain_tx(e, NKB_CLOSE_DRAIN_MS);
  // Closing (and unmapping) a socket takes it out of the filter's XSKMAP: its queue's
  // frames go to the kernel from then on, never to a socket being torn down.
  if (e->nl_fd >= 0) close(e->nl_fd);
  e->nl_fd = -1;
  for (uint32_t q = 0; q < NKB_MAX_QUEUES; q++) nkb_xsk_close(e->filter, &e->xsk[q]);
  if (e->umem != 0) munmap(e->umem, e->umem_len);
  e->umem = 0;
  e->queue_count = 0;
}

void nkb_engine_refill(nkb_engine_t *e, uint32_t q, uint64_t addr) {
  assert(q < NKB_MAX_QUEUES);
  assert(addr < e->umem_len);
  if (q >= e->queue_count) {
    // Parked (or drained) before its queue was given up: the queue's fill ring is gone; the
    // frame waits, idle, in its part of the UMEM until the queue is taken back.
    e->rx_retired++;
    __atomic_store_n(&e->given_back[q], e->given_back[q] + 1u, __ATOMIC_RELEASE);
    return;
  }
  nkb_xsk_t *x = &e->xsk[q];
  uint32_t idx = 0;
  // The fill ring has a slot for every RX frame twice over (see NKB_PROD_RING_SIZE).
  uint32_t n = nkb_ring_reserve(&x->fill, 1, &idx);
  assert(n == 1);
  *nkb_ring_addr(&x->fill, idx) = addr - addr % e->frame_size;
  nkb_ring_submit(&x->fill, 1);
}

void nkb_engine_wake_rx(nkb_engine_t *e, uint32_t q) {
  nkb_xsk_t *x = &e->xsk[q];
  assert(x->fd >= 0);
  if (__atomic_load_n(x->fill.flags, __ATOMIC_ACQUIRE) & XDP_RING_NEED_WAKEUP) {
    (void)recvfrom(x->fd, 0, 0, MSG_DONTWAIT, 0, 0);
  }
}

uint64_t nkb_engine_kernel_drops(nkb_engine_t *e) {
  // A given-up queue's drops stay in the sum: the counters only ever rise.
  uint64_t total = __atomic_load_n(&e->retired_drops, __ATOMIC_RELAXED);
  for (uint32_t q = 0; q < nkb_engine_queues(e); q++) total += nkb_xsk_drops(e->xsk[q].fd);
  return total;
}
