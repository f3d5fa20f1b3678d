// Checks ffi/datapath.c (receive, demux and park, send, wait) against an engine built
// here in plain memory, without root or a kernel: its UMEM is a heap block and its rings
// are plain arrays, laid out as nkb_engine_open lays them out (fewer RX frames per queue:
// rings small enough to wrap often). This program plays the kernel's side: it takes
// frames from the fill rings, writes Ethernet/IPv4/UDP frames at the XDP headroom and
// posts RX descriptors; it consumes the TX ring and posts completions. The sockets are
// real table entries (nkb_sock_insert) with a companion UDP socket on 127.0.0.1 and
// their eventfds; the XSK descriptors are unbound UDP sockets, so that a doorbell fails
// at once (EDESTADDRREQ) and no pusher thread starts. Ring indices start just below
// 2^32, so every check runs across their wrap.
//   1. rx rounds: random posts and random batches; payloads, meta words, counters, and
//      every UMEM frame in exactly one place (fill ring, kernel, RX ring, parked) always;
//   2. demux and park: three sockets on one engine (one connected);
//   3. invalid descriptors and malformed frames;
//   4. batch boundaries and the argument checks of nkb_recv_batch;
//   5. send: random batches through nkb_send/nkb_send_batch, a full TX ring, bad entries;
//   6. wait: ready, parked, timed out, woken by a park, shut down;
//   7. the companion socket: read at least every 16th receive, and after a wait saw it
//      readable (datagrams sent to it over the loopback, from this process);
//   8. lock order: a TX-then-RX take aborts (forked children).
// Built with UBSan traps and assertions on by tests/datapath_native.test.ts; prints one
// line per check and exits 0 when all hold.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_xdp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../ffi/core.h"

#define FS 2048u                  // chunk size
#define QN 2u                     // receive queues of the engine
#define RXF 1024u                 // RX frames per queue (nkb_engine_open: NKB_RX_FRAMES)
#define FILL_SIZE (2u * RXF)      // as NKB_PROD_RING_SIZE: twice the frames
#define RX_SIZE RXF               // the RX ring holds every RX frame of its queue
#define TXF NKB_TX_FRAMES         // the TX pool is the real one (reap asserts its size)
#define TX_SIZE (2u * TXF)
#define COMP_SIZE TXF
#define RX_TOTAL (QN * RXF)
#define UMEM_FRAMES (RX_TOTAL + TXF)
#define NSOCK 3u                  // A, B, C (C connected); D is only shut down
#define FIFO_CAP 2048u
#define RX_ROUNDS 3000u
#define TX_ROUNDS 3000u
#define MAX_OUTSTANDING 200u      // per socket in the random rounds: below NKB_PENDING
#define MAX_FAIL_LINES 20u

enum { R_FILL, R_COMP, R_RX, R_TX, R_KINDS };

typedef struct {
  uint32_t producer;
  uint32_t consumer;
  uint32_t flags;
  uint32_t pad;
} shared_t;

typedef struct {
  uint64_t seed;  // the payload's bytes follow from it
  uint32_t len;
  uint32_t addr_be;  // source (RX) or destination (TX)
  uint32_t port;
} expect_t;

typedef struct {
  expect_t e[FIFO_CAP];
  uint32_t head;
  uint32_t tail;
} fifo_t;

static struct {
  nkb_engine_t e;
  nkb_engine_slot_t slot;
  nkb_filter_t filter;
  int32_t doorbell_fd[QN];
  shared_t sh[QN][R_KINDS];
  uint64_t fill[QN][FILL_SIZE];
  uint64_t comp[COMP_SIZE];
  struct xdp_desc rx[QN][RX_SIZE];
  struct xdp_desc tx[TX_SIZE];
  uint64_t held[QN][RXF];  // frames the "kernel" took from a fill ring
  uint32_t held_n[QN];
  uint64_t tx_held[TXF];  // TX frames it took and has not completed
  uint32_t tx_held_n;
  fifo_t rxq[NSOCK][QN];  // datagrams posted for a socket, per queue, in order
  fifo_t kq[NSOCK];       // datagrams sent to a socket's companion socket, in order
  fifo_t txq;             // datagrams sent, in order
  uint16_t tx_ip_id;
  uint64_t next_seed;
  uint32_t failures;
} W;

static nkb_sock_t *S[NSOCK + 1];
static int32_t H[NSOCK + 1];
static const uint32_t LOCAL_BE = 0x010012c6u;  // 198.18.0.1, the flows' address
static const uint16_t PORT[NSOCK + 1] = {5001, 5002, 5003, 5004};
static const uint32_t PEER_BE = 0x030312c6u;   // 198.18.3.3, C's peer
static const uint16_t PEER_PORT = 7777;
static const uint8_t MACS[12] = {2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1};  // dst, src
static uint8_t rbuf[65536];
static uint32_t rmeta[NKB_BATCH_MAX * NKB_RECV_META_WORDS + 8];

static uint32_t rng_state = 0x6d2b79f5u;

static uint32_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}

static void fail(int line, const char *what) {
  if (W.failures++ < MAX_FAIL_LINES) fprintf(stderr, "line %d: %s\n", line, what);
}

