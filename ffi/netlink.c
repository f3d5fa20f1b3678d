// rtnetlink lookups for the control plane (routes, links, addresses, neighbours).
//
// Raw NETLINK_ROUTE sockets, no libraries. Each public call opens its own socket,
// sends one request and closes the socket, so a reply can only belong to that
// request; sequence numbers are still checked to reject anything stale.
// Everything read from the kernel is length-checked before use.
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE // socket API under -std=c11
#endif

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#include "nkb_net.h"
#include "nl_io.h"

// The UAPI NLA_* macros compute in int; nl_io.h's keep all length arithmetic unsigned.
_Static_assert(sizeof(struct nlattr) == 4, "attributes start right after a 4-byte header");

// One datagram of a dump is at most a page or two; 32 KiB leaves room for big links.
#define NL_BUF_SIZE 32768u
// Bounds a dump: 1024 datagrams of up to 32 KiB is far beyond any sane host.
#define NL_RECV_MAX 1024u
// Requests are a header, a family header and one or two small attributes.
#define NL_REQ_SIZE 256u
// Retries of a dump the kernel flagged as inconsistent (NLM_F_DUMP_INTR).
#define NL_DUMP_TRIES 4u
// Any other value would do: the socket is private to one request.
#define NL_SEQ 0x6e6b6201u
// Returned by message handlers to end a transaction early (the answer is known).
#define NL_STOP 1

typedef union nl_req {
  struct nlmsghdr hdr;
  uint8_t buf[NL_REQ_SIZE];
} nl_req_t;

typedef union nl_rxbuf {
  struct nlmsghdr hdr; // alignment for the messages read in place
  uint8_t buf[NL_BUF_SIZE];
} nl_rxbuf_t;

// 0: keep reading, NL_STOP: done, <0: -errno.
typedef int32_t (*nl_msg_fn)(const struct nlmsghdr *h, void *ctx);

typedef struct nl_walk {
  nl_msg_fn fn;
  void *ctx;
  uint32_t seq;
  bool dump_intr;
} nl_walk_t;

// ---- requests ----------------------------------------------------------------

static struct nlmsghdr *nl_req_init(nl_req_t *req, uint16_t type, uint16_t flags,
                                    const void *fam, uint32_t fam_len) {
  assert(fam != NULL);
  assert(fam_len > 0 && NLMSG_SPACE(fam_len) <= NL_REQ_SIZE);
  memset(req, 0, sizeof(*req));
  struct nlmsghdr *h = &req->hdr;
  h->nlmsg_len = NLMSG_SPACE(fam_len);
  h->nlmsg_type = type;
  h->nlmsg_flags = flags;
  h->nlmsg_seq = NL_SEQ;
  h->nlmsg_pid = 0; // the kernel fills in our port id
  memcpy(NLMSG_DATA(h), fam, fam_len);
  return h;
}

static void nl_req_attr(nl_req_t *req, uint16_t type, const void *data, uint16_t len) {
  uint32_t off = NLMSG_ALIGN(req->hdr.nlmsg_len);
  assert(data != NULL);
  assert(off + NKB_NL_ALIGN4(NKB_NL_ATTR_HDRLEN + (uint32_t)len) <= NL_REQ_SIZE);
  struct nlattr a = {.nla_len = (uint16_t)(NKB_NL_ATTR_HDRLEN + len), .nla_type = type};
  memcpy(req->buf + off, &a, sizeof(a));
  memcpy(req->buf + off + NKB_NL_ATTR_HDRLEN, data, len);
  req->hdr.nlmsg_len = off + NKB_NL_ALIGN4(a.nla_len);
  assert(req->hdr.nlmsg_len <= NL_REQ_SIZE);
}

// ---- reply walking -------------------------------------------------------------

static int32_t nl_msg_error(const struct nlmsghdr *h) {
  assert(h->nlmsg_type == NLMSG_ERROR);
  int32_t err = 0;
  // An error message must carry its status; a short or out-of-range one is malformed.
  if (nkb_nlio_status(h, &err) != 1) return -EPROTO;
  if (err == 0) return NL_STOP; // the ack that ends a non-dump request
  assert(err < 0);
  return err;
}

