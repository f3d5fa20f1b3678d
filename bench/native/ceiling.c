// The native ceiling of the benchmark: the shim (ffi/*.c, compiled in) driven from C,
// without Deno, doing what UdpBypass does for a socket bound to one interface's address.
// What the Deno rows lose against these figures is the cost of the JavaScript layer.
//
//   ceiling rx   IP PORT COUNT SECONDS [BUSY_US]
//   ceiling tx   IP PORT DST_IP DST_PORT COUNT SIZE [SECONDS [DRAIN_MS]]
//   ceiling echo IP PORT SECONDS
//   ceiling mqtx IP PORT DST_IP DST_PORT QUEUES RATE_PPS SIZE SECONDS DRAIN_MS
//   ceiling xdpcount IFNAME_OR_IFINDEX DST_PORT SECONDS [generic|native]
//
// mqtx is the multi-queue generator: one queue-affine socket per queue (source port PORT + q;
// on veth a frame sent on queue q arrives on the peer's RX queue q), batches taken in turn,
// paced to RATE_PPS in total by sleeping (a spinning generator would take the core the
// receivers need), each queue's datagrams numbered on their own.
//
// xdpcount is the cheap counting receiver of the send-rate test: no socket, only a tiny XDP
// program (raw bpf(), attached with a BPF link so that it dies with this process) that counts
// the IPv4 UDP datagrams to DST_PORT in a per-CPU array (data, end markers, warm-up markers,
// runts each in their own slot) and drops them; everything else (fragments, IP options, other
// ports) goes on to the kernel. On veth the receiving side's work runs on the sending core, so
// this is what leaves a sender the most of its core: no redirect, no copy into a UMEM. Generic
// XDP by default: it cost the sender less than native XDP on veth (both copy a frame that has
// less than 256 bytes of headroom; native mode also goes through veth's ptr_ring and NAPI).
// This process only polls the counters every 10 ms: firstMs/lastMs/spanMs have that resolution.
//
// Datagrams carry a little-endian u32 sequence number at offset 0 (bench/workers/common.ts):
// 0xfffffffe is warm-up (not counted), 0xffffffff marks the end.
// Prints {"ready":...} once the socket is on the bypass path, then one {"result":...} line
// (or {"error":...} and exit 1). Every loop is bounded by a count and by time.
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <time.h>
#include <unistd.h>

#include <linux/bpf.h>
#include <linux/if_link.h>  // XDP_FLAGS_*

#include "bpf_sys.h"
#include "nkb.h"

#define BATCH 256u
#define RECV_BUF (BATCH * 2048u)
#define SEQ_END 0xffffffffu
#define SEQ_WARM 0xfffffffeu
#define BUSY_WAIT_CNT 1000  // as the Deno workers' sendBusyWaitCnt
#define MAX_QUEUES 8u       // as src/decide.ts
#define ETH_HEADER 14u
#define XDP_HEADROOM 256u
#define WAIT_SLICE_US 20000u
#define NEIGH_TIMEOUT_MS 500u
#define WARM_PACKETS 5
#define WARM_GAP_MS 20
#define END_PACKETS 10
#define END_GAP_MS 5
#define ENOBUFS_RC (-ENOBUFS)

// NUD states a neighbour entry can be used in (as src/netinfo.ts)
#define NUD_USABLE (0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80)

typedef struct ctx {
  int32_t h;
  uint32_t ip_be;
  uint32_t port;
  uint32_t ifindex;
  nkb_link_t link;
  uint32_t queues;
  uint32_t frame;
} ctx_t;

static const char *const STAT_NAMES[NKB_ST_COUNT] = {
    "ipkts",       "ipktsSpin",   "opkts",      "opktsSpin",   "sendSpinMax", "rxDropped",
    "rxInvalid",   "kernelIpkts", "kernelOpkts", "txFull",     "rxTruncated", "interfaceDrops",
    "rxForeign",   "icmpIgnored", "waitNs",        "interfaceTxDrops",
};

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(uint32_t ms) {
  struct timespec ts = {.tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L};
  nanosleep(&ts, 0);
}

static _Noreturn void fail(const char *what, int32_t rc) {
  printf("{\"error\":\"%s: %d (%s)\"}\n", what, rc, rc < 0 ? strerror(-rc) : "");
  fflush(stdout);
  exit(1);
}

static uint32_t parse_ip(const char *s) {
  struct in_addr a;
  if (inet_pton(AF_INET, s, &a) != 1) fail("not an IPv4 address", -EINVAL);
  return a.s_addr;
}

static uint64_t parse_u64(const char *s, const char *what) {
  char *end = 0;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != 0) fail(what, -EINVAL);
  return (uint64_t)v;
}

static double parse_seconds(const char *s) {
  char *end = 0;
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || end == s || *end != 0 || !(v >= 0 && v <= 3600)) fail("SECONDS", -EINVAL);
  return v;
}

static uint32_t parse_port(const char *s) {
  uint64_t v = parse_u64(s, "PORT");
  if (v > 65535u) fail("PORT", -EINVAL);
  return (uint32_t)v;
}

static void print_stats(int32_t h) {
  uint64_t st[NKB_ST_COUNT];
  memset(st, 0, sizeof(st));
  int32_t rc = nkb_sock_stats(h, st, (uint32_t)sizeof(st));
  printf("\"stats\":{");
  for (uint32_t i = 0; i < NKB_ST_COUNT; i++) {
    printf("%s\"%s\":%llu", i ? "," : "", STAT_NAMES[i], rc < 0 ? 0ull : (unsigned long long)st[i]);
  }
  printf("}");
}

// Closes the result object opened by the caller with the socket's counters, then the socket.
static int finish_result(int32_t h) {
  print_stats(h);
  printf("}}\n");
  fflush(stdout);
  nkb_sock_shutdown(h);
  nkb_sock_free(h);
  return 0;
}

#define ALL_QUEUES UINT32_MAX