#define CHECK(c)                     \
  do {                               \
    if (!(c)) fail(__LINE__, #c);    \
  } while (0)

static uint8_t pay_byte(uint64_t seed, uint32_t j) {
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + (uint64_t)j * 0xbf58476d1ce4e5b9ull;
  x ^= x >> 29;
  return (uint8_t)(x >> 8);
}

static void fifo_push(fifo_t *f, expect_t x) {
  assert(f->tail - f->head < FIFO_CAP);
  f->e[f->tail++ % FIFO_CAP] = x;
}

static uint32_t fifo_len(const fifo_t *f) { return f->tail - f->head; }

static uint32_t rx_expected(uint32_t x) {
  uint32_t n = fifo_len(&W.kq[x]);
  for (uint32_t q = 0; q < QN; q++) n += fifo_len(&W.rxq[x][q]);
  return n;
}

static uint64_t st(uint32_t x, uint32_t counter) { return S[x]->stats[counter]; }

static uint32_t parked(uint32_t x) { return S[x]->park_tail - S[x]->park_head; }

// ---- the engine in plain memory --------------------------------------------------

// A ring as nkb_ring_map leaves it, indices at start; a producer ring (fill, TX) as
// nkb_ring_init_producer leaves it (cached_cons = consumer + size).
static void ring_setup(nkb_ring_t *r, shared_t *sh, void *entries, uint32_t size,
                       uint32_t start, bool producer_side) {
  memset(sh, 0, sizeof(*sh));
  memset(r, 0, sizeof(*r));
  sh->producer = start;
  sh->consumer = start;
  r->size = size;
  r->mask = size - 1u;
  r->producer = &sh->producer;
  r->consumer = &sh->consumer;
  r->flags = &sh->flags;
  r->entries = entries;
  r->map = sh;
  r->map_len = sizeof(*sh);
  r->cached_prod = start;
  r->cached_cons = start;
  if (producer_side) r->cached_cons += size;
}

static void engine_queue(nkb_engine_t *e, uint32_t q, uint32_t start) {
  nkb_xsk_t *x = &e->xsk[q];
  x->fd = W.doorbell_fd[q];
  x->queue = q;
  x->rx_frame_base = (uint64_t)RXF * q * FS;
  ring_setup(&x->fill, &W.sh[q][R_FILL], W.fill[q], FILL_SIZE, start - 3u * q, true);
  ring_setup(&x->rx, &W.sh[q][R_RX], W.rx[q], RX_SIZE, start - 5u * q - 1u, false);
  if (q == 0) {
    ring_setup(&x->comp, &W.sh[q][R_COMP], W.comp, COMP_SIZE, start - 7u, false);
    ring_setup(&x->tx, &W.sh[q][R_TX], W.tx, TX_SIZE, start - 11u, true);
  }
  // nkb_xsk_fill_all: every RX frame of the queue on its fill ring.
  uint32_t idx = 0;
  uint32_t n = nkb_ring_reserve(&x->fill, RXF, &idx);
  assert(n == RXF);
  for (uint32_t i = 0; i < n; i++) *nkb_ring_addr(&x->fill, idx + i) = x->rx_frame_base + i * FS;
  nkb_ring_submit(&x->fill, n);
}

// A fresh engine, indices starting at `start`; the sockets' park queues must be empty.
static void engine_setup(uint32_t start) {
  nkb_engine_t *e = &W.e;
  uint8_t *umem = e->umem;
  memset(e, 0, sizeof(*e));
  e->umem = umem;
  e->umem_len = (uint64_t)UMEM_FRAMES * FS;
  e->ifindex = 1;
  e->queue_count = QN;
  e->requested_queues = QN;
  e->frame_size = FS;
  e->filter = &W.filter;
  e->nl_fd = -1;  // no link notifications: link_gen stays until the test bumps it
  for (uint32_t q = 0; q < NKB_MAX_QUEUES; q++) e->xsk[q].fd = -1;
  pthread_mutex_init(&e->rx_lock, 0);
  pthread_mutex_init(&e->tx_lock, 0);
  nkb_pusher_init(&e->pusher);
  for (uint32_t q = 0; q < QN; q++) engine_queue(e, q, start);
  // nkb_engine_umem: the TX frames after every queue's RX frames, a stack.
  uint64_t tx_base = (uint64_t)RX_TOTAL * FS;
  for (uint32_t i = 0; i < TXF; i++) e->tx_free[i] = tx_base + (uint64_t)(TXF - 1u - i) * FS;
  e->tx_free_count = TXF;
  memset(W.held_n, 0, sizeof(W.held_n));
  W.tx_held_n = 0;
  memset(W.rxq, 0, sizeof(W.rxq));
  memset(&W.txq, 0, sizeof(W.txq));
  W.tx_ip_id = 0;
  for (uint32_t x = 0; x < NSOCK; x++) {
    assert(parked(x) == 0);
    S[x]->park_head = S[x]->park_tail = start - 100u;  // park indices wrap too
    S[x]->link_gen_seen = 0;
  }
}

static nkb_sock_t *sock_make(uint32_t x, int32_t *h) {
  nkb_sock_t proto;
  memset(&proto, 0, sizeof(proto));
  proto.fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (proto.fd < 0 || bind(proto.fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) abort();
  proto.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  proto.park_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (proto.wake_fd < 0 || proto.park_fd < 0) abort();
  proto.owner = pthread_self();
  proto.mtu = 1500;
  proto.busy_wait_cnt = 15;
  proto.ttl = 64;
  proto.mcast_ttl = 1;
  if (x == 2) {
    proto.peer_be = PEER_BE;
    proto.peer_port = PEER_PORT;
  }
  nkb_sock_t *s = 0;
  *h = nkb_sock_insert(&proto, &s);
  if (*h <= 0 || s == 0) abort();
  s->eng = &W.slot;
  W.slot.refs++;
  W.slot.flows[x] = (nkb_flow_t){.sock = s, .ip_be = LOCAL_BE, .port = PORT[x]};
  return s;
}

// ---- the kernel's side: RX ---------------------------------------------------------

// Takes up to n frames from queue q's fill ring into the kernel's hands.
static void k_take_fill(uint32_t q, uint32_t n) {
  shared_t *sh = &W.sh[q][R_FILL];
  uint32_t cons = sh->consumer;
  uint32_t avail = __atomic_load_n(&sh->producer, __ATOMIC_ACQUIRE) - cons;
  CHECK(avail <= RXF);
  uint32_t take = avail < n ? avail : n;
  // More than the queue's frames would mean one given back twice: counted, not held.
  CHECK(W.held_n[q] + take <= RXF);
  if (take > RXF - W.held_n[q]) take = RXF - W.held_n[q];
  uint64_t base = (uint64_t)RXF * q * FS;
  for (uint32_t i = 0; i < take; i++) {
    uint64_t a = W.fill[q][(cons + i) & (FILL_SIZE - 1u)];
    CHECK(a % FS == 0 && a >= base && a < base + (uint64_t)RXF * FS);
    W.held[q][W.held_n[q]++] = a;
  }
  __atomic_store_n(&sh->consumer, cons + take, __ATOMIC_RELEASE);
}

static uint32_t rx_room(uint32_t q) {
  const shared_t *sh = &W.sh[q][R_RX];
  return RX_SIZE - (sh->producer - __atomic_load_n(&sh->consumer, __ATOMIC_ACQUIRE));
}

static void k_post_desc(uint32_t q, uint64_t addr, uint32_t len) {
  shared_t *sh = &W.sh[q][R_RX];
  assert(rx_room(q) > 0);
  W.rx[q][sh->producer & (RX_SIZE - 1u)] = (struct xdp_desc){.addr = addr, .len = len};
  __atomic_store_n(&sh->producer, sh->producer + 1u, __ATOMIC_RELEASE);
}

// A frame from the kernel's hands (taking from the fill ring if need be), or UINT64_MAX.
static uint64_t k_frame(uint32_t q) {
  if (W.held_n[q] == 0) k_take_fill(q, 64);
  if (W.held_n[q] == 0) return UINT64_MAX;
  uint32_t pick = rng() % W.held_n[q];
  uint64_t a = W.held[q][pick];
  W.held[q][pick] = W.held[q][--W.held_n[q]];
  return a;
}

// Writes a datagram for daddr:dport into frame `chunk` at the XDP headroom; its length.
static uint32_t k_write(uint64_t chunk, uint32_t saddr, uint16_t sport, uint32_t daddr,
                        uint16_t dport, uint64_t seed, uint32_t len) {
  static uint8_t payload[FS];
  assert(NKB_XDP_HEADROOM + NKB_HDR_LEN + len <= FS);
  for (uint32_t j = 0; j < len; j++) payload[j] = pay_byte(seed, j);
  nkb_tmpl_t t;
  nkb_tmpl_init(&t, MACS + 6, MACS, saddr, daddr, sport, dport, 64, 0);
  return nkb_frame_build(W.e.umem + chunk + NKB_XDP_HEADROOM, &t, payload, len, (uint16_t)seed);
}

// Posts a datagram on queue q for daddr:dport; expected by socket `to` unless to is -1.
// False when the queue has no frame or its RX ring no room.
static bool k_post(uint32_t q, int32_t to, uint32_t daddr, uint16_t dport, uint32_t saddr,
                   uint16_t sport, uint32_t len) {
  if (rx_room(q) == 0) return false;
  uint64_t chunk = k_frame(q);
  if (chunk == UINT64_MAX) return false;
  uint64_t seed = ++W.next_seed;
  uint32_t flen = k_write(chunk, saddr, sport, daddr, dport, seed, len);
  k_post_desc(q, chunk + NKB_XDP_HEADROOM, flen);
  if (to >= 0) {
    fifo_push(&W.rxq[to][q], (expect_t){.seed = seed, .len = len, .addr_be = saddr, .port = sport});
  }
  return true;
}

// A datagram for socket x from a source that x accepts (C: its peer only). The source
// address tells A's and B's queues apart; C's, all from one peer, by their payloads: at
// least 4 bytes.
static bool k_post_for(uint32_t q, uint32_t x, uint32_t len) {
  if (x == 2 && len < 4u) len = 4u;
  uint32_t saddr = x == 2 ? PEER_BE : 0x000912c6u | (q + 1u) << 24;  // 198.18.9.(q+1)
  uint16_t sport = x == 2 ? PEER_PORT : (uint16_t)(1024u + W.next_seed % 50000u);
  return k_post(q, (int32_t)x, LOCAL_BE, PORT[x], saddr, sport, len);
}

// ---- frame accounting -----------------------------------------------------------

static uint8_t where[UMEM_FRAMES];

static void mark(uint64_t addr, uint8_t place, uint64_t lo, uint64_t hi) {
  CHECK(addr >= lo && addr < hi);
  if (addr < lo || addr >= hi) return;
  uint64_t f = addr / FS;
  CHECK(where[f] == 0);  // a frame in two places
  where[f] = place;
}

// Every RX frame is in exactly one place: a fill ring, the kernel's hands, an RX ring,
// or a socket's park queue, and in its own queue's region.
static void rx_account(void) {
  memset(where, 0, sizeof(where));
  for (uint32_t q = 0; q < QN; q++) {
    uint64_t lo = (uint64_t)RXF * q * FS, hi = lo + (uint64_t)RXF * FS;
    const shared_t *f = &W.sh[q][R_FILL];
    CHECK(f->producer - f->consumer <= RXF);
    for (uint32_t i = f->consumer; i != f->producer; i++) {
      uint64_t a = W.fill[q][i & (FILL_SIZE - 1u)];
      CHECK(a % FS == 0);
      mark(a, 1, lo, hi);
    }
    for (uint32_t i = 0; i < W.held_n[q]; i++) mark(W.held[q][i], 2, lo, hi);
    const shared_t *r = &W.sh[q][R_RX];
    for (uint32_t i = r->consumer; i != r->producer; i++) {
      uint64_t a = W.rx[q][i & (RX_SIZE - 1u)].addr;
      if (a < W.e.umem_len) mark(a, 3, lo, hi);  // a bogus descriptor holds no frame
    }
    for (uint32_t x = 0; x < NSOCK; x++) {
      CHECK(parked(x) <= NKB_PENDING);
      for (uint32_t i = S[x]->park_head; i != S[x]->park_tail && parked(x) <= NKB_PENDING; i++) {
        const nkb_parked_t *p = &S[x]->parked[i % NKB_PENDING];
        if (p->queue == q) mark(p->addr, 4, lo, hi);
      }
    }
  }
  uint32_t placed = 0;
  for (uint32_t f = 0; f < RX_TOTAL; f++) placed += where[f] != 0;
  CHECK(placed == RX_TOTAL);  // none lost
}

// ---- receiving and checking what arrived ----------------------------------------

// Whether entry m is datagram ex, cut to the room left when `may_cut` (a bypass datagram
// is cut only as the first of its batch; one from the companion socket wherever it is).
static bool entry_matches(const uint32_t *m, const expect_t *ex, uint32_t buf_len, bool may_cut,
                          uint32_t kind, bool *trunc) {
  if (m[0] > buf_len) return false;
  *trunc = may_cut && ex->len > buf_len - m[0];
  uint32_t want = *trunc ? buf_len - m[0] : ex->len;
  if (m[1] != want || m[2] != ex->addr_be || m[3] != ex->port) return false;
  if (m[4] != (kind | (*trunc ? NKB_RX_TRUNCATED : 0u))) return false;
  for (uint32_t j = 0; j < want; j++) {
    if (rbuf[m[0] + j] != pay_byte(ex->seed, j)) return false;
  }
  return true;
}

// Pops the datagram that entry i (m) is: the next of the companion socket's, or of one of
// the queues'. False when it is none of them (lost, reordered or corrupted).
static bool entry_pop(uint32_t x, const uint32_t *m, uint32_t i, uint32_t buf_len,
                      uint32_t *kernel, uint32_t *truncs) {
  bool trunc = false;
  if ((m[4] & NKB_RX_KERNEL) != 0) {
    fifo_t *f = &W.kq[x];
    if (fifo_len(f) == 0) return false;
    if (!entry_matches(m, &f->e[f->head % FIFO_CAP], buf_len, true, NKB_RX_KERNEL, &trunc)) {
      return false;
    }
    f->head++;
    *kernel += 1;
    *truncs += trunc;
    return true;
  }
  for (uint32_t q = 0; q < QN; q++) {
    fifo_t *f = &W.rxq[x][q];
    if (fifo_len(f) == 0 || !entry_matches(m, &f->e[f->head % FIFO_CAP], buf_len, i == 0, 0u,
                                           &trunc)) {
      continue;
    }
    f->head++;
    *truncs += trunc;
    return true;
  }
  return false;
}

static void report_unmatched(uint32_t x, const uint32_t *m) {
  if (W.failures > MAX_FAIL_LINES) return;
  fprintf(stderr, "  socket %u got off %u len %u from %08x:%u flags %u; next expected:\n", x, m[0],
          m[1], m[2], m[3], m[4]);
  for (uint32_t q = 0; q < QN; q++) {
    const fifo_t *f = &W.rxq[x][q];
    if (fifo_len(f) == 0) continue;
    const expect_t *ex = &f->e[f->head % FIFO_CAP];
    fprintf(stderr, "    queue %u: len %u from %08x:%u (%u queued)\n", q, ex->len, ex->addr_be,
            ex->port, fifo_len(f));
  }
}

// nkb_recv_batch for socket x; each entry must be the next datagram of one of x's queues.
static int32_t recv_check(uint32_t x, uint32_t max_msgs, uint32_t buf_len) {
  assert(buf_len <= sizeof(rbuf) && max_msgs <= NKB_BATCH_MAX);
  memset(rmeta, 0xa5, sizeof(rmeta));
  uint64_t ipkts = st(x, NKB_ST_IPKTS), trunc0 = st(x, NKB_ST_RX_TRUNCATED);
  uint64_t kipkts = st(x, NKB_ST_KERNEL_IPKTS);
  int32_t n = nkb_recv_batch(H[x], rbuf, buf_len, rmeta, max_msgs * NKB_RECV_META_WORDS * 4u,
                             max_msgs);
  if (n < 0) return n;
  CHECK((uint32_t)n <= max_msgs);
  uint32_t off = 0, truncs = 0, kernel = 0;
  for (uint32_t i = 0; i < (uint32_t)n; i++) {
    const uint32_t *m = &rmeta[i * NKB_RECV_META_WORDS];
    CHECK(m[0] == off);
    CHECK(m[5] == 0 && m[6] == 0 && m[7] == 0);
    bool found = entry_pop(x, m, i, buf_len, &kernel, &truncs);
    CHECK(found);
    if (!found) report_unmatched(x, m);
    off += m[1];
  }
  CHECK(off <= buf_len);
  CHECK(rmeta[(uint32_t)n * NKB_RECV_META_WORDS] == 0xa5a5a5a5u);  // nothing past the last
  CHECK(st(x, NKB_ST_IPKTS) - ipkts == (uint64_t)n - kernel);
  CHECK(st(x, NKB_ST_KERNEL_IPKTS) - kipkts == kernel);
  CHECK(st(x, NKB_ST_RX_TRUNCATED) - trunc0 == truncs);
  return n;
}

// Every socket reads until nothing is expected; then no frame is parked or on a ring.
static void drain(void) {
  for (uint32_t round = 0; round < 64; round++) {
    uint32_t left = 0;
    for (uint32_t x = 0; x < NSOCK; x++) {
      if (rx_expected(x) > 0 || parked(x) > 0) (void)recv_check(x, NKB_BATCH_MAX, sizeof(rbuf));
      left += rx_expected(x) + parked(x);
    }
    if (left == 0) break;
  }
  for (uint32_t x = 0; x < NSOCK; x++) CHECK(rx_expected(x) == 0 && parked(x) == 0);
  for (uint32_t q = 0; q < QN; q++) CHECK(rx_room(q) == RX_SIZE);
  rx_account();
}

// ---- 1. random rounds --------------------------------------------------------------

static uint32_t pick_max(void) {
  uint32_t r = rng() % 16u;
  if (r == 0) return 1;
  if (r == 1) return NKB_BATCH_MAX;
  return 1u + rng() % 96u;
}

static uint32_t pick_len(void) {
  uint32_t r = rng() % 8u;
  if (r == 0) return 0;
  if (r == 1) return FS - NKB_XDP_HEADROOM - NKB_HDR_LEN;  // the largest a chunk holds
  return r < 5 ? rng() % 64u : rng() % 1500u;
}

static void check_rx_rounds(void) {
  uint32_t before = W.failures;
  engine_setup(0xffffffffu - 300u);
  uint64_t posted = 0, ipkts0 = 0, trunc0 = 0, parks = 0;
  for (uint32_t x = 0; x < NSOCK; x++) {
    ipkts0 += st(x, NKB_ST_IPKTS);
    trunc0 += st(x, NKB_ST_RX_TRUNCATED);
  }
  for (uint32_t round = 0; round < RX_ROUNDS; round++) {
    for (uint32_t q = 0; q < QN; q++) {
      k_take_fill(q, rng() % 48u);
      // Zero-copy drivers ask for a wake-up on the fill ring: the receive pokes the fd.
      W.sh[q][R_FILL].flags = (rng() & 1u) ? XDP_RING_NEED_WAKEUP : 0u;
    }
    uint32_t posts = rng() % 64u;
    for (uint32_t i = 0; i < posts; i++) {
      uint32_t x = rng() % NSOCK;
      if (rx_expected(x) >= MAX_OUTSTANDING) continue;
      posted += k_post_for(rng() % QN, x, pick_len());
    }
    uint32_t reads = 1u + rng() % 3u;
    for (uint32_t i = 0; i < reads; i++) {
      uint32_t buf_len = rng() % 4u == 0 ? sizeof(rbuf) : 16u + rng() % 8000u;
      CHECK(recv_check(rng() % NSOCK, pick_max(), buf_len) >= 0);
      for (uint32_t x = 0; x < NSOCK; x++) parks += parked(x);
    }
    rx_account();
  }
  drain();
  uint64_t dropped = 0, invalid = 0, ipkts = 0, truncated = 0;
  for (uint32_t x = 0; x < NSOCK; x++) {
    ipkts += st(x, NKB_ST_IPKTS);
    truncated += st(x, NKB_ST_RX_TRUNCATED);
    dropped += st(x, NKB_ST_RX_DROPPED) + st(x, NKB_ST_RX_FOREIGN);
    invalid += st(x, NKB_ST_RX_INVALID);
  }
  CHECK(dropped == 0 && invalid == 0);
  CHECK(ipkts - ipkts0 == posted);  // every datagram posted was delivered once
  // Not vacuous: frames waited in park queues, first datagrams were cut, rings wrapped.
  CHECK(parks > 0 && truncated > trunc0 && posted > 8u * RX_SIZE);
  printf("rx rounds: %u rounds, %llu delivered, %llu truncated, park depth summed %llu, "
         "failures %u\n", RX_ROUNDS, (unsigned long long)posted,
         (unsigned long long)(truncated - trunc0), (unsigned long long)parks,
         W.failures - before);
}

// ---- 2. demux and park ------------------------------------------------------------

// A reads interleaved frames of A, B and C: B's and C's are parked for them, in order.
static void check_park_interleaved(void) {
  for (uint32_t i = 0; i < 30; i++) {
    CHECK(k_post_for(i % QN, i % NSOCK, 10u + i));
  }
  CHECK(recv_check(0, 64, sizeof(rbuf)) == 10);
  CHECK(parked(1) == 10 && parked(2) == 10);
  for (uint32_t q = 0; q < QN; q++) CHECK(rx_room(q) == RX_SIZE);  // A read every entry
  rx_account();
  // More for B on the ring: its parked frames come first, and only 3 of them now.
  for (uint32_t i = 0; i < 5; i++) CHECK(k_post_for(0, 1, 100u));
  uint32_t cons = W.sh[0][R_RX].consumer;
  CHECK(recv_check(1, 3, sizeof(rbuf)) == 3);
  CHECK(parked(1) == 7);
  CHECK(W.sh[0][R_RX].consumer == cons);  // the ring waits while frames are parked
  CHECK(recv_check(1, 64, sizeof(rbuf)) == 12);  // 7 parked, then 5 from the ring
  CHECK(recv_check(2, 64, sizeof(rbuf)) == 10);
  rx_account();
}

// A park queue holds NKB_PENDING frames: more are dropped, counted on the owner, and
// their frames go back to the fill ring.
static void check_park_overflow(void) {
  uint64_t b_drop = st(1, NKB_ST_RX_DROPPED), a_drop = st(0, NKB_ST_RX_DROPPED);
  for (uint32_t i = 0; i < NKB_PENDING + 5u; i++) {
    bool ok = i < NKB_PENDING ? k_post_for(0, 1, 8u)
                              : k_post(0, -1, LOCAL_BE, PORT[1], 0x010912c6u, 999, 8u);
    CHECK(ok);
  }
  CHECK(recv_check(0, NKB_BATCH_MAX, sizeof(rbuf)) == 0);
  CHECK(parked(1) == NKB_PENDING);
  CHECK(st(1, NKB_ST_RX_DROPPED) - b_drop == 5u && st(0, NKB_ST_RX_DROPPED) == a_drop);
  rx_account();
  CHECK(recv_check(1, NKB_BATCH_MAX, sizeof(rbuf)) == (int32_t)NKB_PENDING);
  CHECK(parked(1) == 0);
  rx_account();
}

// A frame for no flow is dropped and counted on the reader; a connected socket's frames
// from another source are counted on it (RX_FOREIGN), whoever reads them.
static void check_no_flow_and_foreign(void) {
  uint64_t a_drop = st(0, NKB_ST_RX_DROPPED), b_drop = st(1, NKB_ST_RX_DROPPED);
  uint64_t c_foreign = st(2, NKB_ST_RX_FOREIGN), a_foreign = st(0, NKB_ST_RX_FOREIGN);
  CHECK(k_post(1, -1, LOCAL_BE, 5999, 0x010912c6u, 1234, 20));      // no such port
  CHECK(k_post(0, -1, 0x090012c6u, PORT[0], 0x010912c6u, 1234, 20));  // no such address
  CHECK(k_post_for(0, 0, 33));
  CHECK(k_post(0, -1, LOCAL_BE, PORT[2], PEER_BE, PEER_PORT + 1u, 20));         // other port
  CHECK(k_post(1, -1, LOCAL_BE, PORT[2], PEER_BE + (1u << 24), PEER_PORT, 20));  // other host
  CHECK(k_post_for(1, 2, 21));
  CHECK(recv_check(0, 64, sizeof(rbuf)) == 1);
  CHECK(st(0, NKB_ST_RX_DROPPED) - a_drop == 2u && st(1, NKB_ST_RX_DROPPED) == b_drop);
  CHECK(st(2, NKB_ST_RX_FOREIGN) - c_foreign == 2u && st(0, NKB_ST_RX_FOREIGN) == a_foreign);
  CHECK(parked(2) == 1);
  rx_account();
  // C reading itself: the same.
  CHECK(k_post(0, -1, LOCAL_BE, PORT[2], PEER_BE, PEER_PORT + 2u, 20));
  CHECK(k_post_for(0, 2, 22));
  CHECK(recv_check(2, 64, sizeof(rbuf)) == 2);
  CHECK(st(2, NKB_ST_RX_FOREIGN) - c_foreign == 3u);
  rx_account();
}

static void check_demux(void) {
  uint32_t before = W.failures;
  engine_setup(0xffffffffu - 40u);
  check_park_interleaved();
  check_park_overflow();
  check_no_flow_and_foreign();
  drain();
  printf("demux and park: failures %u\n", W.failures - before);
}

// ---- 3. invalid descriptors ---------------------------------------------------------

static void check_invalid(void) {
  uint32_t before = W.failures;
  engine_setup(0xffffffffu - 2u);
  uint64_t inv = st(0, NKB_ST_RX_INVALID);
  uint32_t fill_prod = W.sh[0][R_FILL].producer;
  // Past the UMEM: counted, nothing given back (it is no frame).
  k_post_desc(0, W.e.umem_len + NKB_XDP_HEADROOM, 60);
  k_post_desc(0, UINT64_MAX - 5u, 60);
  CHECK(k_post_for(0, 0, 40));
  CHECK(recv_check(0, 64, sizeof(rbuf)) == 1);
  CHECK(st(0, NKB_ST_RX_INVALID) - inv == 2u);
  CHECK(W.sh[0][R_FILL].producer == fill_prod + 1u);  // only the good frame came back
  rx_account();
  // Frames in the UMEM but not valid: each counted, each frame given back.
  uint32_t bad = 0;
  for (uint32_t kind = 0; kind < 8; kind++) {
    uint64_t chunk = k_frame(kind % QN);
    CHECK(chunk != UINT64_MAX);
    uint32_t flen = k_write(chunk, 0x010912c6u, 4000, LOCAL_BE, PORT[0], ++W.next_seed, 100);
    uint8_t *f = W.e.umem + chunk + NKB_XDP_HEADROOM;
    uint64_t addr = chunk + NKB_XDP_HEADROOM;
    uint32_t len = flen;
    if (kind == 0) len = FS - NKB_XDP_HEADROOM + 1u;        // past the chunk
    if (kind == 1) addr = chunk + FS - 1u, len = 1;         // last byte of the chunk: short
    if (kind == 2) f[NKB_ETH_LEN + 10] ^= 0x40u;            // IPv4 checksum
    if (kind == 3) f[NKB_HDR_LEN + 7] ^= 0x01u;             // payload: UDP checksum
    if (kind == 4) len = 30;                                // headers cut
    if (kind == 5) len = flen - 1u;                         // payload cut
    if (kind == 6) f[12] = 0x86, f[13] = 0xdd;              // not IPv4
    if (kind == 7) f[NKB_ETH_LEN + 9] = 6;                  // not UDP
    k_post_desc(kind % QN, addr, len);
    bad++;
    CHECK(k_post_for(kind % QN, 0, kind));  // good ones between them arrive in order
  }
  // Ethernet padding after the datagram is fine.
  uint64_t chunk = k_frame(1);
  uint64_t seed = ++W.next_seed;
  uint32_t flen = k_write(chunk, 0x020912c6u, 4001, LOCAL_BE, PORT[0], seed, 5);
  k_post_desc(1, chunk + NKB_XDP_HEADROOM, flen + 20u);
  fifo_push(&W.rxq[0][1], (expect_t){.seed = seed, .len = 5, .addr_be = 0x020912c6u, .port = 4001});
  CHECK(recv_check(0, 64, sizeof(rbuf)) == 9);
  CHECK(st(0, NKB_ST_RX_INVALID) - inv == 2u + bad);
  drain();
  printf("invalid descriptors: %u malformed, failures %u\n", bad + 2u, W.failures - before);
}

// ---- 4. batch boundaries --------------------------------------------------------------

static void check_batch_args(void) {
  uint32_t cons = W.sh[0][R_RX].consumer;
  uint32_t words = NKB_RECV_META_WORDS * 4u;
  CHECK(k_post_for(0, 0, 10));
  CHECK(nkb_recv_batch(H[0], rbuf, 0, rmeta, words, 1) == -EINVAL);        // buf_len 0
  CHECK(nkb_recv_batch(H[0], 0, 100, rmeta, words, 1) == -EINVAL);         // no buffer
  CHECK(nkb_recv_batch(H[0], rbuf, 100, rmeta, words, 0) == -EINVAL);      // max_msgs 0
  CHECK(nkb_recv_batch(H[0], rbuf, 100, rmeta, 2u * words - 1u, 2) == -EINVAL);  // meta short
  CHECK(nkb_recv_batch(H[0], rbuf, 100, 0, words, 1) == -EINVAL);          // no meta
  uint32_t *odd = (uint32_t *)(void *)((uint8_t *)rmeta + 2);
  CHECK(nkb_recv_batch(H[0], rbuf, 100, odd, words, 1) == -EINVAL);        // misaligned
  CHECK(nkb_recv_batch(H[0], rbuf, 100, rmeta, sizeof(rmeta), NKB_BATCH_MAX + 1u) == -EINVAL);
  CHECK(nkb_recv_batch(H[0] + (1 << 10), rbuf, 100, rmeta, words, 1) == -EBADF);  // stale
  CHECK(W.sh[0][R_RX].consumer == cons);  // none of them touched the ring
  CHECK(recv_check(0, 1, sizeof(rbuf)) == 1);
}

static void check_batch_sizes(void) {
  // max_msgs 1, five times: in order, the rest parked for itself meanwhile.
  for (uint32_t i = 0; i < 5; i++) CHECK(k_post_for(i % QN, 0, 50u + i));
  for (uint32_t i = 0; i < 5; i++) CHECK(recv_check(0, 1, sizeof(rbuf)) == 1);
  // Exactly NKB_BATCH_MAX in one call (both queues' rings full, headers only)...
  // (all on queue 0: its RX ring full, its fill ring empty).
  for (uint32_t i = 0; i < NKB_BATCH_MAX; i++) CHECK(k_post_for(0, 0, 1u + i % 3u));
  CHECK(rx_room(0) == 0 && W.sh[0][R_FILL].producer == W.sh[0][R_FILL].consumer);
  rx_account();
  CHECK(recv_check(0, NKB_BATCH_MAX, sizeof(rbuf)) == (int32_t)NKB_BATCH_MAX);
  // ...and one more than that: the last is parked for the next call.
  for (uint32_t i = 0; i <= NKB_BATCH_MAX; i++) CHECK(k_post_for(i % QN, 0, 4));
  CHECK(recv_check(0, NKB_BATCH_MAX, sizeof(rbuf)) == (int32_t)NKB_BATCH_MAX);
  CHECK(parked(0) == 1);
  CHECK(recv_check(0, NKB_BATCH_MAX, sizeof(rbuf)) == 1);
  rx_account();
}

static void check_batch_room(void) {
  // A buffer that fits three exactly, then one byte short of the third.
  for (uint32_t i = 0; i < 3; i++) CHECK(k_post_for(0, 0, 100));
  CHECK(recv_check(0, 64, 300) == 3);
  for (uint32_t i = 0; i < 3; i++) CHECK(k_post_for(0, 0, 100));
  CHECK(recv_check(0, 64, 299) == 2);
  CHECK(parked(0) == 1);
  CHECK(recv_check(0, 64, 100) == 1);
  // A first datagram larger than the buffer: cut, flagged, counted; the next waits.
  uint64_t trunc = st(0, NKB_ST_RX_TRUNCATED);
  CHECK(k_post_for(1, 0, 500));
  CHECK(k_post_for(1, 0, 10));
  CHECK(recv_check(0, 64, 100) == 1);
  CHECK(rmeta[1] == 100u && rmeta[4] == NKB_RX_TRUNCATED);
  CHECK(parked(0) == 1);
  CHECK(st(0, NKB_ST_RX_TRUNCATED) - trunc == 1u);
  // A parked frame that does not fit after another stays parked, in order.
  CHECK(recv_check(0, 1, sizeof(rbuf)) == 1);  // the 10-byte one
  CHECK(k_post_for(0, 0, 700));
  CHECK(k_post_for(0, 0, 700));
  CHECK(recv_check(1, 64, sizeof(rbuf)) == 0);  // B parks both for A
  CHECK(parked(0) == 2);
  CHECK(k_post_for(1, 0, 5));  // and one on the ring, which waits for the parked ones
  uint32_t cons = W.sh[1][R_RX].consumer;
  CHECK(recv_check(0, 64, 1000) == 1);
  CHECK(parked(0) == 1 && W.sh[1][R_RX].consumer == cons);
  CHECK(recv_check(0, 64, 1000) == 2);  // the last parked one, then the ring's
  rx_account();
}

static void check_batches(void) {
  uint32_t before = W.failures;
  engine_setup(0xffffffffu - 700u);
  check_batch_args();
  check_batch_sizes();
  check_batch_room();
  drain();
  printf("batch boundaries: failures %u\n", W.failures - before);
}

// ---- 5. send ------------------------------------------------------------------------

static const uint32_t DST_BE[2] = {0x020012c6u, 0x030012c6u};  // 198.18.0.2, 198.18.0.3
static const uint16_t DST_PORT[2] = {6001, 6002};
static uint16_t a_port;  // A's companion socket's port: the frames' source port
static uint8_t sbuf[65536];
static uint32_t smeta[(NKB_BATCH_MAX + 8u) * NKB_SEND_META_WORDS];

static uint32_t tx_pending(void) {
  const shared_t *sh = &W.sh[0][R_TX];
  return __atomic_load_n(&sh->producer, __ATOMIC_ACQUIRE) - sh->consumer;
}

// One TX frame as the device would read it: the next datagram sent, headers and all.
static void k_tx_check(const struct xdp_desc *d) {
  const uint8_t *f = W.e.umem + d->addr;
  nkb_parsed_t pr;
  CHECK(nkb_frame_parse(f, d->len, &pr) == NKB_FRAME_OK);
  CHECK(fifo_len(&W.txq) > 0);
  if (fifo_len(&W.txq) == 0) return;
  expect_t ex = W.txq.e[W.txq.head++ % FIFO_CAP];
  CHECK(d->len == NKB_HDR_LEN + ex.len && pr.payload_len == ex.len);
  CHECK(pr.daddr_be == ex.addr_be && pr.dport == ex.port);
  CHECK(pr.saddr_be == LOCAL_BE && pr.sport == a_port);
  CHECK(memcmp(f, MACS, 12) == 0);  // destination MAC, then source
  CHECK(f[NKB_ETH_LEN + 8] == 64);  // TTL
  uint16_t ip_id = (uint16_t)(f[NKB_ETH_LEN + 4] << 8 | f[NKB_ETH_LEN + 5]);
  CHECK(ip_id == W.tx_ip_id);
  W.tx_ip_id++;
  bool same = true;
  for (uint32_t j = 0; j < ex.len && same; j++) same = f[NKB_HDR_LEN + j] == pay_byte(ex.seed, j);
  CHECK(same);
}

// Takes up to n descriptors off the TX ring into the device's hands.
static void k_tx_take(uint32_t n) {
  shared_t *sh = &W.sh[0][R_TX];
  uint32_t cons = sh->consumer;
  uint32_t take = tx_pending() < n ? tx_pending() : n;
  CHECK(tx_pending() <= TXF);
  uint64_t lo = (uint64_t)RX_TOTAL * FS;
  for (uint32_t i = 0; i < take; i++) {
    const struct xdp_desc *d = &W.tx[(cons + i) & (TX_SIZE - 1u)];
    bool inside = d->addr % FS == 0 && d->addr >= lo && d->addr < W.e.umem_len &&
                  d->len <= FS && d->options == 0;
    CHECK(inside);
    if (inside) k_tx_check(d);
    W.tx_held[W.tx_held_n++] = d->addr;
  }
  __atomic_store_n(&sh->consumer, cons + take, __ATOMIC_RELEASE);
}

// Completes up to n of the frames it holds, in any order.
static void k_tx_complete(uint32_t n) {
  shared_t *sh = &W.sh[0][R_COMP];
  uint32_t prod = sh->producer;
  uint32_t room = COMP_SIZE - (prod - __atomic_load_n(&sh->consumer, __ATOMIC_ACQUIRE));
  if (n > room) n = room;
  if (n > W.tx_held_n) n = W.tx_held_n;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t pick = rng() % W.tx_held_n;
    W.comp[(prod + i) & (COMP_SIZE - 1u)] = W.tx_held[pick];
    W.tx_held[pick] = W.tx_held[--W.tx_held_n];
  }
  __atomic_store_n(&sh->producer, prod + n, __ATOMIC_RELEASE);
}

// Every TX frame is in exactly one place: the pool, the TX ring, the device's hands or
// the completion ring.
static void tx_account(void) {
  memset(where, 0, sizeof(where));
  const nkb_engine_t *e = &W.e;
  uint64_t lo = (uint64_t)RX_TOTAL * FS, hi = e->umem_len;
  CHECK(e->tx_free_count <= TXF && e->tx_free_count + e->tx_outstanding == TXF);
  for (uint32_t i = 0; i < e->tx_free_count && i < TXF; i++) mark(e->tx_free[i], 1, lo, hi);
  const shared_t *t = &W.sh[0][R_TX];
  for (uint32_t i = t->consumer; i != t->producer; i++) {
    mark(W.tx[i & (TX_SIZE - 1u)].addr, 2, lo, hi);
  }
  for (uint32_t i = 0; i < W.tx_held_n; i++) mark(W.tx_held[i], 3, lo, hi);
  const shared_t *c = &W.sh[0][R_COMP];
  for (uint32_t i = c->consumer; i != c->producer; i++) {
    mark(W.comp[i & (COMP_SIZE - 1u)], 4, lo, hi);
  }
  uint32_t placed = 0;
  for (uint32_t f = RX_TOTAL; f < UMEM_FRAMES; f++) placed += where[f] != 0;
  CHECK(placed == TXF);
}

static int32_t send_one(uint32_t d, uint32_t len) {
  uint64_t seed = ++W.next_seed;
  for (uint32_t j = 0; j < len; j++) sbuf[j] = pay_byte(seed, j);
  int32_t rc = nkb_send(H[0], sbuf, len, DST_BE[d], DST_PORT[d]);
  if (rc == (int32_t)len) {
    fifo_push(&W.txq,
              (expect_t){.seed = seed, .len = len, .addr_be = DST_BE[d], .port = DST_PORT[d]});
  }
  return rc;
}

// k datagrams at scattered offsets of sbuf, entries from `first` of smeta.
static int32_t send_batch(uint32_t k, uint32_t first) {
  static expect_t ex[NKB_BATCH_MAX];
  assert(k <= 64u && first + k <= NKB_BATCH_MAX);
  uint32_t pos = 0;
  for (uint32_t i = 0; i < k; i++) {
    uint32_t d = rng() % 2u, len = rng() % 4u == 0 ? rng() % 1473u : rng() % 200u;
    ex[i] = (expect_t){
        .seed = ++W.next_seed, .len = len, .addr_be = DST_BE[d], .port = DST_PORT[d]};
    for (uint32_t j = 0; j < len; j++) sbuf[pos + j] = pay_byte(ex[i].seed, j);
    uint32_t *m = &smeta[(first + i) * NKB_SEND_META_WORDS];
    m[0] = pos, m[1] = len, m[2] = DST_BE[d], m[3] = DST_PORT[d];
    pos += len + rng() % 8u;
  }
  int32_t sent = nkb_send_batch(H[0], sbuf, pos, smeta, sizeof(smeta), first, k);
  for (int32_t i = 0; i < sent; i++) fifo_push(&W.txq, ex[i]);
  return sent;
}

static void check_tx_rounds(void) {
  uint64_t opkts = st(0, NKB_ST_OPKTS), sent = 0;
  for (uint32_t round = 0; round < TX_ROUNDS; round++) {
    uint32_t k = 1u + rng() % 64u;
    if (tx_pending() + W.tx_held_n + k < TXF) {  // room: no send may find the pool empty
      if (rng() % 3u == 0) {
        for (uint32_t i = 0; i < k; i++) CHECK(send_one(rng() % 2u, rng() % 1473u) >= 0);
        sent += k;
      } else {
        int32_t n = send_batch(k, rng() % 4u == 0 ? rng() % 64u : 0u);
        CHECK(n == (int32_t)k && S[0]->last_error == 0);
        sent += n > 0 ? (uint32_t)n : 0u;
      }
    }
    k_tx_take(rng() % (tx_pending() + 1u));
    k_tx_complete(rng() % (W.tx_held_n + 1u));
    tx_account();
  }
  k_tx_take(TXF);
  CHECK(fifo_len(&W.txq) == 0);  // every datagram sent reached the ring
  CHECK(st(0, NKB_ST_OPKTS) - opkts == sent && st(0, NKB_ST_TX_FULL) == 0);
  k_tx_complete(TXF);
  tx_account();
}

// No completions: the pool runs dry, a send spins busy_wait_cnt times and is refused.
static void check_tx_full(void) {
  uint64_t full = st(0, NKB_ST_TX_FULL);
  uint32_t room = W.e.tx_free_count + (W.sh[0][R_COMP].producer - W.sh[0][R_COMP].consumer);
  CHECK(room == TXF);
  for (uint32_t i = 0; i < TXF; i++) CHECK(send_one(i % 2u, 10) == 10);
  CHECK(send_one(0, 10) == -ENOBUFS);
  CHECK(S[0]->last_error == -ENOBUFS && st(0, NKB_ST_TX_FULL) - full == 1u);
  CHECK(st(0, NKB_ST_SEND_SPIN_MAX) == S[0]->busy_wait_cnt);
  CHECK(send_batch(3, 0) == 0 && S[0]->last_error == -ENOBUFS);
  tx_account();
  k_tx_take(TXF);  // the device took them all, and completes two
  k_tx_complete(2);
  CHECK(send_batch(3, 5) == 2 && S[0]->last_error == -ENOBUFS);
  CHECK(st(0, NKB_ST_TX_FULL) - full == 3u);
  tx_account();
  k_tx_take(TXF);
  k_tx_complete(TXF);
  CHECK(send_one(1, 30) == 30);
  k_tx_take(TXF);
  k_tx_complete(TXF);
  tx_account();
  CHECK(fifo_len(&W.txq) == 0);
}

// Bad entries stop a batch where they are: what was sent before counts.
static void check_tx_errors(void) {
  uint8_t short_macs[11] = {0};
  CHECK(nkb_dest_set(H[0], DST_BE[0], 0, NKB_DEST_BYPASS, MACS, 12, LOCAL_BE, 0) == -EINVAL);
  CHECK(nkb_dest_set(H[0], DST_BE[0], 9, NKB_DEST_BYPASS, short_macs, 11, LOCAL_BE, 0) == -EINVAL);
  CHECK(send_one(0, 10) == 10);
  CHECK(nkb_send(H[0], sbuf, 10, 0x070012c6u, 1) == NKB_ENEEDROUTE);  // never resolved
  CHECK(nkb_send(H[0], 0, 10, DST_BE[0], DST_PORT[0]) == -EFAULT);
  CHECK(nkb_send(H[0], sbuf, NKB_MAX_DGRAM + 1u, DST_BE[0], DST_PORT[0]) == -EMSGSIZE);
  const uint32_t bad[4][2] = {{101, 0}, {0, 101}, {10, 0xffffffffu}, {0xffffffffu, 1}};
  for (uint32_t b = 0; b < 4; b++) {
    // Two good entries inside the first 100 bytes, then the bad one.
    const uint32_t good[2][4] = {{0, 40, DST_BE[0], DST_PORT[0]}, {40, 60, DST_BE[1], DST_PORT[1]}};
    expect_t ex[2];
    for (uint32_t i = 0; i < 2; i++) {
      ex[i] = (expect_t){.seed = ++W.next_seed, .len = good[i][1], .addr_be = good[i][2],
                         .port = good[i][3]};
      for (uint32_t j = 0; j < good[i][1]; j++) sbuf[good[i][0] + j] = pay_byte(ex[i].seed, j);
    }
    memcpy(smeta, good, sizeof(good));
    uint32_t *m = &smeta[2 * NKB_SEND_META_WORDS];
    m[0] = bad[b][0], m[1] = bad[b][1], m[2] = DST_BE[0], m[3] = DST_PORT[0];
    int32_t n = nkb_send_batch(H[0], sbuf, 100, smeta, sizeof(smeta), 0, 3);
    CHECK(n == 2 && S[0]->last_error == -EINVAL);
    for (int32_t i = 0; i < n && i < 2; i++) fifo_push(&W.txq, ex[i]);
    k_tx_take(TXF);
    CHECK(fifo_len(&W.txq) == 0);
  }
  uint32_t four = 4u * NKB_SEND_META_WORDS * sizeof(uint32_t);  // bytes of four entries
  CHECK(nkb_send_batch(H[0], sbuf, 100, smeta, four - 1u, 0, 4) == -EINVAL);  // meta short
  const uint32_t *odd = (const uint32_t *)(const void *)((const uint8_t *)smeta + 2);
  CHECK(nkb_send_batch(H[0], sbuf, 100, odd, four, 0, 1) == -EINVAL);  // misaligned
  CHECK(nkb_send_batch(H[0], sbuf, 100, smeta, sizeof(smeta), NKB_BATCH_MAX + 1u, 0) == -EINVAL);
  // A link change refuses the send until the control plane acknowledges it.
  W.e.link_gen++;
  uint32_t prod = W.sh[0][R_TX].producer;
  CHECK(send_one(0, 10) == NKB_ELINKCHANGE);
  CHECK(W.sh[0][R_TX].producer == prod);
  CHECK(nkb_sock_link_ack(H[0]) == 0 && send_one(0, 12) == 12);
  // An expired destination needs resolving again.
  CHECK(nkb_dest_set(H[0], DST_BE[1], 7000, NKB_DEST_BYPASS, MACS, 12, LOCAL_BE, 1) == 0);
  struct timespec ts = {.tv_sec = 0, .tv_nsec = 3000000L};
  nanosleep(&ts, 0);
  CHECK(nkb_send(H[0], sbuf, 10, DST_BE[1], 7000) == NKB_ENEEDROUTE);
  k_tx_take(TXF);
  k_tx_complete(TXF);
  CHECK(fifo_len(&W.txq) == 0);
  tx_account();
}

static void check_tx(void) {
  uint32_t before = W.failures;
  engine_setup(0xffffffffu - 1000u);
  struct sockaddr_in sin;
  socklen_t len = sizeof(sin);
  CHECK(getsockname(S[0]->fd, (struct sockaddr *)&sin, &len) == 0);
  a_port = ntohs(sin.sin_port);
  for (uint32_t d = 0; d < 2; d++) {
    CHECK(nkb_dest_set(H[0], DST_BE[d], DST_PORT[d], NKB_DEST_BYPASS, MACS, 12, LOCAL_BE, 0) == 0);
  }
  check_tx_rounds();
  check_tx_full();
  check_tx_errors();
  CHECK(W.e.pusher.started == 0);  // every doorbell failed at once: nothing left for a pusher
  printf("send: %u rounds, failures %u\n", TX_ROUNDS, W.failures - before);
}

// ---- 6. wait ------------------------------------------------------------------------

typedef struct {
  int32_t h;
  uint32_t timeout_us;
  int32_t rc;
  uint64_t ns;
} waiter_t;

static void *waiter_main(void *arg) {
  waiter_t *w = arg;
  uint64_t t0 = nkb_now_ns();
  w->rc = nkb_wait(w->h, w->timeout_us, 0);
  w->ns = nkb_now_ns() - t0;
  return 0;
}

static void sleep_ms(uint32_t ms) {
  struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)ms * 1000000L};
  nanosleep(&ts, 0);
}

