// The registry reader's pure parser (contract: registry_parse.h). Reads every field
// byte by byte (little-endian) so that any alignment of the input is fine, and reads
// nothing before the length that holds it has been checked.
#include "registry_parse.h"

#include <assert.h>
#include <stddef.h>
#include <string.h>

static uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

#define HOFF(f) offsetof(nkb_reg_header_t, f)
#define SOFF(f) offsetof(nkb_reg_slot_t, f)

// The header's layout fields: 0 and the slot count, or a NKB_REG_P_* code.
static int32_t nkb_reg_check_layout(const uint8_t *f, uint32_t len, uint32_t *slots,
                                    uint64_t *found) {
  uint32_t magic_len = len < 8u ? len : 8u;
  // The magic first: a short foreign file is foreign rather than truncated.
  if (memcmp(f, NKB_REG_MAGIC, magic_len) != 0) return NKB_REG_P_MAGIC;
  if (len < NKB_REG_HEADER_SIZE) return *found = len, NKB_REG_P_TRUNCATED;
  if (rd32(f + HOFF(version)) != NKB_REG_VERSION) {
    return *found = rd32(f + HOFF(version)), NKB_REG_P_VERSION;
  }
  if (rd32(f + HOFF(header_size)) != NKB_REG_HEADER_SIZE) {
    return *found = rd32(f + HOFF(header_size)), NKB_REG_P_HEADER_SIZE;
  }
  if (rd32(f + HOFF(slot_size)) != NKB_REG_SLOT_SIZE) {
    return *found = rd32(f + HOFF(slot_size)), NKB_REG_P_SLOT_SIZE;
  }
  uint32_t count = rd32(f + HOFF(slot_count));
  if (count == 0 || count > NKB_REG_SLOTS) return *found = count, NKB_REG_P_SLOT_COUNT;
  uint64_t needed = NKB_REG_HEADER_SIZE + (uint64_t)count * NKB_REG_SLOT_SIZE;
  if (len < needed) return *found = len, NKB_REG_P_TRUNCATED;
  if (len > NKB_REG_FILE_SIZE) return *found = len, NKB_REG_P_TOO_LONG;
  *slots = count;
  return 0;
}

// The header's claims against the kernel's: 0 or a NKB_REG_P_* code.
static int32_t nkb_reg_check_claims(const uint8_t *f, nkb_reg_claims_t *c) {
  uint64_t pid = rd32(f + HOFF(pid));
  uint64_t uid = rd32(f + HOFF(uid));
  uint64_t start = rd64(f + HOFF(start_ticks));
  uint64_t pidns = rd64(f + HOFF(pidns_ino));
  if (pid != c->pid) return c->found = pid, NKB_REG_P_PID;
  if (uid != c->uid) return c->found = uid, NKB_REG_P_UID;
  if (start != c->start_ticks) return c->found = start, NKB_REG_P_START;
  if (pidns != c->pidns_ino) return c->found = pidns, NKB_REG_P_PIDNS;
  c->netns_ino = rd64(f + HOFF(netns_ino));
  c->created_ms = rd64(f + HOFF(created_ms));
  return 0;
}

// Copies a fixed string field that must hold a NUL; false when it does not.
static int nkb_reg_cstr(char *dst, const uint8_t *src, uint32_t size) {
  const uint8_t *nul = memchr(src, 0, size);
  if (nul == 0) return 0;
  uint32_t n = (uint32_t)(nul - src);
  assert(n < size);
  memset(dst, 0, size);
  memcpy(dst, src, n);
  return 1;
}

