// What the generic netlink family "netdev" says of an interface (nkb.h):
// - the XDP features its driver reports (nkb_link_xdp_features): NETDEV_CMD_DEV_GET answers
//   with NETDEV_A_DEV_XDP_FEATURES, a u64 of NETDEV_XDP_ACT_* bits. The control plane uses
//   it to know, before binding, whether a driver can do AF_XDP zero-copy;
// - which of its RX queues have an AF_XDP socket bound (nkb_queues_xsk_bound):
//   NETDEV_CMD_QUEUE_GET answers with an empty NETDEV_A_QUEUE_XSK nest while the queue has
//   an XSK buffer pool, the very thing bind refuses with EBUSY. A setup asks it before it
//   builds a UMEM, so a queue whose last socket closed moments ago (the kernel releases it
//   15-25 ms later) costs a query, not a UMEM built and torn down, nor a wait.
//
// Raw NETLINK_GENERIC socket, no libraries. This is not on the data path, so every call
// opens its own socket (in the calling thread's network namespace, which is the one whose
// ifindex is meant), sends at most two requests and closes it; a reply can only belong to
// this call, and sequence numbers are still checked to reject anything stale. Everything
// read from the kernel is length-checked against the datagram before it is read.
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE // socket API under -std=gnu11
#endif

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <linux/genetlink.h>
#include <linux/netlink.h>

#if __has_include(<linux/netdev.h>)
#include <linux/netdev.h>
#else
// UAPI headers before 6.3 lack it (linux-libc-dev 6.1, which a native build on Debian 12
// uses): the values of include/uapi/linux/netdev.h, which are ABI and do not change.
#define NETDEV_FAMILY_NAME "netdev"
#define NETDEV_FAMILY_VERSION 1
enum { NETDEV_XDP_ACT_XSK_ZEROCOPY = 8 };
enum { NETDEV_A_DEV_IFINDEX = 1, NETDEV_A_DEV_PAD = 2, NETDEV_A_DEV_XDP_FEATURES = 3 };
enum { NETDEV_CMD_DEV_GET = 1 };
#endif

#include "netdev_query.h"
#include "nkb.h"
#include "nl_io.h"

// queue-get (Linux 6.8) and its "xsk" attribute (6.15): the values of
// include/uapi/linux/netdev.h, named here because UAPI headers before them lack them. A
// kernel with queue-get but without the attribute never sends it: every queue then reads
// as free, and the bind decides as it did before the query existed.
enum {
  NKB_NETDEV_CMD_QUEUE_GET = 10,
  NKB_NETDEV_A_QUEUE_ID = 1,
  NKB_NETDEV_A_QUEUE_IFINDEX = 2,
  NKB_NETDEV_A_QUEUE_TYPE = 3,
  NKB_NETDEV_A_QUEUE_XSK = 7,
  NKB_NETDEV_QUEUE_TYPE_RX = 0,
};

// The UAPI NLA_* macros compute in int; nl_io.h's keep all length arithmetic unsigned.
_Static_assert(sizeof(struct nlattr) == 4, "attributes start right after a 4-byte header");
_Static_assert(NETDEV_XDP_ACT_XSK_ZEROCOPY == 1u << 3, "the zero-copy bit nkb.h documents");
_Static_assert(GENL_HDRLEN == 4, "the genetlink header is cmd, version and 2 reserved bytes");

// The kernel builds both replies in one NLMSG_GOODSIZE skb (at most 8 KiB); 16 KiB leaves
// room, and anything larger comes back from nkb_nlio_recv as -EMSGSIZE, never truncated.
#define XF_BUF_SIZE 16384u
// A request gets one reply datagram and then its ack; the rest is slack for stale
// messages, which are skipped, so a misbehaving peer cannot keep the loop going.
#define XF_RECV_MAX 8u
// A request is a netlink header, a genetlink header and at most three attributes of 4 bytes
// (a queue-get: 44 bytes).
#define XF_REQ_SIZE 64u
// Attribute table length, enough for both families' attributes of interest.
#define XF_TB_LEN 16u
_Static_assert(CTRL_ATTR_FAMILY_NAME < XF_TB_LEN && CTRL_ATTR_FAMILY_ID < XF_TB_LEN,
               "the table indexes the control family's attributes");
_Static_assert(NETDEV_A_DEV_XDP_FEATURES < XF_TB_LEN && NETDEV_A_DEV_IFINDEX < XF_TB_LEN,
               "the table indexes the netdev family's attributes");
