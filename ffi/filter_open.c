// Opening an interface's XDP filter (issue 16): one filter per interface for every nkb
// process on the host. The first process creates and attaches it (bpf_filter.c); the
// others join it. Without bpffs nothing is pinned:
// the program is found from the interface (rtnetlink's attached program id), its BPF link
// by walking the host's links, and its maps by the program's map ids. Holding a file
// descriptor of the link keeps the program attached: it leaves with the last process that
// holds one, whichever attached it, and a SIGKILLed holder's descriptors close with it.
// Every by-id step needs CAP_SYS_ADMIN (-EPERM without).
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <linux/if_link.h>  // XDP_FLAGS_*

#include "bpf_sys.h"
#include "nkb_net.h"

#define NKB_JOIN_MAX_LINKS 65536u  // links walked at most: a host has a handful
#define NKB_JOIN_MAX_MAPS 8u       // maps of our program (it has three)

// A descriptor of the XDP link that attaches prog_id to ifindex, or -ENOENT.
static int32_t nkb_join_link(uint32_t ifindex, uint32_t prog_id) {
  uint32_t id = 0;
  for (uint32_t i = 0; i < NKB_JOIN_MAX_LINKS; i++) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.start_id = id;
    int32_t rc = nkb_bpf(BPF_LINK_GET_NEXT_ID, &attr, sizeof(attr));
    if (rc < 0) return rc == -ENOENT ? -ENOENT : rc;  // -ENOENT: no more links
    assert(attr.next_id > id);
    id = attr.next_id;
    int32_t fd = nkb_bpf_fd_by_id(BPF_LINK_GET_FD_BY_ID, id);
    if (fd == -ENOENT) continue;  // released since it was listed
    if (fd < 0) return fd;
    struct bpf_link_info info;
    memset(&info, 0, sizeof(info));
    rc = nkb_bpf_obj_info(fd, &info, sizeof(info));
    if (rc == 0 && info.type == BPF_LINK_TYPE_XDP && info.xdp.ifindex == ifindex &&
        info.prog_id == prog_id) {
      return fd;
    }
    close(fd);
  }
  return -ENOENT;
}

// The map of the program named `name`, checked against the layout this shim uses.
static int32_t nkb_join_map(const uint32_t *ids, uint32_t n, const char *name, uint32_t type,
                            uint32_t key_size, uint32_t value_size, uint32_t *max_entries) {
  assert(n <= NKB_JOIN_MAX_MAPS && name != NULL && max_entries != NULL);
  for (uint32_t i = 0; i < n && i < NKB_JOIN_MAX_MAPS; i++) {
    int32_t fd = nkb_bpf_fd_by_id(BPF_MAP_GET_FD_BY_ID, ids[i]);
    if (fd < 0) return fd;
    struct bpf_map_info info;
    memset(&info, 0, sizeof(info));
    int32_t rc = nkb_bpf_obj_info(fd, &info, sizeof(info));
    if (rc == 0 && strncmp(info.name, name, sizeof(info.name)) == 0) {
      if (info.type == type && info.key_size == key_size && info.value_size == value_size) {
        *max_entries = info.max_entries;
        return fd;
      }
      close(fd);
      return -EPROTONOSUPPORT;  // another layout: an nkb of another version
    }
    close(fd);
  }
  return -EPROTONOSUPPORT;
}

static int32_t nkb_join_maps(nkb_filter_t *f) {
  struct bpf_prog_info info;
  uint32_t ids[NKB_JOIN_MAX_MAPS];
  memset(&info, 0, sizeof(info));
  memset(ids, 0, sizeof(ids));
  info.nr_map_ids = NKB_JOIN_MAX_MAPS;
  info.map_ids = (uint64_t)(uintptr_t)ids;
  int32_t rc = nkb_bpf_obj_info(f->prog_fd, &info, sizeof(info));
  if (rc < 0) return rc;
  if (strncmp(info.name, NKB_PROG_NAME, sizeof(info.name)) != 0) return -EPROTONOSUPPORT;
  uint32_t n = info.nr_map_ids < NKB_JOIN_MAX_MAPS ? info.nr_map_ids : NKB_JOIN_MAX_MAPS;
  uint32_t entries = 0;
  rc = nkb_join_map(ids, n, "nkb_xsks", BPF_MAP_TYPE_XSKMAP, 4u, 4u, &f->max_queues);
  if (rc < 0) return rc;
  f->xsks_map_fd = rc;
  rc = nkb_join_map(ids, n, "nkb_flows", BPF_MAP_TYPE_HASH, sizeof(nkb_flow_key_t), 4u,
                    &f->max_flows);
  if (rc < 0) return rc;
  f->flows_map_fd = rc;
  rc = nkb_join_map(ids, n, "nkb_ctl", BPF_MAP_TYPE_ARRAY, 4u, sizeof(nkb_ctl_t), &entries);
  if (rc < 0) return rc;
  f->ctl_map_fd = rc;
  // Sizes this shim allocates by (the sweep's key list): another build's are not trusted.
  if (entries != 1u || f->max_queues == 0 || f->max_queues > NKB_FILTER_QUEUES ||
      f->max_flows == 0 || f->max_flows > NKB_FILTER_FLOWS_MAX) {
    return -EPROTONOSUPPORT;
  }
  return nkb_filter_map_ctl(f);  // EPERM/EINVAL if it is not mmapable: another version
}

