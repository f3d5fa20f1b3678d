// Attaching sockets to an interface's engine (one per interface and set of queues,
// shared by every socket on it) and engines to the interface's filter, with the
// filter's flows. The lock order is lock_order.h's: membership of the tables changes
// under the setup lock and the table lock both, and is read under either; engines and
// filters open and close under the setup lock alone, never under the table lock.
#define _GNU_SOURCE
#include "attach.h"

#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "refresh.h"
#include "registry.h"

_Static_assert(NKB_ST_ENGINE_TX_DROPS < NKB_ST_COUNT, "the stats words fit NKB_ST_COUNT");

static nkb_engine_slot_t *nkb_engine_find(nkb_core_t *c, uint32_t ifindex, uint32_t first_queue,
                                          uint32_t queue_count) {
  assert(nkb_holds(NKB_RANK_SETUP) || nkb_holds(NKB_RANK_TABLE));
  for (uint32_t i = 0; i < NKB_MAX_ENGINES; i++) {
    const nkb_engine_t *e = c->engines[i].engine;
    if (e == 0 || e->ifindex != ifindex || e->requested_first != first_queue) continue;
    // A queue-affine engine (one queue asked for) is not the whole-interface one, even
    // on an interface that has one queue.
    if (e->requested_queues == queue_count) return &c->engines[i];
  }
  return 0;
}

// Program ids of filters this process attached, newest last: a Worker deciding on an
// interface reads the attached program id over rtnetlink without any lock, and another
// Worker may close the interface's last engine (and its filter) before the decision
// asks nkb_prog_is_ours; the id is still ours then, not a foreign program's. The kernel
// hands out program ids cyclically over 31 bits, so a recent id is not reused.
// Measured: 3 Workers x 600 open/close cycles gave at least 13 such fallbacks before this.
static void nkb_prog_history_add(nkb_core_t *c, uint32_t prog_id) {
  assert(prog_id != 0 && nkb_holds(NKB_RANK_TABLE));
  c->prog_history[c->prog_history_next % NKB_PROG_HISTORY] = prog_id;
  c->prog_history_next++;
  assert(c->prog_history[(c->prog_history_next - 1u) % NKB_PROG_HISTORY] == prog_id);
}

static bool nkb_prog_history_has(const nkb_core_t *c, uint32_t prog_id) {
  assert(prog_id != 0 && nkb_holds(NKB_RANK_TABLE));
  uint32_t n = c->prog_history_next < NKB_PROG_HISTORY ? c->prog_history_next : NKB_PROG_HISTORY;
  for (uint32_t i = 0; i < n; i++) {
    if (c->prog_history[i] == prog_id) return true;
  }
  return false;
}

// One more engine on the interface's filter, which opens with its first (setup lock held;
// the filter opens outside the table lock and is published under it).
static int32_t nkb_iface_hold(nkb_core_t *c, uint32_t ifindex, uint32_t attach_flags,
                              nkb_iface_t **out) {
  assert(nkb_holds(NKB_RANK_SETUP) && !nkb_holds(NKB_RANK_TABLE));
  nkb_iface_t *f = 0;
  for (uint32_t i = 0; i < NKB_MAX_ENGINES && f == 0; i++) {
    if (c->ifaces[i].refs > 0 && c->ifaces[i].ifindex == ifindex) f = &c->ifaces[i];
  }
  if (f == 0) {
    for (uint32_t i = 0; i < NKB_MAX_ENGINES && f == 0; i++) {
      if (c->ifaces[i].refs == 0) f = &c->ifaces[i];
    }
    if (f == 0) return -EMFILE;
    // Free (refs 0): no reader looks past refs, and no other creator runs (setup lock).
    memset(f, 0, sizeof(*f));
    // The program is on the interface before it is in the table: nkb_prog_is_ours answers
    // yes meanwhile (a Worker that saw it attached would otherwise take it for a foreign one).
    __atomic_store_n(&c->filter_opening, ifindex, __ATOMIC_SEQ_CST);
    // Keys are per queue: 64 sockets of 8 queues each, for every process on the interface.
    int32_t rc = nkb_filter_open(&f->filter, ifindex, NKB_FILTER_QUEUES, 4096u, attach_flags);
    if (rc != 0) {
      __atomic_store_n(&c->filter_opening, 0u, __ATOMIC_SEQ_CST);
      return rc;
    }
    assert(f->filter.prog_id != 0);
    f->ifindex = ifindex;
  }
  nkb_lock(&c->table_lock, NKB_RANK_TABLE);
  if (f->refs == 0) nkb_prog_history_add(c, f->filter.prog_id);
  f->refs++;
  __atomic_store_n(&c->filter_opening, 0u, __ATOMIC_SEQ_CST);
  nkb_unlock(&c->table_lock, NKB_RANK_TABLE);
  *out = f;
  return 0;
}

