// What the engine asks of the generic netlink family "netdev" (xdp_features.c), without
// the API header: see nkb_queues_xsk_bound in nkb.h (a bitmask of the queues bound).
#ifndef NKB_NETDEV_QUERY_H
#define NKB_NETDEV_QUERY_H

#include <stdint.h>

int32_t nkb_queues_xsk_bound(uint32_t ifindex, uint32_t first_queue, uint32_t queue_count);

#endif
