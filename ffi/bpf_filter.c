// XDP filter: steers the UDP flows we own to AF_XDP sockets, leaves the rest to the kernel.
//
// No libbpf and no bpffs: the program is written in C (ffi/bpf/filter.bpf.c), compiled to
// BPF by tools/bpf_gen.ts into the instructions of ffi/filter_prog.h, whose map loads are
// patched here with the fds of the maps this file creates; it is loaded with the raw bpf(2)
// syscall and attached with a BPF link (not netlink IFLA_XDP) so that it can never outlive
// the process that owns the sockets it redirects to.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE  // syscall(), F_DUPFD_CLOEXEC, strnlen()
#endif
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/bpf.h>
#include <linux/if_link.h>  // XDP_FLAGS_*

#include "bpf_sys.h"
#include "nkb_net.h"

// The generated program: nkb_filter_prog and its map relocations, nkb_filter_relocs.
#include "filter_prog.h"

_Static_assert(NKB_FILTER_PROG_LEN > 0 && NKB_FILTER_PROG_LEN <= BPF_MAXINSNS,
               "the program fits any loader");
_Static_assert(sizeof(nkb_flow_key_t) == 8, "the program builds an 8-byte key");

#define NKB_LOG_SIZE (64u * 1024u)
// Setup-time only and single-threaded by contract, so a static buffer is fine and keeps 64 KiB
// off the stack of whatever thread Deno calls us on.
static char nkb_log[NKB_LOG_SIZE];
static bool nkb_log_printed = false;

int32_t nkb_bpf(int32_t cmd, union bpf_attr *attr, uint32_t size) {
  assert(attr != NULL);
  assert(size <= sizeof(*attr));
  const long rc = syscall(__NR_bpf, cmd, attr, size);
  if (rc < 0) {
    assert(errno > 0);
    return -errno;
  }
  assert(rc <= INT32_MAX);
  return (int32_t)rc;
}

// A zeroed nkb_filter_t must be safe to close, so fd 0 has to mean "not open": never keep a
// bpf object on fd 0 (only possible if the host closed stdin).
static int32_t nkb_fd_settle(int32_t fd) {
  assert(fd >= 0);
  if (fd > 0) return fd;
  const int32_t moved = fcntl(fd, F_DUPFD_CLOEXEC, 1);
  const int32_t err = (moved < 0) ? -errno : 0;
  close(fd);
  if (err < 0) return err;
  assert(moved > 0);
  return moved;
}

static void nkb_fd_close(int32_t *fd) {
  assert(fd != NULL);
  if (*fd > 0) close(*fd);  // EINTR/EIO on close still release the fd on Linux: no retry.
  *fd = -1;
  assert(*fd == -1);
}

static int32_t nkb_map_create_flags(uint32_t type, uint32_t key_size, uint32_t value_size,
                                    uint32_t max_entries, uint32_t flags, const char *name) {
  assert(key_size > 0 && value_size > 0 && max_entries > 0);
  assert(strlen(name) < BPF_OBJ_NAME_LEN);
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.map_type = type;
  attr.key_size = key_size;
  attr.value_size = value_size;
  attr.max_entries = max_entries;
  attr.map_flags = flags;
  memcpy(attr.map_name, name, strlen(name));
  const int32_t fd = nkb_bpf(BPF_MAP_CREATE, &attr, sizeof(attr));
  if (fd < 0) return fd;
  return nkb_fd_settle(fd);
}

int32_t nkb_bpf_map_create(uint32_t type, uint32_t key_size, uint32_t value_size,
                           uint32_t max_entries, const char *name) {
  return nkb_map_create_flags(type, key_size, value_size, max_entries, 0u, name);
}

static void nkb_log_print(const char *name) {
  assert(NKB_LOG_SIZE > 0);
  if (nkb_log_printed) return;
  nkb_log_printed = true;
  nkb_log[NKB_LOG_SIZE - 1] = '\0';  // a truncated log (ENOSPC) is not NUL-terminated
  const size_t len = strnlen(nkb_log, NKB_LOG_SIZE);
  assert(len < NKB_LOG_SIZE);
  fprintf(stderr, "nkb: XDP program %s rejected by the verifier:\n%.*s\n", name, (int)len,
          nkb_log);
}

