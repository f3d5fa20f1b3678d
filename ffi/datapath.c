// The data path: send and receive batches, and waiting for data. Runs per
// datagram, so: no allocation, no locks but the engine's uncontended ring locks,
// no syscall except the TX doorbell and the companion socket. Each entry resolves its
// handle once (core.h) and passes the socket and its engine down; below the entries
// nothing reads a table or takes a lock of the tables.
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <linux/if_xdp.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core.h"

#define NKB_WAIT_MAX_US 60000000u
#define NKB_SPIN_POLL_EVERY 16u   // spins between looks at the companion socket
#define NKB_SPIN_CLOCK_EVERY 64u  // spins between clock reads
#define NKB_RX_EXTRA 32u          // descriptors read beyond the caller's room (other sockets' frames)

static inline void nkb_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// ---- send -----------------------------------------------------------------

static int32_t nkb_send_kernel(nkb_sock_t *s, const uint8_t *buf, uint32_t len, uint32_t daddr_be,
                               uint32_t dport) {
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof(sin));
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = daddr_be;
  sin.sin_port = htons((uint16_t)dport);
  // Never blocks (the caller may be the event loop): a full send buffer is EAGAIN at once,
  // and the async send waits for room on timers, as Deno's does.
  ssize_t r = sendto(s->fd, buf, len, MSG_DONTWAIT, (struct sockaddr *)&sin, sizeof(sin));
  // A bypass socket does not report ICMP errors (the contract): an error the companion
  // socket holds from an earlier datagram is consumed and the send tried once more.
  if (r < 0 && errno == ECONNREFUSED && s->eng != 0) {
    s->stats[NKB_ST_ICMP_IGNORED]++;
    r = sendto(s->fd, buf, len, MSG_DONTWAIT, (struct sockaddr *)&sin, sizeof(sin));
  }
  if (r < 0) return -errno;
  assert((uint32_t)r == len);
  s->stats[NKB_ST_KERNEL_OPKTS]++;
  return (int32_t)r;
}

// One frame onto the TX ring. When no frame is free, each spin rings the doorbell (unless
// the pusher does) and reaps completions; after busy_wait_cnt spins the send is refused.
static int32_t nkb_send_ring(nkb_sock_t *s, nkb_engine_t *e, const nkb_dest_t *d,
                             const uint8_t *buf, uint32_t len) {
  uint32_t spins = 0;
  if (e->tx_free_count == 0) (void)nkb_engine_reap_tx(e);
  while (e->tx_free_count == 0) {
    if (spins >= s->busy_wait_cnt) {
      s->stats[NKB_ST_TX_FULL]++;
      if (spins > s->stats[NKB_ST_SEND_SPIN_MAX]) s->stats[NKB_ST_SEND_SPIN_MAX] = spins;
      return -ENOBUFS;
    }
    spins++;
    // A link that is down keeps its frames on the ring. While the pusher rings for a
    // backlog, a spin only reaps: a doorbell here would transmit 256 frames on this thread.
    if (!nkb_pusher_rings(e)) (void)nkb_engine_kick_tx(e);
    (void)nkb_engine_reap_tx(e);
  }
  nkb_xsk_t *x = &e->xsk[0];
  uint32_t idx = 0;
  uint32_t got = nkb_ring_reserve(&x->tx, 1, &idx);
  assert(got == 1);  // the ring has a slot for every TX frame twice over
  uint64_t addr = e->tx_free[--e->tx_free_count];
  assert(addr + NKB_HDR_LEN + len <= e->umem_len);
  uint32_t flen = nkb_frame_build(e->umem + addr, &d->tmpl, buf, len, e->ip_id++);
  struct xdp_desc *desc = &((struct xdp_desc *)x->tx.entries)[idx & x->tx.mask];
  desc->addr = addr;
  desc->len = flen;
  desc->options = 0;
  nkb_ring_submit(&x->tx, 1);
  e->tx_outstanding++;
  s->stats[NKB_ST_OPKTS]++;
  if (spins > 0) s->stats[NKB_ST_OPKTS_SPIN]++;
  if (spins > s->stats[NKB_ST_SEND_SPIN_MAX]) s->stats[NKB_ST_SEND_SPIN_MAX] = spins;
  return (int32_t)len;
}

// One datagram, without the doorbell. Returns bytes, -errno or NKB_ENEEDROUTE.
static int32_t nkb_send_one(nkb_sock_t *s, nkb_engine_t *e, const uint8_t *buf, uint32_t len,
                            uint32_t daddr_be, uint32_t dport, uint64_t now) {
  if (len > NKB_MAX_DGRAM) return -EMSGSIZE;
  if (dport == 0 || dport > 65535u) return -EINVAL;
  nkb_dest_t *d = nkb_dest_find(s, daddr_be, dport);
  if (d == 0 || now > d->expires_ns) return NKB_ENEEDROUTE;
  // Over the MTU the kernel fragments: the bypass path never does.
  if (d->kind == NKB_DEST_KERNEL || e == 0 || len + NKB_IP_LEN + NKB_UDP_LEN > s->mtu) {
    return nkb_send_kernel(s, buf, len, daddr_be, dport);
  }
  assert(d->kind == NKB_DEST_BYPASS);
  return nkb_send_ring(s, e, d, buf, len);
}

