// Stub until the generic-netlink query lands.
#include <errno.h>

#include "nkb.h"

int32_t nkb_link_xdp_features(uint32_t ifindex, uint64_t *out1) {
  (void)ifindex;
  (void)out1;
  return -EOPNOTSUPP;
}
