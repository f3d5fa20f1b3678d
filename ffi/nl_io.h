// Netlink plumbing shared by the rtnetlink lookups (netlink.c), the XDP-features query
// (xdp_features.c) and the packet filter and IPsec probe (policy.c): open, send one request,
// receive one datagram, split it into messages, decode the status of NLMSG_ERROR and
// NLMSG_DONE, index a message's attributes. What each message means stays with each caller,
// since what ends a transaction differs (an ack, NLMSG_DONE, or an answer found early).
// Every function returns -errno on failure; none keeps state between calls.
#ifndef NKB_NL_IO_H
#define NKB_NL_IO_H

#include <stdint.h>

#include <linux/netlink.h>

// A NETLINK socket of the given protocol (NETLINK_ROUTE, NETLINK_XFRM, ...) whose sends and
// receives time out after a second, so no call hangs on a kernel that never answers.
// Returns the descriptor or -errno.
int32_t nkb_nlio_open(int32_t protocol);

// Sends h (h->nlmsg_len bytes) to the kernel. 0, -EIO on a short send, or -errno.
int32_t nkb_nlio_send(int32_t fd, const struct nlmsghdr *h);

// Receives one datagram from the kernel into buf[0..cap); buf must be aligned for
// struct nlmsghdr, as the messages are read in place. Returns its length, -EMSGSIZE when
// it does not fit, -ETIMEDOUT when nothing came in time, or -errno.
int32_t nkb_nlio_recv(int32_t fd, void *buf, uint32_t cap);

// Called for each message of a datagram: 0 to go on, anything else ends the walk.
typedef int32_t (*nkb_nlio_msg_fn)(const struct nlmsghdr *h, void *ctx);

// Feeds the messages of one received datagram buf[0..len) to fn, in order, each header
// checked against len first. 0 at the end, fn's first nonzero result, or -EPROTO for a
// malformed message. buf must be aligned for struct nlmsghdr.
int32_t nkb_nlio_each(const void *buf, uint32_t len, nkb_nlio_msg_fn fn, void *ctx);

// Bytes of an attribute header; attributes start on 4-byte boundaries.
#define NKB_NL_ATTR_HDRLEN ((uint32_t)sizeof(struct nlattr))
#define NKB_NL_ALIGN4(len) (((uint32_t)(len) + 3u) & ~3u)

// Indexes the attributes in p[0..len) by type into tb[0..tb_len) (last one wins, other
// types skipped; the NESTED and NET_BYTEORDER bits dropped). Every attribute is checked
// against len first. 0, or -EPROTO for a malformed one.
int32_t nkb_nlio_attrs_parse(const uint8_t *p, uint32_t len, const struct nlattr **tb,
                             uint32_t tb_len);

// The payload of an attribute parse has checked, and its length.
const uint8_t *nkb_nlio_attr_data(const struct nlattr *a);
uint32_t nkb_nlio_attr_len(const struct nlattr *a);

// Decodes the int32 status that follows the header of NLMSG_ERROR and NLMSG_DONE.
// Returns 1 with *status set (0 or -errno), 0 when the message is too short to carry one,
// or -EPROTO when the value is not one the kernel would send.
int32_t nkb_nlio_status(const struct nlmsghdr *h, int32_t *status);

#endif
