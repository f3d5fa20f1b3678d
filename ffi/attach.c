// Attaching sockets to an interface's engine (one per interface per process,
// shared by every socket on it), their filter flows, the destination header
// cache, counters, and thin guarded wrappers over the rtnetlink lookups.
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "registry.h"
#include "sock.h"

_Static_assert(sizeof(nkb_link_t) == 76, "nkb_link_t layout is read from TypeScript");
_Static_assert(sizeof(nkb_policy_t) == 20, "nkb_policy_t layout is read from TypeScript");
_Static_assert(NKB_ST_ENGINE_TX_DROPS < NKB_ST_COUNT, "the stats words fit NKB_ST_COUNT");

static int32_t nkb_engine_find(uint32_t ifindex, uint32_t first_queue, uint32_t queue_count) {
  for (uint32_t i = 0; i < NKB_MAX_ENGINES; i++) {
    const nkb_engine_t *e = g_engines[i].engine;
    if (e == 0 || e->ifindex != ifindex || e->first_queue != first_queue) continue;
    // A queue-affine engine (one queue asked for) is not the whole-interface one, even
    // on an interface that has one queue.
    if (e->requested_queues == queue_count) return (int32_t)i;
  }
  return -1;
}

// Program ids of filters this process attached, newest last: a Worker deciding on an
// interface reads the attached program id over rtnetlink without g_lock, and another
// Worker may close the interface's last engine (and its filter) before the decision
// asks nkb_prog_is_ours; the id is still ours then, not a foreign program's. The kernel
// hands out program ids cyclically over 31 bits, so a recent id is not reused.
// Measured: 3 Workers x 600 open/close cycles gave at least 13 such fallbacks before this.
#define NKB_PROG_HISTORY 64u
static uint32_t g_prog_history[NKB_PROG_HISTORY];  // g_lock
static uint32_t g_prog_history_next;                // g_lock; total ever recorded

static void nkb_prog_history_add(uint32_t prog_id) {
  assert(prog_id != 0);
  g_prog_history[g_prog_history_next % NKB_PROG_HISTORY] = prog_id;
  g_prog_history_next++;
  assert(g_prog_history[(g_prog_history_next - 1u) % NKB_PROG_HISTORY] == prog_id);
}

static bool nkb_prog_history_has(uint32_t prog_id) {
  assert(prog_id != 0);
  uint32_t n = g_prog_history_next < NKB_PROG_HISTORY ? g_prog_history_next : NKB_PROG_HISTORY;
  for (uint32_t i = 0; i < n; i++) {
    if (g_prog_history[i] == prog_id) return true;
  }
  return false;
}

// The interface's filter, opened with its first engine. g_lock held.
static int32_t nkb_iface_get(uint32_t ifindex, uint32_t attach_flags) {
  int32_t free_slot = -1;
  for (uint32_t i = 0; i < NKB_MAX_ENGINES; i++) {
    if (g_ifaces[i].refs > 0 && g_ifaces[i].ifindex == ifindex) return (int32_t)i;
    if (g_ifaces[i].refs == 0 && free_slot < 0) free_slot = (int32_t)i;
  }
  if (free_slot < 0) return -EMFILE;
  nkb_iface_t *f = &g_ifaces[free_slot];
  memset(f, 0, sizeof(*f));
  int32_t rc = nkb_filter_open(&f->filter, ifindex, NKB_FILTER_QUEUES, 1024u, attach_flags);
  if (rc != 0) return rc;
  f->ifindex = ifindex;
  assert(f->filter.prog_id != 0);
  nkb_prog_history_add(f->filter.prog_id);
  return free_slot;
}

static void nkb_iface_put(int32_t i) {
  nkb_iface_t *f = &g_ifaces[i];
  assert(f->refs > 0);
  if (--f->refs == 0) nkb_filter_close(&f->filter);
}

static int32_t nkb_engine_create(uint32_t ifindex, uint32_t first_queue, uint32_t queue_count,
                                 uint32_t frame_size, uint32_t attach_flags) {
  int32_t slot = -1;
  for (uint32_t i = 0; i < NKB_MAX_ENGINES && slot < 0; i++) {
    if (g_engines[i].engine == 0) slot = (int32_t)i;
  }
  if (slot < 0) return -EMFILE;
  int32_t iface = nkb_iface_get(ifindex, attach_flags);
  if (iface < 0) return iface;
  g_ifaces[iface].refs++;
  nkb_engine_t *e = calloc(1, sizeof(*e));
  int32_t rc = e == 0 ? -ENOMEM : 0;
  if (rc == 0) {
    rc = nkb_engine_open(e, &g_ifaces[iface].filter, ifindex, first_queue, queue_count,
                         frame_size);
  }
  if (rc != 0) {
    free(e);
    nkb_iface_put(iface);
    return rc;
  }
  nkb_engine_slot_t *es = &g_engines[slot];
  memset(es, 0, sizeof(*es));
  for (uint32_t i = 0; i < NKB_MAX_ATTACH; i++) es->flows[i].sock = -1;
  es->engine = e;
  es->iface = iface;
  assert(es->refs == 0);
  return slot;
}