// Until socket s's wait sleeps in ppoll (its flag, then time for the last look).
static bool wait_asleep(const nkb_sock_t *s) {
  for (uint32_t i = 0; i < 2000; i++) {
    if (__atomic_load_n(&s->sleeping, __ATOMIC_SEQ_CST) != 0) {
      sleep_ms(20);
      return true;
    }
    sleep_ms(1);
  }
  return false;
}

// nkb_wait's answer and how long it took, in microseconds.
static int32_t timed_wait(uint32_t x, uint32_t timeout_us, uint32_t spin, uint64_t *us) {
  uint64_t t0 = nkb_now_ns();
  int32_t rc = nkb_wait(H[x], timeout_us, spin);
  *us = (nkb_now_ns() - t0) / 1000u;
  return rc;
}

static void check_wait_ready(void) {
  uint64_t us = 0;
  for (uint32_t spin = 0; spin < 2; spin++) {
    CHECK(timed_wait(0, 2000, spin, &us) == 0 && us >= 1500u);  // empty: the timeout
  }
  CHECK(k_post_for(1, 0, 10));
  for (uint32_t spin = 0; spin < 2; spin++) {
    CHECK(timed_wait(0, 2000000, spin, &us) == 1 && us < 500000u);  // an RX entry
  }
  CHECK(k_post_for(0, 1, 10));
  CHECK(recv_check(0, 64, sizeof(rbuf)) == 1);  // parks B's
  for (uint32_t spin = 0; spin < 2; spin++) {
    CHECK(timed_wait(1, 2000000, spin, &us) == 1 && us < 500000u);  // parked for B
    CHECK(timed_wait(0, 2000, spin, &us) == 0);                     // but not for A
  }
  CHECK(recv_check(1, 64, sizeof(rbuf)) == 1);
}

