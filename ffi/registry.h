// The host-wide registry of nkb sockets: one file per process, mapped by the process
// (its only writer) and read by `nkb stat` / `nkb phys` (src/registry_read.ts, through
// ffi/registry_read.c and the pure parser ffi/registry_parse.c; a test compiles this
// header and compares the TypeScript constants with it).
//
// Tree (threat model: SECURITY.md): R = $NKB_REGISTRY_DIR, else /dev/shm/nkb
// ("off": no registry). R is a real directory, 01777 (sticky, like /tmp), taken back by
// a root process from any other owner. Files live only in per-user directories R/<euid>
// (mode 0700, 0755 when NKB_REGISTRY_MODE lets others read; owned by that uid, never
// group/other-writable, else "squatted": not used, not read). File name:
//   <pidns_ino>-<pid>-<start_ticks>.reg
// pidns inode of /proc/self/ns/pid, pid as the process sees itself, start ticks from
// /proc/self/stat field 22: the name alone says whose file it is, so a writer's sweep
// never opens a file and a reader opens only the names of live processes.
// Mode 0600, or NKB_REGISTRY_MODE (octal; never writable by others). The whole size is
// reserved (fallocate) before the mapping: a full file system is a warning at creation,
// never a SIGBUS.
//
// Layout, little-endian, every field naturally aligned:
//   header (NKB_REG_HEADER_SIZE bytes), then NKB_REG_SLOTS slots of NKB_REG_SLOT_SIZE.
// The header's claims (pid, uid, start ticks, pidns) are checked by readers against what
// the kernel says of the process; who it is (user, command, arguments) is read from
// /proc, never from the file.
//
// Slot consistency: `seq` is a seqlock for the metadata (odd: being written); a reader
// copies the slot, then re-reads seq and retries (bounded) on a change. Counters are
// single aligned u64s, written by one thread at a time and read without the lock; the
// kernel's counters (interface drops) and recv_q are copied in by the process's refresher
// thread (ffi/refresh.c) every NKB_REFRESH_MS, so they are current while the application
// does not receive, or is busy in JavaScript.
#ifndef NKB_REGISTRY_H
#define NKB_REGISTRY_H

#include <stdbool.h>
#include <stdint.h>

#include "nkb.h"

#define NKB_REG_MAGIC "NKBREG\0\1"  // 8 bytes
#define NKB_REG_VERSION 4u  // 2: per-user directories, no comm/cmdline in the file;
                            // 3: sock_ino (readers check claims against the kernel's fds);
                            // 4: netns_ino, group, groups, recv_q per slot
#define NKB_REG_HEADER_SIZE 4096u
#define NKB_REG_SLOT_SIZE 512u
#define NKB_REG_SLOTS NKB_MAX_SOCKS
#define NKB_REG_FILE_SIZE (NKB_REG_HEADER_SIZE + NKB_REG_SLOTS * NKB_REG_SLOT_SIZE)
#define NKB_REG_DEFAULT_DIR "/dev/shm/nkb"
#define NKB_REG_DEFAULT_MODE 0600u
#define NKB_REG_NAME_MAX 80u  // "<u64>-<u32>-<u64>.reg" and its NUL fit
// No socket holds a queue at or past this index (= NKB_FILTER_QUEUES, ffi/nkb_net.h; asserted
// in registry.c): kept here so that the parser needs no other header.
#define NKB_REG_QUEUE_LIMIT 64u

typedef struct nkb_reg_header {
  uint8_t magic[8];        //   0 NKB_REG_MAGIC
  uint32_t version;        //   8
  uint32_t header_size;    //  12
  uint32_t slot_size;      //  16
  uint32_t slot_count;     //  20
  uint32_t pid;            //  24 as the process sees itself (its own pid namespace)
  uint32_t uid;            //  28 effective uid (the file's owner, the directory's name)
  uint64_t start_ticks;    //  32 /proc/self/stat field 22, in host ticks (host_clock.h)
  uint64_t created_ms;     //  40 unix time, ms
  uint64_t netns_ino;      //  48 inode of /proc/self/ns/net (interfaces are per namespace)
  uint64_t pidns_ino;      //  56 inode of /proc/self/ns/pid
  uint8_t reserved[NKB_REG_HEADER_SIZE - 64u];
} nkb_reg_header_t;        // 4096