static int32_t nl_msg_done(const nl_walk_t *w, const struct nlmsghdr *h) {
  assert(h->nlmsg_type == NLMSG_DONE);
  // The payload, when present and well formed, is the dump's final status.
  int32_t err = 0;
  if (nkb_nlio_status(h, &err) == 1 && err < 0) return err;
  // Reached the end without the handler finding its answer in an inconsistent dump:
  // the answer may have been missed, so the caller retries.
  if (w->dump_intr) return -EAGAIN;
  return NL_STOP;
}

static int32_t nl_msg(const struct nlmsghdr *h, void *vw) {
  nl_walk_t *w = vw;
  assert(h->nlmsg_len >= NLMSG_HDRLEN);
  if (h->nlmsg_seq != w->seq) return 0; // not an answer to our request
  if ((h->nlmsg_flags & NLM_F_DUMP_INTR) != 0) w->dump_intr = true;
  switch (h->nlmsg_type) {
    case NLMSG_NOOP: return 0;
    case NLMSG_ERROR: return nl_msg_error(h);
    case NLMSG_DONE: return nl_msg_done(w, h);
    case NLMSG_OVERRUN: return -EOVERFLOW;
    default: break;
  }
  if (h->nlmsg_type < NLMSG_MIN_TYPE) return 0; // reserved control types
  int32_t rc = w->fn(h, w->ctx);
  assert(rc <= NL_STOP);
  return rc;
}

static int32_t nl_collect(int32_t fd, nl_walk_t *w) {
  assert(fd >= 0);
  assert(w->fn != NULL);
  nl_rxbuf_t rx;
  for (uint32_t i = 0; i < NL_RECV_MAX; i++) {
    int32_t n = nkb_nlio_recv(fd, rx.buf, sizeof(rx.buf));
    if (n < 0) return n;
    int32_t rc = nkb_nlio_each(rx.buf, (uint32_t)n, nl_msg, w);
    if (rc != 0) return rc;
  }
  return -EOVERFLOW;
}

// Sends req and feeds every reply message to fn until the ack, NLMSG_DONE, an error,
// or fn returning NL_STOP. Returns 0 or -errno.
static int32_t nl_transact(const struct nlmsghdr *req, nl_msg_fn fn, void *ctx) {
  assert(req->nlmsg_seq == NL_SEQ);
  assert((req->nlmsg_flags & NLM_F_REQUEST) != 0);
  assert(req->nlmsg_len >= NLMSG_HDRLEN && req->nlmsg_len <= NL_REQ_SIZE);
  int32_t fd = nkb_nlio_open(NETLINK_ROUTE);
  if (fd < 0) return fd;
  nl_walk_t w = {.fn = fn, .ctx = ctx, .seq = req->nlmsg_seq, .dump_intr = false};
  int32_t rc = nkb_nlio_send(fd, req);
  if (rc == 0) rc = nl_collect(fd, &w);
  // Nothing useful to do if close fails on a socket we only read from.
  (void)close(fd);
  if (rc == NL_STOP) rc = 0;
  assert(rc <= 0);
  return rc;
}

// ---- attributes ----------------------------------------------------------------

// Start and length of the attributes that follow a family header of fam_len bytes.
static int32_t nl_payload(const struct nlmsghdr *h, uint32_t fam_len, const uint8_t **attrs,
                          uint32_t *attrs_len) {
  assert(h->nlmsg_len >= NLMSG_HDRLEN);
  assert(fam_len > 0);
  uint32_t start = NLMSG_HDRLEN + NLMSG_ALIGN(fam_len);
  if (h->nlmsg_len < NLMSG_HDRLEN + fam_len) return -EPROTO;
  *attrs = (const uint8_t *)h + start;
  *attrs_len = h->nlmsg_len > start ? h->nlmsg_len - start : 0;
  return 0;
}

