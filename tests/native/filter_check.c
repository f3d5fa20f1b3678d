// Runs the shim's XDP filter (ffi/bpf_filter.c, the program of ffi/filter_prog.h) on crafted
// frames with BPF_PROG_TEST_RUN and checks the action of each, one rule at a time. Built and
// run as root by tests/filter_rules.test.ts, inside a network namespace it created:
//   filter_check IFNAME DADDR   (IFNAME a veth with 2 receive queues, DADDR dotted IPv4)
// Prints one line per case and "cases N failures F" last; exits 0 only if F is 0.
//
// Every frame is the one "hit" frame (IPv4 UDP to DADDR port 9000, to the interface's MAC)
// with one thing changed, so each case is decided by exactly one rule: the hit frame itself
// is redirected, its mutations are passed.
//
// A test run reports what the program returned. bpf_redirect_map returns its fallback
// (XDP_PASS) when the XSKMAP has no socket at the key, and XDP_REDIRECT when it has one, so
// a real AF_XDP socket (the shim's own engine) is bound to queue 0: a redirect is then 4,
// and a flow hit on queue 1, where no socket is, is 2.
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/bpf.h>

#include "../../ffi/bpf_sys.h"
#include "../../ffi/nkb_net.h"
#include "../../ffi/xsk.h"

#define PORT 9000u
#define FRAME_LEN 58u  // eth 14 + IPv4 20 + UDP 8 + 16 bytes of payload
#define HDR_LEN 42u

enum { PASS = XDP_PASS, REDIRECT = XDP_REDIRECT };

static uint32_t cases = 0, failures = 0;
static uint32_t ifindex = 0;
static int32_t prog_fd = -1;
static uint32_t daddr_be = 0;
static uint8_t mac[6];  // the interface's, as the filter holds it

// The hit frame: every rule lets it through to the redirect.
static void frame_hit(uint8_t f[FRAME_LEN]) {
  static const uint8_t src_mac[6] = {0x02, 0, 0x5e, 0, 0, 0x02};
  memset(f, 0, FRAME_LEN);
  memcpy(f, mac, 6);
  memcpy(f + 6, src_mac, 6);
  f[12] = 0x08;  // IPv4
  f[13] = 0x00;
  uint8_t *ip = f + 14;
  ip[0] = 0x45;
  ip[3] = FRAME_LEN - 14;  // total length (< 256)
  ip[8] = 64;              // TTL
  ip[9] = 17;              // UDP
  const uint32_t saddr_be = daddr_be ^ htonl(3u);  // another host of the /24
  memcpy(ip + 12, &saddr_be, 4);
  memcpy(ip + 16, &daddr_be, 4);
  uint8_t *udp = ip + 20;
  udp[0] = 9100 >> 8;
  udp[1] = 9100 & 0xff;
  udp[2] = PORT >> 8;
  udp[3] = PORT & 0xff;
  udp[5] = FRAME_LEN - 34;  // UDP length
  for (uint32_t i = HDR_LEN; i < FRAME_LEN; i++) f[i] = (uint8_t)i;
}

// One BPF_PROG_TEST_RUN of the frame as received on queue `queue` of the interface.
static int32_t test_run(const uint8_t *f, uint32_t len, uint32_t queue, uint32_t *action) {
  assert(len >= 14 && len <= FRAME_LEN + 4);
  struct xdp_md ctx;
  memset(&ctx, 0, sizeof(ctx));
  ctx.data_end = len;  // the kernel wants data 0 and data_end the frame's length
  ctx.ingress_ifindex = ifindex;
  ctx.rx_queue_index = queue;
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.test.prog_fd = (uint32_t)prog_fd;
  attr.test.data_in = (uint64_t)(uintptr_t)f;
  attr.test.data_size_in = len;
  attr.test.ctx_in = (uint64_t)(uintptr_t)&ctx;
  attr.test.ctx_size_in = sizeof(ctx);
  attr.test.repeat = 1;
  const int32_t rc = nkb_bpf(BPF_PROG_TEST_RUN, &attr, sizeof(attr));
  *action = attr.test.retval;
  return rc;
}