// What UdpBypass.listenDatagram does for an address of a bypass-capable interface: with
// `queue` (not ALL_QUEUES), what it does for a queue-affine socket ({ queue }).
static void open_bypass_on(ctx_t *c, uint32_t ip_be, uint32_t port, uint32_t queue) {
  memset(c, 0, sizeof(*c));
  c->ip_be = ip_be;
  int32_t h = nkb_sock_open();
  if (h < 0) fail("nkb_sock_open", h);
  c->h = h;
  int32_t rc = nkb_sock_setopt(h, NKB_OPT_BUSY_WAIT_CNT, BUSY_WAIT_CNT);
  if (rc < 0) fail("nkb_sock_setopt", rc);
  rc = nkb_sock_bind(h, ip_be, port);
  if (rc < 0) fail("nkb_sock_bind", rc);
  uint32_t name[2];
  rc = nkb_sock_name(h, name, (uint32_t)sizeof(name));
  if (rc < 0) fail("nkb_sock_name", rc);
  c->port = name[1];
  int32_t ifindex = nkb_addr_ifindex(ip_be);
  if (ifindex < 0) fail("nkb_addr_ifindex", ifindex);
  c->ifindex = (uint32_t)ifindex;
  _Static_assert(sizeof(nkb_link_t) == 76, "nkb_link_t is 76 bytes");
  rc = nkb_link_get(c->ifindex, (uint8_t *)&c->link, (uint32_t)sizeof(c->link));
  if (rc < 0) fail("nkb_link_get", rc);
  uint32_t q = c->link.num_rx_queues;
  c->queues = q < 1 ? 1 : q > MAX_QUEUES ? MAX_QUEUES : q;
  uint32_t need = c->link.mtu + ETH_HEADER + XDP_HEADROOM;
  if (need > 4096u) fail("MTU too large for a frame", -EMSGSIZE);
  c->frame = need <= 2048u ? 2048u : 4096u;
  if (queue != ALL_QUEUES && queue >= c->queues) fail("no such queue", -EINVAL);
  uint32_t first = queue == ALL_QUEUES ? 0 : queue;
  uint32_t count = queue == ALL_QUEUES ? c->queues : 1;
  rc = nkb_sock_attach(h, c->ifindex, first, count, c->frame, 0, c->link.mtu);
  if (rc < 0) fail("nkb_sock_attach", rc);
  rc = nkb_sock_add_flow(h, ip_be, c->port);
  if (rc < 0) fail("nkb_sock_add_flow", rc);
  (void)nkb_sock_link_ack(h);
}

static void open_bypass(ctx_t *c, uint32_t ip_be, uint32_t port) {
  open_bypass_on(c, ip_be, port, ALL_QUEUES);
}

static void print_ready(const ctx_t *c) {
  printf("{\"ready\":true,\"bypass\":{\"active\":true,\"interface\":\"%s\",\"queues\":%u,"
         "\"frame\":%u,\"mtu\":%u,\"reason\":null,\"detail\":null}}\n",
         c->link.name, c->queues, c->frame, c->link.mtu);
  fflush(stdout);
}

// The next hop's MAC (the peer itself: the testbed's peers are on link), as
// src/destinations.ts does it, then the destination entry of the header cache.
static int32_t resolve(const ctx_t *c, uint32_t dst_be, uint32_t dport) {
  uint8_t macs[12];
  int32_t state = nkb_neigh_get(c->ifindex, dst_be, macs, 6u);
  if (state <= 0 || (state & NUD_USABLE) == 0) {
    int32_t rc = nkb_neigh_resolve(c->ifindex, dst_be);
    if (rc < 0) return rc;
    double deadline = now_ms() + NEIGH_TIMEOUT_MS;
    for (uint32_t i = 0; i < 10000u; i++) {
      state = nkb_neigh_get(c->ifindex, dst_be, macs, 6u);
      if (state > 0 && (state & NUD_USABLE) != 0) break;
      if (now_ms() > deadline) return -EHOSTUNREACH;
      sleep_ms(1);
    }
    if (state <= 0 || (state & NUD_USABLE) == 0) return -EHOSTUNREACH;
  }
  memcpy(macs + 6, c->link.mac, 6);
  return nkb_dest_set(c->h, dst_be, dport, NKB_DEST_BYPASS, macs, (uint32_t)sizeof(macs),
                      c->ip_be, 0);
}

// ---- rx: count sequence numbers until the end marker --------------------------------------

typedef struct rxtally {
  uint64_t received, warm, shortn, gaps, reordered, via_kernel;
  int64_t max_seq;
  bool ended;
} rxtally_t;

// Counts one batch as bench/workers/sink.ts does.
static void count_batch(rxtally_t *t, const uint8_t *buf, const uint32_t *meta, int32_t n) {
  for (int32_t k = 0; k < n && !t->ended; k++) {
    const uint32_t *m = &meta[(uint32_t)k * NKB_RECV_META_WORDS];
    if (m[4] & NKB_RX_KERNEL) t->via_kernel++;
    if (m[1] < 4) {
      t->shortn++;
      continue;
    }
    uint32_t seq;
    memcpy(&seq, buf + m[0], 4);  // little-endian host
    if (seq == SEQ_END) {
      t->ended = true;
    } else if (seq == SEQ_WARM) {
      t->warm++;
    } else {
      t->received++;
      if ((int64_t)seq > t->max_seq + 1) t->gaps += (uint64_t)((int64_t)seq - t->max_seq - 1);
      if ((int64_t)seq <= t->max_seq) t->reordered++;
      if ((int64_t)seq > t->max_seq) t->max_seq = seq;
    }
  }
}

#define MAX_DRAINS_KEPT 65536u
// The warm-up, as bench/workers/sink.ts RATE_WARMUP_MS (there, V8 optimizes the receive
// path meanwhile): for this long after the first datagram a BUSY_US receiver busy-polls,
// and its drains count nowhere.
#define RATE_WARMUP_MS 300.0

typedef struct drain {
  double mpps;
  uint64_t n;
} drain_t;

// What the drains of a BUSY_US receiver took and how long they took.
typedef struct drains {
  double ms;
  uint64_t drained, count, max;
  uint64_t rated;                 // entries of each
  drain_t each[MAX_DRAINS_KEPT];  // the first MAX_DRAINS_KEPT drains after the warm-up
} drains_t;

static void drain_done(drains_t *d, double t0, double t1, uint64_t n) {
  assert(n > 0 && t1 >= t0);
  d->ms += t1 - t0;
  d->drained += n;
  if (d->rated < MAX_DRAINS_KEPT && t1 > t0) {
    d->each[d->rated++] = (drain_t){(double)n / (t1 - t0) / 1e3, n};
  }
  assert(d->rated <= MAX_DRAINS_KEPT);
  d->count++;
  if (n > d->max) d->max = n;
}

static int cmp_drain(const void *a, const void *b) {
  double x = ((const drain_t *)a)->mpps, y = ((const drain_t *)b)->mpps;
  return x < y ? -1 : x > y;
}