// Rings for what the caller put on the TX ring (under the TX lock) and publishes the
// interface's send drops the doorbell found, for this socket's counters and `nkb stat`.
// A send's doorbell runs on the application's thread (the event loop): in copy mode the
// kernel transmits inside it, so it rings at most NKB_KICK_APP times and leaves a longer
// backlog (a full ring after the link came back, a slow device) to the engine's pusher
// thread, which the kick notes; while that thread rings, a send does not. Ringing until
// the ring was empty held the event loop for a whole ring's transmission.
static int32_t nkb_doorbell(nkb_sock_t *s, nkb_engine_t *e) {
  int32_t rc = nkb_engine_kick_app(e);
  nkb_stat_raise(&s->stats[NKB_ST_ENGINE_TX_DROPS], nkb_engine_tx_drops(e));
  assert(rc <= 0);
  return rc;
}

// Engine notifications are read under the TX lock (held by the caller): one reader at a time.
static bool nkb_link_changed(const nkb_sock_t *s, nkb_engine_t *e, uint64_t now) {
  return nkb_engine_link_gen(e, now) != s->link_gen_seen;
}

int32_t nkb_sock_link_ack(int32_t h) {
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0) return -EBADF;
  nkb_engine_t *e = nkb_sock_engine(s);
  if (e == 0) return -ENOTCONN;
  nkb_lock(&e->tx_lock, NKB_RANK_TX);
  s->link_gen_seen = e->link_gen;
  nkb_unlock(&e->tx_lock, NKB_RANK_TX);
  return 0;
}

int32_t nkb_send(int32_t h, const uint8_t *buf, uint32_t len, uint32_t daddr_be, uint32_t dport) {
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0) return -EBADF;
  if (buf == 0 && len != 0) return -EFAULT;
  nkb_engine_t *e = nkb_sock_engine(s);
  uint64_t now = nkb_now_ns();
  if (e != 0) nkb_lock(&e->tx_lock, NKB_RANK_TX);
  uint64_t before = s->stats[NKB_ST_OPKTS];
  int32_t rc = e != 0 && nkb_link_changed(s, e, now)
                   ? NKB_ELINKCHANGE
                   : nkb_send_one(s, e, buf, len, daddr_be, dport, now);
  if (e != 0 && s->stats[NKB_ST_OPKTS] != before) (void)nkb_doorbell(s, e);
  if (e != 0) nkb_unlock(&e->tx_lock, NKB_RANK_TX);
  s->last_error = rc < 0 ? rc : 0;
  return rc;
}

// Entries [first, first + count) of a meta buffer of meta_len bytes, as JavaScript
// passed it: the entries must lie inside it, and its words be aligned.
static bool nkb_meta_ok(const uint32_t *meta, uint32_t meta_len, uint32_t first, uint32_t count,
                        uint32_t words) {
  if (count > NKB_BATCH_MAX || first > NKB_BATCH_MAX) return false;
  uint64_t need = ((uint64_t)first + count) * words * sizeof(uint32_t);  // no overflow: <= 2^16
  return nkb_buf_ok(meta, meta_len, 0u, sizeof(uint32_t)) && need <= meta_len;
}

int32_t nkb_send_batch(int32_t h, const uint8_t *buf, uint32_t buf_len, const uint32_t *meta,
                       uint32_t meta_len, uint32_t first, uint32_t count) {
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0) return -EBADF;
  if (buf == 0 || !nkb_meta_ok(meta, meta_len, first, count, NKB_SEND_META_WORDS)) {
    return -EINVAL;
  }
  meta += (size_t)first * NKB_SEND_META_WORDS;
  nkb_engine_t *e = nkb_sock_engine(s);
  uint64_t now = nkb_now_ns();
  if (e != 0) nkb_lock(&e->tx_lock, NKB_RANK_TX);
  uint64_t before = s->stats[NKB_ST_OPKTS];
  uint32_t sent = 0;
  int32_t rc = e != 0 && nkb_link_changed(s, e, now) ? NKB_ELINKCHANGE : 0;
  for (; rc >= 0 && sent < count; sent++) {
    const uint32_t *m = &meta[sent * NKB_SEND_META_WORDS];
    // Offsets and lengths come from JavaScript: check them against the buffer.
    if (m[0] > buf_len || m[1] > buf_len - m[0]) {
      rc = -EINVAL;
      break;
    }
    rc = nkb_send_one(s, e, buf + m[0], m[1], m[2], m[3], now);
    if (rc < 0) break;
  }
  if (e != 0 && s->stats[NKB_ST_OPKTS] != before) (void)nkb_doorbell(s, e);
  if (e != 0) nkb_unlock(&e->tx_lock, NKB_RANK_TX);
  s->last_error = rc < 0 ? rc : 0;
  assert(sent <= count);
  return (int32_t)sent;
}

