// Host names to IPv4 addresses, as Deno resolves them: getaddrinfo() without a service,
// every family (Deno takes the first address getaddrinfo ranks, and that may be IPv6),
// no flags but the caller's numeric-only bit. Runs on the caller's thread: the blocking
// binding serves the synchronous calls (bind, connect, listen), the nonblocking one runs
// on Deno's FFI thread pool for send().
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "nkb.h"
#include "sock.h"

_Static_assert(NKB_RESOLVE_HEAD_WORDS == 2u, "header words as documented in nkb.h");

// Walks at most this many results: a hosts file or an answer can list a great many.
#define NKB_RESOLVE_WALK_MAX 256u

int32_t nkb_resolve(const uint8_t *name, uint32_t name_len, uint32_t flags, uint32_t *out,
                    uint32_t out_len) {
  if (name == 0 || name_len == 0 || (flags & ~NKB_RESOLVE_NUMERIC) != 0) return -EINVAL;
  if (name_len > NKB_RESOLVE_NAME_MAX) return -ENAMETOOLONG;
  // A NUL inside would make getaddrinfo see a shorter name than JavaScript gave.
  if (memchr(name, 0, name_len) != 0) return -EINVAL;
  if (!nkb_buf_ok(out, out_len, (NKB_RESOLVE_HEAD_WORDS + 1u) * 4u, 4u)) return -EINVAL;
  uint32_t room = out_len / 4u - NKB_RESOLVE_HEAD_WORDS;
  if (room > NKB_RESOLVE_MAX_ADDRS) room = NKB_RESOLVE_MAX_ADDRS;
  assert(room >= 1u && room <= NKB_RESOLVE_MAX_ADDRS);

  char host[NKB_RESOLVE_NAME_MAX + 1u];
  memcpy(host, name, name_len);
  host[name_len] = 0;
  struct addrinfo hints;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = (flags & NKB_RESOLVE_NUMERIC) != 0 ? AI_NUMERICHOST : 0;
  struct addrinfo *list = 0;
  errno = 0;
  int gai = getaddrinfo(host, 0, &hints, &list);
  if (gai == EAI_SYSTEM) return errno > 0 ? -errno : -EIO;
  if (gai != 0) return NKB_EGAI_BASE + gai;

  // Header: how many results getaddrinfo ranked before the first IPv4 one (all of them
  // when there is none), and how many IPv4 results there were in all.
  uint32_t before_v4 = 0;
  uint32_t v4_total = 0;
  uint32_t written = 0;
  const struct addrinfo *ai = list;
  for (uint32_t i = 0; ai != 0 && i < NKB_RESOLVE_WALK_MAX; i++, ai = ai->ai_next) {
    if (ai->ai_family != AF_INET || ai->ai_addr == 0 ||
        ai->ai_addrlen < (socklen_t)sizeof(struct sockaddr_in)) {
      if (v4_total == 0) before_v4++;
      continue;
    }
    const struct sockaddr_in *sin = (const struct sockaddr_in *)ai->ai_addr;
    if (written < room) out[NKB_RESOLVE_HEAD_WORDS + written++] = sin->sin_addr.s_addr;
    v4_total++;
  }
  freeaddrinfo(list);
  assert(written <= room && written <= v4_total);
  out[0] = before_v4;
  out[1] = v4_total;
  return (int32_t)written;
}