// The rate at which the fraction q of the datagrams had been drained (drains sorted by
// rate), as bench/workers/sink.ts weightedPercentile.
static double weighted_percentile(const drain_t *d, uint64_t count, double q) {
  uint64_t total = 0;
  for (uint64_t i = 0; i < count; i++) total += d[i].n;
  uint64_t seen = 0;
  for (uint64_t i = 0; i < count; i++) {
    seen += d[i].n;
    if ((double)seen >= q * (double)total) return d[i].mpps;
  }
  return 0;
}

static void spin_ms(double ms) {
  double end = now_ms() + ms;
  for (uint32_t i = 0; i < 1000000000u && now_ms() < end; i++) {
  }
}

// With BUSY_US > 0 the receiver never waits: busy elsewhere (a spin) for BUSY_US, then it
// drains the ring until a receive finds it empty, and again, as bench/workers/sink.ts
// --busy-us; each drain's rate is its capacity (drainP50Mpps the median, weighted by the
// drains' datagrams), after the warm-up (RATE_WARMUP_MS of busy polling). With 0 it
// waits in nkb_wait.
static int mode_rx(uint32_t ip_be, uint32_t port, uint64_t count, double seconds,
                   uint32_t busy_us) {
  ctx_t c;
  open_bypass(&c, ip_be, port);
  static uint8_t buf[RECV_BUF];
  static uint32_t meta[BATCH * NKB_RECV_META_WORDS];
  static drains_t d;
  print_ready(&c);
  rxtally_t t = {.max_seq = -1};
  uint64_t calls = 0, empty = 0, drain_n = 0;
  uint64_t drain_from = 0;  // t.received when the drain began
  double first = 0, last = 0, drain_t0 = 0;
  bool warm = false;  // the warm-up (RATE_WARMUP_MS) is over
  double hard_end = now_ms() + seconds * 1e3;
  uint64_t max_iter = 10000000000ull;
  for (uint64_t i = 0; i < max_iter && !t.ended && t.received < count; i++) {
    if (busy_us > 0 && drain_n == 0 && drain_t0 == 0) drain_t0 = now_ms();
    int32_t n = nkb_recv_batch(c.h, buf, sizeof(buf), meta, (uint32_t)sizeof(meta), BATCH);
    calls++;
    if (n < 0) fail("nkb_recv_batch", n);
    if (n == 0) {
      empty++;
      if (now_ms() > hard_end) break;
      if (busy_us == 0) {
        int32_t rc = nkb_wait(c.h, WAIT_SLICE_US, 1);
        if (rc < 0) fail("nkb_wait", rc);
        continue;
      }
      if (drain_n > 0) {
        double t1 = now_ms();
        if (warm) drain_done(&d, drain_t0, t1, drain_n);
        warm = warm || (first > 0 && t1 - first >= RATE_WARMUP_MS);
        if (t.received > drain_from) last = t1;  // a drain of end markers only is not data
      }
      drain_n = 0;
      drain_from = t.received;
      if (warm) spin_ms(busy_us / 1e3);
      drain_t0 = now_ms();
      continue;
    }
    drain_n += (uint64_t)n;
    uint64_t before = t.received;
    count_batch(&t, buf, meta, n);
    if (t.received > before) {
      if (before == 0) first = now_ms();
      if (busy_us == 0 || before == 0) last = now_ms();  // drains: at their end
    }
    if ((i & 1023u) == 0 && now_ms() > hard_end) break;
  }
  if (busy_us > 0 && drain_n > 0) {  // the drain that met the end marker
    double t1 = now_ms();
    if (warm) drain_done(&d, drain_t0, t1, drain_n);
    if (t.received > drain_from) last = t1;
  }
  uint64_t kept = d.rated;
  qsort(d.each, (size_t)kept, sizeof(drain_t), cmp_drain);
  double window = t.received > 0 ? now_ms() - first : 0;
  printf("{\"result\":{\"windowMs\":%.3f,", window);
  if (busy_us > 0) {
    printf("\"drainMs\":%.3f,\"drained\":%llu,\"drains\":%llu,\"maxDrain\":%llu,", d.ms,
           (unsigned long long)d.drained, (unsigned long long)d.count,
           (unsigned long long)d.max);
    printf("\"drainP10Mpps\":%.3f,\"drainP50Mpps\":%.3f,\"drainP90Mpps\":%.3f,",
           weighted_percentile(d.each, kept, 0.1), weighted_percentile(d.each, kept, 0.5),
           weighted_percentile(d.each, kept, 0.9));
  }
  printf("\"received\":%llu,\"warm\":%llu,\"short\":%llu,\"ended\":%s,"
         "\"firstMs\":%.3f,\"lastMs\":%.3f,\"spanMs\":%.3f,\"maxSeq\":%lld,\"gaps\":%llu,"
         "\"reordered\":%llu,\"viaKernel\":%llu,\"calls\":%llu,\"emptyCalls\":%llu,",
         (unsigned long long)t.received, (unsigned long long)t.warm,
         (unsigned long long)t.shortn, t.ended ? "true" : "false", first, last, last - first,
         (long long)t.max_seq, (unsigned long long)t.gaps, (unsigned long long)t.reordered,
         (unsigned long long)t.via_kernel, (unsigned long long)calls, (unsigned long long)empty);
  return finish_result(c.h);
}

// ---- tx: batches of 256 ------------------------------------------------------------------

typedef struct txstate {
  ctx_t *c;
  uint32_t dst_be;
  uint32_t dport;
  uint8_t *buf;
  uint32_t *meta;
  uint32_t size;
  uint64_t tx_full;
  uint64_t reroutes;
  uint64_t link_changes;
} tx_t;

// One batch's send metadata: datagram k at offset k * size of the payload buffer, all to one
// destination (only the sequence numbers in the payloads change between batches).
static void fill_send_meta(uint32_t *meta, uint32_t n, uint32_t size, uint32_t dst_be,
                           uint32_t dport) {
  for (uint32_t k = 0; k < n; k++) {
    meta[k * NKB_SEND_META_WORDS] = k * size;
    meta[k * NKB_SEND_META_WORDS + 1] = size;
    meta[k * NKB_SEND_META_WORDS + 2] = dst_be;
    meta[k * NKB_SEND_META_WORDS + 3] = dport;
  }
}