_Static_assert(NKB_NETDEV_A_QUEUE_XSK < XF_TB_LEN && NKB_NETDEV_A_QUEUE_IFINDEX < XF_TB_LEN,
               "the table indexes the queue attributes");
// Any other values would do: the socket is private to one call. Two, so a late answer to
// the first request cannot be taken for one to the second.
#define XF_SEQ_FAMILY 0x6e6b7801u
#define XF_SEQ_DEV 0x6e6b7802u
// Queue q's request: its own sequence number, so an answer about another queue is skipped.
#define XF_SEQ_QUEUE 0x6e6b7900u
// The version of the genetlink controller's own protocol (net/netlink/genetlink.c,
// genl_ctrl.version); the UAPI header does not name it. The kernel does not check it.
#define XF_CTRL_VERSION 2u
// Returned by the message walk once the ack (or NLMSG_DONE) ends the transaction.
#define XF_STOP 1
_Static_assert(sizeof(NETDEV_FAMILY_NAME) <= GENL_NAMSIZ, "the family name, NUL included");

// The id the controller assigned to "netdev", 0 until resolved. Family ids are global (not
// per network namespace), and "netdev" is built into the core (net/core/netdev-genl.c),
// never unregistered, so a resolved id cannot go stale. Relaxed atomics: the value is
// self-contained, and two threads resolving at once store the same id.
static uint16_t g_netdev_family;

typedef union xf_req {
  struct nlmsghdr hdr;
  uint8_t buf[XF_REQ_SIZE];
} xf_req_t;

typedef union xf_rxbuf {
  struct nlmsghdr hdr; // alignment for the messages read in place
  uint8_t buf[XF_BUF_SIZE];
} xf_rxbuf_t;

// Called with the attributes of the reply; 0 or -errno.
typedef int32_t (*xf_reply_fn)(const struct nlattr *const *tb, void *ctx);

typedef struct xf_walk {
  uint32_t seq;
  uint16_t type; // the family of the request, which its reply carries
  uint8_t cmd;   // the command the reply carries
  xf_reply_fn fn;
  void *ctx;
  bool replied;
} xf_walk_t;

// ---- requests ----------------------------------------------------------------------

static const struct nlmsghdr *xf_req_init(xf_req_t *req, uint16_t type, uint32_t seq,
                                          uint8_t cmd, uint8_t version, uint16_t attr_type,
                                          const void *data, uint16_t len) {
  assert(type >= NLMSG_MIN_TYPE);
  assert(data != NULL);
  uint32_t attr_off = NLMSG_HDRLEN + GENL_HDRLEN;
  assert(attr_off + NKB_NL_ALIGN4(NKB_NL_ATTR_HDRLEN + (uint32_t)len) <= XF_REQ_SIZE);
  memset(req, 0, sizeof(*req));
  struct nlmsghdr *h = &req->hdr;
  h->nlmsg_type = type;
  h->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK; // the ack ends the transaction, even on error
  h->nlmsg_seq = seq;
  h->nlmsg_pid = 0; // the kernel fills in our port id
  struct genlmsghdr g = {.cmd = cmd, .version = version, .reserved = 0};
  memcpy(req->buf + NLMSG_HDRLEN, &g, sizeof(g));
  struct nlattr a = {.nla_len = (uint16_t)(NKB_NL_ATTR_HDRLEN + len), .nla_type = attr_type};
  memcpy(req->buf + attr_off, &a, sizeof(a));
  memcpy(req->buf + attr_off + NKB_NL_ATTR_HDRLEN, data, len);
  h->nlmsg_len = attr_off + NKB_NL_ALIGN4(a.nla_len);
  assert(h->nlmsg_len <= XF_REQ_SIZE);
  return h;
}

// Appends a u32 attribute to the request req->hdr (which must have room).
static void xf_req_put_u32(xf_req_t *req, uint16_t attr_type, uint32_t value) {
  uint32_t off = req->hdr.nlmsg_len;
  assert(off % 4u == 0);
  assert(off + NKB_NL_ATTR_HDRLEN + sizeof(value) <= XF_REQ_SIZE);
  struct nlattr a = {.nla_len = (uint16_t)(NKB_NL_ATTR_HDRLEN + sizeof(value)),
                     .nla_type = attr_type};
  memcpy(req->buf + off, &a, sizeof(a));
  memcpy(req->buf + off + NKB_NL_ATTR_HDRLEN, &value, sizeof(value));
  req->hdr.nlmsg_len = off + NKB_NL_ALIGN4(a.nla_len);
  assert(req->hdr.nlmsg_len <= XF_REQ_SIZE);
}

