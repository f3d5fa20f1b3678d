// Ethernet/IPv4/UDP frames: header templates built once per destination and
// patched per datagram, and full validation of every frame read from a ring.
#ifndef NKB_FRAME_H
#define NKB_FRAME_H

#include <stdint.h>

#define NKB_ETH_LEN 14u
#define NKB_IP_LEN 20u
#define NKB_UDP_LEN 8u
#define NKB_HDR_LEN 42u  // what precedes the payload in every frame we build or accept

// Why a frame handed to us by the filter was not delivered. Counted, never fatal.
typedef enum nkb_drop {
  NKB_FRAME_OK = 0,
  NKB_DROP_SHORT = 1,        // shorter than its own headers say
  NKB_DROP_NOT_IPV4 = 2,
  NKB_DROP_IP_OPTIONS = 3,   // the filter passes these to the kernel; seeing one is a bug
  NKB_DROP_IP_LEN = 4,       // total length disagrees with the frame
  NKB_DROP_IP_CSUM = 5,
  NKB_DROP_FRAGMENT = 6,
  NKB_DROP_NOT_UDP = 7,
  NKB_DROP_UDP_LEN = 8,      // UDP length disagrees with the IP length
  NKB_DROP_UDP_CSUM = 9,
  NKB_DROP_REASONS = 10,
} nkb_drop_t;

typedef struct nkb_parsed {
  uint32_t saddr_be;
  uint32_t daddr_be;
  uint16_t sport;        // host order
  uint16_t dport;        // host order
  uint32_t payload_len;  // payload starts at NKB_HDR_LEN
} nkb_parsed_t;

typedef struct nkb_tmpl {
  uint8_t bytes[NKB_HDR_LEN];
  uint16_t reserved;
  uint32_t ip_sum;       // partial one's-complement sum of the fixed IPv4 header words
  uint32_t pseudo_sum;   // partial sum of the pseudo header without the length
} nkb_tmpl_t;

void nkb_tmpl_init(nkb_tmpl_t *t, const uint8_t src_mac[6], const uint8_t dst_mac[6],
                   uint32_t saddr_be, uint32_t daddr_be, uint16_t sport, uint16_t dport,
                   uint8_t ttl, uint8_t tos);
// Writes template + payload into frame (room for NKB_HDR_LEN + len bytes), fills in
// lengths, the IPv4 header checksum and the UDP checksum. Returns the frame length.
uint32_t nkb_frame_build(uint8_t *frame, const nkb_tmpl_t *t, const uint8_t *payload,
                         uint32_t len, uint16_t ip_id);
nkb_drop_t nkb_frame_parse(const uint8_t *frame, uint32_t len, nkb_parsed_t *out);
// One's-complement sum of len bytes added to sum (not folded).
uint64_t nkb_csum_add(uint64_t sum, const uint8_t *p, uint32_t len);
uint16_t nkb_csum_fold(uint64_t sum);

#endif
