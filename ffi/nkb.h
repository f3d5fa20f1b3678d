// The shim's public entry points, bound from src/ffi.ts with Deno.dlopen.
// Every entry validates its handle and arguments: a stale handle, a closed socket
// or a bad size is an error code (-errno), never a crash. Every buffer comes with the
// byte length JavaScript read from the very array it passed (Deno passes a null pointer
// for a detached or empty one): the entry checks every count, offset and length against
// that length, and the alignment of word buffers (ffi/README.md has the table).
#ifndef NKB_H
#define NKB_H

#include <stdint.h>

#include "frame.h"
#include "nkb_net.h"
#include "xsk.h"

#define NKB_API __attribute__((visibility("default")))
#define NKB_ABI_VERSION 7  // 2: every buffer parameter is followed by its byte length;
                           // 3: the loader pins the copy it keeps (nkb_pin);
                           // 4: nkb_wait_many; 5: NKB_ATTACH_ASK;
                           // 6: nkb_group_owners, NKB_ATTACH_NOWAIT;
                           // 7: nkb_queues_xsk_bound

#define NKB_MAX_SOCKS 1024u
#define NKB_WAIT_MANY_MAX NKB_MAX_SOCKS  // sockets of one nkb_wait_many
#define NKB_MAX_ENGINES 16u
#define NKB_MAX_ATTACH 64u         // sockets (and their flow keys) per interface
#define NKB_PENDING 256u           // frames parked for a socket while another one reads
#define NKB_DEST_SLOTS 256u        // per-socket destination header cache
#define NKB_DEST_PROBES 8u
#define NKB_BATCH_MAX 1024u        // datagrams one batch call may move
#define NKB_RECV_META_WORDS 8u     // offset, len, saddr_be, sport, flags, 0, 0, 0
#define NKB_SEND_META_WORDS 4u     // offset, len, daddr_be, dport
#define NKB_MAX_DGRAM 65507u
#define NKB_INFO_WORDS 9u          // words nkb_sock_info writes

// Returned by send entries when the destination is not in the header cache:
// the control plane must resolve it (route, neighbour) and call nkb_dest_set.
#define NKB_ENEEDROUTE (-10000)
// Returned by send entries, before sending, when the bypass interface changed (link,
// MTU, address) since the control plane last looked: it re-checks, acks, and retries.
#define NKB_ELINKCHANGE (-10001)

// flags in recv meta word 4
#define NKB_RX_KERNEL 1u
#define NKB_RX_TRUNCATED 2u

// nkb_dest_set kinds
#define NKB_DEST_BYPASS 1u
#define NKB_DEST_KERNEL 2u

// nkb_sock_setopt options
#define NKB_OPT_BUSY_WAIT_CNT 1u
#define NKB_OPT_TTL 2u
#define NKB_OPT_TOS 3u
#define NKB_OPT_MCAST_TTL 4u
#define NKB_OPT_MCAST_LOOP 5u
#define NKB_OPT_REUSEADDR 6u
#define NKB_OPT_RCVBUF 7u
#define NKB_OPT_SNDBUF 8u
#define NKB_OPT_BROADCAST 9u
#define NKB_OPT_MTU 10u        // largest IP datagram the bypass path may send (interface MTU)
#define NKB_OPT_REUSEPORT 12u  // SO_REUSEPORT: queue-affine sockets share an address and port

// nkb_sock_mcast ops
#define NKB_MCAST_JOIN 1u
#define NKB_MCAST_LEAVE 2u
#define NKB_MCAST_IF 3u

// stats words (u64)
enum {
  NKB_ST_IPKTS = 0,
  NKB_ST_IPKTS_SPIN,
  NKB_ST_OPKTS,
  NKB_ST_OPKTS_SPIN,
  NKB_ST_SEND_SPIN_MAX,
  NKB_ST_RX_DROPPED,      // parked queue full
  NKB_ST_RX_INVALID,      // frames that failed validation
  NKB_ST_KERNEL_IPKTS,    // datagrams received through the companion socket
  NKB_ST_KERNEL_OPKTS,    // datagrams sent through the companion socket
  NKB_ST_TX_FULL,         // sends refused after the busy-wait count
  NKB_ST_RX_TRUNCATED,
  NKB_ST_ENGINE_DROPS,    // XDP_STATISTICS drops of the whole interface (all sockets)
  NKB_ST_RX_FOREIGN,      // bypass frames from a source other than the connected peer
  NKB_ST_ICMP_IGNORED,    // ICMP errors the companion socket reported, hidden as the contract says
  NKB_ST_WAIT_NS,         // time receives spent waiting for a datagram (spinning or asleep), ns
  NKB_ST_ENGINE_TX_DROPS, // frames the device dropped on send, whole interface (all sockets)
  NKB_ST_COUNT = 16,
};