int32_t nkb_sock_attach(int32_t h, uint32_t ifindex, uint32_t first_queue, uint32_t queue_count,
                        uint32_t frame_size, uint32_t attach_flags, uint32_t mtu) {
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0) return -EBADF;
  // 64-bit sum: an MTU near 2^32 must not wrap around to a small frame and pass.
  if (mtu < 68 || (uint64_t)mtu + NKB_ETH_LEN + NKB_XDP_HEADROOM > frame_size) return -EMSGSIZE;
  pthread_mutex_lock(&g_lock);
  int32_t rc = 0;
  if (s->engine >= 0) rc = -EALREADY;
  int32_t slot = rc == 0 ? nkb_engine_find(ifindex, first_queue, queue_count) : -1;
  if (rc == 0 && slot < 0) {
    slot = nkb_engine_create(ifindex, first_queue, queue_count, frame_size, attach_flags);
    if (slot < 0) rc = slot;
  }
  if (rc == 0 && g_engines[slot].engine->frame_size < frame_size) rc = -EMSGSIZE;
  if (rc == 0) {
    g_engines[slot].refs++;
    s->engine = slot;
    s->mtu = mtu;
    // The interface's counters are the new engine's from now on (they only rise after).
    __atomic_store_n(&s->stats[NKB_ST_ENGINE_DROPS], 0u, __ATOMIC_RELAXED);
    __atomic_store_n(&s->stats[NKB_ST_ENGINE_TX_DROPS], 0u, __ATOMIC_RELAXED);
    nkb_refresh_start();  // idempotent: the first engine starts it
  }
  pthread_mutex_unlock(&g_lock);
  assert(rc != 0 || s->engine >= 0);
  return rc;
}

// Adds (delta 1) or drops (delta -1) one holder of a flow key in the interface's
// filter: the key is in the map while any engine's socket holds it. g_lock held.
static int32_t nkb_iface_key(nkb_iface_t *f, uint32_t ip_be, uint16_t port, int32_t delta) {
  nkb_flow_ref_t *hit = 0, *free_ref = 0;
  for (uint32_t i = 0; i < NKB_MAX_ATTACH; i++) {
    nkb_flow_ref_t *k = &f->keys[i];
    if (k->refs > 0 && k->ip_be == ip_be && k->port == port) hit = k;
    if (k->refs == 0 && free_ref == 0) free_ref = k;
  }
  if (delta > 0) {
    if (hit != 0) return hit->refs++, 0;
    if (free_ref == 0) return -ENOSPC;
    int32_t rc = nkb_filter_add_flow(&f->filter, ip_be, htons(port));
    if (rc == 0) *free_ref = (nkb_flow_ref_t){.ip_be = ip_be, .port = port, .refs = 1};
    return rc;
  }
  if (hit == 0) return -ENOENT;
  if (--hit->refs > 0) return 0;
  return nkb_filter_del_flow(&f->filter, ip_be, htons(port));
}