// One engine fewer on filter f: it closes with its last (setup lock held).
static void nkb_iface_drop(nkb_core_t *c, nkb_iface_t *f) {
  assert(nkb_holds(NKB_RANK_SETUP) && !nkb_holds(NKB_RANK_TABLE));
  nkb_lock(&c->table_lock, NKB_RANK_TABLE);
  assert(f->refs > 0);
  bool last = --f->refs == 0;
  nkb_unlock(&c->table_lock, NKB_RANK_TABLE);
  if (last) nkb_filter_close(&f->filter);
}

// Socket s stops asking (setup lock held): the process's ask goes when it got a queue, or
// when no other socket of it asks on the interface; so does the filter reference it held.
static void nkb_ask_end(nkb_core_t *c, nkb_sock_t *s, bool got_queue) {
  assert(nkb_holds(NKB_RANK_SETUP) && !nkb_holds(NKB_RANK_TABLE));
  nkb_iface_t *f = s->ask_iface;
  if (f == 0) return;
  s->ask_iface = 0;
  assert(f->askers > 0 && f->refs >= f->askers);
  f->askers--;
  if (got_queue || f->askers == 0) nkb_group_unask(&f->filter);
  nkb_iface_drop(c, f);
}

// Socket s stops waiting for a queue the kernel releases (setup lock held): its filter
// reference goes.
static void nkb_release_end(nkb_core_t *c, nkb_sock_t *s) {
  assert(nkb_holds(NKB_RANK_SETUP) && !nkb_holds(NKB_RANK_TABLE));
  nkb_iface_t *f = s->release_iface;
  if (f == 0) return;
  s->release_iface = 0;
  nkb_iface_drop(c, f);
}

// Socket s waits for a queue of f the kernel releases (setup lock held): it keeps the
// reference the attach took on f (one per socket: a second is let go).
static void nkb_release_wait(nkb_core_t *c, nkb_sock_t *s, nkb_iface_t *f) {
  assert(nkb_holds(NKB_RANK_SETUP) && !nkb_holds(NKB_RANK_TABLE));
  assert(f != 0 && f->refs > 0);
  if (s->release_iface == f) {
    nkb_iface_drop(c, f);
    assert(f->refs > 0);  // ours is still there
    return;
  }
  nkb_release_end(c, s);
  s->release_iface = f;
}

// Every queue of the interface is held by live processes (setup lock held, filter f open):
// with ask, socket s asks the holders for one and answers -EAGAIN; the ask holds the
// filter open, so that each retry neither walks the host's BPF links again nor needs the
// privilege to join. After NKB_ASK_WAIT_MS of asking it stops (-ETIMEDOUT). Without: -EBUSY.
static int32_t nkb_ask_queue(nkb_core_t *c, nkb_sock_t *s, nkb_iface_t *f, bool ask) {
  assert(nkb_holds(NKB_RANK_SETUP) && !nkb_holds(NKB_RANK_TABLE));
  if (!ask) return -EBUSY;
  uint64_t now = nkb_now_ns();
  if (s->ask_iface != f) {
    nkb_ask_end(c, s, false);  // an ask on another interface (its address moved) ends
    nkb_lock(&c->table_lock, NKB_RANK_TABLE);
    assert(f->refs > 0);
    f->refs++;
    f->askers++;
    nkb_unlock(&c->table_lock, NKB_RANK_TABLE);
    s->ask_iface = f;
    s->ask_since_ns = now;
  }
  if (now - s->ask_since_ns >= (uint64_t)NKB_ASK_WAIT_MS * 1000000ull) {
    nkb_ask_end(c, s, false);
    return -ETIMEDOUT;
  }
  nkb_group_ask(&f->filter);
  return -EAGAIN;
}