// slot flags
#define NKB_REG_F_BYPASS 1u     // sends and receives go through the rings
#define NKB_REG_F_CONNECTED 2u  // connect() named a peer (State "Connected", else "Idle")
#define NKB_REG_F_AFFINE 4u     // queue-affine socket ({ queue })
#define NKB_REG_F_BOUND 8u      // bound to an address and port

typedef struct nkb_reg_slot {
  uint32_t seq;            //   0 seqlock (odd: being written)
  uint32_t in_use;         //   4 0 free, 1 a socket
  uint64_t created_ms;     //   8 unix time, ms
  uint8_t local_ip[4];     //  16 network order (a.b.c.d)
  uint8_t remote_ip[4];    //  20 network order, 0.0.0.0 when not connected
  uint16_t local_port;     //  24 host order
  uint16_t remote_port;    //  26 host order, 0 when not connected
  uint32_t flags;          //  28 NKB_REG_F_*
  uint32_t ifindex;        //  32 bypass interface, 0 on the kernel path
  uint32_t first_queue;    //  36 queues held: [first_queue, first_queue + queue_count)
  uint32_t queue_count;    //  40 0 when no queue is held
  uint32_t recv_mode;      //  44 _NET_KERNEL_BYPASS_RECV_MODE of the socket
  char ifname[16];         //  48 NUL-terminated, "" on the kernel path
  char reason[32];         //  64 why the socket is on the kernel path ("" when bypassing)
  uint64_t sock_ino;       //  96 inode of the companion kernel UDP socket (s->fd): a
                           //     reader believes the slot only if the process holds it
                           //     and the kernel's /proc/P/net/udp gives it these addresses
  uint64_t netns_ino;      // 104 inode of the socket's network namespace (SIOCGSKNS on
                           //     s->fd): two namespaces' sockets at one address differ here
  uint8_t group[4];        // 112 network order: a multicast group the socket joined (the
                           //     oldest still joined), 0.0.0.0 when none
  uint32_t groups;         // 116 groups joined (the kernel's per-socket memberships)
  uint32_t recv_q;         // 120 datagrams waiting: the RX rings' unread entries of the
                           //     socket's engine plus its parked queue. A gauge written
                           //     like the counters (no seqlock), every NKB_REFRESH_MS
  uint32_t reserved;       // 124
  uint64_t stats[NKB_ST_COUNT];  // 128 the socket's live counters (NKB_ST_*)
  uint8_t spare[NKB_REG_SLOT_SIZE - 128u - 8u * NKB_ST_COUNT];
} nkb_reg_slot_t;          // 512

_Static_assert(sizeof(nkb_reg_header_t) == NKB_REG_HEADER_SIZE, "registry header size");
_Static_assert(sizeof(nkb_reg_slot_t) == NKB_REG_SLOT_SIZE, "registry slot size");

// Opens this process's registry file (once; later calls return the same state). Never
// fails the caller: without a registry the counters live in the socket.
void nkb_reg_init(void);
// The counters of socket table index idx: its slot's (slot taken, in_use set, sock_ino
// recorded) or, when there is no registry, `fallback`.
uint64_t *nkb_reg_take(uint32_t idx, uint64_t sock_ino, uint64_t netns_ino, uint64_t *fallback);
// Frees socket idx's slot (in_use 0). The table lock held.
void nkb_reg_release(uint32_t idx);
// Socket idx's multicast memberships: the group shown (network order, 0: none) and how
// many it holds. Takes the table lock.
void nkb_reg_groups(uint32_t idx, uint32_t group_be, uint32_t groups);
// Socket idx's waiting datagrams (recv_q): one aligned word, any thread.
void nkb_reg_recv_q(uint32_t idx, uint32_t datagrams);
// The queues slot idx's socket holds changed (its engine gave one up; table lock held).
void nkb_reg_queues(uint32_t idx, uint32_t first_queue, uint32_t queue_count);
// Root only: sets a squatted R/<uid> aside (rfd: R, opened; dir: its path, for messages).
// 0 (fine or absent), 1 (set aside), or -errno (-EPERM: not root; -EBUSY: not moved).
int32_t nkb_reg_repair_user(int rfd, const char *dir, uint32_t uid, bool loud);

#endif