// ---- attributes --------------------------------------------------------------------

// Copies the first n bytes of attribute a's payload to out; -EPROTO when a is absent or
// shorter. memcpy, as a u64 after a 4-byte header need not be 8-byte aligned.
static int32_t xf_attr_get(const struct nlattr *a, void *out, uint32_t n) {
  assert(out != NULL);
  assert(n > 0 && n <= sizeof(uint64_t));
  if (a == NULL || nkb_nlio_attr_len(a) < n) return -EPROTO;
  memcpy(out, nkb_nlio_attr_data(a), n);
  return 0;
}

// ---- reply walking -----------------------------------------------------------------

// One message addressed to our request: its genetlink header, then its attributes.
static int32_t xf_reply(xf_walk_t *w, const struct nlmsghdr *h) {
  assert(h->nlmsg_type == w->type);
  assert(h->nlmsg_len >= NLMSG_HDRLEN);
  if (h->nlmsg_len < NLMSG_HDRLEN + GENL_HDRLEN) return -EPROTO;
  struct genlmsghdr g;
  memcpy(&g, (const uint8_t *)h + NLMSG_HDRLEN, sizeof(g));
  if (g.cmd != w->cmd) return 0; // not the answer this request asked for
  const struct nlattr *tb[XF_TB_LEN];
  const uint8_t *attrs = (const uint8_t *)h + NLMSG_HDRLEN + GENL_HDRLEN;
  int32_t rc =
      nkb_nlio_attrs_parse(attrs, h->nlmsg_len - NLMSG_HDRLEN - GENL_HDRLEN, tb, XF_TB_LEN);
  if (rc < 0) return rc;
  // A second answer to a request that has one would be a kernel bug; refuse to pick one.
  if (w->replied) return -EPROTO;
  rc = w->fn(tb, w->ctx);
  if (rc < 0) return rc;
  assert(rc == 0);
  w->replied = true;
  return 0;
}

static int32_t xf_msg(const struct nlmsghdr *h, void *vw) {
  xf_walk_t *w = vw;
  assert(h->nlmsg_len >= NLMSG_HDRLEN);
  assert(w->fn != NULL);
  if (h->nlmsg_seq != w->seq) return 0; // not an answer to our request
  int32_t err = 0;
  switch (h->nlmsg_type) {
    case NLMSG_NOOP: return 0;
    case NLMSG_ERROR:
      // An error message must carry its status; a short or out-of-range one is malformed.
      if (nkb_nlio_status(h, &err) != 1) return -EPROTO;
      if (err == 0) return XF_STOP; // the ack that ends the request
      assert(err < 0);
      return err;
    case NLMSG_DONE: return XF_STOP; // not sent for a non-dump request; ends it all the same
    case NLMSG_OVERRUN: return -EOVERFLOW;
    default: break;
  }
  if (h->nlmsg_type != w->type) return 0; // reserved control types, or not our family
  return xf_reply(w, h);
}

// Sends req on fd and feeds the attributes of its reply (type w->type, command w->cmd) to
// w->fn, up to the ack. 0 once both came, the kernel's -errno, or -EPROTO when the kernel
// acked without answering.
static int32_t xf_transact(int32_t fd, const struct nlmsghdr *req, xf_walk_t *w) {
  assert(fd >= 0);
  assert(req->nlmsg_seq == w->seq && req->nlmsg_type == w->type);
  assert(!w->replied);
  int32_t rc = nkb_nlio_send(fd, req);
  if (rc < 0) return rc;
  xf_rxbuf_t rx;
  rc = -EOVERFLOW; // XF_RECV_MAX datagrams without the ack: give up
  for (uint32_t i = 0; i < XF_RECV_MAX; i++) {
    int32_t n = nkb_nlio_recv(fd, rx.buf, sizeof(rx.buf));
    if (n < 0) return n;
    rc = nkb_nlio_each(rx.buf, (uint32_t)n, xf_msg, w);
    if (rc != 0) break;
    rc = -EOVERFLOW;
  }
  if (rc != XF_STOP) {
    assert(rc < 0);
    return rc;
  }
  return w->replied ? 0 : -EPROTO;
}

// ---- the two requests --------------------------------------------------------------