NKB_API int32_t nkb_abi_version(void);
// Pins this copy of the library in memory until the process exits (src/load.ts calls it on
// the copy it keeps). 0, or -1 (with a warning on stderr) when it cannot.
NKB_API int32_t nkb_pin(void);
// CLOCK_MONOTONIC in milliseconds: the hot paths' clock (a V8 fast call, far cheaper than
// Deno's performance.now()).
NKB_API double nkb_now_ms(void);
// The value of environment variable `name` (NUL-terminated within name_len bytes) as an
// int32, or fallback.
NKB_API int32_t nkb_env_int(const uint8_t *name, uint32_t name_len, int32_t fallback);

NKB_API int32_t nkb_sock_open(void);
NKB_API int32_t nkb_sock_bind(int32_t h, uint32_t ip_be, uint32_t port);
NKB_API int32_t nkb_sock_connect(int32_t h, uint32_t ip_be, uint32_t port);
NKB_API int32_t nkb_sock_name(int32_t h, uint32_t *out2, uint32_t out_len);
NKB_API int32_t nkb_sock_setopt(int32_t h, uint32_t opt, int32_t value);
NKB_API int32_t nkb_sock_mcast(int32_t h, uint32_t op, uint32_t group_be, uint32_t iface_be);
NKB_API int32_t nkb_sock_shutdown(int32_t h);
NKB_API int32_t nkb_sock_free(int32_t h);
// Ends a wait sleeping in nkb_wait on another thread early (it returns as if woken by a
// datagram): unref() shortens a long idle wait so that the process may exit.
NKB_API int32_t nkb_sock_wake(int32_t h);

// Attaches to the engine covering queues [first_queue, first_queue + queue_count) of
// ifindex (queue_count 1: a queue-affine socket, for one Worker per queue). attach_flags:
// the XDP attach mode (0, 2 generic, 4 native) plus NKB_ATTACH_ASK: a whole-interface
// socket that finds every queue held by other live processes asks them for one and answers
// -EAGAIN; the caller retries (every 250 ms or so) and the retry that finds a queue given up
// attaches. After NKB_ASK_WAIT_MS of asking it stops (-ETIMEDOUT); so does a detach (the
// caller stopped retrying). Asking holds the interface's filter open. Without the flag (and
// for a queue-affine socket): -EBUSY.
#define NKB_ATTACH_ASK 0x100u
// NKB_ATTACH_NOWAIT: one bind per queue. A queue the kernel still holds (its last socket
// closed moments ago: 15-25 ms) answers -EINPROGRESS at once instead of being bound again
// for up to 400 ms; the caller retries later (the binding's retries, which run on the event
// loop: every attach but one under _NET_KERNEL_BYPASS_ERR_EXIT=1 at socket creation).
#define NKB_ATTACH_NOWAIT 0x200u
// NKB_ATTACH_BRIEF (with NOWAIT, at socket creation): a queue the kernel is still releasing
// is waited for, up to 50 ms, by asking the kernel every ms (no setup meanwhile), then bound
// once; still bound then: -EINPROGRESS. The release takes 15-25 ms, so a socket opened right
// after another closed is bypassed at birth, as the contract decides at bind, and a queue
// that stays bound costs creation 50 ms, not the 400 ms of binds without NOWAIT.
#define NKB_ATTACH_BRIEF 0x400u
#define NKB_ASK_WAIT_MS 3000u
NKB_API int32_t nkb_sock_attach(int32_t h, uint32_t ifindex, uint32_t first_queue,
                                uint32_t queue_count, uint32_t frame_size,
                                uint32_t attach_flags, uint32_t mtu);
NKB_API int32_t nkb_sock_add_flow(int32_t h, uint32_t ip_be, uint32_t port);
NKB_API int32_t nkb_sock_del_flow(int32_t h, uint32_t ip_be, uint32_t port);
NKB_API int32_t nkb_sock_detach(int32_t h);
// The socket's engine (NKB_INFO_WORDS words: attached, ifindex, queues, zero-copy, frame size,
// program id, MTU, sockets on the engine, first queue); out_len bytes, at least 36.
NKB_API int32_t nkb_sock_info(int32_t h, uint32_t *out, uint32_t out_len);
// The socket's counters: NKB_ST_COUNT u64 words; out_len bytes, at least 128.
NKB_API int32_t nkb_sock_stats(int32_t h, uint64_t *out, uint32_t out_len);
NKB_API int32_t nkb_sock_last_error(int32_t h);
// Reaps TX completions and rings the doorbell: frames left on the ring (link was down) go.
NKB_API int32_t nkb_sock_flush(int32_t h);
// The control plane has looked at the interface: sends go on until the next change.
NKB_API int32_t nkb_sock_link_ack(int32_t h);
// The interface's MAC changed: its filter compares unicast destination MACs with the new
// one. 1 when the filter's copy changed, 0 when not, or -errno (-ENOTCONN: no engine).
NKB_API int32_t nkb_sock_mac_sync(int32_t h);

