// Frame building and parsing. Checksums use a 64-bit accumulator over 32-bit
// words; folding happens once at the end.
#include "frame.h"

#include <assert.h>
#include <string.h>

// The longest frame: an IPv4 total length of at most 65535 behind the Ethernet header.
// nkb_frame_build's largest (payload NKB_MAX_DGRAM, 65507 bytes) is exactly this long, so
// every frame it builds parses back.
#define NKB_MAX_IP_LEN 65535u
#define NKB_MAX_FRAME (NKB_ETH_LEN + NKB_MAX_IP_LEN)
_Static_assert(NKB_MAX_FRAME == NKB_HDR_LEN + 65507u, "the largest built frame parses");

static inline uint16_t nkb_be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

static inline void nkb_put_be16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the checksum reads little-endian words");

uint64_t nkb_csum_add(uint64_t sum, const uint8_t *p, uint32_t len) {
  assert(len <= NKB_MAX_IP_LEN);
  // RFC 1071 sums are byte-order independent: sum the bytes as little-endian words, 8 at
  // a time (2^16 = 1 modulo 0xffff, so 32-bit halves add like their 16-bit words), then
  // swap the folded sum into the big-endian order callers add their own words in.
  uint64_t le = 0;
  uint32_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    le += (w & 0xffffffffu) + (w >> 32);  // at most 2^33 each: no overflow within a frame
  }
  for (; i + 2 <= len; i += 2) le += (uint32_t)p[i] | (uint32_t)p[i + 1] << 8;
  if (i < len) le += p[i];
  uint16_t folded = nkb_csum_fold(le);
  return sum + (uint16_t)(folded >> 8 | folded << 8);
}

uint16_t nkb_csum_fold(uint64_t sum) {
  // Four folds take any 64-bit sum down to 16 bits.
  for (uint32_t i = 0; i < 4; i++) sum = (sum & 0xffffu) + (sum >> 16);
  assert(sum <= 0xffffu);
  return (uint16_t)sum;
}

void nkb_tmpl_init(nkb_tmpl_t *t, const uint8_t src_mac[6], const uint8_t dst_mac[6],
                   uint32_t saddr_be, uint32_t daddr_be, uint16_t sport, uint16_t dport,
                   uint8_t ttl, uint8_t tos) {
  assert(t != 0);
  memset(t, 0, sizeof(*t));
  uint8_t *b = t->bytes;
  memcpy(b, dst_mac, 6);
  memcpy(b + 6, src_mac, 6);
  nkb_put_be16(b + 12, 0x0800);
  uint8_t *ip = b + NKB_ETH_LEN;
  ip[0] = 0x45;
  ip[1] = tos;
  nkb_put_be16(ip + 6, 0x4000);  // DF: we never fragment, and the MTU check is ours
  ip[8] = ttl;
  ip[9] = 17;
  memcpy(ip + 12, &saddr_be, 4);
  memcpy(ip + 16, &daddr_be, 4);
  uint8_t *udp = ip + NKB_IP_LEN;
  nkb_put_be16(udp, sport);
  nkb_put_be16(udp + 2, dport);
  // Length, id, checksum are zero here, so these sums cover only the fixed words.
  t->ip_sum = (uint32_t)nkb_csum_add(0, ip, NKB_IP_LEN);
  t->pseudo_sum = (uint32_t)nkb_csum_add(17, ip + 12, 8);
  assert(t->ip_sum != 0);
}