// Absent attribute: *out untouched, 0. Short attribute: -EPROTO.
static int32_t nl_attr_u32(const struct nlattr *a, uint32_t *out) {
  assert(out != NULL);
  if (a == NULL) return 0;
  if (nkb_nlio_attr_len(a) < sizeof(uint32_t)) return -EPROTO;
  memcpy(out, nkb_nlio_attr_data(a), sizeof(uint32_t));
  return 0;
}

static int32_t nl_attr_u8(const struct nlattr *a, uint32_t *out) {
  assert(out != NULL);
  if (a == NULL) return 0;
  if (nkb_nlio_attr_len(a) < 1) return -EPROTO;
  *out = nkb_nlio_attr_data(a)[0];
  return 0;
}

// Copies a string attribute, truncated to cap - 1 bytes; out is always NUL terminated.
static void nl_attr_str(const struct nlattr *a, char *out, uint32_t cap) {
  assert(out != NULL);
  assert(cap > 0);
  memset(out, 0, cap);
  if (a == NULL) return;
  const uint8_t *s = nkb_nlio_attr_data(a);
  uint32_t n = nkb_nlio_attr_len(a);
  for (uint32_t i = 0; i < n && i < cap - 1; i++) {
    if (s[i] == 0) break;
    out[i] = (char)s[i];
  }
  assert(out[cap - 1] == 0);
}

// ---- routes ------------------------------------------------------------------------

typedef struct route_ctx {
  nkb_route_t *out;
  bool found;
} route_ctx_t;

static int32_t route_on_msg(const struct nlmsghdr *h, void *vctx) {
  route_ctx_t *ctx = vctx;
  assert(ctx->out != NULL);
  if (h->nlmsg_type != RTM_NEWROUTE) return 0;
  const uint8_t *attrs = NULL;
  uint32_t attrs_len = 0;
  int32_t rc = nl_payload(h, sizeof(struct rtmsg), &attrs, &attrs_len);
  if (rc < 0) return rc;
  struct rtmsg rtm;
  memcpy(&rtm, NLMSG_DATA(h), sizeof(rtm));
  if (rtm.rtm_family != AF_INET) return 0;
  const struct nlattr *tb[RTA_MAX + 1];
  rc = nkb_nlio_attrs_parse(attrs, attrs_len, tb, RTA_MAX + 1);
  if (rc < 0) return rc;
  // An IPv6 next hop (RTA_VIA) cannot be expressed in gateway_be; treating it as
  // "no gateway" would ARP for the destination itself.
  if (tb[RTA_VIA] != NULL) return -EAFNOSUPPORT;
  nkb_route_t r = {.type = rtm.rtm_type};
  if ((rc = nl_attr_u32(tb[RTA_OIF], &r.oif)) < 0) return rc;
  if ((rc = nl_attr_u32(tb[RTA_PREFSRC], &r.prefsrc_be)) < 0) return rc;
  if ((rc = nl_attr_u32(tb[RTA_GATEWAY], &r.gateway_be)) < 0) return rc;
  *ctx->out = r;
  ctx->found = true;
  return 0; // keep reading up to the ack so errors after the reply are not lost
}

int32_t nkb_nl_route_get(uint32_t dst_be, nkb_route_t *out) {
  assert(out != NULL);
  memset(out, 0, sizeof(*out));
  struct rtmsg rtm = {.rtm_family = AF_INET, .rtm_dst_len = 32};
  nl_req_t req;
  const struct nlmsghdr *h = nl_req_init(&req, RTM_GETROUTE, NLM_F_REQUEST | NLM_F_ACK, &rtm,
                                         sizeof(rtm));
  nl_req_attr(&req, RTA_DST, &dst_be, sizeof(dst_be));
  route_ctx_t ctx = {.out = out, .found = false};
  int32_t rc = nl_transact(h, route_on_msg, &ctx);
  if (rc < 0) return rc;
  if (!ctx.found) return -ENOENT; // acked without a route: should not happen
  assert(out->type != 0);
  return 0;
}

// ---- links ---------------------------------------------------------------------------

typedef struct link_ctx {
  nkb_link_t *out;
  uint32_t ifindex;
  bool found;
} link_ctx_t;