NKB_API int32_t nkb_dest_set(int32_t h, uint32_t daddr_be, uint32_t dport, uint32_t kind,
                             const uint8_t *macs12, uint32_t macs_len, uint32_t saddr_be,
                             uint32_t ttl_ms);
NKB_API int32_t nkb_dest_clear(int32_t h);

NKB_API int32_t nkb_send(int32_t h, const uint8_t *buf, uint32_t len, uint32_t daddr_be,
                         uint32_t dport);
// Sends entries [first, first + count) of meta (NKB_SEND_META_WORDS each; meta_len bytes
// in all): how many were sent, from the first; the error that stopped it in last_error.
NKB_API int32_t nkb_send_batch(int32_t h, const uint8_t *buf, uint32_t buf_len,
                               const uint32_t *meta, uint32_t meta_len, uint32_t first,
                               uint32_t count);
// Receives up to max_msgs datagrams into buf (buf_len bytes) and meta (NKB_RECV_META_WORDS
// per datagram; meta_len bytes in all, at least max_msgs entries).
NKB_API int32_t nkb_recv_batch(int32_t h, uint8_t *buf, uint32_t buf_len, uint32_t *meta,
                               uint32_t meta_len, uint32_t max_msgs);
// Waits up to timeout_us for data on either path: 1 ready, 0 timed out, -EBADF closed.
NKB_API int32_t nkb_wait(int32_t h, uint32_t timeout_us, uint32_t spin);
// One wait for the first n sockets of handles (at most NKB_WAIT_MANY_MAX): an isolate's
// pending receives share one thread of Deno's FFI pool instead of one each. out[i] is set
// as nkb_wait's result for handles[i] (1 ready, 0 not, -EBADF closed); returns how many
// are not 0, or a negative errno. nkb_sock_wake of any of them ends it early.
NKB_API int32_t nkb_wait_many(const uint8_t *handles, uint32_t handles_len, uint8_t *out,
                              uint32_t out_len, uint32_t n, uint32_t timeout_us, uint32_t spin);

NKB_API int32_t nkb_link_get(uint32_t ifindex, uint8_t *out76, uint32_t out_len);
NKB_API int32_t nkb_route_get(uint32_t dst_be, uint32_t *out4, uint32_t out_len);
NKB_API int32_t nkb_addr_ifindex(uint32_t ip_be);
NKB_API int32_t nkb_addr_first(uint32_t ifindex, uint32_t *out1, uint32_t out_len);
NKB_API int32_t nkb_neigh_get(uint32_t ifindex, uint32_t ip_be, uint8_t *mac6, uint32_t mac_len);
NKB_API int32_t nkb_neigh_resolve(uint32_t ifindex, uint32_t ip_be);
NKB_API int32_t nkb_caps(uint64_t *out4, uint32_t out_len);
NKB_API int32_t nkb_policy(uint8_t *out20, uint32_t out_len);

// Host name resolution (ffi/resolve.c). nkb_resolve writes two header words (results
// ranked before the first IPv4 one, IPv4 results in all) and then up to
// NKB_RESOLVE_MAX_ADDRS IPv4 addresses in getaddrinfo's order, as many as out_len holds;
// it returns how many addresses it wrote, -errno, or NKB_EGAI_BASE + a getaddrinfo error
// (EAI_* are negative).
#define NKB_RESOLVE_NUMERIC 1u     // flags: numeric forms only (AI_NUMERICHOST), no lookup
#define NKB_RESOLVE_NAME_MAX 1024u // bytes of a name, without NUL
#define NKB_RESOLVE_HEAD_WORDS 2u
#define NKB_RESOLVE_MAX_ADDRS 64u
#define NKB_EGAI_BASE (-20000)
NKB_API int32_t nkb_resolve(const uint8_t *name, uint32_t name_len, uint32_t flags,
                            uint32_t *out, uint32_t out_len);
NKB_API int32_t nkb_prog_name(uint32_t prog_id, uint8_t *out16, uint32_t out_len);
// 1 when prog_id is (or was, among the last 64) the XDP filter of one of this process's
// engines (any Worker's), else 0.
NKB_API int32_t nkb_prog_is_ours(uint32_t prog_id);
// The holders of ifindex's queues as its nkb filter (program prog_id) records them: for
// queue q, out[2q] its state (NKB_GROUP_*, nkb_net.h) and out[2q + 1] the pid; out_len
// bytes, a multiple of 8 (at most NKB_FILTER_QUEUES queues). Joins the filter for the call
// (CAP_SYS_ADMIN: -EPERM without). How many queues were written, or -errno: -EPROTONOSUPPORT
// when prog_id is not this version's filter, -ENOENT when it left meanwhile.
NKB_API int32_t nkb_group_owners(uint32_t ifindex, uint32_t prog_id, uint32_t *out,
                                 uint32_t out_len);

