// Raw bpf(2) steps the shim's XDP filter is built from, shared with the benchmark's XDP
// counter (bench/native/ceiling.c): setup-time only, never on the data path. Every entry
// returns a file descriptor (never 0) or 0, or -errno.
#ifndef NKB_BPF_SYS_H
#define NKB_BPF_SYS_H

#include <stdint.h>

#include <linux/bpf.h>

int32_t nkb_bpf(int32_t cmd, union bpf_attr *attr, uint32_t size);
int32_t nkb_bpf_map_create(uint32_t type, uint32_t key_size, uint32_t value_size,
                           uint32_t max_entries, const char *name);
// Loads an XDP program of `count` instructions named `name`; on a verifier rejection the
// verifier's log goes to stderr (once per process) and the first error is returned.
int32_t nkb_bpf_xdp_load(const struct bpf_insn *insns, uint32_t count, const char *name);
// Attaches prog_fd to ifindex with a BPF link (XDP_FLAGS_* in attach_flags): it goes with
// the process that holds the link.
int32_t nkb_bpf_xdp_link(int32_t prog_fd, uint32_t ifindex, uint32_t attach_flags);
int32_t nkb_bpf_prog_id(int32_t prog_fd, uint32_t *id_out);
// BPF_OBJ_GET_INFO_BY_FD into info (len bytes): 0 or -errno.
int32_t nkb_bpf_obj_info(int32_t fd, void *info, uint32_t len);
// A descriptor of the link, program or map (cmd BPF_*_GET_FD_BY_ID) with that id, or -errno.
int32_t nkb_bpf_fd_by_id(int32_t cmd, uint32_t id);

#endif
