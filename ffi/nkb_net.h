// Control-plane helpers of the shim: rtnetlink lookups and the XDP filter.
// Everything here runs at setup time, never per datagram.
#ifndef NKB_NET_H
#define NKB_NET_H

#include <stdbool.h>
#include <stdint.h>

// ---- rtnetlink (netlink.c) -------------------------------------------------
// All addresses are IPv4 in network byte order (as in struct in_addr).
// Every function returns 0 (or a documented non-negative value) on success and
// -errno on failure. Each call opens and closes its own NETLINK_ROUTE socket: they run
// at setup time only, and no state is kept between calls.

typedef struct nkb_route {
  uint32_t oif;        // output interface index (0 if none)
  uint32_t type;       // RTN_UNICAST 1, RTN_LOCAL 2, RTN_BROADCAST 3, RTN_MULTICAST 5, ...
  uint32_t prefsrc_be; // RTA_PREFSRC or 0
  uint32_t gateway_be; // RTA_GATEWAY or 0 (next hop = gateway ? gateway : destination)
} nkb_route_t;

typedef struct nkb_link {
  uint32_t ifindex;
  uint32_t mtu;
  uint32_t flags;          // IFF_* from ifinfomsg.ifi_flags
  uint32_t num_rx_queues;  // IFLA_NUM_RX_QUEUES (1 if absent)
  uint32_t num_tx_queues;  // IFLA_NUM_TX_QUEUES (1 if absent)
  uint32_t xdp_prog_id;    // IFLA_XDP / IFLA_XDP_PROG_ID, 0 if no program attached
  uint32_t operstate;      // IFLA_OPERSTATE (IF_OPER_UP 6, ...)
  uint32_t arptype;        // ifinfomsg.ifi_type (ARPHRD_ETHER 1, ARPHRD_LOOPBACK 772, ...)
  uint32_t master_ifindex; // IFLA_MASTER or 0
  uint8_t mac[6];          // IFLA_ADDRESS (zeros if absent or not 6 bytes)
  uint8_t mac_len;         // length of IFLA_ADDRESS as reported
  uint8_t reserved;
  char kind[16];           // IFLA_LINKINFO/IFLA_INFO_KIND ("veth", "bond", "bridge", "vlan", ...), "" for none
  char name[16];           // IFLA_IFNAME, NUL terminated
} nkb_link_t;              // 76 bytes, layout read from TypeScript: keep it stable

// RTM_GETROUTE for dst (like `ip route get`).
int32_t nkb_nl_route_get(uint32_t dst_be, nkb_route_t *out);
// RTM_GETLINK for one interface.
int32_t nkb_nl_link_get(uint32_t ifindex, nkb_link_t *out);
// Interface index of the interface that has local address ip_be (RTM_GETADDR dump);
// -ENOENT if no interface has it.
int32_t nkb_nl_addr_ifindex(uint32_t ip_be);
// First IPv4 address on ifindex (RTM_GETADDR dump), written to *out_be; -ENOENT if none.
int32_t nkb_nl_addr_first(uint32_t ifindex, uint32_t *out_be);
// RTM_GETNEIGH: on success returns the NUD state (>0, e.g. NUD_REACHABLE 0x02) and
// writes the link-layer address to mac_out[6]; -ENOENT when there is no entry, and
// also -ENOENT when the entry has no NDA_LLADDR (incomplete/failed).
int32_t nkb_nl_neigh_get(uint32_t ifindex, uint32_t ip_be, uint8_t mac_out[6]);
// RTM_NEWNEIGH with NTF_USE (NUD_NONE... as `ip neigh` does for "use"), making the kernel
// start resolution of ip_be on ifindex. Returns 0 or -errno.
int32_t nkb_nl_neigh_resolve(uint32_t ifindex, uint32_t ip_be);

// ---- XDP filter (bpf_filter.c, filter_open.c, ring_groups.c) -----------------
// One filter per interface for every nkb process on the host: an XDP program that
// redirects IPv4 UDP frames whose (daddr, dport, receive queue) is in the flows map to the
// XSK bound to that queue, and passes everything else to the kernel. The first process
// attaches it; the others join it (their descriptors of its BPF link keep it attached);
// it leaves with the last. Each process binds XSKs on the queues it holds (the ring
// groups) and adds its flows' keys for those queues only.

// The program's name; version 2 keys flows by queue (version 1, "nkb_xdp", did not): a
// filter of another version is not joined.
#define NKB_PROG_NAME "nkb_xdp3"
#define NKB_FILTER_QUEUES 64u  // XSKMAP size and ring groups tracked: queues 0..63
#define NKB_FILTER_FLOWS_MAX 65536u  // a joined filter's flow map may be no larger

typedef struct nkb_flow_key {
  uint32_t daddr_be;
  uint16_t dport_be;
  uint16_t queue;        // the receive queue whose XSK takes the flow, or NKB_FLOW_SHARED
} nkb_flow_key_t;