static int32_t nkb_flow_update(int32_t h, uint32_t ip_be, uint32_t port, bool add) {
  int32_t idx = nkb_sock_index(h);
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0 || idx < 0) return -EBADF;
  if (port == 0 || port > 65535u) return -EINVAL;
  pthread_mutex_lock(&g_lock);
  int32_t rc = s->engine < 0 ? -ENOTCONN : 0;
  nkb_engine_slot_t *es = rc == 0 ? &g_engines[s->engine] : 0;
  int32_t found = -1, free_slot = -1;
  for (uint32_t i = 0; rc == 0 && i < NKB_MAX_ATTACH; i++) {
    nkb_flow_t *f = &es->flows[i];
    if (f->sock < 0 && free_slot < 0) free_slot = (int32_t)i;
    if (f->sock >= 0 && f->ip_be == ip_be && f->port == port) found = (int32_t)i;
  }
  if (rc == 0 && add) {
    if (found >= 0) rc = -EADDRINUSE;
    else if (free_slot < 0) rc = -ENOSPC;
    else rc = nkb_iface_key(&g_ifaces[es->iface], ip_be, (uint16_t)port, 1);
    if (rc == 0) {
      pthread_mutex_lock(&es->engine->rx_lock);
      es->flows[free_slot] = (nkb_flow_t){.sock = idx, .ip_be = ip_be, .port = (uint16_t)port};
      pthread_mutex_unlock(&es->engine->rx_lock);
    }
  } else if (rc == 0) {
    if (found < 0 || es->flows[found].sock != idx) rc = -ENOENT;
    else rc = nkb_iface_key(&g_ifaces[es->iface], ip_be, (uint16_t)port, -1);
    if (rc == 0 || rc == -ENOENT) {
      pthread_mutex_lock(&es->engine->rx_lock);
      if (found >= 0 && es->flows[found].sock == idx) es->flows[found].sock = -1;
      pthread_mutex_unlock(&es->engine->rx_lock);
    }
  }
  pthread_mutex_unlock(&g_lock);
  return rc;
}

int32_t nkb_sock_add_flow(int32_t h, uint32_t ip_be, uint32_t port) {
  return nkb_flow_update(h, ip_be, port, true);
}

int32_t nkb_sock_del_flow(int32_t h, uint32_t ip_be, uint32_t port) {
  return nkb_flow_update(h, ip_be, port, false);
}

void nkb_detach_locked(uint32_t idx) {
  nkb_sock_t *s = g_socks[idx];
  assert(s != 0 && s->engine >= 0);
  nkb_engine_slot_t *es = &g_engines[s->engine];
  nkb_engine_t *e = es->engine;
  assert(e != 0 && es->refs > 0);
  pthread_mutex_lock(&e->rx_lock);
  for (uint32_t i = 0; i < NKB_MAX_ATTACH; i++) {
    nkb_flow_t *f = &es->flows[i];
    if (f->sock != (int32_t)idx) continue;
    (void)nkb_iface_key(&g_ifaces[es->iface], f->ip_be, f->port, -1);
    f->sock = -1;
  }
  // Frames parked for this socket go back to the device.
  for (uint32_t n = 0; s->park_head != s->park_tail && n < NKB_PENDING; n++) {
    nkb_parked_t *p = &s->parked[s->park_head % NKB_PENDING];
    nkb_frame_release(e, p->queue, p->addr);
    s->park_head++;
  }
  assert(s->park_head == s->park_tail);
  pthread_mutex_unlock(&e->rx_lock);
  s->engine = -1;
  // Nothing waits for it on the rings now; the refresher may be about to stop for good.
  nkb_reg_recv_q(idx, 0);
  es->refs--;
  if (es->refs == 0) {
    nkb_engine_close(e);
    free(e);
    es->engine = 0;
    nkb_iface_put(es->iface);
    bool any = false;
    for (uint32_t i = 0; i < NKB_MAX_ENGINES; i++) any = any || g_engines[i].engine != 0;
    // The last engine: the refresher stops (it never waits for g_lock, so joining it here
    // is bounded by its 1 ms lock tries).
    if (!any) nkb_refresh_stop();
  }
}

int32_t nkb_sock_detach(int32_t h) {
  int32_t idx = nkb_sock_index(h);
  if (idx < 0 || nkb_sock_get(h) == 0) return -EBADF;
  pthread_mutex_lock(&g_lock);
  int32_t rc = g_socks[idx]->engine < 0 ? -ENOTCONN : 0;
  // A wait on another thread may be reading the engine's rings right now.
  if (rc == 0 && __atomic_load_n(&g_socks[idx]->waiters, __ATOMIC_ACQUIRE) != 0) rc = -EBUSY;
  if (rc == 0) nkb_detach_locked((uint32_t)idx);
  pthread_mutex_unlock(&g_lock);
  return rc;
}

int32_t nkb_sock_mac_sync(int32_t h) {
  int32_t idx = nkb_sock_index(h);
  if (idx < 0 || nkb_sock_get(h) == 0) return -EBADF;
  pthread_mutex_lock(&g_lock);
  // Looked up again under the lock: a free from another thread may have come between.
  const nkb_sock_t *s = nkb_sock_get(h);
  int32_t rc = s == 0 ? -EBADF : s->engine < 0 ? -ENOTCONN : 0;
  if (rc == 0) {
    assert(s == g_socks[idx]);
    const nkb_engine_slot_t *es = &g_engines[s->engine];
    assert(es->engine != 0 && es->refs > 0);
    assert(g_ifaces[es->iface].refs > 0);
    rc = nkb_filter_sync_mac(&g_ifaces[es->iface].filter);
  }
  pthread_mutex_unlock(&g_lock);
  return rc;
}

