// The host-wide registry of nkb sockets: one file per process in a shared directory,
// mapped by the process (its only writer) and read by `nkb stat` / `nkb phys`
// (src/registry_read.ts mirrors this layout: keep both in step; a test compares them).
//
// Where: $NKB_REGISTRY_DIR, else /dev/shm/nkb (created 01777, like /tmp, so that every
// user can publish). File: <pid>.reg, mode 0600 (owner and root read it), or the mode in
// $NKB_REGISTRY_MODE (octal, e.g. 0644). NKB_REGISTRY_DIR=off: no registry (counters stay
// private). Created with O_EXCL|O_NOFOLLOW; removed when the process exits; the file of a
// process that died (SIGKILL) is recognised by its start time and removed by the next
// writer or reader that may.
//
// Layout, little-endian, every field naturally aligned:
//   header (NKB_REG_HEADER_SIZE bytes), then NKB_REG_SLOTS slots of NKB_REG_SLOT_SIZE.
// A reader checks magic, version, sizes and counts against the file's length before
// reading anything, and every string is NUL-terminated within its field.
//
// Slot consistency: `seq` is a seqlock for the metadata (odd: being written); a reader
// copies the slot, then re-reads seq and retries (bounded) on a change. Counters are
// single aligned u64s, written by one thread at a time and read without the lock.
#ifndef NKB_REGISTRY_H
#define NKB_REGISTRY_H

#include <stdint.h>

#include "nkb.h"

#define NKB_REG_MAGIC "NKBREG\0\1"  // 8 bytes
#define NKB_REG_VERSION 1u
#define NKB_REG_HEADER_SIZE 4096u
#define NKB_REG_SLOT_SIZE 512u
#define NKB_REG_SLOTS NKB_MAX_SOCKS
#define NKB_REG_CMDLINE_MAX 4016u
#define NKB_REG_DEFAULT_DIR "/dev/shm/nkb"
#define NKB_REG_DEFAULT_MODE 0600u

typedef struct nkb_reg_header {
  uint8_t magic[8];        //   0 NKB_REG_MAGIC
  uint32_t version;        //   8
  uint32_t header_size;    //  12
  uint32_t slot_size;      //  16
  uint32_t slot_count;     //  20
  uint32_t pid;            //  24
  uint32_t uid;            //  28 real uid
  uint64_t start_ticks;    //  32 /proc/<pid>/stat field 22: with pid, who wrote this file
  uint64_t created_ms;     //  40 unix time, ms
  uint64_t netns_ino;      //  48 inode of /proc/self/ns/net (interfaces are per namespace)
  uint32_t cmdline_len;    //  56 bytes used in cmdline
  uint32_t reserved;       //  60
  char comm[16];           //  64 /proc/self/comm, NUL-terminated
  uint8_t cmdline[NKB_REG_CMDLINE_MAX];  // 80 /proc/self/cmdline (NUL-separated), truncated
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
  uint8_t reserved[32];    //  96
  uint64_t stats[NKB_ST_COUNT];  // 128 the socket's live counters (NKB_ST_*)
  uint8_t spare[NKB_REG_SLOT_SIZE - 128u - 8u * NKB_ST_COUNT];
} nkb_reg_slot_t;          // 512

_Static_assert(sizeof(nkb_reg_header_t) == NKB_REG_HEADER_SIZE, "registry header size");
_Static_assert(sizeof(nkb_reg_slot_t) == NKB_REG_SLOT_SIZE, "registry slot size");

// Opens this process's registry file (once; later calls return the same state). Never
// fails the caller: without a registry the counters live in the socket.
void nkb_reg_init(void);
// The counters of socket table index idx: its slot's (slot taken, in_use set) or, when
// there is no registry, `fallback`.
uint64_t *nkb_reg_take(uint32_t idx, uint64_t *fallback);
// Frees socket idx's slot (in_use 0). g_lock held.
void nkb_reg_release(uint32_t idx);

#endif
