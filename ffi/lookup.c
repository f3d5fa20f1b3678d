// Thin guarded entries over the kernel lookups the control plane needs (rtnetlink links,
// routes, addresses and neighbours; capabilities; BPF program names; the host's policy):
// each checks its output buffer, then asks. No state.
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <linux/capability.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sock.h"

_Static_assert(sizeof(nkb_link_t) == 76, "nkb_link_t layout is read from TypeScript");
_Static_assert(sizeof(nkb_policy_t) == 20, "nkb_policy_t layout is read from TypeScript");

int32_t nkb_link_get(uint32_t ifindex, uint8_t *out76, uint32_t out_len) {
  if (!nkb_buf_ok(out76, out_len, sizeof(nkb_link_t), _Alignof(nkb_link_t)) || ifindex == 0) {
    return -EINVAL;
  }
  return nkb_nl_link_get(ifindex, (nkb_link_t *)(void *)out76);
}

int32_t nkb_route_get(uint32_t dst_be, uint32_t *out4, uint32_t out_len) {
  if (!nkb_buf_ok(out4, out_len, sizeof(nkb_route_t), _Alignof(nkb_route_t))) return -EINVAL;
  return nkb_nl_route_get(dst_be, (nkb_route_t *)(void *)out4);
}

int32_t nkb_addr_ifindex(uint32_t ip_be) { return nkb_nl_addr_ifindex(ip_be); }

int32_t nkb_addr_first(uint32_t ifindex, uint32_t *out1, uint32_t out_len) {
  if (!nkb_buf_ok(out1, out_len, sizeof(uint32_t), sizeof(uint32_t)) || ifindex == 0) {
    return -EINVAL;
  }
  return nkb_nl_addr_first(ifindex, out1);
}

int32_t nkb_neigh_get(uint32_t ifindex, uint32_t ip_be, uint8_t *mac6, uint32_t mac_len) {
  if (!nkb_buf_ok(mac6, mac_len, 6u, 1u) || ifindex == 0) return -EINVAL;
  return nkb_nl_neigh_get(ifindex, ip_be, mac6);
}

int32_t nkb_neigh_resolve(uint32_t ifindex, uint32_t ip_be) {
  if (ifindex == 0) return -EINVAL;
  return nkb_nl_neigh_resolve(ifindex, ip_be);
}

int32_t nkb_caps(uint64_t *out4, uint32_t out_len) {
  if (!nkb_buf_ok(out4, out_len, 4u * sizeof(uint64_t), sizeof(uint64_t))) return -EINVAL;
  struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct data[2];
  memset(data, 0, sizeof(data));
  if (syscall(SYS_capget, &hdr, data) != 0) return -errno;
  out4[0] = (uint64_t)data[0].effective | (uint64_t)data[1].effective << 32;
  struct rlimit rl;
  if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0) return -errno;
  out4[1] = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : rl.rlim_cur;
  out4[2] = rl.rlim_max == RLIM_INFINITY ? UINT64_MAX : rl.rlim_max;
  out4[3] = (uint64_t)geteuid();
  return 0;
}

int32_t nkb_prog_name(uint32_t prog_id, uint8_t *out16, uint32_t out_len) {
  if (!nkb_buf_ok(out16, out_len, 16u, 1u)) return -EINVAL;
  return nkb_filter_prog_name(prog_id, (char *)out16);
}

int32_t nkb_group_owners(uint32_t ifindex, uint32_t prog_id, uint32_t *out, uint32_t out_len) {
  if (!nkb_buf_ok(out, out_len, 8u, _Alignof(uint32_t)) || out_len % 8u != 0) return -EINVAL;
  if (ifindex == 0 || prog_id == 0) return -EINVAL;
  // Joined only if it is this version's filter: another's control block has another layout.
  char name[16];
  int32_t rc = nkb_filter_prog_name(prog_id, name);
  if (rc < 0) return rc;
  if (strcmp(name, NKB_PROG_NAME) != 0) return -EPROTONOSUPPORT;
  nkb_filter_t f;
  memset(&f, 0, sizeof(f));
  rc = nkb_filter_join(&f, ifindex, prog_id);
  if (rc < 0) return rc;
  uint32_t n = out_len / 8u < NKB_FILTER_QUEUES ? out_len / 8u : NKB_FILTER_QUEUES;
  for (uint32_t q = 0; q < n; q++) out[2u * q] = nkb_group_state(&f, q, &out[2u * q + 1u]);
  nkb_filter_close(&f);
  assert(n <= NKB_FILTER_QUEUES && (uint64_t)n * 8u <= out_len);
  return (int32_t)n;
}

int32_t nkb_policy(uint8_t *out20, uint32_t out_len) {
  if (!nkb_buf_ok(out20, out_len, sizeof(nkb_policy_t), _Alignof(nkb_policy_t))) return -EINVAL;
  return nkb_policy_probe((nkb_policy_t *)(void *)out20);
}