int32_t nkb_sock_flush(int32_t h) {
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0) return -EBADF;
  nkb_engine_t *e = nkb_sock_engine(s);
  if (e == 0) return -ENOTCONN;
  // The link came back: what waited on the ring leaves, off the event loop.
  nkb_lock(&e->tx_lock, NKB_RANK_TX);
  nkb_engine_resume_tx(e);
  nkb_unlock(&e->tx_lock, NKB_RANK_TX);
  return 0;
}

// ---- receive --------------------------------------------------------------

typedef struct nkb_rx_out {
  uint8_t *buf;
  uint32_t buf_len;
  uint32_t off;
  uint32_t *meta;
  uint32_t max;
  uint32_t n;
  uint32_t truncated;  // bypass datagrams cut to fit
} nkb_rx_out_t;

// Room for a payload of len: everything fits the first slot (truncated if need be).
static bool nkb_rx_fits(const nkb_rx_out_t *o, uint32_t len) {
  return o->n == 0 || len <= o->buf_len - o->off;
}

static void nkb_rx_put(nkb_rx_out_t *o, const uint8_t *payload, uint32_t len, uint32_t saddr_be,
                       uint32_t sport, uint32_t flags);

// Delivers a validated bypass frame: copied, and the frame given back.
static void nkb_rx_take(nkb_sock_t *s, nkb_rx_out_t *o, nkb_engine_t *e, uint32_t q,
                        uint64_t addr, uint32_t len, uint32_t saddr_be, uint32_t sport) {
  s->stats[NKB_ST_IPKTS]++;
  nkb_rx_put(o, e->umem + addr + NKB_HDR_LEN, len, saddr_be, sport, 0);
  nkb_engine_refill(e, q, addr);
}

static void nkb_rx_put(nkb_rx_out_t *o, const uint8_t *payload, uint32_t len, uint32_t saddr_be,
                       uint32_t sport, uint32_t flags) {
  assert(o->n < o->max && o->off <= o->buf_len);
  uint32_t room = o->buf_len - o->off;
  uint32_t copy = len <= room ? len : room;
  if (copy < len) flags |= NKB_RX_TRUNCATED;
  if (copy < len && payload != 0) o->truncated++;  // kernel-path cuts are counted by the caller
  if (payload != 0) memcpy(o->buf + o->off, payload, copy);
  uint32_t *m = &o->meta[o->n * NKB_RECV_META_WORDS];
  m[0] = o->off;
  m[1] = copy;
  m[2] = saddr_be;
  m[3] = sport;
  m[4] = flags;
  m[5] = m[6] = m[7] = 0;
  o->off += copy;
  o->n++;
}

// The socket that holds the flow (under the engine's rx lock, as flows change), or null.
static nkb_sock_t *nkb_flow_owner(const nkb_engine_slot_t *es, uint32_t daddr_be,
                                  uint16_t dport) {
  for (uint32_t i = 0; i < NKB_MAX_ATTACH; i++) {
    const nkb_flow_t *f = &es->flows[i];
    if (f->sock != 0 && f->ip_be == daddr_be && f->port == dport) return f->sock;
  }
  return 0;
}

static void nkb_park(nkb_sock_t *owner, nkb_engine_t *e, uint32_t q, uint64_t addr,
                     const nkb_parked_t *p) {
  if (owner->park_tail - owner->park_head >= NKB_PENDING) {
    owner->stats[NKB_ST_RX_DROPPED]++;
    nkb_engine_refill(e, q, addr);
    return;
  }
  owner->parked[owner->park_tail % NKB_PENDING] = *p;
  __atomic_store_n(&owner->park_tail, owner->park_tail + 1u, __ATOMIC_RELEASE);
  // An owner asleep in ppoll() may never see the ring that woke it non-empty (this socket
  // took the entries), and would sleep out its slice while its datagrams pile up here:
  // wake it, once per sleep. Pairs with the fence in nkb_wait_sleep.
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (__atomic_load_n(&owner->sleeping, __ATOMIC_SEQ_CST) != 0 &&
      __atomic_exchange_n(&owner->park_signaled, 1u, __ATOMIC_ACQ_REL) == 0) {
    uint64_t one = 1;
    (void)!write(owner->park_fd, &one, sizeof(one));  // a full eventfd already wakes it
  }
}

static void nkb_rx_parked(nkb_sock_t *s, nkb_engine_t *e, nkb_rx_out_t *o) {
  for (uint32_t i = 0; i < NKB_PENDING && s->park_head != s->park_tail && o->n < o->max; i++) {
    nkb_parked_t *p = &s->parked[s->park_head % NKB_PENDING];
    if (!nkb_rx_fits(o, p->payload_len)) break;
    nkb_rx_take(s, o, e, p->queue, p->addr, p->payload_len, p->saddr_be, p->sport);
    __atomic_store_n(&s->park_head, s->park_head + 1u, __ATOMIC_RELEASE);
  }
}