// Sends datagrams seq..seq+n-1 (one batch); returns how many went (fewer: TX ring full).
static uint32_t send_batch(tx_t *t, uint32_t seq, uint32_t n) {
  for (uint32_t k = 0; k < n; k++) {
    uint32_t s = seq + k;
    memcpy(t->buf + (size_t)k * t->size, &s, 4);
  }
  uint32_t done = 0;
  for (uint32_t round = 0; round < 2u * n + 2u && done < n; round++) {
    int32_t rc = nkb_send_batch(t->c->h, t->buf, n * t->size, t->meta,
                                n * NKB_SEND_META_WORDS * 4u, done, n - done);
    if (rc < 0) fail("nkb_send_batch", rc);
    done += (uint32_t)rc;
    if (done == n) break;
    int32_t err = nkb_sock_last_error(t->c->h);
    if (err == NKB_ELINKCHANGE) {
      t->link_changes++;
      (void)nkb_sock_link_ack(t->c->h);
    } else if (err == NKB_ENEEDROUTE) {
      t->reroutes++;
      int32_t r = resolve(t->c, t->dst_be, t->dport);
      if (r < 0) fail("resolve", r);
    } else if (err == ENOBUFS_RC) {
      t->tx_full++;
      return done;
    } else {
      fail("nkb_send_batch", err);
    }
  }
  return done;
}

static void send_markers(tx_t *t, uint32_t seq, int n, uint32_t gap_ms) {
  for (int i = 0; i < n; i++) {
    memcpy(t->buf, &seq, 4);
    int32_t rc = nkb_send(t->c->h, t->buf, t->size, t->dst_be, t->dport);
    for (int k = 0; k < 3 && (rc == NKB_ENEEDROUTE || rc == NKB_ELINKCHANGE); k++) {
      if (rc == NKB_ELINKCHANGE) (void)nkb_sock_link_ack(t->c->h);
      else if (resolve(t->c, t->dst_be, t->dport) < 0) break;
      rc = nkb_send(t->c->h, t->buf, t->size, t->dst_be, t->dport);
    }
    if (rc < 0 && rc != ENOBUFS_RC) fail("nkb_send (marker)", rc);
    sleep_ms(gap_ms);
  }
}

static int mode_tx(uint32_t ip_be, uint32_t port, uint32_t dst_be, uint32_t dport, uint64_t count,
                   uint32_t size, double seconds, uint32_t drain_ms) {
  if (size < 4 || size > 1472) fail("SIZE must be 4..1472", -EINVAL);
  if (count > 0xfffffff0ull) count = 0xfffffff0ull;  // below the marker sequence numbers
  ctx_t c;
  open_bypass(&c, ip_be, port);
  static uint8_t buf[BATCH * 1472u];
  static uint32_t meta[BATCH * NKB_SEND_META_WORDS];
  memset(buf, 0, sizeof(buf));
  fill_send_meta(meta, BATCH, size, dst_be, dport);
  tx_t t = {.c = &c, .dst_be = dst_be, .dport = dport, .buf = buf, .meta = meta, .size = size};
  int32_t r = resolve(&c, dst_be, dport);
  if (r < 0) fail("resolve", r);
  print_ready(&c);
  send_markers(&t, SEQ_WARM, WARM_PACKETS, WARM_GAP_MS);
  uint64_t seq = 0, batches = 0;
  double t0 = now_ms();
  double end = t0 + seconds * 1e3;
  uint64_t max_iter = count * 4 + 1000;
  for (uint64_t i = 0; i < max_iter && seq < count; i++) {
    uint64_t left = count - seq;
    uint32_t n = left < BATCH ? (uint32_t)left : BATCH;
    seq += send_batch(&t, (uint32_t)seq, n);
    batches++;
    if ((i & 7u) == 0 && now_ms() >= end) break;
  }
  double elapsed = now_ms() - t0;
  sleep_ms(drain_ms);
  send_markers(&t, SEQ_END, END_PACKETS, END_GAP_MS);
  printf("{\"result\":{\"sent\":%llu,\"txFull\":%llu,\"elapsedMs\":%.3f,\"batches\":%llu,"
         "\"reroutes\":%llu,\"linkChanges\":%llu,",
         (unsigned long long)seq, (unsigned long long)t.tx_full, elapsed,
         (unsigned long long)batches, (unsigned long long)t.reroutes,
         (unsigned long long)t.link_changes);
  return finish_result(c.h);
}

// ---- mqtx: paced, one queue-affine socket per queue --------------------------------------

#define MQ_MAX_QUEUES 8u
#define MQ_BATCH 32u
#define MQ_LATE_RESET_MS 20.0  // further behind schedule than this: start the schedule again

static void sleep_until_ms(double t_ms) {
  struct timespec ts = {.tv_sec = (time_t)(t_ms / 1e3),
                        .tv_nsec = (long)((t_ms - (double)(time_t)(t_ms / 1e3) * 1e3) * 1e6)};
  if (ts.tv_nsec < 0) ts.tv_nsec = 0;
  if (ts.tv_nsec > 999999999L) ts.tv_nsec = 999999999L;
  (void)clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, 0);
}