static int32_t link_fill_attrs(nkb_link_t *l, const struct nlattr *const *tb) {
  assert(l != NULL);
  assert(tb != NULL);
  int32_t rc = 0;
  if ((rc = nl_attr_u32(tb[IFLA_MTU], &l->mtu)) < 0) return rc;
  if ((rc = nl_attr_u32(tb[IFLA_NUM_RX_QUEUES], &l->num_rx_queues)) < 0) return rc;
  if ((rc = nl_attr_u32(tb[IFLA_NUM_TX_QUEUES], &l->num_tx_queues)) < 0) return rc;
  if ((rc = nl_attr_u8(tb[IFLA_OPERSTATE], &l->operstate)) < 0) return rc;
  if ((rc = nl_attr_u32(tb[IFLA_MASTER], &l->master_ifindex)) < 0) return rc;
  if (tb[IFLA_ADDRESS] != NULL) {
    uint32_t n = nkb_nlio_attr_len(tb[IFLA_ADDRESS]);
    l->mac_len = n > UINT8_MAX ? UINT8_MAX : (uint8_t)n;
    if (n == sizeof(l->mac)) memcpy(l->mac, nkb_nlio_attr_data(tb[IFLA_ADDRESS]), n);
  }
  nl_attr_str(tb[IFLA_IFNAME], l->name, sizeof(l->name));
  return 0;
}

static int32_t link_fill_kind(nkb_link_t *l, const struct nlattr *linkinfo) {
  assert(l != NULL);
  assert(l->kind[0] == 0);
  if (linkinfo == NULL) return 0; // plain devices (lo, most NICs) have no kind
  const struct nlattr *tb[IFLA_INFO_MAX + 1];
  int32_t rc = nkb_nlio_attrs_parse(nkb_nlio_attr_data(linkinfo), nkb_nlio_attr_len(linkinfo), tb,
                              IFLA_INFO_MAX + 1);
  if (rc < 0) return rc;
  nl_attr_str(tb[IFLA_INFO_KIND], l->kind, sizeof(l->kind));
  return 0;
}

static int32_t link_fill_xdp(nkb_link_t *l, const struct nlattr *xdp) {
  assert(l != NULL);
  assert(l->xdp_prog_id == 0);
  if (xdp == NULL) return 0;
  const struct nlattr *tb[IFLA_XDP_MAX + 1];
  int32_t rc = nkb_nlio_attrs_parse(nkb_nlio_attr_data(xdp), nkb_nlio_attr_len(xdp), tb, IFLA_XDP_MAX + 1);
  if (rc < 0) return rc;
  uint32_t attached = 0;
  if ((rc = nl_attr_u8(tb[IFLA_XDP_ATTACHED], &attached)) < 0) return rc;
  if (attached == XDP_ATTACHED_NONE) return 0;
  if ((rc = nl_attr_u32(tb[IFLA_XDP_PROG_ID], &l->xdp_prog_id)) < 0) return rc;
  // With several modes attached (XDP_ATTACHED_MULTI) there is no IFLA_XDP_PROG_ID,
  // only per-mode ids; any of them means "a program is there".
  if (l->xdp_prog_id == 0) (void)nl_attr_u32(tb[IFLA_XDP_DRV_PROG_ID], &l->xdp_prog_id);
  if (l->xdp_prog_id == 0) (void)nl_attr_u32(tb[IFLA_XDP_SKB_PROG_ID], &l->xdp_prog_id);
  if (l->xdp_prog_id == 0) (void)nl_attr_u32(tb[IFLA_XDP_HW_PROG_ID], &l->xdp_prog_id);
  return 0;
}