// One frame from queue q's RX ring: validate, then deliver, park or drop it.
// Counts a frame the reader could not deliver; a drain has no reader (give.c: the engine
// counts what it retires).
static inline void nkb_rx_count(nkb_sock_t *reader, uint32_t counter) {
  if (reader != 0) reader->stats[counter]++;
}

// s: the socket reading (o its batch), or null for a drain, which parks every frame.
static void nkb_rx_frame(nkb_sock_t *s, nkb_engine_slot_t *es, uint32_t q,
                         const struct xdp_desc *desc, nkb_rx_out_t *o) {
  assert((s == 0) == (o == 0));
  nkb_engine_t *e = es->engine;
  // Never trust a descriptor: it must lie inside one chunk of the UMEM.
  uint64_t chunk = desc->addr - desc->addr % e->frame_size;
  if (desc->addr >= e->umem_len || desc->len > e->frame_size - (desc->addr - chunk)) {
    nkb_rx_count(s, NKB_ST_RX_INVALID);
    if (desc->addr < e->umem_len) nkb_engine_refill(e, q, chunk);
    return;
  }
  const uint8_t *frame = e->umem + desc->addr;
  nkb_parsed_t pr;
  if (nkb_frame_parse(frame, desc->len, &pr) != NKB_FRAME_OK) {
    nkb_rx_count(s, NKB_ST_RX_INVALID);
    nkb_engine_refill(e, q, desc->addr);
    return;
  }
  nkb_sock_t *os = nkb_flow_owner(es, pr.daddr_be, pr.dport);
  if (os == 0) {
    nkb_rx_count(s, NKB_ST_RX_DROPPED);  // its socket left between the filter and us
    nkb_engine_refill(e, q, desc->addr);
    return;
  }
  // A connected socket takes datagrams from its peer only, as the kernel's does.
  if (os->peer_port != 0 && (pr.saddr_be != os->peer_be || pr.sport != os->peer_port)) {
    os->stats[NKB_ST_RX_FOREIGN]++;
    nkb_engine_refill(e, q, desc->addr);
    return;
  }
  bool mine = s != 0 && os == s && s->park_head == s->park_tail;
  if (mine && o->n < o->max && nkb_rx_fits(o, pr.payload_len)) {
    nkb_rx_take(s, o, e, q, desc->addr, pr.payload_len, pr.saddr_be, pr.sport);
    return;
  }
  nkb_parked_t p = {.addr = desc->addr, .payload_len = pr.payload_len, .saddr_be = pr.saddr_be,
                    .sport = pr.sport, .queue = (uint16_t)q};
  nkb_park(os, e, q, desc->addr, &p);
}

// The kernel wrote the frames from another core: asking for the next frames' lines ahead of
// their turn overlaps those transfers instead of waiting for each in turn.
#define NKB_RX_PREFETCH 4u

static void nkb_rx_prefetch(const nkb_engine_t *e, const struct xdp_desc *d) {
  if (d->addr >= e->umem_len) return;  // checked again, and counted, when it is taken
  const uint8_t *p = e->umem + d->addr;
  __builtin_prefetch(p);       // Ethernet, IPv4, UDP headers
  __builtin_prefetch(p + 64);  // the payload's start (the checksum reads it all)
}

static void nkb_rx_ring(nkb_sock_t *s, nkb_engine_slot_t *es, nkb_rx_out_t *o) {
  nkb_engine_t *e = es->engine;
  nkb_rx_parked(s, e, o);
  if (s->park_head != s->park_tail) return;  // order: parked frames go first
  for (uint32_t q = 0; q < e->queue_count && o->n < o->max; q++) {
    nkb_xsk_t *x = &e->xsk[q];
    uint32_t idx = 0;
    uint32_t n = nkb_ring_peek(&x->rx, o->max - o->n + NKB_RX_EXTRA, &idx);
    const struct xdp_desc *descs = (const struct xdp_desc *)x->rx.entries;
    for (uint32_t i = 0; i < n && i < NKB_RX_PREFETCH; i++) {
      nkb_rx_prefetch(e, &descs[(idx + i) & x->rx.mask]);
    }
    for (uint32_t i = 0; i < n; i++) {
      if (i + NKB_RX_PREFETCH < n) {
        nkb_rx_prefetch(e, &descs[(idx + i + NKB_RX_PREFETCH) & x->rx.mask]);
      }
      nkb_rx_frame(s, es, q, &descs[(idx + i) & x->rx.mask], o);
    }
    if (n > 0) nkb_ring_release(&x->rx, n);
    nkb_engine_wake_rx(e, q);
  }
}

