// Netlink socket plumbing shared by the rtnetlink lookups (netlink.c) and the packet filter
// and IPsec probe (policy.c): open, send one request, receive one datagram, decode the
// status of NLMSG_ERROR and NLMSG_DONE. Walking the messages stays with each caller, since
// what ends a transaction differs (an ack, NLMSG_DONE, or an answer found early).
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

// Decodes the int32 status that follows the header of NLMSG_ERROR and NLMSG_DONE.
// Returns 1 with *status set (0 or -errno), 0 when the message is too short to carry one,
// or -EPROTO when the value is not one the kernel would send.
int32_t nkb_nlio_status(const struct nlmsghdr *h, int32_t *status);

#endif