// Opens an engine in a free slot (setup lock held): the slow part (bind retries, UMEM
// registration) runs outside the table lock; the slot is published under it. An engine that
// found no free queue asks for one for s (nkb_ask_queue).
static int32_t nkb_engine_create(nkb_core_t *c, nkb_sock_t *s, uint32_t ifindex,
                                 uint32_t first_queue, uint32_t queue_count, uint32_t frame_size,
                                 uint32_t attach_flags, nkb_engine_slot_t **out) {
  assert(nkb_holds(NKB_RANK_SETUP) && !nkb_holds(NKB_RANK_TABLE));
  nkb_engine_slot_t *es = 0;
  for (uint32_t i = 0; i < NKB_MAX_ENGINES && es == 0; i++) {
    if (c->engines[i].engine == 0) es = &c->engines[i];
  }
  if (es == 0) return -EMFILE;
  nkb_iface_t *f = 0;
  bool ask = (attach_flags & NKB_ATTACH_ASK) != 0;
  bool nowait = (attach_flags & NKB_ATTACH_NOWAIT) != 0;
  uint32_t release_wait_ms = (attach_flags & NKB_ATTACH_BRIEF) != 0 ? NKB_RELEASE_WAIT_MAX_MS : 0;
  const uint32_t own = NKB_ATTACH_ASK | NKB_ATTACH_NOWAIT | NKB_ATTACH_BRIEF;
  int32_t rc = nkb_iface_hold(c, ifindex, attach_flags & ~own, &f);
  if (rc != 0) return rc;
  nkb_engine_t *e = calloc(1, sizeof(*e));
  rc = e == 0 ? -ENOMEM : nkb_engine_open(e, &f->filter, ifindex, first_queue, queue_count,
                                          frame_size, nowait, release_wait_ms);
  // EBUSY too: a queue the record shows free but the kernel still held after 400 ms (a
  // holder's wait still in poll() on a given-up queue, a holder in another pid namespace).
  // One still the kernel's without waiting (EINPROGRESS): an ask already made is renewed.
  if (rc == NKB_ENOQUEUE || (rc == -EBUSY && ask) || (rc == -EINPROGRESS && ask && s->ask_iface == f)) {
    rc = nkb_ask_queue(c, s, f, ask);
  }
  if (rc == -EINPROGRESS) {
    free(e);
    nkb_release_wait(c, s, f);
    return rc;
  }
  if (rc != 0) {
    free(e);
    nkb_iface_drop(c, f);
    return rc;
  }
  nkb_lock(&c->table_lock, NKB_RANK_TABLE);
  assert(es->engine == 0 && es->refs == 0);
  memset(es, 0, sizeof(*es));
  es->iface = f;
  es->engine = e;
  nkb_unlock(&c->table_lock, NKB_RANK_TABLE);
  *out = es;
  return 0;
}