uint32_t nkb_rx_drain_queue(nkb_engine_slot_t *es, uint32_t q) {
  nkb_engine_t *e = es->engine;
  assert(nkb_holds(NKB_RANK_RX) && q < NKB_MAX_QUEUES && q >= e->queue_count);
  nkb_xsk_t *x = &e->xsk[q];
  if (x->rx.map == 0) return 0;
  uint32_t total = 0;
  // The ring holds at most NKB_RING_SIZE entries, and nothing adds to it any more.
  for (uint32_t round = 0; round < 2u; round++) {
    uint32_t idx = 0;
    uint32_t n = nkb_ring_peek(&x->rx, NKB_RING_SIZE, &idx);
    const struct xdp_desc *descs = (const struct xdp_desc *)x->rx.entries;
    for (uint32_t i = 0; i < n; i++) nkb_rx_frame(0, es, q, &descs[(idx + i) & x->rx.mask], 0);
    if (n > 0) nkb_ring_release(&x->rx, n);
    total += n;
  }
  assert(total <= 2u * NKB_RING_SIZE);
  return total;
}

static int32_t nkb_rx_kernel(nkb_sock_t *s, nkb_rx_out_t *o) {
  for (uint32_t i = 0; i < NKB_BATCH_MAX && o->n < o->max; i++) {
    // A datagram read from the kernel cannot be put back: read only into full room.
    if (o->n > 0 && o->buf_len - o->off < NKB_MAX_DGRAM) break;
    struct sockaddr_in sin;
    socklen_t slen = sizeof(sin);
    uint32_t room = o->buf_len - o->off;
    ssize_t r = recvfrom(s->fd, o->buf + o->off, room, MSG_DONTWAIT | MSG_TRUNC,
                         (struct sockaddr *)&sin, &slen);
    if (r < 0) {
      if (errno == EAGAIN) __atomic_store_n(&s->kernel_hint, 0u, __ATOMIC_RELAXED);
      if (errno == EAGAIN || errno == EINTR) return 0;
      // ICMP errors are reported on the kernel path only, as the contract says.
      if (errno == ECONNREFUSED && s->eng != 0) {
        s->stats[NKB_ST_ICMP_IGNORED]++;
        continue;
      }
      return -errno;
    }
    uint32_t len = (uint32_t)r;
    s->stats[NKB_ST_KERNEL_IPKTS]++;
    __atomic_store_n(&s->kernel_hint, 1u, __ATOMIC_RELAXED);  // there may be more
    if (len > room) s->stats[NKB_ST_RX_TRUNCATED]++;
    nkb_rx_put(o, 0, len, sin.sin_addr.s_addr, ntohs(sin.sin_port), NKB_RX_KERNEL);
  }
  return 0;
}

// A batch is read by its caller as soon as the call returns, but the frames read since its
// first entries were written pushed those out of L1: bring the entries and each copied
// payload's first line back (a 256-datagram batch of 64 bytes is 24 KiB), so that the
// caller's first pass over the batch costs no more than a second one would.
static void nkb_rx_hand_over(const nkb_rx_out_t *o) {
  for (uint32_t i = 0; i < o->n; i += 2u) __builtin_prefetch(&o->meta[i * NKB_RECV_META_WORDS]);
  for (uint32_t i = 0; i < o->n; i++) {
    uint32_t at = o->meta[i * NKB_RECV_META_WORDS];
    if (at < o->buf_len) __builtin_prefetch(o->buf + at);
  }
}

int32_t nkb_recv_batch(int32_t h, uint8_t *buf, uint32_t buf_len, uint32_t *meta,
                       uint32_t meta_len, uint32_t max_msgs) {
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0) return -EBADF;
  // Both buffers and both sizes come from JavaScript: the sizes are those of the arrays
  // passed, read at call time, and every entry written must lie inside meta.
  if (buf == 0 || buf_len == 0 || max_msgs == 0) return -EINVAL;
  if (!nkb_meta_ok(meta, meta_len, 0u, max_msgs, NKB_RECV_META_WORDS)) return -EINVAL;
  nkb_rx_out_t o = {
      .buf = buf, .buf_len = buf_len, .off = 0, .meta = meta, .max = max_msgs, .n = 0};
  // Every 16th call looks at the companion socket first, so neither path starves. Other
  // calls look at it only when a wait saw it readable (or it holds the socket's only
  // path): an empty recvfrom per call was a syscall per datagram for bypass traffic.
  bool kernel_first = (++s->fairness & 15u) == 0;
  nkb_engine_slot_t *es = s->eng;
  bool kernel_due = es == 0 || __atomic_load_n(&s->kernel_hint, __ATOMIC_RELAXED) != 0;
  int32_t krc = kernel_first ? nkb_rx_kernel(s, &o) : 0;
  if (es != 0 && o.n < o.max) {
    uint32_t before = o.n;
    nkb_lock(&es->engine->rx_lock, NKB_RANK_RX);
    nkb_rx_ring(s, es, &o);
    nkb_unlock(&es->engine->rx_lock, NKB_RANK_RX);
    if (o.n > before && s->rx_spun) {
      s->stats[NKB_ST_IPKTS_SPIN]++;
      s->rx_spun = 0;
    }
  }
  if (!kernel_first && kernel_due && o.n < o.max) krc = nkb_rx_kernel(s, &o);
  s->stats[NKB_ST_RX_TRUNCATED] += o.truncated;
  assert(o.n <= max_msgs && o.off <= buf_len);
  nkb_rx_hand_over(&o);
  if (o.n == 0 && krc < 0) return krc;
  return (int32_t)o.n;
}