static int32_t nkb_prog_load_attempt(const struct bpf_insn *insns, uint32_t count,
                                     const char *name, bool with_log) {
  assert(insns != NULL && count > 0);
  assert(strlen(name) < BPF_OBJ_NAME_LEN);
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.prog_type = BPF_PROG_TYPE_XDP;
  attr.expected_attach_type = BPF_XDP;
  attr.insns = (uint64_t)(uintptr_t)insns;
  attr.insn_cnt = count;
  attr.license = (uint64_t)(uintptr_t)"GPL";
  memcpy(attr.prog_name, name, strlen(name));
  if (with_log) {
    // The kernel rejects a log buffer with log_level 0, so the log is only for the retry.
    nkb_log[0] = '\0';
    attr.log_level = 1;
    attr.log_size = NKB_LOG_SIZE;
    attr.log_buf = (uint64_t)(uintptr_t)nkb_log;
  }
  assert(attr.insn_cnt == count);
  return nkb_bpf(BPF_PROG_LOAD, &attr, sizeof(attr));
}

int32_t nkb_bpf_xdp_load(const struct bpf_insn *insns, uint32_t count, const char *name) {
  int32_t fd = nkb_prog_load_attempt(insns, count, name, false);
  if (fd == -EACCES || fd == -EINVAL) {
    const int32_t first = fd;
    fd = nkb_prog_load_attempt(insns, count, name, true);
    if (fd < 0) {
      nkb_log_print(name);
      return first;
    }
  }
  if (fd < 0) return fd;
  return nkb_fd_settle(fd);
}

// The fd of the map a relocation names: the maps are the shim's, so a name it does not
// create means the header and this file disagree.
static int32_t nkb_reloc_fd(const char *map, const int32_t fds[3], uint32_t *used) {
  static const char *const names[3] = {"nkb_flows", "nkb_xsks", "nkb_ctl"};
  for (uint32_t m = 0; m < 3; m++) {
    if (strcmp(map, names[m]) != 0) continue;
    *used |= 1u << m;
    assert(fds[m] > 0);
    return fds[m];
  }
  assert(!"a relocation names a map the shim does not create");
  return -1;
}

static int32_t nkb_prog_load(int32_t flows_fd, int32_t xsks_fd, int32_t ctl_fd) {
  assert(flows_fd > 0);
  assert(xsks_fd > 0 && ctl_fd > 0);
  const int32_t fds[3] = {flows_fd, xsks_fd, ctl_fd};
  struct bpf_insn insns[NKB_FILTER_PROG_LEN];
  memcpy(insns, nkb_filter_prog, sizeof(insns));
  uint32_t used = 0;
  for (uint32_t r = 0; r < NKB_FILTER_RELOC_COUNT; r++) {
    const uint32_t i = nkb_filter_relocs[r].insn;
    assert(i + 1 < NKB_FILTER_PROG_LEN);  // an ld_imm64 takes two slots
    assert(insns[i].code == (BPF_LD | BPF_DW | BPF_IMM));
    assert(insns[i].src_reg == 0 && insns[i].imm == 0);  // not patched twice
    assert(nkb_filter_relocs[r].map[sizeof(nkb_filter_relocs[r].map) - 1] == '\0');
    insns[i].src_reg = BPF_PSEUDO_MAP_FD;
    insns[i].imm = nkb_reloc_fd(nkb_filter_relocs[r].map, fds, &used);
  }
  assert(used == 7u);  // every map the shim creates is one the program uses
  (void)used;
  return nkb_bpf_xdp_load(insns, NKB_FILTER_PROG_LEN, NKB_PROG_NAME);
}

