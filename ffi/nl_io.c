// Netlink socket plumbing (see nl_io.h). Raw syscalls, no libraries.
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE // struct timeval, socket API under -std=c11
#endif

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <linux/netlink.h>

#include "nl_io.h"

// Retries of a syscall interrupted by a signal (EINTR) before giving up.
#define NLIO_EINTR_MAX 8u
// No call may hang on a kernel that never answers.
#define NLIO_TIMEOUT_S 1
// The kernel reports -errno, and errno values stop at 4095 (MAX_ERRNO).
#define NLIO_ERRNO_MAX 4095

int32_t nkb_nlio_each(const void *buf, uint32_t len, nkb_nlio_msg_fn fn, void *ctx) {
  assert(buf != NULL || len == 0);
  assert(fn != NULL);
  const uint8_t *p = buf;
  uint32_t off = 0;
  // Each message takes at least its header: len / header + 1 rounds reach the end.
  for (uint32_t i = 0; i <= len / NLMSG_HDRLEN; i++) {
    if (off == len) return 0;
    if (len - off < NLMSG_HDRLEN) return -EPROTO;
    const struct nlmsghdr *h = (const struct nlmsghdr *)(p + off);
    if (h->nlmsg_len < NLMSG_HDRLEN || h->nlmsg_len > len - off) return -EPROTO;
    int32_t rc = fn(h, ctx);
    if (rc != 0) return rc;
    off += NLMSG_ALIGN(h->nlmsg_len);
    if (off > len) off = len; // the last message may lack its padding
    assert(off <= len);
  }
  return -EPROTO;
}

int32_t nkb_nlio_attrs_parse(const uint8_t *p, uint32_t len, const struct nlattr **tb,
                             uint32_t tb_len) {
  assert(p != NULL || len == 0);
  assert(tb != NULL && tb_len > 0);
  memset(tb, 0, tb_len * sizeof(*tb));
  const uint32_t type_mask = (uint32_t)(uint16_t)~(NLA_F_NESTED | NLA_F_NET_BYTEORDER);
  uint32_t off = 0;
  // Each attribute takes at least its header: len / header + 1 rounds reach the end.
  for (uint32_t i = 0; i <= len / NKB_NL_ATTR_HDRLEN; i++) {
    if (off == len) return 0;
    if (len - off < NKB_NL_ATTR_HDRLEN) return -EPROTO;
    const struct nlattr *a = (const struct nlattr *)(p + off);
    if (a->nla_len < NKB_NL_ATTR_HDRLEN || a->nla_len > len - off) return -EPROTO;
    uint32_t type = a->nla_type & type_mask;
    if (type < tb_len) tb[type] = a;
    off += NKB_NL_ALIGN4(a->nla_len);
    if (off > len) off = len;  // the last attribute may lack its padding
    assert(off <= len);
  }
  return -EPROTO;
}

const uint8_t *nkb_nlio_attr_data(const struct nlattr *a) {
  assert(a != NULL);
  assert(a->nla_len >= NKB_NL_ATTR_HDRLEN);
  return (const uint8_t *)a + NKB_NL_ATTR_HDRLEN;
}

uint32_t nkb_nlio_attr_len(const struct nlattr *a) {
  assert(a != NULL);
  assert(a->nla_len >= NKB_NL_ATTR_HDRLEN);
  return (uint32_t)a->nla_len - NKB_NL_ATTR_HDRLEN;
}

int32_t nkb_nlio_open(int32_t protocol) {
  assert(protocol >= 0);
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol);
  if (fd < 0) return -(int32_t)errno;
  assert(fd >= 0);
  struct timeval tv = {.tv_sec = NLIO_TIMEOUT_S, .tv_usec = 0};
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0) {
    int32_t err = -(int32_t)errno;
    (void)close(fd); // already failing: the setsockopt error is the one to report
    assert(err < 0);
    return err;
  }
  return (int32_t)fd;
}

int32_t nkb_nlio_send(int32_t fd, const struct nlmsghdr *h) {
  assert(fd >= 0);
  assert(h != NULL);
  assert(h->nlmsg_len >= NLMSG_HDRLEN);
  struct sockaddr_nl to = {.nl_family = AF_NETLINK}; // nl_pid 0: the kernel
  for (uint32_t attempt = 0; attempt < NLIO_EINTR_MAX; attempt++) {
    ssize_t n = sendto(fd, h, h->nlmsg_len, 0, (const struct sockaddr *)&to, sizeof(to));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -(int32_t)errno;
    // Netlink datagrams are all or nothing; a short count means something is off.
    if ((size_t)n != h->nlmsg_len) return -EIO;
    return 0;
  }
  return -EINTR;
}

int32_t nkb_nlio_recv(int32_t fd, void *buf, uint32_t cap) {
  assert(fd >= 0);
  assert(buf != NULL);
  assert(cap >= NLMSG_HDRLEN && cap <= INT32_MAX); // the length is returned as int32
  for (uint32_t attempt = 0; attempt < NLIO_EINTR_MAX; attempt++) {
    struct sockaddr_nl from;
    memset(&from, 0, sizeof(from));
    struct iovec iov = {.iov_base = buf, .iov_len = cap};
    struct msghdr msg = {
        .msg_name = &from, .msg_namelen = sizeof(from), .msg_iov = &iov, .msg_iovlen = 1};
    // MSG_TRUNC makes the kernel report the real size, so truncation is detectable.
    ssize_t n = recvmsg(fd, &msg, MSG_TRUNC);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return -ETIMEDOUT;
    if (n < 0) return -(int32_t)errno;
    if ((msg.msg_flags & MSG_TRUNC) != 0 || (size_t)n > cap) return -EMSGSIZE;
    // Other processes may unicast to our port; only the kernel's word counts.
    if (msg.msg_namelen < sizeof(from) || from.nl_family != AF_NETLINK || from.nl_pid != 0) {
      continue;
    }
    assert((size_t)n <= cap);
    return (int32_t)n;
  }
  return -EAGAIN;
}

int32_t nkb_nlio_status(const struct nlmsghdr *h, int32_t *status) {
  assert(h != NULL);
  assert(h->nlmsg_type == NLMSG_ERROR || h->nlmsg_type == NLMSG_DONE);
  assert(status != NULL);
  *status = 0;
  // A DONE without payload is legal (old kernels); callers decide what a short ERROR means.
  if (h->nlmsg_len < NLMSG_HDRLEN + sizeof(int32_t)) return 0;
  int32_t err = 0;
  memcpy(&err, NLMSG_DATA(h), sizeof(err));
  if (err > 0 || err < -NLIO_ERRNO_MAX) return -EPROTO;
  *status = err;
  assert(*status <= 0);
  return 1;
}