int32_t nkb_sock_info(int32_t h, uint32_t *out, uint32_t out_len) {
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0) return -EBADF;
  if (!nkb_buf_ok(out, out_len, NKB_INFO_WORDS * 4u, sizeof(uint32_t))) return -EINVAL;
  memset(out, 0, NKB_INFO_WORDS * sizeof(uint32_t));  // only the words written below
  pthread_mutex_lock(&g_lock);
  if (s->engine >= 0) {
    nkb_engine_slot_t *es = &g_engines[s->engine];
    out[0] = 1;
    out[1] = es->engine->ifindex;
    out[2] = es->engine->queue_count;
    out[3] = es->engine->zero_copy;
    out[4] = es->engine->frame_size;
    out[5] = g_ifaces[es->iface].filter.prog_id;
    out[8] = es->engine->first_queue;
    out[6] = s->mtu;
    out[7] = es->refs;
  }
  pthread_mutex_unlock(&g_lock);
  return 0;
}

int32_t nkb_sock_stats(int32_t h, uint64_t *out, uint32_t out_len) {
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0) return -EBADF;
  if (!nkb_buf_ok(out, out_len, NKB_ST_COUNT * 8u, sizeof(uint64_t))) return -EINVAL;
  pthread_mutex_lock(&g_lock);
  if (s->engine >= 0) {
    nkb_engine_t *e = g_engines[s->engine].engine;
    nkb_stat_raise(&s->stats[NKB_ST_ENGINE_DROPS], nkb_engine_kernel_drops(e));
    nkb_stat_raise(&s->stats[NKB_ST_ENGINE_TX_DROPS], nkb_engine_tx_drops(e));
  }
  pthread_mutex_unlock(&g_lock);
  memcpy(out, s->stats, NKB_ST_COUNT * sizeof(uint64_t));
  return 0;
}

int32_t nkb_sock_last_error(int32_t h) {
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0) return -EBADF;
  return s->last_error;
}

static uint32_t nkb_dest_hash(uint32_t daddr_be, uint32_t dport) {
  uint32_t x = daddr_be ^ (dport * 2654435761u);
  x ^= x >> 15;
  return x * 2246822519u;
}

int32_t nkb_dest_set(int32_t h, uint32_t daddr_be, uint32_t dport, uint32_t kind,
                     const uint8_t *macs12, uint32_t macs_len, uint32_t saddr_be,
                     uint32_t ttl_ms) {
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0) return -EBADF;
  if (dport == 0 || dport > 65535u) return -EINVAL;
  if (kind != NKB_DEST_BYPASS && kind != NKB_DEST_KERNEL) return -EINVAL;
  if (kind == NKB_DEST_BYPASS && (!nkb_buf_ok(macs12, macs_len, 12u, 1u) || s->engine < 0)) {
    return -EINVAL;
  }
  uint32_t name[2];
  int32_t rc = nkb_sock_name(h, name, (uint32_t)sizeof(name));
  if (rc != 0) return rc;
  uint32_t base = nkb_dest_hash(daddr_be, dport);
  nkb_dest_t *slot = &s->dest[base & (NKB_DEST_SLOTS - 1u)];  // evicted when every probe is taken
  for (uint32_t i = 0; i < NKB_DEST_PROBES; i++) {
    nkb_dest_t *d = &s->dest[(base + i) & (NKB_DEST_SLOTS - 1u)];
    if (d->kind == 0 || (d->daddr_be == daddr_be && d->dport == dport)) {
      slot = d;
      break;
    }
  }
  memset(slot, 0, sizeof(*slot));
  slot->daddr_be = daddr_be;
  slot->dport = (uint16_t)dport;
  slot->expires_ns = ttl_ms == 0 ? UINT64_MAX : nkb_now_ns() + (uint64_t)ttl_ms * 1000000ull;
  if (kind == NKB_DEST_BYPASS) {
    bool mcast = (ntohl(daddr_be) >> 28) == 0xe;
    nkb_tmpl_init(&slot->tmpl, macs12 + 6, macs12, saddr_be, daddr_be, (uint16_t)name[1],
                  (uint16_t)dport, mcast ? s->mcast_ttl : s->ttl, s->tos);
  }
  slot->kind = (uint8_t)kind;
  return 0;
}

