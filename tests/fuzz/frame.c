// libFuzzer target for ffi/frame.c (see tests/fuzz/README.md). Each input is used twice:
//  1. as a received frame: nkb_frame_parse must return a reason in range, never read past
//     the input (ASan: the input sits in a buffer of exactly its length), and agree with a
//     slow reference parser written here from the RFCs (textbook RFC 1071 checksum);
//  2. as header fields and payload: a frame built by nkb_frame_build from them parses back
//     to the same addresses, ports and payload, with checksums the reference accepts;
//  3. as checksummed bytes: nkb_csum_add (8 bytes at a time) equals the textbook sum at
//     every length and at an odd start address.
// Built with clang's -fsanitize=fuzzer,address,undefined; any finding aborts.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../ffi/frame.c"

// The largest input the round trip builds from; libFuzzer's -max_len bounds the rest.
#define FUZZ_MAX_PAYLOAD 4096u
// The largest UDP payload over IPv4 (NKB_MAX_DGRAM, ffi/nkb.h): 65535 - 20 - 8.
#define FUZZ_MAX_DGRAM 65507u
// The longest frame the parser may accept: Ethernet + an IPv4 total length of 65535.
#define FUZZ_MAX_FRAME (14u + 65535u)

// Aborts with a message: libFuzzer reports the abort as a crash and saves the input.
#define FUZZ_CHECK(cond)                                                        \
  do {                                                                          \
    if (!(cond)) {                                                              \
      fprintf(stderr, "fuzz check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      abort();                                                                  \
    }                                                                           \
  } while (0)

static uint16_t ref_be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

// Textbook one's-complement sum over 16-bit big-endian words, folded, not complemented.
static uint16_t ref_sum(const uint8_t *p, uint32_t len, uint32_t initial) {
  uint64_t sum = initial;
  for (uint32_t i = 0; i + 1 < len; i += 2) sum += ref_be16(p + i);
  if (len & 1u) sum += (uint32_t)p[len - 1] << 8;
  for (uint32_t i = 0; i < 4 && sum >> 16; i++) sum = (sum & 0xffffu) + (sum >> 16);
  return (uint16_t)sum;
}

// The reference's pseudo-header sum (addresses, protocol 17, UDP length).
static uint32_t ref_pseudo(const uint8_t *ip, uint16_t udp_len) {
  return (uint32_t)ref_sum(ip + 12, 8, 0) + 17u + udp_len;
}

// The UDP checksum as RFC 768 states it, plus the partial (offloaded) form the parser
// accepts on purpose: the field holds the folded pseudo-header sum.
static nkb_drop_t ref_udp_csum(const uint8_t *ip, const uint8_t *udp, uint16_t udp_len) {
  uint16_t field = ref_be16(udp + 6);
  if (field == 0) return NKB_FRAME_OK;
  uint32_t pseudo = ref_pseudo(ip, udp_len);
  if (ref_sum(udp, udp_len, pseudo) == 0xffffu) return NKB_FRAME_OK;
  if (field == ref_sum(0, 0, pseudo)) return NKB_FRAME_OK;
  return NKB_DROP_UDP_CSUM;
}

// Which reason a frame must be dropped for, checks in the order frame.h lists them.
static nkb_drop_t ref_parse(const uint8_t *f, uint32_t len) {
  if (len < 42u || len > FUZZ_MAX_FRAME) return NKB_DROP_SHORT;
  const uint8_t *ip = f + 14;
  if (ref_be16(f + 12) != 0x0800 || ip[0] >> 4 != 4) return NKB_DROP_NOT_IPV4;
  if ((ip[0] & 0x0f) != 5) return NKB_DROP_IP_OPTIONS;
  uint16_t ip_len = ref_be16(ip + 2);
  if (ip_len < 28u || 14u + ip_len > len) return NKB_DROP_IP_LEN;
  if (ref_sum(ip, 20, 0) != 0xffffu) return NKB_DROP_IP_CSUM;
  // More-fragments set or a non-zero offset; DF and the reserved bit do not matter.
  if ((ref_be16(ip + 6) & 0x3fffu) != 0) return NKB_DROP_FRAGMENT;
  if (ip[9] != 17) return NKB_DROP_NOT_UDP;
  uint16_t udp_len = ref_be16(ip + 24);
  if (udp_len + 20u != ip_len) return NKB_DROP_UDP_LEN;
  return ref_udp_csum(ip, ip + 20, udp_len);
}

static void check_parse(const uint8_t *data, uint32_t len) {
  nkb_parsed_t pr;
  memset(&pr, 0xa5, sizeof(pr));
  nkb_drop_t got = nkb_frame_parse(data, len, &pr);
  FUZZ_CHECK(got >= NKB_FRAME_OK && got < NKB_DROP_REASONS);
  nkb_drop_t want = ref_parse(data, len);
  // Told of more than any frame can be, it must refuse before reading (ASan would see it).
  FUZZ_CHECK(nkb_frame_parse(data, FUZZ_MAX_FRAME + 1u + len, &pr) == NKB_DROP_SHORT);
  if (got != want) fprintf(stderr, "parse: nkb %d, reference %d\n", (int)got, (int)want);
  FUZZ_CHECK(got == want);
  if (got != NKB_FRAME_OK) return;
  // Accepted: every reported field is the frame's own, and the payload lies inside it.
  FUZZ_CHECK(memcmp(&pr.saddr_be, data + 26, 4) == 0);
  FUZZ_CHECK(memcmp(&pr.daddr_be, data + 30, 4) == 0);
  FUZZ_CHECK(pr.sport == ref_be16(data + 34) && pr.dport == ref_be16(data + 36));
  FUZZ_CHECK(pr.payload_len + NKB_UDP_LEN == ref_be16(data + 38));
  FUZZ_CHECK(NKB_HDR_LEN + pr.payload_len <= len);
}

// Builds a frame from head's fields (at their frame offsets) and plen bytes of payload,
// parses it back and compares field by field.
static void round_trip(const uint8_t head[NKB_HDR_LEN], const uint8_t *payload, uint32_t plen) {
  const uint8_t *ip = head + 14;
  uint32_t saddr, daddr;
  memcpy(&saddr, ip + 12, 4);
  memcpy(&daddr, ip + 16, 4);
  uint16_t sport = ref_be16(ip + 20), dport = ref_be16(ip + 22);
  nkb_tmpl_t t;
  nkb_tmpl_init(&t, head + 6, head, saddr, daddr, sport, dport, ip[8], ip[1]);
  // Exactly the frame's size, so ASan sees any write past it.
  uint8_t *frame = malloc(NKB_HDR_LEN + plen);
  FUZZ_CHECK(frame != 0);
  uint32_t flen = nkb_frame_build(frame, &t, payload, plen, ref_be16(ip + 4));
  FUZZ_CHECK(flen == NKB_HDR_LEN + plen);
  FUZZ_CHECK(ref_parse(frame, flen) == NKB_FRAME_OK);
  nkb_parsed_t pr;
  FUZZ_CHECK(nkb_frame_parse(frame, flen, &pr) == NKB_FRAME_OK);
  FUZZ_CHECK(pr.saddr_be == saddr && pr.daddr_be == daddr);
  FUZZ_CHECK(pr.sport == sport && pr.dport == dport && pr.payload_len == plen);
  FUZZ_CHECK(memcmp(frame, head, 12) == 0 && frame[15] == ip[1] && frame[22] == ip[8]);
  FUZZ_CHECK(ref_be16(frame + 18) == ref_be16(ip + 4));
  // What the template fixes: IPv4, no options, DF without fragmenting, UDP.
  FUZZ_CHECK(ref_be16(frame + 12) == 0x0800 && frame[14] == 0x45);
  FUZZ_CHECK(ref_be16(frame + 20) == 0x4000 && frame[23] == 17);
  FUZZ_CHECK(plen == 0 || memcmp(frame + NKB_HDR_LEN, payload, plen) == 0);
  // A full checksum, never the "no checksum" zero.
  FUZZ_CHECK(ref_be16(frame + 40) != 0 && ref_sum(frame + 34, 8 + plen,
                                                  ref_pseudo(frame + 14, (uint16_t)(8 + plen))) ==
                                              0xffffu);
  free(frame);
}

// FNV-1a: which inputs also get a 64 KB round trip.
static uint32_t fuzz_hash(const uint8_t *data, uint32_t len) {
  uint32_t h = 2166136261u;
  for (uint32_t i = 0; i < len; i++) h = (h ^ data[i]) * 16777619u;
  return h;
}

// Header fields come from the input at their frame offsets (so the frame corpus seeds
// this too); the payload is whatever follows byte 42, or nothing. One input in 1024 (by a
// hash of it, which libFuzzer's comparison tracing cannot solve for: a byte compared with
// a constant would be, and the 64 KB loops' new hit counts would then fill the corpus with
// such inputs) also builds one of the largest payloads, the input repeated (the last 64
// sizes up to FUZZ_MAX_DGRAM, frames longer than 65,535 bytes): milliseconds each under
// the sanitizers. LLVMFuzzerInitialize does every such size once per run.
static void check_round_trip(const uint8_t *data, uint32_t len) {
  static uint8_t big[FUZZ_MAX_DGRAM];
  uint8_t head[NKB_HDR_LEN] = {0};
  memcpy(head, data, len < NKB_HDR_LEN ? len : NKB_HDR_LEN);
  uint32_t plen = len > NKB_HDR_LEN ? len - NKB_HDR_LEN : 0;
  if (plen > FUZZ_MAX_PAYLOAD) plen = FUZZ_MAX_PAYLOAD;
  round_trip(head, data + NKB_HDR_LEN * (plen > 0), plen);
  if (len == 0 || (fuzz_hash(data, len) & 1023u) != 0) return;
  uint32_t big_len = FUZZ_MAX_DGRAM - data[0] % 64u;
  // The input, then the bytes so far copied after themselves: the input repeated.
  uint32_t have = len < big_len ? len : big_len;
  memcpy(big, data, have);
  for (uint32_t i = 0; i < 17u && have < big_len; i++) {
    uint32_t n = have < big_len - have ? have : big_len - have;
    memcpy(big + have, big, n);
    have += n;
  }
  FUZZ_CHECK(have == big_len);
  round_trip(head, big, big_len);
}

// Both sums are folded the same way, so equal sums modulo 0xffff are equal here (a
// non-zero sum never folds to 0).
static void check_csum(const uint8_t *data, uint32_t len) {
  for (uint32_t skip = 0; skip < 2 && skip <= len; skip++) {
    uint32_t n = len - skip;
    uint32_t initial = n > 0 ? data[0] * 257u : 0;  // a caller's partial sum
    uint16_t got = nkb_csum_fold(nkb_csum_add(initial, data + skip, n));
    FUZZ_CHECK(got == ref_sum(data + skip, n, initial));
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

// Once per run, before any input: every payload size from FUZZ_MAX_DGRAM - 127 to
// FUZZ_MAX_DGRAM (frames of 65,422 to 65,549 bytes) builds a frame that parses back.
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  static uint8_t payload[FUZZ_MAX_DGRAM];
  uint8_t head[NKB_HDR_LEN] = {0};
  for (uint32_t i = 0; i < sizeof(payload); i++) payload[i] = (uint8_t)(i * 7u);
  for (uint32_t plen = FUZZ_MAX_DGRAM - 127u; plen <= FUZZ_MAX_DGRAM; plen++) {
    head[41] = (uint8_t)plen;  // a different UDP checksum seed (ignored: rebuilt) per size
    round_trip(head, payload, plen);
  }
  fprintf(stderr, "frame: round trips of payloads %u..%u bytes done\n", FUZZ_MAX_DGRAM - 127u,
          FUZZ_MAX_DGRAM);
  return 0;
}


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  // libFuzzer bounds size by -max_len; anything beyond 32 bits would be a harness bug.
  FUZZ_CHECK(size <= 0xffffffffu);
  check_parse(data, (uint32_t)size);
  check_round_trip(data, (uint32_t)size);
  check_csum(data, (uint32_t)size);
  return 0;
}