// ---- wait -----------------------------------------------------------------
//
// One implementation for nkb_wait (one socket, the synchronous receives) and
// nkb_wait_many (every waiting socket of an isolate, the async receives): each pending
// async receive used to hold one thread of Deno's FFI pool in nkb_wait, and a program with
// tens of idle sockets (node:dgram receives on every bound socket) took the whole pool
// (its file reads waited seconds).

typedef struct {
  nkb_sock_t *s;
  const nkb_engine_t *e;
} nkb_waiting_t;

static bool nkb_ready_ring(const nkb_sock_t *s, const nkb_engine_t *e) {
  if (__atomic_load_n(&s->park_head, __ATOMIC_ACQUIRE) !=
      __atomic_load_n(&s->park_tail, __ATOMIC_ACQUIRE)) {
    return true;
  }
  if (e == 0) return false;
  // Without the rx lock: a queue given up meanwhile shows zeros (nkb_engine_retire_queue).
  uint32_t queues = nkb_engine_queues(e);
  for (uint32_t q = 0; q < queues; q++) {
    const nkb_ring_t *r = &e->xsk[q].rx;
    if (__atomic_load_n(r->producer, __ATOMIC_ACQUIRE) !=
        __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE)) {
      return true;
    }
  }
  return false;
}

// 1 ready, -EBADF closing, 0 neither; a wake request counts as ready (the caller looks).
static int32_t nkb_wait_look(nkb_sock_t *s, const nkb_engine_t *e, bool spun) {
  if (__atomic_load_n(&s->closing, __ATOMIC_ACQUIRE)) return -EBADF;
  if (nkb_ready_ring(s, e)) {
    if (spun) s->rx_spun = 1;  // the next bypass datagram counts as a spin
    return 1;
  }
  return __atomic_exchange_n(&s->wake_req, 0u, __ATOMIC_ACQ_REL) != 0 ? 1 : 0;
}

static uint32_t nkb_wait_spin(const nkb_waiting_t *w, int32_t *out, uint32_t n,
                              uint32_t timeout_us) {
  uint64_t deadline = nkb_now_ns() + (uint64_t)timeout_us * 1000ull;
  uint64_t max_iter = (uint64_t)timeout_us * 1000ull + 1000u;  // also bounded by count
  struct pollfd fds[64];
  for (uint64_t i = 0; i < max_iter; i++) {
    uint32_t ready = 0;
    for (uint32_t k = 0; k < n; k++) {
      if (w[k].s == 0) continue;
      out[k] = nkb_wait_look(w[k].s, w[k].e, i > 0);
      if (out[k] != 0) ready++;
    }
    // The companion sockets, 64 to a poll(2), every NKB_SPIN_POLL_EVERY rounds.
    for (uint32_t k0 = 0; ready == 0 && i % NKB_SPIN_POLL_EVERY == 0 && k0 < n; k0 += 64) {
      uint32_t m = n - k0 < 64 ? n - k0 : 64;
      for (uint32_t j = 0; j < m; j++) {
        int32_t fd = w[k0 + j].s != 0 ? w[k0 + j].s->fd : -1;
        fds[j] = (struct pollfd){.fd = fd, .events = POLLIN, .revents = 0};
      }
      if (poll(fds, m, 0) <= 0) continue;
      for (uint32_t j = 0; j < m; j++) {
        if (fds[j].revents == 0) continue;
        __atomic_store_n(&w[k0 + j].s->kernel_hint, 1u, __ATOMIC_RELAXED);
        out[k0 + j] = 1;
        ready++;
      }
    }
    if (ready > 0) return ready;
    if (i % NKB_SPIN_CLOCK_EVERY == 0 && nkb_now_ns() >= deadline) return 0;
    nkb_cpu_relax();
  }
  return 0;
}

// Whose fd each entry of the poll set is: each socket adds its companion socket, wake and
// park eventfds; each distinct engine its queues' XDP sockets.
typedef struct {
  uint32_t socket;  // index into the waiting list, or UINT32_MAX for an engine's fd
} nkb_fd_owner_t;

// Poll entries per waiting socket, at most.
#define NKB_WAIT_FDS (3u + NKB_MAX_QUEUES)