int32_t nkb_sock_attach(int32_t h, uint32_t ifindex, uint32_t first_queue, uint32_t queue_count,
                        uint32_t frame_size, uint32_t attach_flags, uint32_t mtu) {
  if (nkb_sock_get(h) == 0) return -EBADF;
  // 64-bit sum: an MTU near 2^32 must not wrap around to a small frame and pass.
  if (mtu < 68 || (uint64_t)mtu + NKB_ETH_LEN + NKB_XDP_HEADROOM > frame_size) return -EMSGSIZE;
  nkb_core_t *c = nkb_core();
  nkb_lock(&c->setup_lock, NKB_RANK_SETUP);
  // Looked up again under the lock: a free on another thread takes it too.
  nkb_sock_t *s = nkb_sock_get(h);
  int32_t rc = s == 0 ? -EBADF : s->eng != 0 ? -EALREADY : 0;
  nkb_engine_slot_t *es = rc == 0 ? nkb_engine_find(c, ifindex, first_queue, queue_count) : 0;
  if (rc == 0 && es == 0) {
    rc = nkb_engine_create(c, s, ifindex, first_queue, queue_count, frame_size, attach_flags,
                           &es);
  }
  // Queues taken after asking (given up for this process or not), or an engine of this
  // process that another socket opened meanwhile: the process's ask goes (only the one on
  // this interface: an ask elsewhere ends for this socket, its process may still ask there).
  // Any failure but "asking" (EAGAIN) ends it too: the socket stays on the kernel path, and
  // its ask would hold the filter until it closes.
  if (rc == 0 && s->ask_iface != 0) nkb_ask_end(c, s, s->ask_iface == es->iface);
  if (rc != 0 && rc != -EAGAIN && s != 0) nkb_ask_end(c, s, false);
  // Anything but "still being released" ends that wait (a new engine holds its own reference).
  if (rc != -EINPROGRESS && s != 0) nkb_release_end(c, s);
  if (rc == 0 && es->engine->frame_size < frame_size) rc = -EMSGSIZE;
  if (rc == 0) {
    nkb_lock(&c->table_lock, NKB_RANK_TABLE);
    es->refs++;
    s->mtu = mtu;
    // The interface's counters are the new engine's from now on (they only rise after).
    __atomic_store_n(&s->stats[NKB_ST_ENGINE_DROPS], 0u, __ATOMIC_RELAXED);
    __atomic_store_n(&s->stats[NKB_ST_ENGINE_TX_DROPS], 0u, __ATOMIC_RELAXED);
    __atomic_store_n(&s->eng, es, __ATOMIC_SEQ_CST);
    nkb_unlock(&c->table_lock, NKB_RANK_TABLE);
    nkb_refresh_start();  // idempotent: the first engine starts it
  }
  nkb_unlock(&c->setup_lock, NKB_RANK_SETUP);
  assert(rc != 0 || s->eng == es);
  return rc;
}

// A group flow: with keys on queues of another engine (another process's, or a
// queue-affine one of this process) besides this engine's, the group is marked shared
// (NKB_FLOW_SHARED): every member then gets its frames through the kernel. Marked after
// this engine's keys went in, so of two engines adding at once the later sees the other;
// unmarked when the last key of the group is gone. Table lock held.
static void nkb_group_keys(const nkb_engine_slot_t *es, uint32_t ip_be, uint16_t port,
                           bool added) {
  nkb_filter_t *f = &es->iface->filter;
  const nkb_engine_t *e = es->engine;
  uint64_t held = nkb_filter_flow_queues(f, ip_be, htons(port));
  uint64_t mine = 0;
  for (uint32_t q = 0; q < e->queue_count && e->first_queue + q < 64u; q++) {
    mine |= 1ull << (e->first_queue + q);
  }
  if (added && (held & ~mine) != 0) {
    (void)nkb_filter_add_flow(f, ip_be, htons(port), (uint16_t)NKB_FLOW_SHARED);
  }
  if (!added && held == 0) {
    (void)nkb_filter_del_flow(f, ip_be, htons(port), (uint16_t)NKB_FLOW_SHARED);
  }
}

// The filter's keys of one flow, one per queue of the engine: each engine holds its own
// queues, so no two engines (of this process or another) share a key. Table lock held.
static int32_t nkb_engine_keys(const nkb_engine_slot_t *es, uint32_t ip_be, uint16_t port,
                               bool add) {
  assert(nkb_holds(NKB_RANK_TABLE) && es->iface->refs > 0);
  const nkb_engine_t *e = es->engine;
  nkb_filter_t *f = &es->iface->filter;
  int32_t rc = 0;
  uint32_t q = 0;
  for (; q < e->queue_count && (rc == 0 || !add); q++) {
    uint16_t queue = (uint16_t)(e->first_queue + q);
    int32_t r = add ? nkb_filter_add_flow(f, ip_be, htons(port), queue)
                    : nkb_filter_del_flow(f, ip_be, htons(port), queue);
    if (r != 0 && rc == 0) rc = r;
  }
  if (add && rc != 0) {  // none or all: the keys added before the failure go
    for (uint32_t k = 0; k + 1u < q; k++) {
      (void)nkb_filter_del_flow(f, ip_be, htons(port), (uint16_t)(e->first_queue + k));
    }
  }
  if ((ntohl(ip_be) >> 28) == 0xeu) nkb_group_keys(es, ip_be, port, add);
  return rc;
}