static int mode_mqtx(uint32_t ip_be, uint32_t port, uint32_t dst_be, uint32_t dport,
                     uint32_t queues, double rate_pps, uint32_t size, double seconds,
                     uint32_t drain_ms) {
  if (size < 4 || size > 1472) fail("SIZE must be 4..1472", -EINVAL);
  if (queues < 1 || queues > MQ_MAX_QUEUES) fail("QUEUES must be 1..8", -EINVAL);
  if (!(rate_pps >= 1000 && rate_pps <= 1e7)) fail("RATE_PPS must be 1000..1e7", -EINVAL);
  if (port + queues > 65536u) fail("PORT + QUEUES beyond 65535", -EINVAL);
  static ctx_t c[MQ_MAX_QUEUES];
  static uint8_t buf[MQ_BATCH * 1472u];
  static uint32_t meta[MQ_BATCH * NKB_SEND_META_WORDS];
  tx_t t[MQ_MAX_QUEUES];
  uint64_t seq[MQ_MAX_QUEUES];
  memset(buf, 0, sizeof(buf));
  fill_send_meta(meta, MQ_BATCH, size, dst_be, dport);
  for (uint32_t q = 0; q < queues; q++) {
    open_bypass_on(&c[q], ip_be, port + q, q);
    t[q] = (tx_t){.c = &c[q], .dst_be = dst_be, .dport = dport, .buf = buf, .meta = meta,
                  .size = size};
    seq[q] = 0;
    int32_t r = resolve(&c[q], dst_be, dport);
    if (r < 0) fail("resolve", r);
  }
  print_ready(&c[0]);
  for (uint32_t q = 0; q < queues; q++) send_markers(&t[q], SEQ_WARM, WARM_PACKETS, WARM_GAP_MS);
  double tick_ms = (double)MQ_BATCH / rate_pps * 1e3;
  uint64_t total = 0, ticks = 0, resets = 0;
  double t0 = now_ms();
  double end = t0 + seconds * 1e3;
  double next = t0;
  uint64_t max_ticks = (uint64_t)(seconds * rate_pps / MQ_BATCH) * 2u + 1000u;
  for (uint64_t i = 0; i < max_ticks; i++) {
    double now = now_ms();
    if (now >= end) break;
    if (now < next) {
      sleep_until_ms(next);
    } else if (now - next > MQ_LATE_RESET_MS) {
      next = now;  // a long stall: pace on from here rather than burst to catch up
      resets++;
    }
    uint32_t q = (uint32_t)(i % queues);
    assert(seq[q] < 0xfffffff0ull);
    uint32_t n = send_batch(&t[q], (uint32_t)seq[q], MQ_BATCH);
    seq[q] += n;
    total += n;
    ticks++;
    next += tick_ms;
  }
  double elapsed = now_ms() - t0;
  sleep_ms(drain_ms);
  for (uint32_t q = 0; q < queues; q++) send_markers(&t[q], SEQ_END, END_PACKETS, END_GAP_MS);
  uint64_t tx_full = 0;
  uint64_t tx_drops = 0;  // each queue-affine socket has its own engine, so its own count
  for (uint32_t q = 0; q < queues; q++) {
    tx_full += t[q].tx_full;
    uint64_t st[NKB_ST_COUNT];
    memset(st, 0, sizeof(st));
    if (nkb_sock_stats(c[q].h, st, (uint32_t)sizeof(st)) == 0) tx_drops += st[NKB_ST_ENGINE_TX_DROPS];
  }
  printf("{\"result\":{\"sent\":%llu,\"txFull\":%llu,\"txDrops\":%llu,\"elapsedMs\":%.3f,"
         "\"ticks\":%llu,\"scheduleResets\":%llu,\"ratePps\":%.0f,\"perQueue\":[",
         (unsigned long long)total, (unsigned long long)tx_full, (unsigned long long)tx_drops,
         elapsed, (unsigned long long)ticks, (unsigned long long)resets, rate_pps);
  for (uint32_t q = 0; q < queues; q++) printf("%s%llu", q ? "," : "", (unsigned long long)seq[q]);
  printf("],");
  for (uint32_t q = 1; q < queues; q++) {
    nkb_sock_shutdown(c[q].h);
    nkb_sock_free(c[q].h);
  }
  return finish_result(c[0].h);
}

// ---- echo: receive one, send it back -------------------------------------------------------

static int mode_echo(uint32_t ip_be, uint32_t port, double seconds) {
  ctx_t c;
  open_bypass(&c, ip_be, port);
  static uint8_t buf[65536];
  uint32_t meta[NKB_RECV_META_WORDS];
  print_ready(&c);
  uint64_t echoed = 0, failed = 0, reroutes = 0;
  bool ended = false;
  double hard_end = now_ms() + seconds * 1e3;
  uint64_t max_iter = 10000000000ull;
  for (uint64_t i = 0; i < max_iter; i++) {
    int32_t n = nkb_recv_batch(c.h, buf, sizeof(buf), meta, (uint32_t)sizeof(meta), 1);
    if (n < 0) fail("nkb_recv_batch", n);
    if (n == 0) {
      if (now_ms() > hard_end) break;
      int32_t rc = nkb_wait(c.h, WAIT_SLICE_US, 1);
      if (rc < 0) fail("nkb_wait", rc);
      continue;
    }
    const uint8_t *data = buf + meta[0];
    uint32_t len = meta[1];
    uint32_t seq = 0;
    if (len >= 4) memcpy(&seq, data, 4);
    if (len >= 4 && seq == SEQ_END) {
      ended = true;
      break;
    }
    int32_t rc = nkb_send(c.h, data, len, meta[2], meta[3]);
    for (int k = 0; k < 3 && (rc == NKB_ENEEDROUTE || rc == NKB_ELINKCHANGE); k++) {
      if (rc == NKB_ELINKCHANGE) {
        (void)nkb_sock_link_ack(c.h);
      } else {
        reroutes++;
        int32_t r = resolve(&c, meta[2], meta[3]);
        if (r < 0) fail("resolve", r);
      }
      rc = nkb_send(c.h, data, len, meta[2], meta[3]);
    }
    if (rc < 0) failed++;
    else echoed++;
    if ((i & 4095u) == 0 && now_ms() > hard_end) break;
  }
  printf("{\"result\":{\"echoed\":%llu,\"failed\":%llu,\"reroutes\":%llu,\"ended\":%s,",
         (unsigned long long)echoed, (unsigned long long)failed, (unsigned long long)reroutes,
         ended ? "true" : "false");
  return finish_result(c.h);
}

// ---- xdpcount: an XDP program counts and drops, this process polls its counters ------------

enum {
  XC_SLOT_DATA = 0,   // datagrams to DST_PORT that carry a sequence number
  XC_SLOT_END = 1,    // end markers (SEQ_END)
  XC_SLOT_WARM = 2,   // warm-up markers (SEQ_WARM)
  XC_SLOT_SHORT = 3,  // payload shorter than a sequence number
  XC_SLOTS = 4,
  XC_HDR = 14 + 20 + 8,  // Ethernet + IPv4 without options + UDP
};

#define XC_MAX_CPUS 1024u
#define XC_POLL_MS 10u
#define XC_GRACE_MS 50.0
#define XC_ATTACH_TRIES 20u
#define XC_ATTACH_GAP_MS 10u

#define XI(code_, dst_, src_, off_, imm_) \
  { .code = (code_), .dst_reg = (dst_), .src_reg = (src_), .off = (off_), .imm = (imm_) }