int32_t nkb_bpf_xdp_link(int32_t prog_fd, uint32_t ifindex, uint32_t attach_flags) {
  assert(prog_fd > 0);
  assert(ifindex > 0);
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.link_create.prog_fd = (uint32_t)prog_fd;
  attr.link_create.target_ifindex = ifindex;
  attr.link_create.attach_type = BPF_XDP;
  attr.link_create.flags = attach_flags;
  const int32_t fd = nkb_bpf(BPF_LINK_CREATE, &attr, sizeof(attr));
  if (fd < 0) return fd;
  return nkb_fd_settle(fd);
}

int32_t nkb_bpf_obj_info(int32_t fd, void *info, uint32_t len) {
  assert(fd > 0 && info != NULL && len > 0);
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.info.bpf_fd = (uint32_t)fd;
  attr.info.info_len = len;
  attr.info.info = (uint64_t)(uintptr_t)info;
  return nkb_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr, sizeof(attr));
}

int32_t nkb_bpf_fd_by_id(int32_t cmd, uint32_t id) {
  assert(id != 0);
  assert(cmd == BPF_LINK_GET_FD_BY_ID || cmd == BPF_PROG_GET_FD_BY_ID ||
         cmd == BPF_MAP_GET_FD_BY_ID);
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  if (cmd == BPF_LINK_GET_FD_BY_ID) attr.link_id = id;
  else if (cmd == BPF_PROG_GET_FD_BY_ID) attr.prog_id = id;
  else attr.map_id = id;
  const int32_t fd = nkb_bpf(cmd, &attr, sizeof(attr));
  if (fd < 0) return fd;
  return nkb_fd_settle(fd);
}

int32_t nkb_bpf_prog_id(int32_t prog_fd, uint32_t *id_out) {
  assert(prog_fd > 0);
  assert(id_out != NULL);
  struct bpf_prog_info info;
  memset(&info, 0, sizeof(info));
  const int32_t rc = nkb_bpf_obj_info(prog_fd, &info, sizeof(info));
  if (rc < 0) return rc;
  if (info.id == 0) return -EIO;
  *id_out = info.id;
  return 0;
}

int32_t nkb_filter_map_ctl(nkb_filter_t *f) {
  assert(f != NULL && f->ctl_map_fd > 0 && f->ctl == NULL);
  // An mmapable array's entries start at offset 0 of its mapping, page-rounded.
  const long page = sysconf(_SC_PAGESIZE);
  const uint64_t len = ((uint64_t)sizeof(nkb_ctl_t) + (uint64_t)page - 1u) / (uint64_t)page *
                       (uint64_t)page;
  void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, f->ctl_map_fd, 0);
  if (m == MAP_FAILED) return -errno;
  f->ctl = m;
  f->ctl_map_len = len;
  assert(f->ctl != NULL && f->ctl_map_len >= sizeof(nkb_ctl_t));
  return 0;
}

int32_t nkb_filter_sync_mac(nkb_filter_t *f) {
  assert(f != NULL);
  if (f->ctl == NULL || f->ifindex == 0) return -EBADF;
  nkb_link_t link;
  int32_t rc = nkb_nl_link_get(f->ifindex, &link);
  if (rc < 0) return rc;
  // Not Ethernet-sized: no unicast frame can match, so every one goes to the kernel.
  uint8_t value[8] = {0};
  if (link.mac_len == 6) memcpy(value, link.mac, 6);
  if (memcmp(value, f->mac, 6) == 0 && f->mac_set) return 0;
  // Shared memory the program reads: a frame checked against a half-written MAC goes to
  // the kernel, as one to another host's would.
  for (uint32_t i = 0; i < 8; i++) __atomic_store_n(&f->ctl->mac[i], value[i], __ATOMIC_RELAXED);
  memcpy(f->mac, value, 6);
  f->mac_set = true;
  assert(f->mac_set && memcmp(f->mac, value, 6) == 0);
  return 1;
}