static int32_t nkb_flow_add(nkb_sock_t *s, nkb_engine_slot_t *es, uint32_t ip_be, uint16_t port) {
  int32_t found = -1, free_slot = -1;
  for (uint32_t i = 0; i < NKB_MAX_ATTACH; i++) {
    const nkb_flow_t *f = &es->flows[i];
    if (f->sock == 0 && free_slot < 0) free_slot = (int32_t)i;
    if (f->sock != 0 && f->ip_be == ip_be && f->port == port) found = (int32_t)i;
  }
  if (found >= 0) return -EADDRINUSE;
  if (free_slot < 0) return -ENOSPC;
  // The engine knows the flow's socket before the filter sends it frames: the other way
  // round, the first frames would find no owner (dropped, counted).
  nkb_lock(&es->engine->rx_lock, NKB_RANK_RX);
  es->flows[free_slot] = (nkb_flow_t){.sock = s, .ip_be = ip_be, .port = port};
  nkb_unlock(&es->engine->rx_lock, NKB_RANK_RX);
  int32_t rc = nkb_engine_keys(es, ip_be, port, true);
  if (rc != 0) {
    nkb_lock(&es->engine->rx_lock, NKB_RANK_RX);
    es->flows[free_slot].sock = 0;
    nkb_unlock(&es->engine->rx_lock, NKB_RANK_RX);
  }
  return rc;
}

static int32_t nkb_flow_del(nkb_sock_t *s, nkb_engine_slot_t *es, uint32_t ip_be, uint16_t port) {
  nkb_flow_t *mine = 0;
  for (uint32_t i = 0; i < NKB_MAX_ATTACH && mine == 0; i++) {
    nkb_flow_t *f = &es->flows[i];
    if (f->sock == s && f->ip_be == ip_be && f->port == port) mine = f;
  }
  if (mine == 0) return -ENOENT;
  int32_t rc = nkb_engine_keys(es, ip_be, port, false);
  nkb_lock(&es->engine->rx_lock, NKB_RANK_RX);
  mine->sock = 0;
  nkb_unlock(&es->engine->rx_lock, NKB_RANK_RX);
  return rc;
}

static int32_t nkb_flow_update(int32_t h, uint32_t ip_be, uint32_t port, bool add) {
  if (nkb_sock_get(h) == 0) return -EBADF;
  if (port == 0 || port > 65535u) return -EINVAL;
  nkb_core_t *c = nkb_core();
  nkb_lock(&c->table_lock, NKB_RANK_TABLE);
  nkb_sock_t *s = nkb_sock_get(h);  // again under the lock: a free may have come between
  nkb_engine_slot_t *es = s != 0 ? s->eng : 0;
  int32_t rc = s == 0 ? -EBADF : es == 0 ? -ENOTCONN : 0;
  if (rc == 0) {
    assert(es->engine != 0 && es->refs > 0);
    rc = add ? nkb_flow_add(s, es, ip_be, (uint16_t)port)
             : nkb_flow_del(s, es, ip_be, (uint16_t)port);
  }
  nkb_unlock(&c->table_lock, NKB_RANK_TABLE);
  return rc;
}

int32_t nkb_sock_add_flow(int32_t h, uint32_t ip_be, uint32_t port) {
  return nkb_flow_update(h, ip_be, port, true);
}

int32_t nkb_sock_del_flow(int32_t h, uint32_t ip_be, uint32_t port) {
  return nkb_flow_update(h, ip_be, port, false);
}

