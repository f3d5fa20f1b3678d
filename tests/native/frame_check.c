// Checks ffi/frame.c against a plain RFC 1071 checksum written independently
// here, and feeds the parser mutated and random frames. Built and run by
// tests/frame.test.ts with the project's zig; prints one line per check group.
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../../ffi/frame.h"

#define ROUNDS 2000u
#define MAX_PAYLOAD 1472u

static uint32_t rng_state = 0x12345678u;

static uint32_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}

// Textbook one's-complement sum over 16-bit big-endian words.
static uint16_t rfc1071(const uint8_t *p, uint32_t len, uint32_t initial) {
  uint32_t sum = initial;
  for (uint32_t i = 0; i + 1 < len; i += 2) sum += (uint32_t)(p[i] << 8 | p[i + 1]);
  if (len & 1u) sum += (uint32_t)p[len - 1] << 8;
  while (sum >> 16) sum = (sum & 0xffffu) + (sum >> 16);
  return (uint16_t)~sum;
}

static uint32_t check_round_trip(void) {
  static uint8_t payload[MAX_PAYLOAD];
  static uint8_t frame[NKB_HDR_LEN + MAX_PAYLOAD];
  const uint8_t src[6] = {2, 0, 0, 0, 0, 1}, dst[6] = {2, 0, 0, 0, 0, 2};
  uint32_t failures = 0;
  for (uint32_t round = 0; round < ROUNDS; round++) {
    uint32_t len = round < 10 ? round : rng() % (MAX_PAYLOAD + 1);
    for (uint32_t i = 0; i < len; i++) payload[i] = (uint8_t)rng();
    uint32_t saddr = rng(), daddr = rng();
    uint16_t sport = (uint16_t)rng(), dport = (uint16_t)(rng() | 1u);
    nkb_tmpl_t t;
    nkb_tmpl_init(&t, src, dst, saddr, daddr, sport, dport, 64, 0);
    uint32_t flen = nkb_frame_build(frame, &t, payload, len, (uint16_t)round);
    const uint8_t *ip = frame + NKB_ETH_LEN;
    uint8_t pseudo[12];
    memcpy(pseudo, ip + 12, 8);
    pseudo[8] = 0;
    pseudo[9] = 17;
    pseudo[10] = (uint8_t)((len + 8) >> 8);
    pseudo[11] = (uint8_t)(len + 8);
    uint32_t pseudo_sum = (uint16_t)~rfc1071(pseudo, 12, 0);
    uint16_t udp_check = rfc1071(ip + NKB_IP_LEN, 8 + len, pseudo_sum);
    nkb_parsed_t pr;
    int ok = flen == NKB_HDR_LEN + len && rfc1071(ip, NKB_IP_LEN, 0) == 0 &&
             (udp_check == 0 || udp_check == 0xffff) &&
             nkb_frame_parse(frame, flen, &pr) == NKB_FRAME_OK && pr.payload_len == len &&
             pr.saddr_be == saddr && pr.daddr_be == daddr && pr.sport == sport &&
             pr.dport == dport && memcmp(frame + NKB_HDR_LEN, payload, len) == 0;
    failures += ok ? 0u : 1u;
  }
  return failures;
}

// Any change to an IPv4 or UDP header byte or to the payload must not pass
// unnoticed: the parser rejects the frame or reports the changed field.
static uint32_t check_mutations(void) {
  static uint8_t frame[NKB_HDR_LEN + 64];
  const uint8_t mac[6] = {2, 0, 0, 0, 0, 3};
  uint8_t payload[64];
  for (uint32_t i = 0; i < 64; i++) payload[i] = (uint8_t)i;
  nkb_tmpl_t t;
  nkb_tmpl_init(&t, mac, mac, 0x0100a8c6u, 0x0200a8c6u, 1000, 2000, 64, 0);
  uint32_t flen = nkb_frame_build(frame, &t, payload, 64, 7);
  uint32_t unnoticed = 0;
  for (uint32_t pos = NKB_ETH_LEN; pos < flen; pos++) {
    for (uint32_t bit = 0; bit < 8; bit++) {
      frame[pos] ^= (uint8_t)(1u << bit);
      nkb_parsed_t pr;
      nkb_drop_t d = nkb_frame_parse(frame, flen, &pr);
      frame[pos] ^= (uint8_t)(1u << bit);
      if (d != NKB_FRAME_OK) continue;
      // Accepted: only fields the parser reports (addresses, ports) may differ.
      int reported = pos >= NKB_ETH_LEN + 12 && pos < NKB_ETH_LEN + 24;
      unnoticed += reported ? 0u : 1u;
    }
  }
  return unnoticed;
}

static uint32_t check_random_frames(void) {
  static uint8_t frame[2048];
  uint32_t accepted = 0;
  for (uint32_t round = 0; round < 200000u; round++) {
    uint32_t len = rng() % sizeof(frame);
    for (uint32_t i = 0; i < len; i++) frame[i] = (uint8_t)rng();
    // Half the rounds look like IPv4/UDP up to the checksums, to reach deeper checks.
    if (round & 1u && len >= NKB_HDR_LEN) {
      frame[12] = 0x08, frame[13] = 0x00, frame[14] = 0x45, frame[23] = 17;
      frame[20] = 0, frame[21] = 0;
    }
    nkb_parsed_t pr;
    if (nkb_frame_parse(frame, len, &pr) == NKB_FRAME_OK) {
      accepted++;
      assert(pr.payload_len + NKB_HDR_LEN <= len);
    }
  }
  return accepted;
}

int main(void) {
  uint32_t rt = check_round_trip();
  uint32_t mut = check_mutations();
  uint32_t rnd = check_random_frames();
  printf("round-trip failures %u\nunnoticed mutations %u\nrandom frames accepted %u\n", rt, mut,
         rnd);
  return rt == 0 && mut == 0 ? 0 : 1;
}