#define XI_MOV_REG(dst, src) XI(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0)
#define XI_MOV_IMM(dst, imm) XI(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)
#define XI_ADD_IMM(dst, imm) XI(BPF_ALU64 | BPF_ADD | BPF_K, dst, 0, 0, imm)
#define XI_AND_IMM(dst, imm) XI(BPF_ALU64 | BPF_AND | BPF_K, dst, 0, 0, imm)
#define XI_LDX(size, dst, src, off) XI(BPF_LDX | BPF_MEM | (size), dst, src, off, 0)
#define XI_STX(size, dst, src, off) XI(BPF_STX | BPF_MEM | (size), dst, src, off, 0)
// Jumps name their own index and their target's, so that the offset is computed, not counted.
#define XI_JREG(op, dst, src, at, to) XI(BPF_JMP | (op) | BPF_X, dst, src, (to) - (at) - 1, 0)
#define XI_JIMM(op, dst, imm, at, to) XI(BPF_JMP | (op) | BPF_K, dst, 0, (to) - (at) - 1, imm)
#define XI_J32IMM(op, dst, imm, at, to) XI(BPF_JMP32 | (op) | BPF_K, dst, 0, (to) - (at) - 1, imm)
#define XI_JA(at, to) XI(BPF_JMP | BPF_JA, 0, 0, (to) - (at) - 1, 0)
#define XI_CALL(helper) XI(BPF_JMP | BPF_CALL, 0, 0, 0, helper)
#define XI_EXIT() XI(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
#define XI_LD_MAP_FD(dst) \
  XI(BPF_LD | BPF_DW | BPF_IMM, dst, BPF_PSEUDO_MAP_FD, 0, 0), XI(0, 0, 0, 0, 0)

// Packet loads are in host order: wire constants are compared byte-swapped (little-endian host,
// as the sequence numbers already assume).
#define XC_BE16(x) ((int32_t)((((x) & 0xff) << 8) | (((x) >> 8) & 0xff)))
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "XC_BE16 and the markers assume it");

enum {  // instruction indices the program's jumps and patches refer to
  XC_AT_PORT = 15,   // the destination port comparison: imm patched with DST_PORT
  XC_AT_WARM = 25,   // not the end marker: is it the warm-up marker?
  XC_AT_COUNT = 27,  // r5 = slot: add one to it
  XC_AT_MAP = 28,    // the map's fd
  XC_AT_DROP = 37,
  XC_AT_PASS = 39,
  XC_PROG_LEN = 41,
};

// r1 ctx, r2 data, r3 data_end, r4 scratch, r5 the slot; R1..R5 die in the helper call.
static const struct bpf_insn XC_PROG[XC_PROG_LEN] = {
    XI_LDX(BPF_W, BPF_REG_2, BPF_REG_1, offsetof(struct xdp_md, data)),      // [0]
    XI_LDX(BPF_W, BPF_REG_3, BPF_REG_1, offsetof(struct xdp_md, data_end)),  // [1]
    XI_MOV_REG(BPF_REG_4, BPF_REG_2),                                        // [2]
    XI_ADD_IMM(BPF_REG_4, XC_HDR),                                           // [3]
    XI_JREG(BPF_JGT, BPF_REG_4, BPF_REG_3, 4, XC_AT_PASS),  // [4] shorter than the headers
    XI_LDX(BPF_H, BPF_REG_4, BPF_REG_2, 12),                                 // [5]
    XI_JIMM(BPF_JNE, BPF_REG_4, XC_BE16(0x0800), 6, XC_AT_PASS),  // [6] not (untagged) IPv4
    XI_LDX(BPF_B, BPF_REG_4, BPF_REG_2, 14),                                 // [7]
    XI_JIMM(BPF_JNE, BPF_REG_4, 0x45, 8, XC_AT_PASS),  // [8] IP options: UDP not at 34
    XI_LDX(BPF_B, BPF_REG_4, BPF_REG_2, 14 + 9),                             // [9]
    XI_JIMM(BPF_JNE, BPF_REG_4, 17, 10, XC_AT_PASS),  // [10] not UDP
    XI_LDX(BPF_H, BPF_REG_4, BPF_REG_2, 14 + 6),                             // [11]
    XI_AND_IMM(BPF_REG_4, XC_BE16(0x3fff)),                                  // [12]
    XI_JIMM(BPF_JNE, BPF_REG_4, 0, 13, XC_AT_PASS),  // [13] a fragment: the kernel's
    XI_LDX(BPF_H, BPF_REG_4, BPF_REG_2, 14 + 20 + 2),                        // [14]
    XI_JIMM(BPF_JNE, BPF_REG_4, 0, XC_AT_PORT, XC_AT_PASS),  // [15] another port
    XI_MOV_IMM(BPF_REG_5, XC_SLOT_SHORT),                                    // [16]
    XI_MOV_REG(BPF_REG_4, BPF_REG_2),                                        // [17]
    XI_ADD_IMM(BPF_REG_4, XC_HDR + 4),                                       // [18]
    XI_JREG(BPF_JGT, BPF_REG_4, BPF_REG_3, 19, XC_AT_COUNT),  // [19] no sequence number
    XI_LDX(BPF_W, BPF_REG_4, BPF_REG_2, XC_HDR),                             // [20]
    XI_MOV_IMM(BPF_REG_5, XC_SLOT_DATA),                                     // [21]
    XI_J32IMM(BPF_JNE, BPF_REG_4, (int32_t)SEQ_END, 22, XC_AT_WARM),         // [22]
    XI_MOV_IMM(BPF_REG_5, XC_SLOT_END),                                      // [23]
    XI_JA(24, XC_AT_COUNT),                                                  // [24]
    XI_J32IMM(BPF_JNE, BPF_REG_4, (int32_t)SEQ_WARM, XC_AT_WARM, XC_AT_COUNT),  // [25]
    XI_MOV_IMM(BPF_REG_5, XC_SLOT_WARM),                                     // [26]
    XI_STX(BPF_W, BPF_REG_10, BPF_REG_5, -4),                                // [27] key
    XI_LD_MAP_FD(BPF_REG_1),                                                 // [28..29]
    XI_MOV_REG(BPF_REG_2, BPF_REG_10),                                       // [30]
    XI_ADD_IMM(BPF_REG_2, -4),                                               // [31]
    XI_CALL(BPF_FUNC_map_lookup_elem),  // [32] inlined for arrays: no real call
    XI_JIMM(BPF_JEQ, BPF_REG_0, 0, 33, XC_AT_DROP),                          // [33]
    XI_LDX(BPF_DW, BPF_REG_1, BPF_REG_0, 0),  // [34] this CPU's own slot: no atomics needed
    XI_ADD_IMM(BPF_REG_1, 1),                                                // [35]
    XI_STX(BPF_DW, BPF_REG_0, BPF_REG_1, 0),                                 // [36]
    XI_MOV_IMM(BPF_REG_0, XDP_DROP),                                         // [37]
    XI_EXIT(),                                                               // [38]
    XI_MOV_IMM(BPF_REG_0, XDP_PASS),                                         // [39]
    XI_EXIT(),                                                               // [40]
};