// The socket's flows and parked frames leave the engine (table lock held).
static void nkb_detach_flows(nkb_sock_t *s, nkb_engine_slot_t *es) {
  nkb_engine_t *e = es->engine;
  assert(nkb_holds(NKB_RANK_TABLE) && e != 0 && es->refs > 0);
  nkb_lock(&e->rx_lock, NKB_RANK_RX);
  for (uint32_t i = 0; i < NKB_MAX_ATTACH; i++) {
    nkb_flow_t *f = &es->flows[i];
    if (f->sock != s) continue;
    (void)nkb_engine_keys(es, f->ip_be, f->port, false);
    f->sock = 0;
  }
  // Frames parked for this socket go back to the device.
  for (uint32_t n = 0; s->park_head != s->park_tail && n < NKB_PENDING; n++) {
    nkb_parked_t *p = &s->parked[s->park_head % NKB_PENDING];
    nkb_engine_refill(e, p->queue, p->addr);
    s->park_head++;
  }
  assert(s->park_head == s->park_tail);
  nkb_unlock(&e->rx_lock, NKB_RANK_RX);
}

int32_t nkb_detach(nkb_sock_t *s) {
  nkb_core_t *c = nkb_core();
  assert(nkb_holds(NKB_RANK_SETUP) && !nkb_holds(NKB_RANK_TABLE));
  nkb_lock(&c->table_lock, NKB_RANK_TABLE);
  nkb_engine_slot_t *es = s->eng;
  if (es == 0) {
    nkb_unlock(&c->table_lock, NKB_RANK_TABLE);
    return -ENOTCONN;
  }
  // Pairs with a wait's pin (core.c): cleared before the pins are read, so a wait that
  // pins after this sees no engine, and one pinned before is seen here.
  __atomic_store_n(&s->eng, (nkb_engine_slot_t *)0, __ATOMIC_SEQ_CST);
  if (nkb_sock_pinned(s)) {
    __atomic_store_n(&s->eng, es, __ATOMIC_SEQ_CST);
    nkb_unlock(&c->table_lock, NKB_RANK_TABLE);
    return -EBUSY;  // a wait on another thread may be reading the engine's rings
  }
  nkb_detach_flows(s, es);
  // Nothing waits for it on the rings now; the refresher may be about to stop for good.
  nkb_reg_recv_q(s->index, 0);
  nkb_engine_t *closing = --es->refs == 0 ? es->engine : 0;
  nkb_iface_t *f = es->iface;
  if (closing != 0) es->engine = 0;  // unpublished: no reader finds it from here on
  bool any = false;
  for (uint32_t i = 0; i < NKB_MAX_ENGINES; i++) any = any || c->engines[i].engine != 0;
  nkb_unlock(&c->table_lock, NKB_RANK_TABLE);
  if (closing == 0) return 0;
  // The slow part (a TX drain, a thread join), with only the setup lock held.
  nkb_engine_close(closing);
  free(closing);
  nkb_iface_drop(c, f);
  if (!any) nkb_refresh_stop();  // the last engine: the refresher stops
  return 0;
}

void nkb_ask_drop(nkb_sock_t *s) {
  assert(nkb_holds(NKB_RANK_SETUP) && !nkb_holds(NKB_RANK_TABLE));
  nkb_ask_end(nkb_core(), s, false);
  nkb_release_end(nkb_core(), s);
}

int32_t nkb_sock_detach(int32_t h) {
  if (nkb_sock_get(h) == 0) return -EBADF;
  nkb_core_t *c = nkb_core();
  nkb_lock(&c->setup_lock, NKB_RANK_SETUP);
  nkb_sock_t *s = nkb_sock_get(h);
  // An unattached socket may be asking for a queue: it stops (its caller stopped retrying).
  if (s != 0 && s->eng == 0) nkb_ask_drop(s);
  int32_t rc = s == 0 ? -EBADF : nkb_detach(s);
  nkb_unlock(&c->setup_lock, NKB_RANK_SETUP);
  return rc;
}