static uint32_t nkb_wait_fds(const nkb_waiting_t *w, uint32_t n, struct pollfd *fds,
                             nkb_fd_owner_t *owner, uint32_t cap) {
  uint32_t m = 0;
  for (uint32_t k = 0; k < n; k++) {
    const nkb_sock_t *s = w[k].s;
    if (s == 0) continue;
    const int32_t own[3] = {s->wake_fd, s->fd, s->park_fd};
    for (uint32_t j = 0; j < 3 && m < cap; j++) {
      fds[m] = (struct pollfd){.fd = own[j], .events = POLLIN, .revents = 0};
      owner[m++] = (nkb_fd_owner_t){.socket = k};
    }
    const nkb_engine_t *e = w[k].e;
    bool seen = false;
    for (uint32_t j = 0; j < k && e != 0 && !seen; j++) seen = w[j].s != 0 && w[j].e == e;
    // Without the rx lock: the fd of a queue given up meanwhile is -1 (ignored by ppoll),
    // closed (POLLNVAL) or, reused, another file's: at worst a wake that finds nothing.
    uint32_t queues = e != 0 ? nkb_engine_queues(e) : 0u;
    for (uint32_t q = 0; !seen && q < queues && m < cap; q++) {
      int32_t fd = __atomic_load_n(&e->xsk[q].fd, __ATOMIC_ACQUIRE);
      fds[m] = (struct pollfd){.fd = fd, .events = POLLIN, .revents = 0};
      owner[m++] = (nkb_fd_owner_t){.socket = UINT32_MAX};
    }
  }
  assert(m <= cap);
  return m;
}

// fds and owner: room for NKB_WAIT_FDS entries per socket.
static int32_t nkb_wait_sleep(const nkb_waiting_t *w, int32_t *out, uint32_t n,
                              uint32_t timeout_us, struct pollfd *fds, nkb_fd_owner_t *owner) {
  uint32_t m = nkb_wait_fds(w, n, fds, owner, n * NKB_WAIT_FDS);
  // Announce the sleep before the last look at the park (see nkb_park): a socket that
  // parks after that look sees the flag and writes park_fd.
  for (uint32_t k = 0; k < n; k++) {
    if (w[k].s != 0) __atomic_store_n(&w[k].s->sleeping, 1u, __ATOMIC_SEQ_CST);
  }
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  uint32_t ready = 0;
  for (uint32_t k = 0; k < n; k++) {
    if (w[k].s == 0) continue;
    out[k] = nkb_wait_look(w[k].s, w[k].e, false);
    if (out[k] != 0) ready++;
  }
  int r = 0;
  if (ready == 0) {
    struct timespec ts = {.tv_sec = timeout_us / 1000000u,
                          .tv_nsec = (long)(timeout_us % 1000000u) * 1000L};
    r = ppoll(fds, m, &ts, 0);
  }
  int32_t err = r < 0 ? errno : 0;
  for (uint32_t k = 0; k < n; k++) {
    if (w[k].s == 0) continue;
    __atomic_store_n(&w[k].s->sleeping, 0u, __ATOMIC_SEQ_CST);
    // Drained whenever it is readable, so that a late write cannot keep waking every sleep.
    __atomic_store_n(&w[k].s->park_signaled, 0u, __ATOMIC_RELEASE);
  }
  for (uint32_t j = 0; r > 0 && j < m; j++) {
    if (fds[j].revents == 0 || owner[j].socket == UINT32_MAX) continue;
    nkb_sock_t *s = w[owner[j].socket].s;
    if (fds[j].fd == s->park_fd) {
      uint64_t v;
      (void)!read(s->park_fd, &v, sizeof(v));  // nonblocking: a racing drain finds it empty
    }
    if (fds[j].fd == s->fd) __atomic_store_n(&s->kernel_hint, 1u, __ATOMIC_RELAXED);
    if (out[owner[j].socket] == 0) ready++;
    out[owner[j].socket] = 1;
  }
  if (r < 0 && err != EINTR) return -err;
  // A readable XDP socket, a close or a wake: every socket looks at its ring again.
  for (uint32_t k = 0; k < n; k++) {
    if (w[k].s == 0 || out[k] != 0) continue;
    out[k] = nkb_wait_look(w[k].s, w[k].e, false);
    if (out[k] != 0) ready++;
  }
  // A wake (park_fd) or a readable companion socket made out[k] 1: a close is -EBADF.
  for (uint32_t k = 0; k < n; k++) {
    if (w[k].s != 0 && __atomic_load_n(&w[k].s->closing, __ATOMIC_ACQUIRE)) out[k] = -EBADF;
  }
  return (int32_t)ready;
}