static void expect_q(const char *name, const uint8_t *f, uint32_t len, uint32_t queue,
                     uint32_t want) {
  uint32_t got = 0;
  const int32_t rc = test_run(f, len, queue, &got);
  const int ok = rc == 0 && got == want;
  cases++;
  failures += ok ? 0u : 1u;
  printf("case %s: want %u got %u rc %d %s\n", name, want, got, rc, ok ? "ok" : "FAIL");
}

static void expect(const char *name, const uint8_t *f, uint32_t len, uint32_t want) {
  expect_q(name, f, len, 0, want);
}

// The runt and ethertype rules.
static void check_link_layer(void) {
  uint8_t f[FRAME_LEN + 4];
  frame_hit(f);
  expect("hit-42-bytes", f, HDR_LEN, REDIRECT);  // headers only: long enough
  expect("runt-41-bytes", f, HDR_LEN - 1, PASS);
  expect("runt-14-bytes", f, 14, PASS);
  // 802.1Q: the tag sits where the ethertype was, the IPv4 frame follows it.
  uint8_t tagged[FRAME_LEN + 4];
  frame_hit(f);
  memcpy(tagged, f, 12);
  const uint8_t tag[4] = {0x81, 0x00, 0x00, 0x05};
  memcpy(tagged + 12, tag, 4);
  memcpy(tagged + 16, f + 12, FRAME_LEN - 12);
  expect("vlan-tagged", tagged, FRAME_LEN + 4, PASS);
  const uint16_t types[2] = {0x0806, 0x86dd};
  const char *names[2] = {"ethertype-arp", "ethertype-ipv6"};
  for (uint32_t i = 0; i < 2; i++) {
    frame_hit(f);
    f[12] = (uint8_t)(types[i] >> 8);
    f[13] = (uint8_t)types[i];
    expect(names[i], f, FRAME_LEN, PASS);
  }
}

// The IPv4 header rules: version/IHL, protocol, fragments.
static void check_ip(void) {
  uint8_t f[FRAME_LEN];
  const uint8_t first[3] = {0x46, 0x65, 0x44};
  const char *first_names[3] = {"ihl-6", "version-6", "ihl-4"};
  for (uint32_t i = 0; i < 3; i++) {
    frame_hit(f);
    f[14] = first[i];
    expect(first_names[i], f, FRAME_LEN, PASS);
  }
  frame_hit(f);
  f[14 + 9] = 6;
  expect("tcp", f, FRAME_LEN, PASS);
  // Flags and offset (bytes 6..7): DF alone is no fragment; MF, any offset bit, or both are.
  const uint8_t frag[5][2] = {{0x40, 0x00}, {0x20, 0x00}, {0x00, 0x01}, {0x1f, 0xff}, {0x20, 0xb9}};
  const uint32_t want[5] = {REDIRECT, PASS, PASS, PASS, PASS};
  const char *frag_names[5] = {"df-not-fragment", "fragment-mf", "fragment-offset-1",
                               "fragment-offset-max", "fragment-mf-and-offset"};
  for (uint32_t i = 0; i < 5; i++) {
    frame_hit(f);
    memcpy(f + 14 + 6, frag[i], 2);
    expect(frag_names[i], f, FRAME_LEN, want[i]);
  }
}

// The flow rule: the key is (daddr, dport) exactly.
static void check_flow(void) {
  uint8_t f[FRAME_LEN];
  frame_hit(f);
  expect("flow-hit", f, FRAME_LEN, REDIRECT);
  f[14 + 20 + 3] ^= 1;  // port 9001
  expect("flow-miss-port", f, FRAME_LEN, PASS);
  frame_hit(f);
  f[14 + 19] ^= 0x80;  // another address
  expect("flow-miss-address", f, FRAME_LEN, PASS);
  frame_hit(f);
  f[14 + 20 + 1] ^= 1;  // the source port is not in the key
  expect("flow-hit-other-source-port", f, FRAME_LEN, REDIRECT);
}