int32_t nkb_filter_create(nkb_filter_t *f, uint32_t attach_flags) {
  assert(f->ifindex > 0);
  assert(f->prog_fd == -1 && f->link_fd == -1);
  int32_t rc = nkb_bpf_map_create(BPF_MAP_TYPE_XSKMAP, sizeof(uint32_t), sizeof(uint32_t),
                                  f->max_queues, "nkb_xsks");
  if (rc < 0) return rc;
  f->xsks_map_fd = rc;
  rc = nkb_bpf_map_create(BPF_MAP_TYPE_HASH, sizeof(nkb_flow_key_t), sizeof(uint32_t),
                          f->max_flows, "nkb_flows");
  if (rc < 0) return rc;
  f->flows_map_fd = rc;
  rc = nkb_map_create_flags(BPF_MAP_TYPE_ARRAY, sizeof(uint32_t), sizeof(nkb_ctl_t), 1u,
                            BPF_F_MMAPABLE, "nkb_ctl");
  if (rc < 0) return rc;
  f->ctl_map_fd = rc;
  rc = nkb_filter_map_ctl(f);
  if (rc < 0) return rc;
  rc = nkb_filter_sync_mac(f);
  if (rc < 0) return rc;
  rc = nkb_prog_load(f->flows_map_fd, f->xsks_map_fd, f->ctl_map_fd);
  if (rc < 0) return rc;
  f->prog_fd = rc;
  rc = nkb_bpf_prog_id(f->prog_fd, &f->prog_id);
  if (rc < 0) return rc;
  rc = nkb_bpf_xdp_link(f->prog_fd, f->ifindex, attach_flags);
  if (rc < 0) return rc;
  f->link_fd = rc;
  assert(f->prog_id > 0);
  return 0;
}

static int32_t nkb_map_update(int32_t map_fd, const void *key, const void *value) {
  assert(map_fd > 0);
  assert(key != NULL && value != NULL);
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.map_fd = (uint32_t)map_fd;
  attr.key = (uint64_t)(uintptr_t)key;
  attr.value = (uint64_t)(uintptr_t)value;
  attr.flags = BPF_ANY;
  const int32_t rc = nkb_bpf(BPF_MAP_UPDATE_ELEM, &attr, sizeof(attr));
  assert(rc <= 0);
  return rc;
}

int32_t nkb_filter_set_xsk(nkb_filter_t *f, uint32_t queue, int32_t xsk_fd) {
  assert(f != NULL);
  if (f->xsks_map_fd <= 0) return -EBADF;
  if (queue >= f->max_queues) return -EINVAL;
  if (xsk_fd < 0) return -EBADF;
  const uint32_t value = (uint32_t)xsk_fd;
  const int32_t rc = nkb_map_update(f->xsks_map_fd, &queue, &value);
  assert(rc <= 0);
  return rc;
}

static nkb_flow_key_t nkb_flow_key(uint32_t daddr_be, uint16_t dport_be, uint16_t queue) {
  nkb_flow_key_t key;
  memset(&key, 0, sizeof(key));  // no padding today; were there any, the hash would compare it
  key.daddr_be = daddr_be;
  key.dport_be = dport_be;
  key.queue = queue;
  return key;
}

int32_t nkb_filter_add_flow(nkb_filter_t *f, uint32_t daddr_be, uint16_t dport_be,
                            uint16_t queue) {
  assert(f != NULL);
  if (f->flows_map_fd <= 0) return -EBADF;
  if (queue >= f->max_queues && queue != NKB_FLOW_SHARED) return -EINVAL;
  const nkb_flow_key_t key = nkb_flow_key(daddr_be, dport_be, queue);
  const uint32_t value = (uint32_t)getpid();  // for whoever reads the map: not used to decide
  const int32_t rc = nkb_map_update(f->flows_map_fd, &key, &value);
  assert(rc <= 0);
  return rc;  // -E2BIG once max_flows distinct keys are present
}

static int32_t nkb_map_delete(int32_t map_fd, const void *key) {
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.map_fd = (uint32_t)map_fd;
  attr.key = (uint64_t)(uintptr_t)key;
  const int32_t rc = nkb_bpf(BPF_MAP_DELETE_ELEM, &attr, sizeof(attr));
  assert(rc <= 0);
  return rc;  // -ENOENT when the key was not present
}