// B asleep; A reads B's frame and parks it: B's wait ends long before its timeout.
static void check_wait_park_wakes(void) {
  waiter_t w = {.h = H[1], .timeout_us = 5000000u};
  pthread_t th;
  CHECK(pthread_create(&th, 0, waiter_main, &w) == 0);
  CHECK(wait_asleep(S[1]));
  CHECK(k_post_for(1, 1, 10));
  CHECK(recv_check(0, 64, sizeof(rbuf)) == 0);
  pthread_join(th, 0);
  CHECK(w.rc == 1 && w.ns < 1000000000ull);
  CHECK(recv_check(1, 64, sizeof(rbuf)) == 1);
}

// D asleep, then shut down: its wait ends with -EBADF, and so does every later call.
static void check_wait_shutdown(void) {
  waiter_t w = {.h = H[3], .timeout_us = 5000000u};
  pthread_t th;
  CHECK(pthread_create(&th, 0, waiter_main, &w) == 0);
  CHECK(wait_asleep(S[3]));
  CHECK(nkb_sock_shutdown(H[3]) == 0);
  pthread_join(th, 0);
  CHECK(w.rc == -EBADF && w.ns < 1000000000ull);
  CHECK(nkb_wait(H[3], 1000, 0) == -EBADF && nkb_wait(H[3], 1000, 1) == -EBADF);
  CHECK(nkb_recv_batch(H[3], rbuf, 100, rmeta, sizeof(rmeta), 1) == -EBADF);
  CHECK(nkb_send(H[3], sbuf, 1, DST_BE[0], DST_PORT[0]) == -EBADF);
}

