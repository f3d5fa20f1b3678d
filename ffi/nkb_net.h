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

// ---- XDP filter (bpf_filter.c) ---------------------------------------------
// One filter per (process, interface): an XDP program that redirects IPv4 UDP
// frames whose (daddr, dport) is in the flows map to the XSK bound to the frame's
// receive queue, and passes everything else to the kernel.

typedef struct nkb_filter {
  int32_t prog_fd;
  int32_t link_fd;
  int32_t xsks_map_fd;   // BPF_MAP_TYPE_XSKMAP, key u32 queue, value u32 xsk fd
  int32_t flows_map_fd;  // BPF_MAP_TYPE_HASH, key nkb_flow_key_t, value u32 (unused, 1)
  int32_t mac_map_fd;    // BPF_MAP_TYPE_ARRAY, key 0, value: the interface's MAC + 2 zeros
  uint8_t mac[6];        // what mac_map_fd holds (when mac_set)
  bool mac_set;
  uint32_t ifindex;
  uint32_t prog_id;      // from BPF_OBJ_GET_INFO_BY_FD
  uint32_t max_queues;
  uint32_t max_flows;
} nkb_filter_t;

typedef struct nkb_flow_key {
  uint32_t daddr_be;
  uint16_t dport_be;
  uint16_t zero;
} nkb_flow_key_t;

// Load the program and maps, attach with BPF_LINK_CREATE (so it dies with the process).
// attach_flags: 0 = let the kernel choose (native on veth), 2 = XDP_FLAGS_SKB_MODE (generic),
// 4 = XDP_FLAGS_DRV_MODE (native). On failure everything opened is closed and -errno returned
// (-EBUSY when the interface already has a program/link). On verifier rejection the log is
// written to stderr once (bounded).
int32_t nkb_filter_open(nkb_filter_t *f, uint32_t ifindex, uint32_t max_queues, uint32_t max_flows,
                        uint32_t attach_flags);
int32_t nkb_filter_set_xsk(nkb_filter_t *f, uint32_t queue, int32_t xsk_fd);
int32_t nkb_filter_add_flow(nkb_filter_t *f, uint32_t daddr_be, uint16_t dport_be);
int32_t nkb_filter_del_flow(nkb_filter_t *f, uint32_t daddr_be, uint16_t dport_be);
// Reads the interface's MAC (rtnetlink) into the filter's MAC map, which the program
// compares unicast destination MACs with: 1 when it changed, 0 when not, or -errno.
int32_t nkb_filter_sync_mac(nkb_filter_t *f);
// Closes every fd (link first, so the program detaches) and zeroes *f. Safe on a zeroed f
// and on one already closed (fds set to -1).
void nkb_filter_close(nkb_filter_t *f);
// The name of loaded program prog_id (ours are "nkb_xdp"): tells another nkb process's
// filter from a foreign program. 0 or -errno.
int32_t nkb_filter_prog_name(uint32_t prog_id, char name_out[16]);

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