// Fills r from a stable slot s (NKB_REC_OK or NKB_REC_BAD).
static void nkb_reg_fill(nkb_reg_record_t *r, const uint8_t *s) {
  uint32_t in_use = rd32(s + SOFF(in_use));
  r->status = NKB_REC_BAD;
  if (in_use != 1u) {
    r->problem = NKB_REC_P_IN_USE, r->detail = in_use;
    return;
  }
  if (!nkb_reg_cstr(r->ifname, s + SOFF(ifname), sizeof(r->ifname))) {
    r->problem = NKB_REC_P_IFNAME;
    return;
  }
  if (!nkb_reg_cstr(r->reason, s + SOFF(reason), sizeof(r->reason))) {
    r->problem = NKB_REC_P_REASON;
    return;
  }
  r->first_queue = rd32(s + SOFF(first_queue));
  r->queue_count = rd32(s + SOFF(queue_count));
  if (r->queue_count > NKB_MAX_QUEUES || r->first_queue > NKB_REG_QUEUE_LIMIT ||
      r->first_queue + r->queue_count > NKB_REG_QUEUE_LIMIT) {
    r->problem = NKB_REC_P_QUEUES, r->detail = r->queue_count;
    return;
  }
  r->flags = rd32(s + SOFF(flags));
  r->created_ms = rd64(s + SOFF(created_ms));
  memcpy(r->local_ip, s + SOFF(local_ip), 4);
  memcpy(r->remote_ip, s + SOFF(remote_ip), 4);
  r->local_port = rd16(s + SOFF(local_port));
  r->remote_port = rd16(s + SOFF(remote_port));
  r->ifindex = rd32(s + SOFF(ifindex));
  r->recv_mode = rd32(s + SOFF(recv_mode));
  r->sock_ino = rd64(s + SOFF(sock_ino));
  r->netns_ino = rd64(s + SOFF(netns_ino));
  memcpy(r->group, s + SOFF(group), 4);
  r->groups = rd32(s + SOFF(groups));
  r->recv_q = rd32(s + SOFF(recv_q));
  for (uint32_t i = 0; i < NKB_ST_COUNT; i++) r->stats[i] = rd64(s + SOFF(stats) + 8u * i);
  r->status = NKB_REC_OK;
}

int32_t nkb_reg_parse(const uint8_t *file, uint32_t file_len, const uint8_t *next,
                      uint32_t next_len, nkb_reg_claims_t *claims, uint32_t claims_len,
                      nkb_reg_record_t *out, uint32_t out_len) {
  if (claims == 0 || claims_len != sizeof(*claims)) return NKB_REG_P_ARGS;
  if (file == 0 || next == 0 || out == 0) return NKB_REG_P_ARGS;
  uint32_t slots = 0;
  int32_t rc = nkb_reg_check_layout(file, file_len, &slots, &claims->found);
  if (rc != 0) return rc;
  rc = nkb_reg_check_claims(file, claims);
  if (rc != 0) return rc;
  uint64_t end = NKB_REG_HEADER_SIZE + (uint64_t)slots * NKB_REG_SLOT_SIZE;
  assert(end <= file_len && end <= NKB_REG_FILE_SIZE);
  // The second copy must be the same file: same header, at least as many slots.
  if (next_len < end || memcmp(file, next, sizeof(nkb_reg_header_t)) != 0) {
    return NKB_REG_P_REPLACED;
  }
  uint32_t cap = out_len / (uint32_t)sizeof(nkb_reg_record_t);
  uint32_t n = 0;
  for (uint32_t i = 0; i < slots; i++) {
    const uint8_t *s = file + NKB_REG_HEADER_SIZE + (size_t)i * NKB_REG_SLOT_SIZE;
    const uint8_t *s2 = next + NKB_REG_HEADER_SIZE + (size_t)i * NKB_REG_SLOT_SIZE;
    uint32_t seq = rd32(s + SOFF(seq));
    // The seqlock rule: a copy counts when seq was even in it and unchanged in a later one.
    int stable = (seq & 1u) == 0 && seq == rd32(s2 + SOFF(seq));
    if (stable && rd32(s + SOFF(in_use)) == 0) continue;  // a free slot
    if (n == cap) return NKB_REG_P_CAPACITY;
    nkb_reg_record_t *r = &out[n++];
    memset(r, 0, sizeof(*r));
    r->slot = i;
    r->seq = seq;
    if (stable) nkb_reg_fill(r, s);
    else r->status = NKB_REC_UNSTABLE;
  }
  assert(n <= slots && n <= cap);
  return (int32_t)n;
}