static int32_t xf_family_on_reply(const struct nlattr *const *tb, void *ctx) {
  uint16_t *id = ctx;
  assert(id != NULL && *id == 0);
  // The controller answers for the name asked; check it anyway, since the id is cached.
  const struct nlattr *a = tb[CTRL_ATTR_FAMILY_NAME];
  if (a == NULL || nkb_nlio_attr_len(a) != sizeof(NETDEV_FAMILY_NAME)) return -EPROTO;
  const uint8_t *name = nkb_nlio_attr_data(a); // length checked just above
  if (memcmp(name, NETDEV_FAMILY_NAME, sizeof(NETDEV_FAMILY_NAME)) != 0) return -EPROTO;
  uint16_t got = 0;
  if (xf_attr_get(tb[CTRL_ATTR_FAMILY_ID], &got, sizeof(got)) < 0) return -EPROTO;
  // Dynamic ids start above GENL_ID_CTRL; anything at or below is not a family to query.
  if (got <= GENL_ID_CTRL) return -EPROTO;
  *id = got;
  assert(*id > GENL_ID_CTRL);
  return 0;
}

// The id of "netdev": cached, else asked of the controller (CTRL_CMD_GETFAMILY).
// -EOPNOTSUPP when the kernel has no such family (before 6.3, or built without it).
static int32_t xf_family(int32_t fd, uint16_t *id) {
  assert(fd >= 0);
  assert(id != NULL);
  *id = __atomic_load_n(&g_netdev_family, __ATOMIC_RELAXED);
  if (*id != 0) return 0;
  xf_req_t req;
  const struct nlmsghdr *h =
      xf_req_init(&req, GENL_ID_CTRL, XF_SEQ_FAMILY, CTRL_CMD_GETFAMILY, XF_CTRL_VERSION,
                  CTRL_ATTR_FAMILY_NAME, NETDEV_FAMILY_NAME, sizeof(NETDEV_FAMILY_NAME));
  xf_walk_t w = {.seq = XF_SEQ_FAMILY, .type = GENL_ID_CTRL, .cmd = CTRL_CMD_NEWFAMILY,
                 .fn = xf_family_on_reply, .ctx = id, .replied = false};
  int32_t rc = xf_transact(fd, h, &w);
  // ctrl_getfamily answers -ENOENT for a name it does not know.
  if (rc == -ENOENT) return -EOPNOTSUPP;
  if (rc < 0) return rc;
  assert(*id > GENL_ID_CTRL);
  __atomic_store_n(&g_netdev_family, *id, __ATOMIC_RELAXED);
  return 0;
}

typedef struct xf_dev_ctx {
  uint32_t ifindex;
  uint64_t features;
} xf_dev_ctx_t;

static int32_t xf_dev_on_reply(const struct nlattr *const *tb, void *vctx) {
  xf_dev_ctx_t *ctx = vctx;
  assert(ctx != NULL);
  assert(ctx->ifindex != 0 && ctx->features == 0);
  uint32_t ifindex = 0;
  if (xf_attr_get(tb[NETDEV_A_DEV_IFINDEX], &ifindex, sizeof(ifindex)) < 0) return -EPROTO;
  if (ifindex != ctx->ifindex) return -EPROTO; // an answer about another interface
  // Every kernel with the family sends it (netdev_nl_dev_fill); absent means malformed.
  // All 64 bits pass through: bits newer than NETDEV_XDP_ACT_MASK are the caller's to read.
  if (xf_attr_get(tb[NETDEV_A_DEV_XDP_FEATURES], &ctx->features, sizeof(ctx->features)) < 0) {
    return -EPROTO;
  }
  return 0;
}

int32_t nkb_link_xdp_features(uint32_t ifindex, uint64_t *out1, uint32_t out_len) {
  // A buffer from JavaScript: the length it really has, aligned for the u64 written.
  if (out1 == NULL || out_len < sizeof(*out1) || ((uintptr_t)out1 & 7u) != 0) return -EINVAL;
  *out1 = 0; // nothing stale for a caller that reads it after a failure
  // No interface has index 0; the kernel's policy (NLA_POLICY_MIN 1) would say -ERANGE.
  if (ifindex == 0) return -ENOENT;
  int32_t fd = nkb_nlio_open(NETLINK_GENERIC);
  if (fd < 0) return fd;
  uint16_t family = 0;
  int32_t rc = xf_family(fd, &family);
  xf_dev_ctx_t ctx = {.ifindex = ifindex, .features = 0};
  if (rc == 0) {
    assert(family > GENL_ID_CTRL);
    xf_req_t req;
    const struct nlmsghdr *h =
        xf_req_init(&req, family, XF_SEQ_DEV, NETDEV_CMD_DEV_GET, NETDEV_FAMILY_VERSION,
                    NETDEV_A_DEV_IFINDEX, &ifindex, sizeof(ifindex));
    xf_walk_t w = {.seq = XF_SEQ_DEV, .type = family, .cmd = NETDEV_CMD_DEV_GET,
                   .fn = xf_dev_on_reply, .ctx = &ctx, .replied = false};
    rc = xf_transact(fd, h, &w);
  }
  // Nothing useful to do if close fails on a socket we only read from.
  (void)close(fd);
  // netdev_nl_dev_get_doit says -ENODEV for an ifindex it cannot find in the namespace;
  // nkb.h promises -ENOENT for "no such interface", like the rtnetlink lookups.
  if (rc == -ENODEV) return -ENOENT;
  if (rc < 0) return rc;
  assert(rc == 0);
  *out1 = ctx.features;
  return 0;
}