nkb_dest_t *nkb_dest_find(nkb_sock_t *s, uint32_t daddr_be, uint32_t dport) {
  uint32_t base = nkb_dest_hash(daddr_be, dport);
  for (uint32_t i = 0; i < NKB_DEST_PROBES; i++) {
    nkb_dest_t *d = &s->dest[(base + i) & (NKB_DEST_SLOTS - 1u)];
    if (d->kind != 0 && d->daddr_be == daddr_be && d->dport == dport) return d;
  }
  return 0;
}

int32_t nkb_dest_clear(int32_t h) {
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0) return -EBADF;
  memset(s->dest, 0, sizeof(s->dest));
  assert(s->dest[0].kind == 0);
  return 0;
}

int32_t nkb_link_get(uint32_t ifindex, uint8_t *out76, uint32_t out_len) {
  if (!nkb_buf_ok(out76, out_len, sizeof(nkb_link_t), _Alignof(nkb_link_t)) || ifindex == 0) {
    return -EINVAL;
  }
  return nkb_nl_link_get(ifindex, (nkb_link_t *)(void *)out76);
}

int32_t nkb_route_get(uint32_t dst_be, uint32_t *out4, uint32_t out_len) {
  if (!nkb_buf_ok(out4, out_len, sizeof(nkb_route_t), _Alignof(nkb_route_t))) return -EINVAL;
  return nkb_nl_route_get(dst_be, (nkb_route_t *)(void *)out4);
}

int32_t nkb_addr_ifindex(uint32_t ip_be) { return nkb_nl_addr_ifindex(ip_be); }

int32_t nkb_addr_first(uint32_t ifindex, uint32_t *out1, uint32_t out_len) {
  if (!nkb_buf_ok(out1, out_len, sizeof(uint32_t), sizeof(uint32_t)) || ifindex == 0) {
    return -EINVAL;
  }
  return nkb_nl_addr_first(ifindex, out1);
}

int32_t nkb_neigh_get(uint32_t ifindex, uint32_t ip_be, uint8_t *mac6, uint32_t mac_len) {
  if (!nkb_buf_ok(mac6, mac_len, 6u, 1u) || ifindex == 0) return -EINVAL;
  return nkb_nl_neigh_get(ifindex, ip_be, mac6);
}

int32_t nkb_neigh_resolve(uint32_t ifindex, uint32_t ip_be) {
  if (ifindex == 0) return -EINVAL;
  return nkb_nl_neigh_resolve(ifindex, ip_be);
}

int32_t nkb_caps(uint64_t *out4, uint32_t out_len) {
  if (!nkb_buf_ok(out4, out_len, 4u * sizeof(uint64_t), sizeof(uint64_t))) return -EINVAL;
  struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct data[2];
  memset(data, 0, sizeof(data));
  if (syscall(SYS_capget, &hdr, data) != 0) return -errno;
  out4[0] = (uint64_t)data[0].effective | (uint64_t)data[1].effective << 32;
  struct rlimit rl;
  if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0) return -errno;
  out4[1] = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : rl.rlim_cur;
  out4[2] = rl.rlim_max == RLIM_INFINITY ? UINT64_MAX : rl.rlim_max;
  out4[3] = (uint64_t)geteuid();
  return 0;
}

int32_t nkb_prog_name(uint32_t prog_id, uint8_t *out16, uint32_t out_len) {
  if (!nkb_buf_ok(out16, out_len, 16u, 1u)) return -EINVAL;
  return nkb_filter_prog_name(prog_id, (char *)out16);
}

int32_t nkb_policy(uint8_t *out20, uint32_t out_len) {
  if (!nkb_buf_ok(out20, out_len, sizeof(nkb_policy_t), _Alignof(nkb_policy_t))) return -EINVAL;
  return nkb_policy_probe((nkb_policy_t *)(void *)out20);
}

int32_t nkb_prog_is_ours(uint32_t prog_id) {
  if (prog_id == 0) return 0;
  pthread_mutex_lock(&g_lock);
  int32_t ours = 0;
  for (uint32_t i = 0; i < NKB_MAX_ENGINES && ours == 0; i++) {
    if (g_ifaces[i].refs > 0 && g_ifaces[i].filter.prog_id == prog_id) ours = 1;
  }
  // Attached moments ago and closed since by another Worker: still ours (see above).
  if (ours == 0 && nkb_prog_history_has(prog_id)) ours = 1;
  pthread_mutex_unlock(&g_lock);
  assert(ours == 0 || ours == 1);
  return ours;
}