uint32_t nkb_frame_build(uint8_t *frame, const nkb_tmpl_t *t, const uint8_t *payload,
                         uint32_t len, uint16_t ip_id) {
  assert(len <= NKB_MAX_IP_LEN - NKB_IP_LEN - NKB_UDP_LEN);
  memcpy(frame, t->bytes, NKB_HDR_LEN);
  memcpy(frame + NKB_HDR_LEN, payload, len);
  uint8_t *ip = frame + NKB_ETH_LEN;
  uint8_t *udp = ip + NKB_IP_LEN;
  uint16_t ip_len = (uint16_t)(NKB_IP_LEN + NKB_UDP_LEN + len);
  uint16_t udp_len = (uint16_t)(NKB_UDP_LEN + len);
  nkb_put_be16(ip + 2, ip_len);
  nkb_put_be16(ip + 4, ip_id);
  nkb_put_be16(ip + 10, (uint16_t)~nkb_csum_fold((uint64_t)t->ip_sum + ip_len + ip_id));
  nkb_put_be16(udp + 4, udp_len);
  // Pseudo header (addresses, protocol, length) + UDP header + payload.
  uint64_t sum = (uint64_t)t->pseudo_sum + udp_len;
  sum += nkb_be16(udp) + (uint32_t)nkb_be16(udp + 2) + udp_len;
  sum = nkb_csum_add(sum, payload, len);
  uint16_t csum = (uint16_t)~nkb_csum_fold(sum);
  nkb_put_be16(udp + 6, csum == 0 ? 0xffffu : csum);  // 0 would mean "no checksum"
  assert(nkb_csum_fold(nkb_csum_add(0, ip, NKB_IP_LEN)) == 0xffffu);
  assert(NKB_HDR_LEN + len <= NKB_MAX_FRAME);
  return NKB_HDR_LEN + len;
}

// A peer's kernel with checksum offload (veth) hands over frames whose UDP checksum
// field holds only the folded pseudo-header sum: accept that form as well.
static nkb_drop_t nkb_udp_csum_check(const uint8_t *ip, const uint8_t *udp, uint16_t udp_len) {
  uint16_t field = nkb_be16(udp + 6);
  if (field == 0) return NKB_FRAME_OK;
  uint64_t pseudo = nkb_csum_add(17u + udp_len, ip + 12, 8);
  uint64_t full = nkb_csum_add(pseudo, udp, udp_len);
  if (nkb_csum_fold(full) == 0xffffu) return NKB_FRAME_OK;
  if (field == nkb_csum_fold(pseudo)) return NKB_FRAME_OK;
  return NKB_DROP_UDP_CSUM;
}

nkb_drop_t nkb_frame_parse(const uint8_t *frame, uint32_t len, nkb_parsed_t *out) {
  assert(out != 0);
  if (len < NKB_HDR_LEN || len > NKB_MAX_FRAME) return NKB_DROP_SHORT;
  if (nkb_be16(frame + 12) != 0x0800) return NKB_DROP_NOT_IPV4;
  const uint8_t *ip = frame + NKB_ETH_LEN;
  if ((ip[0] >> 4) != 4) return NKB_DROP_NOT_IPV4;
  if ((ip[0] & 0x0f) != 5) return NKB_DROP_IP_OPTIONS;
  uint16_t ip_len = nkb_be16(ip + 2);
  // Ethernet may pad short frames, so the IP length may be less than what arrived.
  if (ip_len < NKB_IP_LEN + NKB_UDP_LEN || ip_len > len - NKB_ETH_LEN) return NKB_DROP_IP_LEN;
  if (nkb_csum_fold(nkb_csum_add(0, ip, NKB_IP_LEN)) != 0xffffu) return NKB_DROP_IP_CSUM;
  if ((nkb_be16(ip + 6) & 0x3fffu) != 0) return NKB_DROP_FRAGMENT;
  if (ip[9] != 17) return NKB_DROP_NOT_UDP;
  const uint8_t *udp = ip + NKB_IP_LEN;
  uint16_t udp_len = nkb_be16(udp + 4);
  if (udp_len != ip_len - NKB_IP_LEN) return NKB_DROP_UDP_LEN;
  nkb_drop_t csum = nkb_udp_csum_check(ip, udp, udp_len);
  if (csum != NKB_FRAME_OK) return csum;
  memcpy(&out->saddr_be, ip + 12, 4);
  memcpy(&out->daddr_be, ip + 16, 4);
  out->sport = nkb_be16(udp);
  out->dport = nkb_be16(udp + 2);
  out->payload_len = (uint32_t)udp_len - NKB_UDP_LEN;
  assert(out->payload_len + NKB_HDR_LEN <= len);
  return NKB_FRAME_OK;
}