typedef struct xf_queue_ctx {
  uint32_t ifindex;
  uint32_t queue;
  bool bound;
} xf_queue_ctx_t;

static int32_t xf_queue_on_reply(const struct nlattr *const *tb, void *vctx) {
  xf_queue_ctx_t *ctx = vctx;
  assert(ctx != NULL && ctx->ifindex != 0);
  assert(!ctx->bound);
  uint32_t ifindex = 0, queue = 0, type = 0;
  if (xf_attr_get(tb[NKB_NETDEV_A_QUEUE_IFINDEX], &ifindex, sizeof(ifindex)) < 0 ||
      xf_attr_get(tb[NKB_NETDEV_A_QUEUE_ID], &queue, sizeof(queue)) < 0 ||
      xf_attr_get(tb[NKB_NETDEV_A_QUEUE_TYPE], &type, sizeof(type)) < 0) {
    return -EPROTO;
  }
  // An answer about another queue or interface, or a TX queue: not the one asked about.
  if (ifindex != ctx->ifindex || queue != ctx->queue || type != NKB_NETDEV_QUEUE_TYPE_RX) {
    return -EPROTO;
  }
  ctx->bound = tb[NKB_NETDEV_A_QUEUE_XSK] != NULL;  // an empty nest: present or not
  return 0;
}

int32_t nkb_queues_xsk_bound(uint32_t ifindex, uint32_t first_queue, uint32_t queue_count) {
  if (ifindex == 0) return -ENOENT;
  if (queue_count == 0 || queue_count > NKB_MAX_QUEUES) return -EINVAL;
  if (first_queue > UINT32_MAX - queue_count) return -EINVAL;
  int32_t fd = nkb_nlio_open(NETLINK_GENERIC);
  if (fd < 0) return fd;
  uint16_t family = 0;
  int32_t rc = xf_family(fd, &family);
  int32_t bound = 0;  // bit i: queue first_queue + i
  for (uint32_t i = 0; rc == 0 && i < queue_count; i++) {  // bounded: NKB_MAX_QUEUES
    assert(family > GENL_ID_CTRL);
    const uint32_t q = first_queue + i;
    const uint32_t seq = XF_SEQ_QUEUE + i;
    xf_req_t req;
    uint32_t rx = NKB_NETDEV_QUEUE_TYPE_RX;
    (void)xf_req_init(&req, family, seq, NKB_NETDEV_CMD_QUEUE_GET, NETDEV_FAMILY_VERSION,
                      NKB_NETDEV_A_QUEUE_IFINDEX, &ifindex, sizeof(ifindex));
    xf_req_put_u32(&req, NKB_NETDEV_A_QUEUE_TYPE, rx);
    xf_req_put_u32(&req, NKB_NETDEV_A_QUEUE_ID, q);
    xf_queue_ctx_t ctx = {.ifindex = ifindex, .queue = q, .bound = false};
    xf_walk_t w = {.seq = seq, .type = family, .cmd = NKB_NETDEV_CMD_QUEUE_GET,
                   .fn = xf_queue_on_reply, .ctx = &ctx, .replied = false};
    rc = xf_transact(fd, &req.hdr, &w);
    if (rc == 0 && ctx.bound) bound |= (int32_t)(1u << i);
  }
  (void)close(fd);  // read only: nothing to report
  if (rc == -ENODEV) return -ENOENT;
  // Before 6.8 the family has no queue-get: the genetlink core answers -EOPNOTSUPP.
  if (rc < 0) return rc;
  assert(bound >= 0 && (uint32_t)bound < (1u << queue_count));
  return bound;
}