// A miscounted jump would still verify but count or pass the wrong packets: every jump must
// land on one of the four places the program jumps to, inside the program.
static void xc_prog_check(const struct bpf_insn *p) {
  uint32_t jumps = 0;
  for (int32_t i = 0; i < XC_PROG_LEN; i++) {
    uint8_t cls = BPF_CLASS(p[i].code), op = BPF_OP(p[i].code);
    if (cls != BPF_JMP && cls != BPF_JMP32) continue;
    if (op == BPF_CALL || op == BPF_EXIT) continue;
    int32_t to = i + 1 + p[i].off;
    assert(to == XC_AT_WARM || to == XC_AT_COUNT || to == XC_AT_DROP || to == XC_AT_PASS);
    jumps++;
  }
  assert(jumps == 11);
  assert(p[XC_AT_MAP].code == (BPF_LD | BPF_DW | BPF_IMM));
  assert(p[XC_AT_PORT].code == (BPF_JMP | BPF_JNE | BPF_K));
  assert(p[XC_AT_DROP + 1].code == (BPF_JMP | BPF_EXIT));
  assert(p[XC_AT_PASS + 1].code == (BPF_JMP | BPF_EXIT) && XC_AT_PASS + 2 == XC_PROG_LEN);
}

typedef struct xdpcount {
  uint32_t ifindex;
  uint32_t cpus;  // possible CPUs: the per-CPU map's values have one u64 each
  int32_t map_fd;
  int32_t prog_fd;
  int32_t link_fd;
  uint32_t prog_id;
  uint32_t attach_flags;  // XDP_FLAGS_SKB_MODE (generic) or XDP_FLAGS_DRV_MODE (native)
  uint32_t attach_tries;
} xc_t;

// The possible CPUs (what a per-CPU map value has entries for): the highest number in
// /sys/devices/system/cpu/possible ("0-1", "0", "0-3,8-11") plus one.
static uint32_t xc_possible_cpus(void) {
  FILE *f = fopen("/sys/devices/system/cpu/possible", "r");
  if (f == 0) fail("open /sys/devices/system/cpu/possible", -errno);
  char text[256];
  memset(text, 0, sizeof(text));
  size_t len = fread(text, 1, sizeof(text) - 1, f);
  fclose(f);
  uint64_t max = 0, cur = 0;
  bool digits = false;
  for (size_t i = 0; i < len && i < sizeof(text); i++) {
    char ch = text[i];
    if (ch >= '0' && ch <= '9') {
      cur = cur * 10u + (uint64_t)(ch - '0');
      digits = true;
      if (cur >= XC_MAX_CPUS) fail("more possible CPUs than XC_MAX_CPUS", -E2BIG);
    } else {
      if (digits && cur > max) max = cur;
      cur = 0;
      digits = false;
    }
  }
  if (digits && cur > max) max = cur;
  assert(max < XC_MAX_CPUS);
  return (uint32_t)max + 1u;
}

static void xc_load(xc_t *x, uint32_t port) {
  assert(x->map_fd > 0 && port <= 65535u);
  struct bpf_insn insns[XC_PROG_LEN];
  memcpy(insns, XC_PROG, sizeof(insns));
  insns[XC_AT_PORT].imm = XC_BE16(port);
  insns[XC_AT_MAP].imm = x->map_fd;
  xc_prog_check(insns);
  int32_t fd = nkb_bpf_xdp_load(insns, XC_PROG_LEN, "nkb_count");  // the shim's loader
  if (fd < 0) fail("BPF_PROG_LOAD", fd);
  x->prog_fd = fd;
  int32_t rc = nkb_bpf_prog_id(x->prog_fd, &x->prog_id);
  if (rc < 0) fail("BPF_OBJ_GET_INFO_BY_FD", rc);
  assert(x->prog_fd > 0 && x->prog_id > 0);
}

// The previous run's program (its process just exited) may take a few ms to go: EBUSY (a link
// in the same mode) and EEXIST (a program in the other mode, generic against native) are
// retried.
static void xc_attach(xc_t *x) {
  assert(x->prog_fd > 0 && x->ifindex > 0);
  int32_t fd = -EBUSY;
  for (uint32_t i = 0; i < XC_ATTACH_TRIES && (fd == -EBUSY || fd == -EEXIST); i++) {
    if (i > 0) sleep_ms(XC_ATTACH_GAP_MS);
    fd = nkb_bpf_xdp_link(x->prog_fd, x->ifindex, x->attach_flags);
    x->attach_tries = i + 1;
  }
  if (fd < 0) fail("BPF_LINK_CREATE", fd);
  x->link_fd = fd;
  assert(x->attach_tries >= 1 && x->attach_tries <= XC_ATTACH_TRIES);
}

static void xc_open(xc_t *x, uint32_t ifindex, uint32_t port, uint32_t attach_flags) {
  assert(attach_flags == XDP_FLAGS_SKB_MODE || attach_flags == XDP_FLAGS_DRV_MODE);
  memset(x, 0, sizeof(*x));
  x->ifindex = ifindex;
  x->attach_flags = attach_flags;
  x->cpus = xc_possible_cpus();
  assert(x->cpus >= 1 && x->cpus <= XC_MAX_CPUS);
  int32_t fd = nkb_bpf_map_create(BPF_MAP_TYPE_PERCPU_ARRAY, sizeof(uint32_t), sizeof(uint64_t),
                                  XC_SLOTS, "nkb_count");
  if (fd < 0) fail("BPF_MAP_CREATE", fd);
  x->map_fd = fd;
  xc_load(x, port);
  xc_attach(x);
  assert(x->map_fd > 0 && x->prog_fd > 0 && x->link_fd > 0);
}

// Sums every CPU's counters of every slot.
static void xc_read(const xc_t *x, uint64_t out[XC_SLOTS]) {
  static uint64_t per_cpu[XC_MAX_CPUS];
  assert(x->cpus <= XC_MAX_CPUS);
  for (uint32_t slot = 0; slot < XC_SLOTS; slot++) {
    memset(per_cpu, 0, sizeof(per_cpu));
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.map_fd = (uint32_t)x->map_fd;
    attr.key = (uint64_t)(uintptr_t)&slot;
    attr.value = (uint64_t)(uintptr_t)per_cpu;
    int32_t rc = nkb_bpf(BPF_MAP_LOOKUP_ELEM, &attr, sizeof(attr));
    if (rc < 0) fail("BPF_MAP_LOOKUP_ELEM", rc);
    uint64_t sum = 0;
    for (uint32_t c = 0; c < x->cpus; c++) sum += per_cpu[c];
    assert(sum >= out[slot]);  // counters only grow
    out[slot] = sum;
  }
}