// The destination MAC rule.
static void check_mac(void) {
  uint8_t f[FRAME_LEN];
  frame_hit(f);
  f[5] ^= 0x01;  // the last byte differs: MAC bytes 4..5
  expect("mac-other-unicast-low", f, FRAME_LEN, PASS);
  frame_hit(f);
  f[1] ^= 0x10;  // a middle byte differs: MAC bytes 0..3
  expect("mac-other-unicast-high", f, FRAME_LEN, PASS);
  const uint8_t groups[2][6] = {{0x01, 0x00, 0x5e, 0x01, 0x02, 0x03},
                                {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};
  const char *names[2] = {"mac-multicast", "mac-broadcast"};
  for (uint32_t i = 0; i < 2; i++) {
    frame_hit(f);
    memcpy(f, groups[i], 6);
    expect(names[i], f, FRAME_LEN, REDIRECT);
  }
}

static int32_t set_mac(const char *ifname, const uint8_t to[6]) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  assert(strlen(ifname) < IFNAMSIZ);
  memcpy(ifr.ifr_name, ifname, strlen(ifname));
  ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
  memcpy(ifr.ifr_hwaddr.sa_data, to, 6);
  const int rc = ioctl(fd, SIOCSIFHWADDR, &ifr);
  const int32_t err = rc == 0 ? 0 : -errno;
  close(fd);
  return err;
}

// The interface's MAC changes: after nkb_filter_sync_mac the old one is another host's.
static int32_t check_mac_change(nkb_filter_t *filter, const char *ifname) {
  static const uint8_t new_mac[6] = {0x02, 0x00, 0x5e, 0xaa, 0xbb, 0xcc};
  uint8_t old_mac[6];
  memcpy(old_mac, mac, 6);
  int32_t rc = set_mac(ifname, new_mac);
  if (rc < 0) return rc;
  rc = nkb_filter_sync_mac(filter);
  printf("sync_mac after the change: %d\n", rc);
  if (rc != 1) return rc < 0 ? rc : -EPROTO;
  memcpy(mac, filter->mac, 6);
  if (memcmp(mac, new_mac, 6) != 0) return -EPROTO;
  uint8_t f[FRAME_LEN];
  frame_hit(f);
  expect("mac-changed-new", f, FRAME_LEN, REDIRECT);
  memcpy(f, old_mac, 6);
  expect("mac-changed-old", f, FRAME_LEN, PASS);
  return 0;
}

static void print_prog(void) {
  struct bpf_prog_info info;
  memset(&info, 0, sizeof(info));
  const int32_t rc = nkb_bpf_obj_info(prog_fd, &info, sizeof(info));
  printf("loaded: rc %d name %.16s insns %u verified_insns %u\n", rc, info.name,
         info.xlated_prog_len / 8u, info.verified_insns);
}

// Flows are keyed by queue: a key for queue 1 only (another process's queue) does not send
// queue 0's frames to the socket there.
static void check_queue_keys(nkb_filter_t *filter) {
  uint8_t f[FRAME_LEN];
  frame_hit(f);
  (void)nkb_filter_del_flow(filter, daddr_be, htons(PORT), 0);
  expect("flow-held-on-other-queue", f, FRAME_LEN, PASS);
  int32_t rc = nkb_filter_add_flow(filter, daddr_be, htons(PORT), 0);
  printf("add_flow queue 0 again: %d\n", rc);
}