int32_t nkb_filter_join(nkb_filter_t *f, uint32_t ifindex, uint32_t prog_id) {
  assert(f != NULL && f->link_fd <= 0 && f->prog_fd <= 0);
  if (ifindex == 0 || prog_id == 0) return -EINVAL;
  f->link_fd = f->prog_fd = f->xsks_map_fd = f->flows_map_fd = f->ctl_map_fd = -1;
  f->ctl = NULL;
  // The link first: while it is held the program and its maps stay.
  int32_t rc = nkb_join_link(ifindex, prog_id);
  if (rc >= 0) {
    f->link_fd = rc;
    rc = nkb_bpf_fd_by_id(BPF_PROG_GET_FD_BY_ID, prog_id);
  }
  if (rc >= 0) {
    f->prog_fd = rc;
    rc = nkb_join_maps(f);
  }
  if (rc < 0) {
    nkb_filter_close(f);
    return rc;
  }
  f->ifindex = ifindex;
  f->prog_id = prog_id;
  f->joined = true;
  assert(f->link_fd > 0 && f->prog_fd > 0 && f->flows_map_fd > 0 && f->ctl != NULL);
  return 0;
}

static void nkb_filter_reset(nkb_filter_t *f) {
  memset(f, 0, sizeof(*f));
  f->prog_fd = f->link_fd = f->xsks_map_fd = f->flows_map_fd = f->ctl_map_fd = -1;
}

#define NKB_OPEN_TRIES 4u  // a join races the last holder's exit, a create another's create

int32_t nkb_filter_open(nkb_filter_t *f, uint32_t ifindex, uint32_t max_queues, uint32_t max_flows,
                        uint32_t attach_flags) {
  assert(f != NULL);
  nkb_filter_reset(f);
  if (ifindex == 0 || max_queues == 0 || max_flows == 0) return -EINVAL;
  if (attach_flags != 0 && attach_flags != XDP_FLAGS_SKB_MODE &&
      attach_flags != XDP_FLAGS_DRV_MODE) {
    return -EINVAL;
  }
  int32_t rc = -EBUSY;
  for (uint32_t attempt = 0; attempt < NKB_OPEN_TRIES; attempt++) {
    nkb_link_t link;
    rc = nkb_nl_link_get(ifindex, &link);
    if (rc < 0) return rc;
    if (link.xdp_prog_id != 0) {
      // Another process's filter, or a foreign program: a netlink-attached one has no link
      // to find, so it is told by its name first.
      char name[16];
      rc = nkb_filter_prog_name(link.xdp_prog_id, name);
      if (rc == -ENOENT) continue;  // detached since the link was read
      if (rc < 0) return rc;        // -EPERM: names are CAP_SYS_ADMIN's
      if (strcmp(name, NKB_PROG_NAME) != 0) return -EPROTONOSUPPORT;
      rc = nkb_filter_join(f, ifindex, link.xdp_prog_id);
      // Every holder keeps the MAC current: a failed look here changes nothing.
      if (rc == 0) (void)nkb_filter_sync_mac(f);
      if (rc != -ENOENT) return rc;
      continue;  // its last holder left meanwhile
    }
    nkb_filter_reset(f);
    f->ifindex = ifindex;
    f->max_queues = max_queues;
    f->max_flows = max_flows;
    rc = nkb_filter_create(f, attach_flags);
    if (rc == 0) break;
    nkb_filter_close(f);
    nkb_filter_reset(f);
    if (rc != -EBUSY) return rc;  // EBUSY: another process attached first; join it
  }
  if (rc < 0) return rc;
  assert(f->prog_fd > 0 && f->link_fd > 0 && f->ctl != NULL);
  assert(f->xsks_map_fd > 0 && f->flows_map_fd > 0 && f->ctl_map_fd > 0);
  return 0;
}