static int32_t link_on_msg(const struct nlmsghdr *h, void *vctx) {
  link_ctx_t *ctx = vctx;
  assert(ctx->out != NULL);
  if (h->nlmsg_type != RTM_NEWLINK) return 0;
  const uint8_t *attrs = NULL;
  uint32_t attrs_len = 0;
  int32_t rc = nl_payload(h, sizeof(struct ifinfomsg), &attrs, &attrs_len);
  if (rc < 0) return rc;
  struct ifinfomsg ifi;
  memcpy(&ifi, NLMSG_DATA(h), sizeof(ifi));
  if (ifi.ifi_index <= 0 || (uint32_t)ifi.ifi_index != ctx->ifindex) return 0;
  const struct nlattr *tb[IFLA_MAX + 1];
  rc = nkb_nlio_attrs_parse(attrs, attrs_len, tb, IFLA_MAX + 1);
  if (rc < 0) return rc;
  nkb_link_t l;
  memset(&l, 0, sizeof(l));
  l.ifindex = (uint32_t)ifi.ifi_index;
  l.flags = ifi.ifi_flags;
  l.arptype = ifi.ifi_type;
  l.num_rx_queues = 1; // documented default when the kernel omits the attribute
  l.num_tx_queues = 1;
  if ((rc = link_fill_attrs(&l, tb)) < 0) return rc;
  if ((rc = link_fill_kind(&l, tb[IFLA_LINKINFO])) < 0) return rc;
  if ((rc = link_fill_xdp(&l, tb[IFLA_XDP])) < 0) return rc;
  *ctx->out = l;
  ctx->found = true;
  return 0;
}

int32_t nkb_nl_link_get(uint32_t ifindex, nkb_link_t *out) {
  assert(out != NULL);
  memset(out, 0, sizeof(*out));
  if (ifindex == 0 || ifindex > INT32_MAX) return -EINVAL;
  struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC, .ifi_index = (int32_t)ifindex};
  nl_req_t req;
  const struct nlmsghdr *h = nl_req_init(&req, RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, &ifi,
                                         sizeof(ifi));
  // Statistics are not needed and make up most of the message.
  uint32_t ext_mask = RTEXT_FILTER_SKIP_STATS;
  nl_req_attr(&req, IFLA_EXT_MASK, &ext_mask, sizeof(ext_mask));
  link_ctx_t ctx = {.out = out, .ifindex = ifindex, .found = false};
  int32_t rc = nl_transact(h, link_on_msg, &ctx);
  if (rc < 0) return rc;
  if (!ctx.found) return -ENODEV;
  assert(out->ifindex == ifindex);
  return 0;
}

// ---- addresses -------------------------------------------------------------------------

typedef struct addr_ctx {
  uint32_t want_ip_be;   // match on address (addr_ifindex) ...
  uint32_t want_ifindex; // ... or on interface (addr_first), the other one is 0
  uint32_t found_ip_be;
  uint32_t found_ifindex;
  bool found;
} addr_ctx_t;

static int32_t addr_on_msg(const struct nlmsghdr *h, void *vctx) {
  addr_ctx_t *ctx = vctx;
  assert((ctx->want_ip_be == 0) != (ctx->want_ifindex == 0));
  if (h->nlmsg_type != RTM_NEWADDR) return 0;
  const uint8_t *attrs = NULL;
  uint32_t attrs_len = 0;
  int32_t rc = nl_payload(h, sizeof(struct ifaddrmsg), &attrs, &attrs_len);
  if (rc < 0) return rc;
  struct ifaddrmsg ifa;
  memcpy(&ifa, NLMSG_DATA(h), sizeof(ifa));
  if (ifa.ifa_family != AF_INET) return 0;
  const struct nlattr *tb[IFA_MAX + 1];
  rc = nkb_nlio_attrs_parse(attrs, attrs_len, tb, IFA_MAX + 1);
  if (rc < 0) return rc;
  // IFA_LOCAL is our address; IFA_ADDRESS is the peer on point-to-point links.
  const struct nlattr *a = tb[IFA_LOCAL] != NULL ? tb[IFA_LOCAL] : tb[IFA_ADDRESS];
  if (a == NULL) return 0;
  uint32_t ip_be = 0;
  if ((rc = nl_attr_u32(a, &ip_be)) < 0) return rc;
  if (ctx->want_ip_be != 0 && ip_be != ctx->want_ip_be) return 0;
  if (ctx->want_ifindex != 0 && ifa.ifa_index != ctx->want_ifindex) return 0;
  ctx->found_ip_be = ip_be;
  ctx->found_ifindex = ifa.ifa_index;
  ctx->found = true;
  return NL_STOP; // the rest of the dump is not needed
}

