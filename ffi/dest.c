// The destination header cache of a socket: per destination, whether it goes through
// the ring (with its prebuilt Ethernet/IPv4/UDP header) or the kernel, until it expires.
// The control plane fills it (nkb_dest_set); the send path reads it (nkb_dest_find).
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "core.h"

static uint32_t nkb_dest_hash(uint32_t daddr_be, uint32_t dport) {
  uint32_t x = daddr_be ^ (dport * 2654435761u);
  x ^= x >> 15;
  return x * 2246822519u;
}

int32_t nkb_dest_set(int32_t h, uint32_t daddr_be, uint32_t dport, uint32_t kind,
                     const uint8_t *macs12, uint32_t macs_len, uint32_t saddr_be,
                     uint32_t ttl_ms) {
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0) return -EBADF;
  if (dport == 0 || dport > 65535u) return -EINVAL;
  if (kind != NKB_DEST_BYPASS && kind != NKB_DEST_KERNEL) return -EINVAL;
  if (kind == NKB_DEST_BYPASS && (!nkb_buf_ok(macs12, macs_len, 12u, 1u) || s->eng == 0)) {
    return -EINVAL;
  }
  struct sockaddr_in local;
  socklen_t local_len = sizeof(local);
  if (getsockname(s->fd, (struct sockaddr *)&local, &local_len) != 0) return -errno;
  uint32_t base = nkb_dest_hash(daddr_be, dport);
  nkb_dest_t *slot = &s->dest[base & (NKB_DEST_SLOTS - 1u)];  // evicted when every probe is taken
  for (uint32_t i = 0; i < NKB_DEST_PROBES; i++) {
    nkb_dest_t *d = &s->dest[(base + i) & (NKB_DEST_SLOTS - 1u)];
    if (d->kind == 0 || (d->daddr_be == daddr_be && d->dport == dport)) {
      slot = d;
      break;
    }
  }
  memset(slot, 0, sizeof(*slot));
  slot->daddr_be = daddr_be;
  slot->dport = (uint16_t)dport;
  slot->expires_ns = ttl_ms == 0 ? UINT64_MAX : nkb_now_ns() + (uint64_t)ttl_ms * 1000000ull;
  if (kind == NKB_DEST_BYPASS) {
    bool mcast = (ntohl(daddr_be) >> 28) == 0xe;
    nkb_tmpl_init(&slot->tmpl, macs12 + 6, macs12, saddr_be, daddr_be, ntohs(local.sin_port),
                  (uint16_t)dport, mcast ? s->mcast_ttl : s->ttl, s->tos);
  }
  slot->kind = (uint8_t)kind;
  return 0;
}

nkb_dest_t *nkb_dest_find(nkb_sock_t *s, uint32_t daddr_be, uint32_t dport) {
  uint32_t base = nkb_dest_hash(daddr_be, dport);
  for (uint32_t i = 0; i < NKB_DEST_PROBES; i++) {
    nkb_dest_t *d = &s->dest[(base + i) & (NKB_DEST_SLOTS - 1u)];
    if (d->kind != 0 && d->daddr_be == daddr_be && d->dport == dport) return d;
  }
  return 0;
}

int32_t nkb_dest_clear(int32_t h) {
  nkb_sock_t *s = nkb_sock_get(h);
  if (s == 0) return -EBADF;
  memset(s->dest, 0, sizeof(s->dest));
  assert(s->dest[0].kind == 0);
  return 0;
}

