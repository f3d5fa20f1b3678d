// Shim-internal types shared by the control entries and the data path: a socket, its
// engine slot and the interface filter it shares. The tables that hold them are in core.h.
#ifndef NKB_SOCK_H
#define NKB_SOCK_H

#include <assert.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "nkb.h"

static inline uint64_t nkb_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

// A buffer JavaScript handed an entry: present, at least need bytes by the length read
// from the array itself, and aligned for the words the entry writes through it.
static inline bool nkb_buf_ok(const void *p, uint32_t len, uint32_t need, uint32_t align) {
  return p != 0 && len >= need && ((uintptr_t)p & (uintptr_t)(align - 1u)) == 0;
}

typedef struct nkb_dest {
  uint32_t daddr_be;
  uint16_t dport;
  uint8_t kind;          // 0 empty, NKB_DEST_BYPASS, NKB_DEST_KERNEL
  uint8_t reserved;
  uint64_t expires_ns;   // after this the control plane re-resolves (neighbour changes)
  nkb_tmpl_t tmpl;
} nkb_dest_t;

// A validated frame waiting in its owner's queue while another socket read the ring.
typedef struct nkb_parked {
  uint64_t addr;          // UMEM offset of the frame (start of the Ethernet header)
  uint32_t payload_len;
  uint32_t saddr_be;
  uint16_t sport;
  uint16_t queue;
  uint32_t reserved;
} nkb_parked_t;

// Frames of one engine: every queue's RX frames plus the TX frames.
#define NKB_MAX_FRAMES (NKB_RX_FRAMES * NKB_MAX_QUEUES + NKB_TX_FRAMES)

#define NKB_GROUPS_KEPT 32u  // the kernel's default is 20 per socket (igmp_max_memberships)

struct nkb_engine_slot;

typedef struct nkb_sock {
  uint32_t index;         // its slot in the table (core.h), for the life of the slot
  int32_t fd;             // the companion kernel UDP socket: it exists for every socket
  int32_t wake_fd;        // eventfd that ends a sleeping wait when the socket closes
  int32_t park_fd;        // eventfd: another socket parked datagrams for this one as it slept
  uint32_t sleeping;      // atomic: a wait of this socket sleeps in ppoll()
  uint32_t park_signaled; // atomic: park_fd was written since that wait last drained it
  uint32_t wake_req;      // atomic: nkb_sock_wake asked a spinning wait to return
  uint32_t closing;       // atomic
  pthread_t owner;        // the thread that opened it (a Worker's): its exit closes it
  // The engine slot it is attached to, null on the kernel path. Written under the table
  // lock, while no wait pins the socket; read by the socket's own calls.
  struct nkb_engine_slot *eng;
  uint32_t mtu;
  uint32_t busy_wait_cnt;
  uint32_t peer_be;       // set by connect: the kernel would drop datagrams from others
  uint32_t peer_port;     // 0 when not connected
  uint32_t link_gen_seen; // the engine's link_gen when the control plane last looked
  uint8_t ttl;
  uint8_t tos;
  uint8_t mcast_ttl;
  uint8_t reserved;
  uint32_t rx_spun;       // the last wait spun: the next bypass datagram counts as a spin
  uint32_t fairness;      // turns between ring and companion socket
  uint32_t kernel_hint;   // atomic: a wait saw the companion socket readable
  int32_t last_error;
  // A queue request (ring_groups.c) this socket's attach made and has not ended: the
  // interface's filter, which the ask holds open (null: none), and when it first asked.
  // Under the setup lock.
  struct nkb_iface *ask_iface;
  uint64_t ask_since_ns;
  // The interface whose filter this socket holds open while the kernel releases the queue
  // its attach found still bound (-EINPROGRESS): each retry then costs the kernel's answer,
  // not a join of the filter, nor an XDP attach and detach. Under the setup lock.
  struct nkb_iface *release_iface;
  uint32_t park_head;     // atomic (a waiter reads it)
  uint32_t park_tail;     // atomic
  nkb_parked_t parked[NKB_PENDING];
  // The counters: this socket's registry slot (ffi/registry.h), or stats_private
  // without a registry. Written by the thread using the socket, read by anyone.
  uint64_t *stats;
  uint64_t stats_private[NKB_ST_COUNT];
  // Multicast groups joined through nkb_sock_mcast, oldest first (the registry shows the
  // first): the first groups_kept of them; groups_joined counts them all, past
  // NKB_GROUPS_KEPT too (those joined while the list was full are not in it).
  uint32_t groups_be[NKB_GROUPS_KEPT];
  uint32_t groups_kept;
  uint32_t groups_joined;
  nkb_dest_t dest[NKB_DEST_SLOTS];
} nkb_sock_t;

typedef struct nkb_flow {
  nkb_sock_t *sock;       // null when free; written under the engine's rx lock
  uint32_t ip_be;
  uint16_t port;
  uint16_t reserved;
} nkb_flow_t;

struct nkb_iface;

typedef struct nkb_engine_slot {
  uint32_t refs;          // sockets attached
  struct nkb_iface *iface;
  nkb_engine_t *engine;   // null while the slot is free (published under the table lock)
  nkb_flow_t flows[NKB_MAX_ATTACH];
  uint64_t free_since_ns;  // setup lock: since when a given-up queue is free to take back (give.c)
} nkb_engine_slot_t;

// One XDP filter per interface, shared by the interface's engines (one engine per set of
// queues) and by the other nkb processes on it.
typedef struct nkb_iface {
  uint32_t ifindex;
  uint32_t refs;          // engines using the filter and sockets asking on it; 0: slot free
  uint32_t askers;        // sockets asking (nkb_sock_t.ask_iface): the process's ask stays while any
  nkb_filter_t filter;
} nkb_iface_t;

// Copies a counter that only ever rises (the kernel's drop counts) into a stats word that
// more than one thread copies it into: a slower copier never moves it back.
static inline void nkb_stat_raise(uint64_t *w, uint64_t v) {
  uint64_t cur = __atomic_load_n(w, __ATOMIC_RELAXED);
  for (uint32_t i = 0; i < 64u && cur < v; i++) {
    if (__atomic_compare_exchange_n(w, &cur, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return;
  }
}

// Ends a wait of s early, as if a datagram came. The park eventfd is in every sleeping
// wait's poll set, and a wait that finds it readable drains it: a wake costs the waiter one
// empty look, never a missed datagram. A spinning wait polls no fd: it looks at wake_req.
static inline void nkb_sock_rouse(nkb_sock_t *s) {
  uint64_t one = 1;
  __atomic_store_n(&s->wake_req, 1u, __ATOMIC_RELEASE);
  (void)!write(s->park_fd, &one, sizeof(one));  // a full eventfd already wakes the waiter
}

// The socket's engine, null on the kernel path.
static inline nkb_engine_t *nkb_sock_engine(const nkb_sock_t *s) {
  if (s->eng == 0) return 0;
  nkb_engine_t *e = s->eng->engine;
  assert(e != 0);  // a slot keeps its engine while a socket is attached
  return e;
}



// dest.c: the destination header cache. Finds daddr:dport's entry, or null.
nkb_dest_t *nkb_dest_find(nkb_sock_t *s, uint32_t daddr_be, uint32_t dport);

// datapath.c: the frames on queue index q's RX ring, which was just given up (rx lock held,
// the engine's queue_count already at or below q): each is parked for its owner socket, as a
// receive parks other sockets' frames (a full park drops it, counted on its owner); one
// without an owner is retired. Returns how many there were.
uint32_t nkb_rx_drain_queue(nkb_engine_slot_t *es, uint32_t q);

#endif