static int32_t addr_dump(addr_ctx_t *ctx) {
  assert(ctx != NULL);
  assert(!ctx->found);
  struct ifaddrmsg ifa = {.ifa_family = AF_INET};
  nl_req_t req;
  const struct nlmsghdr *h = nl_req_init(&req, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, &ifa,
                                         sizeof(ifa));
  int32_t rc = -EAGAIN;
  // A dump racing with address changes is flagged; retry it a few times.
  for (uint32_t i = 0; i < NL_DUMP_TRIES && rc == -EAGAIN; i++) {
    rc = nl_transact(h, addr_on_msg, ctx);
  }
  if (rc < 0) return rc;
  if (!ctx->found) return -ENOENT;
  assert(ctx->found_ifindex != 0);
  return 0;
}

int32_t nkb_nl_addr_ifindex(uint32_t ip_be) {
  if (ip_be == 0) return -EINVAL;
  addr_ctx_t ctx = {.want_ip_be = ip_be};
  int32_t rc = addr_dump(&ctx);
  if (rc < 0) return rc;
  assert(ctx.found);
  assert(ctx.found_ip_be == ip_be);
  if (ctx.found_ifindex > INT32_MAX) return -EPROTO;
  return (int32_t)ctx.found_ifindex;
}

int32_t nkb_nl_addr_first(uint32_t ifindex, uint32_t *out_be) {
  assert(out_be != NULL);
  *out_be = 0;
  if (ifindex == 0) return -EINVAL;
  addr_ctx_t ctx = {.want_ifindex = ifindex};
  int32_t rc = addr_dump(&ctx);
  if (rc < 0) return rc;
  assert(ctx.found_ifindex == ifindex);
  *out_be = ctx.found_ip_be;
  return 0;
}

// ---- neighbours ------------------------------------------------------------------------

typedef struct neigh_ctx {
  uint32_t ifindex;
  uint32_t ip_be;
  uint32_t state;
  uint32_t lladdr_len;
  uint8_t lladdr[6];
  bool found;
  bool has_lladdr;
} neigh_ctx_t;

static int32_t neigh_on_msg(const struct nlmsghdr *h, void *vctx) {
  neigh_ctx_t *ctx = vctx;
  assert(ctx->ifindex != 0);
  if (h->nlmsg_type != RTM_NEWNEIGH) return 0;
  const uint8_t *attrs = NULL;
  uint32_t attrs_len = 0;
  int32_t rc = nl_payload(h, sizeof(struct ndmsg), &attrs, &attrs_len);
  if (rc < 0) return rc;
  struct ndmsg ndm;
  memcpy(&ndm, NLMSG_DATA(h), sizeof(ndm));
  if (ndm.ndm_family != AF_INET || ndm.ndm_ifindex <= 0) return 0;
  if ((uint32_t)ndm.ndm_ifindex != ctx->ifindex) return 0;
  const struct nlattr *tb[NDA_MAX + 1];
  rc = nkb_nlio_attrs_parse(attrs, attrs_len, tb, NDA_MAX + 1);
  if (rc < 0) return rc;
  uint32_t dst_be = 0;
  if ((rc = nl_attr_u32(tb[NDA_DST], &dst_be)) < 0) return rc;
  if (dst_be != ctx->ip_be) return 0;
  ctx->found = true;
  ctx->state = ndm.ndm_state;
  ctx->has_lladdr = tb[NDA_LLADDR] != NULL;
  if (ctx->has_lladdr) {
    ctx->lladdr_len = nkb_nlio_attr_len(tb[NDA_LLADDR]);
    if (ctx->lladdr_len == sizeof(ctx->lladdr)) {
      memcpy(ctx->lladdr, nkb_nlio_attr_data(tb[NDA_LLADDR]), sizeof(ctx->lladdr));
    }
  }
  return 0;
}