// The key's queue for a group flow held on more than one queue (by several processes, or
// by queue-affine sockets of one): a redirect would give each frame to one holder, and
// the kernel gives every member a copy. So the program passes such a group's frames to
// the kernel, which delivers them to each holder's companion socket.
#define NKB_FLOW_SHARED 0xffffu

// Who holds a queue's XSK: a process, named so that a reused pid is not taken for it.
typedef struct nkb_group_owner {
  uint32_t pid;          // 0: nobody (as far as the holders said)
  uint32_t pidns;        // low 32 bits of its pid namespace's inode
  uint64_t start_ticks;  // its start time (/proc/PID/stat field 22, host ticks: host_clock.h)
} nkb_group_owner_t;

// A newcomer's request for a queue (ring_groups.c): one per process asking on the
// interface, however many of its sockets wait. Written by its asker; a holder only marks
// it given.
#define NKB_FILTER_ASKERS 16u
typedef struct nkb_group_ask {
  nkb_group_owner_t who;  // the asking process; who.pid 0: a free record
  uint32_t until_ms;      // host CLOCK_MONOTONIC ms (low 32 bits, host_clock.h): renewed per retry
  uint32_t given_ms;      // when a holder took it to give a queue up for it; 0: not yet
} nkb_group_ask_t;

// The filter's control block: a one-entry array map every user maps (BPF_F_MMAPABLE), so
// that its words are shared memory. The program reads only mac.
typedef struct nkb_ctl {
  uint8_t mac[8];  // the interface's MAC + 2 zeros: unicast frames to another go to the kernel
  nkb_group_ask_t asks[NKB_FILTER_ASKERS];      // newcomers waiting for a queue
  nkb_group_owner_t owners[NKB_FILTER_QUEUES];  // per queue: its holder (ring_groups.c)
} nkb_ctl_t;
// tests/ring_groups.test.ts reads the ask records at these offsets.
_Static_assert(sizeof(nkb_group_ask_t) == 24 && __builtin_offsetof(nkb_ctl_t, asks) == 8,
               "the ask records' layout");

typedef struct nkb_filter {
  int32_t prog_fd;
  int32_t link_fd;       // our reference to the BPF link: the program stays while any is held
  int32_t xsks_map_fd;   // BPF_MAP_TYPE_XSKMAP, key u32 queue, value u32 xsk fd
  int32_t flows_map_fd;  // BPF_MAP_TYPE_HASH, key nkb_flow_key_t, value u32 (the holder's pid)
  int32_t ctl_map_fd;    // BPF_MAP_TYPE_ARRAY (mmapable), one nkb_ctl_t
  nkb_ctl_t *ctl;        // that entry, mapped
  uint64_t ctl_map_len;
  uint8_t mac[6];        // what ctl->mac holds (when mac_set)
  bool mac_set;
  bool joined;           // another process attached it
  uint32_t ifindex;
  uint32_t prog_id;      // from BPF_OBJ_GET_INFO_BY_FD
  uint32_t max_queues;
  uint32_t max_flows;
  // Until when (CLOCK_MONOTONIC ns) this process does not try queues another pid
  // namespace recorded: their bind was refused (nkb_engine_open). Setup lock.
  uint64_t elsewhere_refused_until_ns;
} nkb_filter_t;

// Attaches the interface's filter, or joins the one another nkb process attached.
// attach_flags (for a new attachment): 0 = let the kernel choose (native on veth), 2 =
// XDP_FLAGS_SKB_MODE (generic), 4 = XDP_FLAGS_DRV_MODE (native). On failure everything
// opened is closed and -errno returned: -EPROTONOSUPPORT a program that is not this
// version's filter (foreign, or another nkb's), -EPERM a privilege missing (CAP_SYS_ADMIN
// to join). On verifier rejection the log is written to stderr once (bounded).
int32_t nkb_filter_open(nkb_filter_t *f, uint32_t ifindex, uint32_t max_queues, uint32_t max_flows,
                        uint32_t attach_flags);
// filter_open.c: nkb_filter_open, and joining the filter (program prog_id) attached to
// ifindex: -ENOENT when its link is gone (its last holder left: create one instead).
int32_t nkb_filter_join(nkb_filter_t *f, uint32_t ifindex, uint32_t prog_id);
// bpf_filter.c: creates the maps, loads the program and attaches it to f->ifindex (f's
// ifindex, max_queues and max_flows set, every fd -1); 0 or -errno (-EBUSY: a program is
// already attached). Maps the control block of ctl_map_fd into f->ctl; 0 or -errno.
int32_t nkb_filter_create(nkb_filter_t *f, uint32_t attach_flags);
int32_t nkb_filter_map_ctl(nkb_filter_t *f);
int32_t nkb_filter_set_xsk(nkb_filter_t *f, uint32_t queue, int32_t xsk_fd);
int32_t nkb_filter_add_flow(nkb_filter_t *f, uint32_t daddr_be, uint16_t dport_be, uint16_t queue);
int32_t nkb_filter_del_flow(nkb_filter_t *f, uint32_t daddr_be, uint16_t dport_be, uint16_t queue);
// The queues (below 64) with a key for (daddr, dport): a bit each.
uint64_t nkb_filter_flow_queues(nkb_filter_t *f, uint32_t daddr_be, uint16_t dport_be);
// Deletes every flow key of queue (the queue was just bound: whoever added them is gone).
// How many went, or -errno.
int32_t nkb_filter_sweep_queue(nkb_filter_t *f, uint16_t queue);
// Reads the interface's MAC (rtnetlink) into the control block, which the program
// compares unicast destination MACs with: 1 when it changed, 0 when not, or -errno.
int32_t nkb_filter_sync_mac(nkb_filter_t *f);
// Closes every fd (link first: the program detaches if no other process holds it) and
// zeroes *f. Safe on a zeroed f and on one already closed (fds set to -1).
void nkb_filter_close(nkb_filter_t *f);
// The name of loaded program prog_id (ours are NKB_PROG_NAME): tells another nkb process's
// filter from a foreign program. 0 or -errno.
int32_t nkb_filter_prog_name(uint32_t prog_id, char name_out[16]);