static void check_wait(void) {
  uint32_t before = W.failures;
  engine_setup(0xffffffffu);
  check_wait_ready();
  check_wait_park_wakes();
  check_wait_shutdown();
  drain();
  printf("wait: failures %u\n", W.failures - before);
}

// ---- 7. the companion socket ---------------------------------------------------------

static int32_t kfd = -1;  // sends to the companion sockets, over the loopback
static uint16_t kfd_port;

static void k_send_companion(uint32_t x, uint32_t len) {
  uint64_t seed = ++W.next_seed;
  for (uint32_t j = 0; j < len; j++) sbuf[j] = pay_byte(seed, j);
  struct sockaddr_in to;
  socklen_t to_len = sizeof(to);
  CHECK(getsockname(S[x]->fd, (struct sockaddr *)&to, &to_len) == 0);
  CHECK(sendto(kfd, sbuf, len, 0, (struct sockaddr *)&to, sizeof(to)) == (ssize_t)len);
  fifo_push(&W.kq[x], (expect_t){.seed = seed, .len = len, .addr_be = htonl(INADDR_LOOPBACK),
                                 .port = kfd_port});
}

// Bypass frames always ready: a datagram on the companion socket still arrives within 16
// receives, first in its batch; a wait that sees it readable has the next receive read it.
static void check_companion(void) {
  uint32_t before = W.failures;
  engine_setup(0xffffffffu - 64u);
  kfd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(sin);
  CHECK(kfd >= 0 && bind(kfd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
  CHECK(getsockname(kfd, (struct sockaddr *)&sin, &len) == 0);
  kfd_port = ntohs(sin.sin_port);
  k_send_companion(0, 33);
  uint32_t at = 0;
  for (uint32_t call = 1; call <= 16u && at == 0; call++) {
    for (uint32_t i = 0; i < 4; i++) CHECK(k_post_for(i % QN, 0, 20));
    uint64_t k0 = st(0, NKB_ST_KERNEL_IPKTS);
    CHECK(recv_check(0, 8, sizeof(rbuf)) > 0);
    if (st(0, NKB_ST_KERNEL_IPKTS) != k0) at = call;
    if (at != 0) CHECK((rmeta[4] & NKB_RX_KERNEL) != 0);  // first in the batch
  }
  CHECK(at != 0);
  drain();
  for (uint32_t spin = 0; spin < 2; spin++) {
    // An empty read clears the hint a read left ("there may be more"): only the wait sets it.
    CHECK(recv_check(1, 8, sizeof(rbuf)) == 0);
    CHECK(recv_check(1, 8, sizeof(rbuf)) == 0 && S[1]->kernel_hint == 0);
    k_send_companion(1, 500);
    CHECK(nkb_wait(H[1], 1000000, spin) == 1);
    CHECK(recv_check(1, 8, 100) == 1);  // cut to the buffer, flagged and counted
    CHECK(rmeta[4] == (NKB_RX_KERNEL | NKB_RX_TRUNCATED));
  }
  drain();
  close(kfd);
  printf("companion socket: read at receive %u of 16, failures %u\n", at, W.failures - before);
}

// ---- 8. lock order --------------------------------------------------------------------

// Runs `how` in a forked child (its stderr silenced: an abort's message is expected).
static int child_status(int how) {
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int fd = open("/dev/null", O_WRONLY);
    if (fd >= 0) dup2(fd, 2);
    nkb_engine_t *e = &W.e;
    if (how == 0) {  // TX then RX: the inversion
      nkb_lock(&e->tx_lock, NKB_RANK_TX);
      nkb_lock(&e->rx_lock, NKB_RANK_RX);
    } else if (how == 1) {  // a receive (RX lock) while the TX lock is held
      nkb_lock(&e->tx_lock, NKB_RANK_TX);
      (void)nkb_recv_batch(H[0], rbuf, 100, rmeta, sizeof(rmeta), 1);
    } else {  // RX then TX: the order
      nkb_lock(&e->rx_lock, NKB_RANK_RX);
      nkb_lock(&e->tx_lock, NKB_RANK_TX);
      nkb_unlock(&e->tx_lock, NKB_RANK_TX);
      nkb_unlock(&e->rx_lock, NKB_RANK_RX);
    }
    _exit(0);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return status;
}

static void check_lock_order(void) {
  uint32_t before = W.failures;
  int inverted = child_status(0), recv_under_tx = child_status(1), ordered = child_status(2);
  CHECK(inverted != -1 && WIFSIGNALED(inverted) && WTERMSIG(inverted) == SIGABRT);
  CHECK(recv_under_tx != -1 && WIFSIGNALED(recv_under_tx) && WTERMSIG(recv_under_tx) == SIGABRT);
  CHECK(ordered != -1 && WIFEXITED(ordered) && WEXITSTATUS(ordered) == 0);
  printf("lock order: failures %u\n", W.failures - before);
}

// ---- a queue given up ----------------------------------------------------------------

// give.c lowers queue_count (under the rx lock), then nkb_rx_drain_queue parks what is on
// the given-up queue's ring for its owners (a frame for no flow, or a foreign one, is
// retired at once); their receives deliver those in order, and every frame of the queue
// comes back retired, none onto the gone queue's fill ring. The queue left works on. Last:
// the gone queue's frames leave the accounting.
static void check_give_up(void) {
  uint32_t before = W.failures;
  engine_setup(0xfffffff0u);
  uint32_t q = QN - 1u;
  for (uint32_t i = 0; i < 30; i++) CHECK(k_post_for(q, i % NSOCK, 10u + i));
  uint64_t c_foreign = st(2, NKB_ST_RX_FOREIGN);
  CHECK(k_post(q, -1, LOCAL_BE, 5999, 0x010912c6u, 1234, 20));          // no such flow
  CHECK(k_post(q, -1, LOCAL_BE, PORT[2], PEER_BE, PEER_PORT + 1u, 20));  // not C's peer
  uint32_t fill_prod = W.sh[q][R_FILL].producer;
  nkb_lock(&W.e.rx_lock, NKB_RANK_RX);
  __atomic_store_n(&W.e.queue_count, q, __ATOMIC_RELEASE);
  CHECK(nkb_rx_drain_queue(&W.slot, q) == 32u);
  nkb_unlock(&W.e.rx_lock, NKB_RANK_RX);
  CHECK(rx_room(q) == RX_SIZE);
  CHECK(parked(0) == 10 && parked(1) == 10 && parked(2) == 10);
  CHECK(W.e.rx_retired == 2u && st(2, NKB_ST_RX_FOREIGN) - c_foreign == 1u);
  // The queue's close counted 32 frames out with users (nkb_engine_retire_queue, which
  // needs a real socket): it can be taken back once all 32 came home, not before.
  W.e.umem_queues = QN;
  W.e.given_out[q] = 32u;
  int32_t xsk_fd = W.e.xsk[q].fd;
  W.e.xsk[q].fd = -1;
  CHECK(W.e.given_back[q] == 2u && !nkb_engine_queue_idle(&W.e, q));
  for (uint32_t x = 0; x < NSOCK; x++) CHECK(recv_check(x, 64, sizeof(rbuf)) == 10);
  CHECK(W.e.rx_retired == 32u);
  CHECK(W.e.given_back[q] == 32u && nkb_engine_queue_idle(&W.e, q));
  CHECK(!nkb_engine_queue_idle(&W.e, 0) && !nkb_engine_queue_idle(&W.e, q - 1u));
  W.e.xsk[q].fd = xsk_fd;
  CHECK(!nkb_engine_queue_idle(&W.e, q));  // its socket still open
  CHECK(W.sh[q][R_FILL].producer == fill_prod);
  CHECK(k_post_for(0, 0, 40));
  CHECK(recv_check(0, 64, sizeof(rbuf)) == 1);
  CHECK(W.e.rx_retired == 32u);
  printf("give up: 32 frames drained, parked and retired, failures %u\n", W.failures - before);
}

int main(void) {
  setvbuf(stdout, 0, _IOLBF, 0);
  W.e.umem = aligned_alloc(4096, (size_t)UMEM_FRAMES * FS);
  if (W.e.umem == 0) return 2;
  memset(W.e.umem, 0, (size_t)UMEM_FRAMES * FS);
  for (uint32_t q = 0; q < QN; q++) {
    // The XSK descriptors: a doorbell (sendto without an address) fails at once with
    // EDESTADDRREQ, a fill-ring wake-up (recvfrom) finds nothing, poll never fires.
    W.doorbell_fd[q] = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (W.doorbell_fd[q] < 0) return 2;
  }
  W.slot.engine = &W.e;
  for (uint32_t x = 0; x <= NSOCK; x++) S[x] = sock_make(x, &H[x]);
  check_rx_rounds();
  check_demux();
  check_invalid();
  check_batches();
  check_tx();
  check_wait();
  check_companion();
  check_lock_order();
  check_give_up();
  printf("failures %u\n", W.failures);
  return W.failures == 0 ? 0 : 1;
}
