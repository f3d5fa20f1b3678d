// libFuzzer target for ffi/registry_parse.c (see tests/fuzz/README.md): the registry
// reader's pure parser, fed another user's file. The input is:
//   byte 0: mode; bit 0: the second copy differs in the first slot's seq (a writer moved
//           on between the two reads); bit 1: the claims equal the header's own, so that
//           parsing reaches the slots (else they are zero: a forged or foreign header);
//           bit 2: the second copy's header differs (created_ms), bit 3: it is one byte
//           shorter (the file was replaced between the two reads);
//   byte 1: the output's capacity in records, modulo 8;
//   the rest: the file, copied into a buffer of exactly its length (and so is the second
//   copy), so that ASan sees any byte read past it.
// Checked: the result is a record count within the capacity or a NKB_REG_P_* code; records
// come in slot order, each a slot of the file with its seq; a NKB_REC_OK record's strings
// hold their NUL, its queues lie within the limit and its netns, group and recv_q are the
// slot's; an unstable one is a slot whose seq is odd or changed. Built with clang's -fsanitize=fuzzer,address,undefined.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../ffi/registry_parse.c"

// Aborts with a message: libFuzzer reports the abort as a crash and saves the input.
#define FUZZ_CHECK(cond)                                                             \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      fprintf(stderr, "fuzz check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      abort();                                                                       \
    }                                                                                \
  } while (0)

// A copy of exactly n bytes (one byte for n = 0: a null pointer is NKB_REG_P_ARGS).
static uint8_t *fuzz_dup(const uint8_t *p, uint32_t n) {
  uint8_t *q = malloc(n > 0 ? n : 1);
  FUZZ_CHECK(q != 0);
  if (n > 0) memcpy(q, p, n);
  return q;
}

// The file's seq of slot i (the caller knows the slot lies within the file).
static uint32_t slot_seq(const uint8_t *file, uint32_t i) {
  return rd32(file + NKB_REG_HEADER_SIZE + (size_t)i * NKB_REG_SLOT_SIZE);
}

static void check_records(const nkb_reg_record_t *out, int32_t rc, uint32_t cap,
                          const uint8_t *file, const uint8_t *next, uint32_t len) {
  FUZZ_CHECK(rc >= NKB_REG_P_CAPACITY && (rc < 0 || (uint32_t)rc <= cap));
  for (int32_t i = 0; i < rc; i++) {
    const nkb_reg_record_t *r = &out[i];
    FUZZ_CHECK(r->slot < NKB_REG_SLOTS && (i == 0 || r->slot > out[i - 1].slot));
    uint64_t end = NKB_REG_HEADER_SIZE + ((uint64_t)r->slot + 1u) * NKB_REG_SLOT_SIZE;
    FUZZ_CHECK(end <= len);
    FUZZ_CHECK(r->seq == slot_seq(file, r->slot));
    FUZZ_CHECK(r->status <= NKB_REC_BAD);
    int unstable = (r->seq & 1u) != 0 || r->seq != slot_seq(next, r->slot);
    FUZZ_CHECK(unstable == (r->status == NKB_REC_UNSTABLE));
    if (r->status != NKB_REC_OK) continue;
    FUZZ_CHECK(memchr(r->ifname, 0, sizeof(r->ifname)) != 0);
    FUZZ_CHECK(memchr(r->reason, 0, sizeof(r->reason)) != 0);
    FUZZ_CHECK(r->queue_count <= NKB_MAX_QUEUES);
    FUZZ_CHECK(r->first_queue + r->queue_count <= NKB_REG_QUEUE_LIMIT);
    const uint8_t *s = file + NKB_REG_HEADER_SIZE + (size_t)r->slot * NKB_REG_SLOT_SIZE;
    FUZZ_CHECK(r->netns_ino == rd64(s + SOFF(netns_ino)));
    FUZZ_CHECK(memcmp(r->group, s + SOFF(group), 4) == 0);
    FUZZ_CHECK(r->groups == rd32(s + SOFF(groups)) && r->recv_q == rd32(s + SOFF(recv_q)));
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2 || size > NKB_REG_FILE_SIZE + 4096u) return 0;
  uint8_t mode = data[0];
  uint32_t cap = data[1] % 8u;
  uint32_t len = (uint32_t)size - 2;
  uint8_t *file = fuzz_dup(data + 2, len);
  uint8_t *next = fuzz_dup(file, len);
  if ((mode & 1u) && len > NKB_REG_HEADER_SIZE) next[NKB_REG_HEADER_SIZE] ^= 1u;
  if ((mode & 4u) && len >= 64u) next[40] ^= 1u;
  uint32_t next_len = (mode & 8u) && len > 0 ? len - 1u : len;
  nkb_reg_claims_t claims;
  memset(&claims, 0, sizeof(claims));
  if ((mode & 2u) && len >= 64u) {
    claims.pid = rd32(file + 24), claims.uid = rd32(file + 28);
    claims.start_ticks = rd64(file + 32), claims.pidns_ino = rd64(file + 56);
  }
  // cap records and one byte: never a zero-byte allocation, and ASan sees a record more.
  nkb_reg_record_t *out = malloc(cap * sizeof(nkb_reg_record_t) + 1u);
  FUZZ_CHECK(out != 0);
  int32_t rc = nkb_reg_parse(file, len, next, next_len, &claims, sizeof(claims), out,
                             (uint32_t)(cap * sizeof(nkb_reg_record_t)));
  FUZZ_CHECK(rc != NKB_REG_P_REPLACED || (mode & 12u) != 0);
  check_records(out, rc, cap, file, next, len);
  free(out);
  free(next);
  free(file);
  return 0;
}