// Pins the sockets of handles (n of them): nkb_sock_free and detach refuse while a wait
// runs on another thread (core.c). A handle that is no socket answers -EBADF in out; one
// given twice is pinned once (its second place answers 0). Returns how many answered
// -EBADF. Takes no lock: a pin is a per-socket count.
static uint32_t nkb_wait_pin(nkb_waiting_t *w, int32_t *out, uint32_t n, const uint8_t *handles) {
  uint32_t closed = 0;
  // A bit per socket slot, set once pinned here: a handle listed twice is found in one step
  // (comparing every pair cost 500,000 comparisons per wait of 1,024 sockets).
  _Static_assert(NKB_MAX_SOCKS % 64u == 0, "whole words of slots");
  uint64_t seen[NKB_MAX_SOCKS / 64u];
  memset(seen, 0, sizeof(seen));
  for (uint32_t k = 0; k < n; k++) {
    int32_t h;
    memcpy(&h, handles + (size_t)k * sizeof(h), sizeof(h));  // the caller's may be misaligned
    w[k] = (nkb_waiting_t){.s = 0, .e = 0};
    out[k] = 0;
    nkb_sock_t *s = nkb_sock_pin(h);
    if (s == 0) {
      out[k] = -EBADF;
      closed++;
      continue;
    }
    assert(s->index < NKB_MAX_SOCKS);
    uint64_t bit = 1ull << (s->index % 64u);
    if ((seen[s->index / 64u] & bit) != 0) {
      nkb_sock_unpin(s);
      continue;
    }
    seen[s->index / 64u] |= bit;
    // Read after the pin: a detach that cleared it first sees the pin and puts it back.
    const nkb_engine_slot_t *es = __atomic_load_n(&s->eng, __ATOMIC_SEQ_CST);
    w[k] = (nkb_waiting_t){.s = s, .e = es != 0 ? es->engine : 0};
  }
  return closed;
}

// Waits for the pinned sockets, then unpins them; out as nkb_wait_many's. A handle that was
// no socket ends the wait at once (its caller learns it now; the others look once).
static int32_t nkb_wait_pinned(nkb_waiting_t *w, int32_t *out, uint32_t n, uint32_t closed,
                               uint32_t timeout_us, uint32_t spin, struct pollfd *fds,
                               nkb_fd_owner_t *owner) {
  if (timeout_us > NKB_WAIT_MAX_US) timeout_us = NKB_WAIT_MAX_US;
  uint64_t t0 = nkb_now_ns();
  int32_t rc = 0;
  if (closed > 0) {
    for (uint32_t k = 0; k < n; k++) {
      if (w[k].s != 0) out[k] = nkb_wait_look(w[k].s, w[k].e, false);
    }
  } else if (spin) {
    rc = (int32_t)nkb_wait_spin(w, out, n, timeout_us);
  } else {
    rc = nkb_wait_sleep(w, out, n, timeout_us, fds, owner);
  }
  uint64_t waited = nkb_now_ns() - t0;
  uint32_t ready = 0;
  for (uint32_t k = 0; k < n; k++) {
    assert(out[k] <= 1 && out[k] >= -EBADF);
    ready += out[k] != 0;
    if (w[k].s == 0) continue;
    // One wait of a socket at a time (its receives share it), so a plain add will do.
    w[k].s->stats[NKB_ST_WAIT_NS] += waited;
    nkb_sock_unpin(w[k].s);
  }
  return rc < 0 ? rc : (int32_t)ready;
}

int32_t nkb_wait(int32_t h, uint32_t timeout_us, uint32_t spin) {
  nkb_waiting_t w[1];
  int32_t out[1];
  struct pollfd fds[NKB_WAIT_FDS];
  nkb_fd_owner_t owner[NKB_WAIT_FDS];
  uint32_t closed = nkb_wait_pin(w, out, 1, (const uint8_t *)&h);
  if (closed > 0) return -EBADF;
  int32_t rc = nkb_wait_pinned(w, out, 1, 0, timeout_us, spin, fds, owner);
  return rc < 0 ? rc : out[0];
}

int32_t nkb_wait_many(const uint8_t *handles, uint32_t handles_len, uint8_t *out,
                      uint32_t out_len, uint32_t n, uint32_t timeout_us, uint32_t spin) {
  if (handles == 0 || out == 0 || n == 0 || n > NKB_WAIT_MANY_MAX) return -EINVAL;
  if (handles_len / sizeof(int32_t) < n || out_len / sizeof(int32_t) < n) return -EFAULT;
  nkb_waiting_t *w = calloc(n, sizeof(*w));
  int32_t *res = calloc(n, sizeof(*res));
  struct pollfd *fds = spin ? 0 : calloc((size_t)n * NKB_WAIT_FDS, sizeof(*fds));
  nkb_fd_owner_t *owner = spin ? 0 : calloc((size_t)n * NKB_WAIT_FDS, sizeof(*owner));
  int32_t rc = -ENOMEM;
  if (w != 0 && res != 0 && (spin || (fds != 0 && owner != 0))) {
    uint32_t closed = nkb_wait_pin(w, res, n, handles);
    rc = nkb_wait_pinned(w, res, n, closed, timeout_us, spin, fds, owner);
    memcpy(out, res, (size_t)n * sizeof(*res));  // the caller's may be misaligned
  }
  free(w);
  free(res);
  free(fds);
  free(owner);
  return rc;
}