static uint32_t parse_ifindex(const char *s) {
  bool digits = s[0] != 0 && strspn(s, "0123456789") == strlen(s);
  uint64_t v = digits ? parse_u64(s, "IFINDEX") : (uint64_t)if_nametoindex(s);
  if (v == 0 || v > INT32_MAX) fail("no such interface", -ENODEV);
  return (uint32_t)v;
}

static int mode_xdpcount(uint32_t ifindex, uint32_t port, double seconds, uint32_t attach_flags) {
  char name[IF_NAMESIZE + 1];
  memset(name, 0, sizeof(name));
  if (if_indextoname(ifindex, name) == 0) fail("no such interface", -errno);
  xc_t x;
  xc_open(&x, ifindex, port, attach_flags);
  printf("{\"ready\":true,\"bypass\":{\"active\":true,\"interface\":\"%s\",\"ifindex\":%u,"
         "\"program\":\"nkb_count\",\"progId\":%u,\"xdpMode\":\"%s\",\"attachTries\":%u,"
         "\"cpus\":%u,\"reason\":null,\"detail\":null}}\n",
         name, ifindex, x.prog_id, attach_flags == XDP_FLAGS_SKB_MODE ? "generic" : "native",
         x.attach_tries, x.cpus);
  fflush(stdout);
  uint64_t cnt[XC_SLOTS] = {0};
  uint64_t seen = 0, polls = 0;
  double first = 0, last = 0, ended_at = 0;
  double hard_end = now_ms() + seconds * 1e3;
  uint64_t max_polls = (uint64_t)(seconds * 1e3 / XC_POLL_MS) + 10u;  // each poll sleeps first
  for (uint64_t i = 0; i < max_polls; i++) {
    sleep_ms(XC_POLL_MS);
    xc_read(&x, cnt);
    polls++;
    double now = now_ms();
    if (cnt[XC_SLOT_DATA] > seen) {
      if (seen == 0) first = now;
      last = now;
      seen = cnt[XC_SLOT_DATA];
    }
    if (cnt[XC_SLOT_END] > 0 && ended_at == 0) ended_at = now;
    if (ended_at > 0 && now - ended_at >= XC_GRACE_MS) break;
    if (now > hard_end) break;
  }
  assert(seen == cnt[XC_SLOT_DATA]);
  close(x.link_fd);  // detaches the program now, not at exit
  close(x.prog_fd);
  close(x.map_fd);
  printf("{\"result\":{\"received\":%llu,\"warm\":%llu,\"short\":%llu,\"endMarkers\":%llu,"
         "\"ended\":%s,\"firstMs\":%.3f,\"lastMs\":%.3f,\"spanMs\":%.3f,\"polls\":%llu,"
         "\"pollMs\":%u}}\n",
         (unsigned long long)cnt[XC_SLOT_DATA], (unsigned long long)cnt[XC_SLOT_WARM],
         (unsigned long long)cnt[XC_SLOT_SHORT], (unsigned long long)cnt[XC_SLOT_END],
         ended_at > 0 ? "true" : "false", first, last, last - first, (unsigned long long)polls,
         XC_POLL_MS);
  fflush(stdout);
  return 0;
}

static _Noreturn void usage(void) {
  fprintf(stderr,
          "usage: ceiling rx IP PORT COUNT SECONDS [BUSY_US]\n"
          "       ceiling tx IP PORT DST_IP DST_PORT COUNT SIZE [SECONDS [DRAIN_MS]]\n"
          "       ceiling echo IP PORT SECONDS\n"
          "       ceiling mqtx IP PORT DST_IP DST_PORT QUEUES RATE_PPS SIZE SECONDS DRAIN_MS\n"
          "       ceiling xdpcount IFNAME_OR_IFINDEX DST_PORT SECONDS [generic|native]\n");
  exit(2);
}

int main(int argc, char **argv) {
  if (argc < 2) usage();
  const char *mode = argv[1];
  if (strcmp(mode, "rx") == 0 && (argc == 6 || argc == 7)) {
    return mode_rx(parse_ip(argv[2]), parse_port(argv[3]),
                   parse_u64(argv[4], "COUNT"), parse_seconds(argv[5]),
                   argc > 6 ? (uint32_t)parse_u64(argv[6], "BUSY_US") : 0);
  }
  if (strcmp(mode, "tx") == 0 && argc >= 8 && argc <= 10) {
    double seconds = argc > 8 ? parse_seconds(argv[8]) : 60;
    uint32_t drain = argc > 9 ? (uint32_t)parse_u64(argv[9], "DRAIN_MS") : 300;
    return mode_tx(parse_ip(argv[2]), parse_port(argv[3]), parse_ip(argv[4]),
                   parse_port(argv[5]), parse_u64(argv[6], "COUNT"),
                   (uint32_t)parse_u64(argv[7], "SIZE"), seconds, drain);
  }
  if (strcmp(mode, "echo") == 0 && argc == 5) {
    return mode_echo(parse_ip(argv[2]), parse_port(argv[3]),
                     parse_seconds(argv[4]));
  }
  if (strcmp(mode, "mqtx") == 0 && argc == 11) {
    return mode_mqtx(parse_ip(argv[2]), parse_port(argv[3]), parse_ip(argv[4]),
                     parse_port(argv[5]), (uint32_t)parse_u64(argv[6], "QUEUES"),
                     (double)parse_u64(argv[7], "RATE_PPS"), (uint32_t)parse_u64(argv[8], "SIZE"),
                     parse_seconds(argv[9]), (uint32_t)parse_u64(argv[10], "DRAIN_MS"));
  }
  if (strcmp(mode, "xdpcount") == 0 && (argc == 5 || argc == 6)) {
    const char *xdp_mode = argc == 6 ? argv[5] : "generic";
    if (strcmp(xdp_mode, "generic") != 0 && strcmp(xdp_mode, "native") != 0) usage();
    uint32_t flags = strcmp(xdp_mode, "generic") == 0 ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_DRV_MODE;
    return mode_xdpcount(parse_ifindex(argv[2]), parse_port(argv[3]), parse_seconds(argv[4]),
                         flags);
  }
  usage();
}
