// The registry reader's parser: a pure function (no syscalls, no allocation, no globals)
// from the bytes of a registry file (two copies read one after the other, for the
// seqlock rule) and what the kernel says of the process that should have written it, to
// fixed-layout records that src/registry_read.ts only maps to objects. Every length,
// count and string is checked against the bytes it was given; a fuzz target calls it
// with arbitrary bytes (tests/fuzz/). The record and claims layouts are a C<->TS
// contract: tests/registry_read.test.ts compiles this header and compares.
#ifndef NKB_REGISTRY_PARSE_H
#define NKB_REGISTRY_PARSE_H

#include <stdint.h>

#include "registry.h"

// What the kernel says of the process (in) and what the header adds (out).
typedef struct nkb_reg_claims {
  uint64_t uid;          //  0 in: its effective uid (/proc/P/status "Uid:" 2nd field)
  uint64_t pid;          //  8 in: its pid in its own namespace ("NSpid:" last field)
  uint64_t pidns_ino;    // 16 in: inode of /proc/P/ns/pid
  uint64_t start_ticks;  // 24 in: /proc/P/stat field 22
  uint64_t netns_ino;    // 32 out: the header's network namespace inode
  uint64_t created_ms;   // 40 out: the header's creation time
  uint64_t found;        // 48 out: on a header error, the value the file had
  uint64_t reserved;     // 56
} nkb_reg_claims_t;      // 64

// Record status
#define NKB_REC_OK 0u        // a socket, every field checked
#define NKB_REC_UNSTABLE 1u  // seq odd, or changed between the two copies: read again
#define NKB_REC_BAD 2u       // a field out of range (problem, detail): skip and warn
// Record problems (NKB_REC_BAD)
#define NKB_REC_P_IN_USE 1u  // in_use neither 0 nor 1 (detail: its value)
#define NKB_REC_P_IFNAME 2u  // ifname not NUL-terminated
#define NKB_REC_P_REASON 3u  // reason not NUL-terminated
#define NKB_REC_P_QUEUES 4u  // queue range outside what a socket may hold (detail: count)

typedef struct nkb_reg_record {
  uint32_t slot;           //   0 index in the file
  uint32_t status;         //   4 NKB_REC_*
  uint32_t problem;        //   8 NKB_REC_P_* when status is NKB_REC_BAD
  uint32_t flags;          //  12 NKB_REG_F_*
  uint64_t created_ms;     //  16
  uint8_t local_ip[4];     //  24 network order
  uint8_t remote_ip[4];    //  28 network order
  uint16_t local_port;     //  32 host order
  uint16_t remote_port;    //  34
  uint32_t ifindex;        //  36
  uint32_t first_queue;    //  40
  uint32_t queue_count;    //  44
  uint32_t recv_mode;      //  48
  uint32_t seq;            //  52 the slot's seq in the first copy
  char ifname[16];         //  56 NUL-terminated (checked), zero-filled after the NUL
  char reason[32];         //  72 NUL-terminated (checked), zero-filled after the NUL
  uint64_t stats[NKB_ST_COUNT];  // 104
  uint64_t detail;         // 232 the offending value of a NKB_REC_BAD record
  uint64_t sock_ino;       // 240 the slot's kernel socket inode (0: none recorded)
  uint64_t netns_ino;      // 248 the socket's network namespace inode (0: none recorded)
  uint8_t group[4];        // 256 network order, 0.0.0.0 when none
  uint32_t groups;         // 260
  uint32_t recv_q;         // 264
  uint32_t reserved;       // 268
} nkb_reg_record_t;        // 272

_Static_assert(sizeof(nkb_reg_claims_t) == 64, "claims size");
_Static_assert(sizeof(nkb_reg_record_t) == 272, "record size");

// Whole-file errors (nkb_reg_parse's negative results)
#define NKB_REG_P_ARGS (-1)         // a null pointer or a claims/out buffer of the wrong size
#define NKB_REG_P_MAGIC (-2)        // not a registry file
#define NKB_REG_P_TRUNCATED (-3)    // shorter than its header or its slots
#define NKB_REG_P_VERSION (-4)
#define NKB_REG_P_HEADER_SIZE (-5)
#define NKB_REG_P_SLOT_SIZE (-6)
#define NKB_REG_P_SLOT_COUNT (-7)   // 0 or more than NKB_REG_SLOTS
#define NKB_REG_P_TOO_LONG (-8)     // longer than a registry file can be
#define NKB_REG_P_PID (-9)          // the claims disagree with the kernel:
#define NKB_REG_P_UID (-10)
#define NKB_REG_P_START (-11)
#define NKB_REG_P_PIDNS (-12)
#define NKB_REG_P_REPLACED (-13)    // the second copy is another file (header differs)
#define NKB_REG_P_CAPACITY (-14)    // out holds fewer records than the file has slots

// Parses file (file_len bytes) with next (a later read of the same file, next_len bytes;
// it may be file itself): checks magic, version, sizes, count, length, and that the
// header's pid/uid/start/pidns equal claims->(pid, uid, start_ticks, pidns_ino). Then
// one record per slot that is in use or not stable (seq odd in file, or different in
// next), in slot order, into out (out_len bytes, whole records). Returns the number of
// records, or a NKB_REG_P_* code (claims->found then holds the offending value).
int32_t nkb_reg_parse(const uint8_t *file, uint32_t file_len, const uint8_t *next,
                      uint32_t next_len, nkb_reg_claims_t *claims, uint32_t claims_len,
                      nkb_reg_record_t *out, uint32_t out_len);

#endif