// RTM_GETNEIGH into ctx; -ENOENT (from the kernel) when there is no entry at all.
static int32_t neigh_query(neigh_ctx_t *ctx) {
  assert(ctx->ifindex != 0 && ctx->ifindex <= INT32_MAX);
  assert(!ctx->found);
  // The kernel rejects a get request with state, type or flags set.
  struct ndmsg ndm = {.ndm_family = AF_INET, .ndm_ifindex = (int32_t)ctx->ifindex};
  nl_req_t req;
  const struct nlmsghdr *h = nl_req_init(&req, RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_ACK, &ndm,
                                         sizeof(ndm));
  nl_req_attr(&req, NDA_DST, &ctx->ip_be, sizeof(ctx->ip_be));
  int32_t rc = nl_transact(h, neigh_on_msg, ctx);
  if (rc < 0) return rc;
  return ctx->found ? 0 : -ENOENT;
}

int32_t nkb_nl_neigh_get(uint32_t ifindex, uint32_t ip_be, uint8_t mac_out[6]) {
  assert(mac_out != NULL);
  if (ifindex == 0 || ifindex > INT32_MAX) return -EINVAL;
  neigh_ctx_t ctx = {.ifindex = ifindex, .ip_be = ip_be};
  int32_t rc = neigh_query(&ctx);
  if (rc < 0) return rc;
  // Incomplete and failed entries carry no NDA_LLADDR: nothing usable yet.
  if (!ctx.has_lladdr || ctx.state == NUD_NONE) return -ENOENT;
  // Not Ethernet-sized (e.g. tunnels with a 0 or 4 byte lladdr): unusable for frames.
  if (ctx.lladdr_len != sizeof(ctx.lladdr)) return -EAFNOSUPPORT;
  memcpy(mac_out, ctx.lladdr, sizeof(ctx.lladdr));
  assert(ctx.state > 0 && ctx.state <= UINT8_MAX);
  return (int32_t)ctx.state;
}

static int32_t neigh_ack_only(const struct nlmsghdr *h, void *vctx) {
  assert(h != NULL);
  assert(vctx == NULL);
  (void)h; // only asserted on: unused under NDEBUG
  (void)vctx;
  return 0; // RTM_NEWNEIGH is answered by the ack alone
}

// Measured on Linux 6.18: NTF_USE strips NUD_PERMANENT from an existing entry
// (also with iproute2's "use"), so a static entry would become INCOMPLETE and lose its
// lladdr. Such entries need no resolution anyway, so they are left alone.
static int32_t neigh_needs_resolve(uint32_t ifindex, uint32_t ip_be) {
  assert(ifindex != 0 && ifindex <= INT32_MAX);
  neigh_ctx_t ctx = {.ifindex = ifindex, .ip_be = ip_be};
  int32_t rc = neigh_query(&ctx);
  if (rc == -ENOENT) return 1;
  if (rc < 0) return rc;
  assert(ctx.found);
  return (ctx.state & (NUD_PERMANENT | NUD_NOARP)) != 0 ? 0 : 1;
}

int32_t nkb_nl_neigh_resolve(uint32_t ifindex, uint32_t ip_be) {
  if (ifindex == 0 || ifindex > INT32_MAX) return -EINVAL;
  int32_t needed = neigh_needs_resolve(ifindex, ip_be);
  if (needed <= 0) return needed;
  // NTF_USE makes the kernel act as if a packet were sent to ip_be (neigh_event_send):
  // a new or failed entry goes INCOMPLETE and ARPs, a stale one is re-probed, a
  // reachable one is left alone. NUD_NONE keeps a newly created entry garbage-collectable
  // (NUD_PERMANENT, iproute2's default for "add", would pin it).
  struct ndmsg ndm = {.ndm_family = AF_INET,
                      .ndm_ifindex = (int32_t)ifindex,
                      .ndm_state = NUD_NONE,
                      .ndm_flags = NTF_USE};
  nl_req_t req;
  uint16_t flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
  const struct nlmsghdr *h = nl_req_init(&req, RTM_NEWNEIGH, flags, &ndm, sizeof(ndm));
  nl_req_attr(&req, NDA_DST, &ip_be, sizeof(ip_be));
  assert(h->nlmsg_len <= NL_REQ_SIZE);
  int32_t rc = nl_transact(h, neigh_ack_only, NULL);
  assert(rc <= 0);
  return rc;
}