// ring_groups.c: who holds each queue of a shared filter (nkb_ctl_t.owners).
// True when the record names a process seen alive (this one included) as queue q's holder.
bool nkb_group_held(const nkb_filter_t *f, uint32_t q);
// The longest run of queues within [first, first + count) that nkb_group_held calls free,
// and with known_free none that a process of another pid namespace recorded (it cannot be
// checked from here: the bind decides on those): its length (0: none), its first queue in
// *run_first.
uint32_t nkb_group_free_run(const nkb_filter_t *f, uint32_t first, uint32_t count,
                           bool known_free, uint32_t *run_first);
// Records this process as queue q's holder (after its XSK bound), and lets it go (after
// the XSK closed; only if the record is still ours).
void nkb_group_claim(nkb_filter_t *f, uint32_t q);
void nkb_group_release(nkb_filter_t *f, uint32_t q);
// What queue q's record says, as nkb_group_held sees it (tools; src/phys.ts GROUP_STATE):
// nobody, a live process (its pid in *pid), one of another pid namespace (cannot be
// checked from here; its pid there), or a process gone.
#define NKB_GROUP_FREE 0u
#define NKB_GROUP_LIVE 1u
#define NKB_GROUP_OTHER_NS 2u
#define NKB_GROUP_GONE 3u
uint32_t nkb_group_state(const nkb_filter_t *f, uint32_t q, uint32_t *pid);

// Queue requests (nkb_ctl_t.asks), one record per asking process. An asker found no free
// queue: nkb_group_ask writes or renews its record (NKB_ASK_TTL_MS keeps it alive between
// retries; a record given a queue that someone else took is asked again); nkb_group_unask
// removes it when the process got a queue or stopped asking. A holder takes one live
// record not yet given (false: none) and gives up a queue for it. A record whose process
// is gone or that was not renewed is free for the next asker.
#define NKB_ASK_TTL_MS 1000u    // an ask not renewed for this long is stale (retries: 250 ms)
#define NKB_GIVE_GRACE_MS 500u  // a holder gives a queue up within this (drain: 50 ms)
void nkb_group_ask(nkb_filter_t *f);
void nkb_group_unask(nkb_filter_t *f);
bool nkb_group_take_ask(nkb_filter_t *f);
// Live asks of other processes not yet answered with a free queue: a whole-interface
// engine opening leaves that many queues (nkb_engine_open).
uint32_t nkb_group_waiting(const nkb_filter_t *f);
// Live asks of other processes, answered or not: a holder takes no queue back meanwhile.
uint32_t nkb_group_askers(const nkb_filter_t *f);

// ---- packet filtering and IPsec (policy.c) ---------------------------------
// The Solaris contract allows no bypass while packet filtering or IPsec is configured:
// datagrams on the rings never meet the kernel's filters or SAs. Counts are of the calling
// thread's network namespace and saturate at UINT32_MAX; reading needs CAP_NET_ADMIN
// (legacy iptables also CAP_NET_RAW). A source that cannot be read sets its flag bit and
// leaves its counts as far as they were read: treat it as "unknown", not as "none".

typedef struct nkb_policy {
  uint32_t nft_rules;        // nftables rules (any family, any table, iptables-nft too), plus base
                             // chains whose policy is not accept
  uint32_t ipt_legacy_rules; // user rules in legacy IPv4 x_tables (filter, nat, mangle, raw,
                             // security), plus built-in chains whose policy is not ACCEPT
  uint32_t xfrm_policies;    // IPsec policies (XFRM_MSG_GETPOLICY dump)
  uint32_t xfrm_states;      // IPsec SAs (XFRM_MSG_GETSA dump)
  uint32_t flags;            // bit0: nft unknown, bit1: legacy unknown, bit2: xfrm unknown
} nkb_policy_t;              // 20 bytes, read from TypeScript: keep it stable

// 0, or -EINVAL for a NULL out; per-source failures are in out->flags.
int32_t nkb_policy_probe(nkb_policy_t *out);

#endif