// A group flow: redirected while one queue holds it, the kernel's once it is marked shared
// (held on another queue too: the kernel copies it to every member).
static void check_group(nkb_filter_t *filter) {
  const uint32_t group_be = htonl(0xef010203u);  // 239.1.2.3
  static const uint8_t group_mac[6] = {0x01, 0x00, 0x5e, 0x01, 0x02, 0x03};
  uint8_t f[FRAME_LEN];
  frame_hit(f);
  memcpy(f, group_mac, 6);
  memcpy(f + 14 + 16, &group_be, 4);
  int32_t rc = nkb_filter_add_flow(filter, group_be, htons(PORT), 0);
  expect("group-hit", f, FRAME_LEN, REDIRECT);
  if (rc == 0) rc = nkb_filter_add_flow(filter, group_be, htons(PORT), NKB_FLOW_SHARED);
  expect("group-shared", f, FRAME_LEN, PASS);
  if (rc == 0) rc = nkb_filter_del_flow(filter, group_be, htons(PORT), NKB_FLOW_SHARED);
  if (rc == 0) rc = nkb_filter_del_flow(filter, group_be, htons(PORT), 0);
  printf("group flows: %d\n", rc);
}

static int32_t run_cases(nkb_filter_t *filter, const char *ifname) {
  uint8_t f[FRAME_LEN];
  frame_hit(f);
  // No socket yet: the redirect falls back to the kernel.
  expect("hit-no-socket", f, FRAME_LEN, PASS);
  static nkb_engine_t engine;  // large: not on the stack
  int32_t rc = nkb_engine_open(&engine, filter, ifindex, 0, 1, 2048, false, 0);
  printf("engine_open queue 0: %d\n", rc);
  if (rc < 0) return rc;
  // Binding queue 0 swept its keys (as if a process that died holding it had left them).
  expect("swept-at-bind", f, FRAME_LEN, PASS);
  rc = nkb_filter_add_flow(filter, daddr_be, htons(PORT), 0);
  printf("add_flow queue 0: %d\n", rc);
  if (rc < 0) return rc;
  expect("hit-socket-queue-0", f, FRAME_LEN, REDIRECT);
  expect_q("hit-no-socket-queue-1", f, FRAME_LEN, 1, PASS);
  check_queue_keys(filter);
  check_group(filter);
  check_link_layer();
  check_ip();
  check_flow();
  check_mac();
  rc = check_mac_change(filter, ifname);
  if (rc == 0) {
    rc = nkb_filter_del_flow(filter, daddr_be, htons(PORT), 0);
    if (rc == 0) rc = nkb_filter_del_flow(filter, daddr_be, htons(PORT), 1);
    frame_hit(f);
    expect("flow-deleted", f, FRAME_LEN, PASS);
  }
  nkb_engine_close(&engine);
  return rc;
}

int main(int argc, char **argv) {
  if (argc != 3 || inet_pton(AF_INET, argv[2], &daddr_be) != 1) {
    fprintf(stderr, "usage: filter_check IFNAME DADDR\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  ifindex = if_nametoindex(argv[1]);
  if (ifindex == 0) return perror("if_nametoindex"), 1;
  static nkb_filter_t filter;
  int32_t rc = nkb_filter_open(&filter, ifindex, NKB_MAX_QUEUES, 16, 0);
  printf("filter_open: %d\n", rc);
  if (rc < 0) return 1;
  prog_fd = filter.prog_fd;
  print_prog();
  memcpy(mac, filter.mac, 6);
  // The flow on both queues, as a socket of a two-queue engine has it.
  rc = nkb_filter_add_flow(&filter, daddr_be, htons(PORT), 0);
  if (rc == 0) rc = nkb_filter_add_flow(&filter, daddr_be, htons(PORT), 1);
  printf("add_flow: %d\n", rc);
  if (rc == 0) rc = run_cases(&filter, argv[1]);
  nkb_filter_close(&filter);
  printf("cases %u failures %u\n", cases, failures);
  return (rc == 0 && failures == 0) ? 0 : 1;
}
