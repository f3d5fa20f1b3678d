// The XDP filter's program, in restricted C compiled to BPF: steers the UDP flows we own to
// AF_XDP sockets and leaves the rest to the kernel.
//
// Not built by build.zig: `./nkbw deno run -A tools/bpf_gen.ts` compiles it with the pinned
// zig and writes ffi/filter_prog.h (the instructions and their map relocations), which
// ffi/bpf_filter.c loads; tests/bpf_gen.test.ts fails when that header is stale. No system
// headers: the few kernel definitions used are declared here, with their UAPI values.
//
// The maps are created by the shim (bpf_filter.c), not by a loader reading this object: the
// symbols in ".maps" exist only so that each map reference becomes a 64-bit immediate load
// with a relocation naming the map, which the shim patches with the map's fd.

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

// struct xdp_md of linux/bpf.h: the context's offsets are fixed by the UAPI.
struct xdp_md {
  u32 data;
  u32 data_end;
  u32 data_meta;
  u32 ingress_ifindex;
  u32 rx_queue_index;
  u32 egress_ifindex;
};

enum { XDP_ABORTED = 0, XDP_DROP = 1, XDP_PASS = 2, XDP_TX = 3, XDP_REDIRECT = 4 };

// Helpers are called by number (enum bpf_func_id).
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_redirect_map)(void *map, u64 key, u64 flags) = (void *)51;

// nkb_flow_key_t of ffi/nkb_net.h: the hash compares all 8 bytes. A flow is keyed by the
// queue too: each nkb process adds its flows for the queues it holds, so a frame goes to an
// XSK only on a queue whose holder asked for it.
struct nkb_flow_key {
  u32 daddr_be;
  u16 dport_be;
  u16 queue;
};
_Static_assert(sizeof(struct nkb_flow_key) == 8, "the shim's keys are 8 bytes");

// Relocation targets only (see the top): nkb_xsks the XSKMAP (key u32 queue), nkb_flows the
// HASH of nkb_flow_key, nkb_ctl the one-entry ARRAY (nkb_ctl_t) whose first 8 bytes are the
// interface's MAC + 2 zeros.
struct nkb_map_ref {
  u32 unused;
};
__attribute__((section(".maps"), used)) struct nkb_map_ref nkb_xsks;
__attribute__((section(".maps"), used)) struct nkb_map_ref nkb_flows;
__attribute__((section(".maps"), used)) struct nkb_map_ref nkb_ctl;

// Wire constants in the byte order a little-endian load of the wire bytes yields.
#define NKB_BE16(x) ((u16)((((x) & 0xff) << 8) | (((x) >> 8) & 0xff)))

enum {
  NKB_ETH_LEN = 14,
  NKB_HDR_LEN = 14 + 20 + 8,  // eth + IPv4 without options + UDP
};

// Our flow, but is the frame for this host? A unicast destination MAC that is not the
// interface's is another host's (PACKET_OTHERHOST): the kernel drops such frames, so they
// go to the kernel. Group addresses (multicast, broadcast) stay ours. The MAC is read from a
// one-entry map that the shim updates when the interface's MAC changes.
static __attribute__((always_inline)) int nkb_for_this_host(const u8 *eth) {
  if (eth[0] & 1) return 1;  // group bit set
  const u32 key = 0;
  const u8 *mac = bpf_map_lookup_elem(&nkb_ctl, &key);
  if (!mac) return 0;  // an array entry: never
  if (*(const u32 *)eth != *(const u32 *)mac) return 0;  // MAC bytes 0..3
  return *(const u16 *)(eth + 4) == *(const u16 *)(mac + 4);  // MAC bytes 4..5
}

__attribute__((section("xdp"), used)) int nkb_xdp(struct xdp_md *ctx) {
  const u8 *data = (const u8 *)(unsigned long)ctx->data;
  const u8 *data_end = (const u8 *)(unsigned long)ctx->data_end;
  // The verifier only lets us touch packet bytes after a data_end comparison that covers
  // every header byte we read below, so do it once for the whole fixed-size prefix.
  if (data + NKB_HDR_LEN > data_end) return XDP_PASS;  // runt: kernel decides
  // Only untagged IPv4: VLAN, ARP, IPv6 and everything else must keep working normally.
  if (*(const u16 *)(data + 12) != NKB_BE16(0x0800)) return XDP_PASS;
  const u8 *ip = data + NKB_ETH_LEN;
  // Version 4 with IHL 5 keeps the UDP header at a fixed offset; options are rare enough to
  // leave to the kernel rather than pay for variable-offset parsing.
  if (ip[0] != 0x45) return XDP_PASS;
  if (ip[9] != 17) return XDP_PASS;  // not UDP
  // Any fragment (MF set or non-zero offset) needs kernel reassembly; a non-first fragment
  // has no UDP header at all, so its "port" would be payload bytes.
  if (*(const u16 *)(ip + 6) & NKB_BE16(0x3fff)) return XDP_PASS;
  // A flow whose frames arrive on a queue its holder does not hold (a device without flow
  // steering spreads flows over queues by hash) misses here: the kernel delivers it to the
  // holder's companion socket, so nothing is lost.
  struct nkb_flow_key key;
  key.daddr_be = *(const u32 *)(ip + 16);
  key.dport_be = *(const u16 *)(ip + 20 + 2);
  // A group held on more than one queue is the kernel's to copy to every member
  // (NKB_FLOW_SHARED in ffi/nkb_net.h).
  if ((ip[16] & 0xf0) == 0xe0) {
    key.queue = 0xffff;
    if (bpf_map_lookup_elem(&nkb_flows, &key)) return XDP_PASS;
  }
  key.queue = (u16)ctx->rx_queue_index;
  if (!bpf_map_lookup_elem(&nkb_flows, &key)) return XDP_PASS;  // not our flow on this queue
  if (!nkb_for_this_host(data)) return XDP_PASS;
  // Hand it to the XSK of the queue it arrived on. The XDP_PASS fallback flag keeps traffic
  // flowing through the kernel while no socket is bound to that queue yet (or after it
  // closed), instead of silently dropping it.
  return (int)bpf_redirect_map(&nkb_xsks, ctx->rx_queue_index, XDP_PASS);
}