int32_t nkb_sock_mac_sync(int32_t h) {
  if (nkb_sock_get(h) == 0) return -EBADF;
  nkb_core_t *c = nkb_core();
  nkb_lock(&c->table_lock, NKB_RANK_TABLE);
  // Looked up again under the lock: a free from another thread may have come between.
  const nkb_sock_t *s = nkb_sock_get(h);
  int32_t rc = s == 0 ? -EBADF : s->eng == 0 ? -ENOTCONN : 0;
  if (rc == 0) {
    const nkb_engine_slot_t *es = s->eng;
    assert(es->engine != 0 && es->refs > 0 && es->iface->refs > 0);
    rc = nkb_filter_sync_mac(&es->iface->filter);
  }
  nkb_unlock(&c->table_lock, NKB_RANK_TABLE);
  return rc;
}

int32_t nkb_sock_info(int32_t h, uint32_t *out, uint32_t out_len) {
  if (nkb_sock_get(h) == 0) return -EBADF;
  if (!nkb_buf_ok(out, out_len, NKB_INFO_WORDS * 4u, sizeof(uint32_t))) return -EINVAL;
  memset(out, 0, NKB_INFO_WORDS * sizeof(uint32_t));  // only the words written below
  nkb_core_t *c = nkb_core();
  nkb_lock(&c->table_lock, NKB_RANK_TABLE);
  const nkb_sock_t *s = nkb_sock_get(h);
  const nkb_engine_slot_t *es = s != 0 ? s->eng : 0;
  if (es != 0) {
    assert(es->engine != 0 && es->refs > 0);
    out[0] = 1;
    out[1] = es->engine->ifindex;
    out[2] = es->engine->queue_count;
    out[3] = es->engine->zero_copy;
    out[4] = es->engine->frame_size;
    out[5] = es->iface->filter.prog_id;
    out[6] = s->mtu;
    out[7] = es->refs;
    out[8] = es->engine->first_queue;
  }
  nkb_unlock(&c->table_lock, NKB_RANK_TABLE);
  return s == 0 ? -EBADF : 0;
}

int32_t nkb_sock_stats(int32_t h, uint64_t *out, uint32_t out_len) {
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0) return -EBADF;
  if (!nkb_buf_ok(out, out_len, NKB_ST_COUNT * 8u, sizeof(uint64_t))) return -EINVAL;
  nkb_core_t *c = nkb_core();
  nkb_lock(&c->table_lock, NKB_RANK_TABLE);
  nkb_engine_slot_t *es = nkb_sock_get(h) == s ? s->eng : 0;
  if (es != 0) {
    nkb_stat_raise(&s->stats[NKB_ST_ENGINE_DROPS], nkb_engine_kernel_drops(es->engine));
    nkb_stat_raise(&s->stats[NKB_ST_ENGINE_TX_DROPS], nkb_engine_tx_drops(es->engine));
  }
  nkb_unlock(&c->table_lock, NKB_RANK_TABLE);
  memcpy(out, s->stats, NKB_ST_COUNT * sizeof(uint64_t));
  return 0;
}

int32_t nkb_sock_last_error(int32_t h) {
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0) return -EBADF;
  return s->last_error;
}

int32_t nkb_prog_is_ours(uint32_t prog_id) {
  if (prog_id == 0) return 0;
  nkb_core_t *c = nkb_core();
  nkb_lock(&c->table_lock, NKB_RANK_TABLE);
  int32_t ours = 0;
  for (uint32_t i = 0; i < NKB_MAX_ENGINES && ours == 0; i++) {
    if (c->ifaces[i].refs > 0 && c->ifaces[i].filter.prog_id == prog_id) ours = 1;
  }
  // Attached moments ago and closed since by another Worker: still ours (see above).
  if (ours == 0 && nkb_prog_history_has(c, prog_id)) ours = 1;
  nkb_unlock(&c->table_lock, NKB_RANK_TABLE);
  // Being attached (or joined) on its interface by another Worker right now: its attach
  // waits for that one's end. A program on another interface is not. (Asked outside the
  // table lock: rtnetlink.)
  uint32_t opening = __atomic_load_n(&c->filter_opening, __ATOMIC_SEQ_CST);
  nkb_link_t link;
  if (ours == 0 && opening != 0 && nkb_nl_link_get(opening, &link) == 0 &&
      link.xdp_prog_id == prog_id) {
    ours = 1;
  }
  assert(ours == 0 || ours == 1);
  return ours;
}