// The XDP features the driver of ifindex reports (generic netlink family "netdev",
// NETDEV_A_DEV_XDP_FEATURES: NETDEV_XDP_ACT_* bits; XSK_ZEROCOPY is 1 << 3): 0 and *out1
// set, -ENOENT (no such interface), -EOPNOTSUPP (the kernel has no "netdev" family).
NKB_API int32_t nkb_link_xdp_features(uint32_t ifindex, uint64_t *out1, uint32_t out_len);

// Which of ifindex's RX queues first_queue .. first_queue + queue_count - 1 (at most
// NKB_MAX_QUEUES) have an AF_XDP socket bound, by anyone, as the kernel says (family
// "netdev", NETDEV_A_QUEUE_XSK): a bitmask, bit i for queue first_queue + i, or -ENOENT (no such interface, or it is
// down: the kernel answers for running ones only), -EINVAL (no such queue), -EOPNOTSUPP (a
// kernel before 6.8). Before 6.15 every queue reads free.
NKB_API int32_t nkb_queues_xsk_bound(uint32_t ifindex, uint32_t first_queue,
                                     uint32_t queue_count);

// The host-wide registry (ffi/registry.h). What the control plane knows of socket h
// that the shim does not: bypass state flags (NKB_REG_F_BYPASS, NKB_REG_F_AFFINE; the
// shim adds the others), the receive mode, and the fallback reason ("" when bypassing; at most 31
// bytes, its NUL within both reason_len and 32 bytes). 0, -EBADF, or -EINVAL (no such NUL);
// without a registry it does nothing.
NKB_API int32_t nkb_reg_note(int32_t h, uint32_t flags, uint32_t recv_mode,
                             const uint8_t *reason_z, uint32_t reason_len);
// Where this process's registry file is (NUL-terminated into out, at most len bytes):
// its length, or -ENOENT when there is no registry.
NKB_API int32_t nkb_reg_path(uint8_t *out, uint32_t len);
// The read side (ffi/registry_read.c): R/<uid>/<name> (dir: R, NUL-terminated within
// dir_len; name: "<digits and ->.reg") opened without following links or blocking, R/<uid>
// and the file checked on their descriptors; up to out_len bytes read. Bytes read, or
// -ENOENT (no such directory or file), -EINVAL, another -errno, or NKB_REG_E_*.
#define NKB_REG_E_NOT_DIR (-10100)   // R is not a directory (a link, a file)
#define NKB_REG_E_SQUATTED (-10101)  // R/<uid>: not a directory owned by uid, closed to others
#define NKB_REG_E_NOT_FILE (-10102)  // the name is a link, FIFO, socket, directory...
#define NKB_REG_E_OWNER (-10103)     // the file is not owned by uid
#define NKB_REG_E_TOO_BIG (-10104)   // larger than out_len
NKB_API int32_t nkb_reg_read_file(const uint8_t *dir, uint32_t dir_len, uint32_t uid,
                                  const uint8_t *name, uint32_t name_len, uint8_t *out,
                                  uint32_t out_len);
// Removes R/<uid>/<name> after the same checks: 0 or a code as nkb_reg_read_file's.
NKB_API int32_t nkb_reg_unlink(const uint8_t *dir, uint32_t dir_len, uint32_t uid,
                               const uint8_t *name, uint32_t name_len);
// The names in R/<uid> (opened and checked as nkb_reg_read_file does, then listed through
// that descriptor: a link swapped in is never followed), each NUL-terminated, into out;
// at most 8192; an empty name last when there were more. Bytes written, or a code as
// nkb_reg_read_file's.
NKB_API int32_t nkb_reg_list_dir(const uint8_t *dir, uint32_t dir_len, uint32_t uid,
                                 uint8_t *out, uint32_t out_len);
// Root only: a squatted R/<uid> (what nkb_reg_read_file calls NKB_REG_E_SQUATTED) renamed
// aside in R, as a root writer does its own: 0 (nothing to do), 1 (set aside), -EPERM
// (not root, or R not root's), NKB_REG_E_NOT_DIR, -EBUSY (could not), another -errno.
NKB_API int32_t nkb_reg_set_aside_user(const uint8_t *dir, uint32_t dir_len, uint32_t uid);
// nkb_reg_parse (ffi/registry_parse.h) for Deno: claims and out 8-byte aligned.
NKB_API int32_t nkb_reg_parse_file(const uint8_t *file, uint32_t file_len,
                                   const uint8_t *next, uint32_t next_len, uint8_t *claims,
                                   uint32_t claims_len, uint8_t *out, uint32_t out_len);

#endif