int32_t nkb_filter_del_flow(nkb_filter_t *f, uint32_t daddr_be, uint16_t dport_be,
                            uint16_t queue) {
  assert(f != NULL);
  if (f->flows_map_fd <= 0) return -EBADF;
  const nkb_flow_key_t key = nkb_flow_key(daddr_be, dport_be, queue);
  return nkb_map_delete(f->flows_map_fd, &key);
}

uint64_t nkb_filter_flow_queues(nkb_filter_t *f, uint32_t daddr_be, uint16_t dport_be) {
  assert(f != NULL);
  uint64_t mask = 0;
  for (uint32_t q = 0; f->flows_map_fd > 0 && q < f->max_queues && q < 64u; q++) {
    const nkb_flow_key_t key = nkb_flow_key(daddr_be, dport_be, (uint16_t)q);
    uint32_t value = 0;
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.map_fd = (uint32_t)f->flows_map_fd;
    attr.key = (uint64_t)(uintptr_t)&key;
    attr.value = (uint64_t)(uintptr_t)&value;
    if (nkb_bpf(BPF_MAP_LOOKUP_ELEM, &attr, sizeof(attr)) == 0) mask |= 1ull << q;
  }
  return mask;
}

int32_t nkb_filter_sweep_queue(nkb_filter_t *f, uint16_t queue) {
  assert(f != NULL);
  if (f->flows_map_fd <= 0) return -EBADF;
  // Collected first, deleted after: a walk whose current key is deleted starts over.
  nkb_flow_key_t *stale = calloc(f->max_flows, sizeof(*stale));
  if (stale == NULL) return -ENOMEM;
  uint32_t n = 0;
  nkb_flow_key_t key, next;
  const nkb_flow_key_t *prev = NULL;
  for (uint32_t i = 0; i <= f->max_flows; i++) {  // bounded: the map holds max_flows keys
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.map_fd = (uint32_t)f->flows_map_fd;
    attr.key = (uint64_t)(uintptr_t)prev;
    attr.next_key = (uint64_t)(uintptr_t)&next;
    if (nkb_bpf(BPF_MAP_GET_NEXT_KEY, &attr, sizeof(attr)) < 0) break;  // -ENOENT: the end
    if (next.queue == queue && n < f->max_flows) stale[n++] = next;
    key = next;
    prev = &key;
  }
  int32_t gone = 0;
  for (uint32_t i = 0; i < n; i++) gone += nkb_map_delete(f->flows_map_fd, &stale[i]) == 0;
  free(stale);
  assert(gone >= 0 && (uint32_t)gone <= n);
  return gone;
}

void nkb_filter_close(nkb_filter_t *f) {
  assert(f != NULL);
  // The link goes first so the program detaches from the interface before the maps it
  // references lose their last user-space reference.
  nkb_fd_close(&f->link_fd);
  nkb_fd_close(&f->prog_fd);
  if (f->ctl != NULL) munmap(f->ctl, f->ctl_map_len);
  f->ctl = NULL;
  nkb_fd_close(&f->xsks_map_fd);
  nkb_fd_close(&f->flows_map_fd);
  nkb_fd_close(&f->ctl_map_fd);
  memset(f, 0, sizeof(*f));
  assert(f->link_fd == 0 && f->prog_fd == 0);
}

int32_t nkb_filter_prog_name(uint32_t prog_id, char name_out[16]) {
  assert(name_out != NULL);
  if (prog_id == 0) return -EINVAL;
  const int32_t fd = nkb_bpf_fd_by_id(BPF_PROG_GET_FD_BY_ID, prog_id);
  if (fd < 0) return fd;
  struct bpf_prog_info info;
  memset(&info, 0, sizeof(info));
  const int32_t rc = nkb_bpf_obj_info(fd, &info, sizeof(info));
  close(fd);
  if (rc < 0) return rc;
  _Static_assert(sizeof(info.name) == 16, "BPF_OBJ_NAME_LEN");
  memcpy(name_out, info.name, sizeof(info.name));
  name_out[15] = 0;
  assert(strlen(name_out) < 16);
  return 0;
}
