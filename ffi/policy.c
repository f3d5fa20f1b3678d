// Packet filtering and IPsec probe: the Solaris contract allows no bypass while either is
// configured, because datagrams on the rings never meet the kernel's filters or SAs.
//
// Three sources, all of the calling thread's network namespace, all read-only:
//   nftables (NETLINK_NETFILTER rule and chain dumps; iptables-nft rules live here too),
//   legacy iptables (x_tables getsockopt on the tables listed in ip_tables_names),
//   xfrm (NETLINK_XFRM policy and SA dumps).
// Raw syscalls, no libraries. A source that cannot be read sets its flag instead of failing
// the probe, so the caller can tell "none" from "unknown".
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE // socket API under -std=c11
#endif

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter_ipv4/ip_tables.h>
#include <linux/netlink.h>
#include <linux/xfrm.h>

#include "nkb_net.h"
#include "nl_io.h"

#define POL_NFT_UNKNOWN 1u
#define POL_IPT_UNKNOWN 2u
#define POL_XFRM_UNKNOWN 4u

// Dump skbs are capped near 32 KiB by the kernel (netlink_recvmsg's max_recvmsg_len).
#define POL_BUF_SIZE 32768u
// Bounds one dump: 65536 full datagrams is millions of rules, far beyond any real host.
#define POL_RECV_MAX 65536u
// An attribute is at least its 4-byte header.
#define POL_ATTRS_MAX (POL_BUF_SIZE / 4u)
// Retries of a dump or table read that raced with a change (NLM_F_DUMP_INTR, EAGAIN).
#define POL_TRIES 4u
#define POL_EINTR_MAX 8u
#define POL_SEQ 0x6e6b6250u
// ip_tables_names lists a handful of tables; 4 KiB holds over a hundred names.
#define POL_NAMES_SIZE 4096u
// A legacy table bigger than this is read by entry count only (which may include user
// chains' head and tail entries: an overcount, the safe side).
#define POL_IPT_ENTRIES_MAX (64u << 20)

typedef union pol_rxbuf {
  struct nlmsghdr hdr; // alignment for messages read in place
  uint8_t buf[POL_BUF_SIZE];
} pol_rxbuf_t;

// Says whether one dump message counts (1) or not (0).
typedef uint32_t (*pol_weigh_fn)(const struct nlmsghdr *h);

typedef struct pol_dump {
  pol_weigh_fn weigh;
  uint32_t count;
  bool intr; // NLM_F_DUMP_INTR seen: the dump raced with a change
} pol_dump_t;

static uint32_t pol_add_sat(uint32_t a, uint32_t b) {
  return a > UINT32_MAX - b ? UINT32_MAX : a + b;
}

// ---- netlink -----------------------------------------------------------------

// 0: keep reading, 1: NLMSG_DONE, <0: -errno.
static int32_t pol_nl_msg(const struct nlmsghdr *h, void *vd) {
  pol_dump_t *d = vd;
  if (h->nlmsg_seq != POL_SEQ) return 0; // not an answer to our request
  if ((h->nlmsg_flags & NLM_F_DUMP_INTR) != 0) d->intr = true;
  int32_t err = 0;
  if (h->nlmsg_type == NLMSG_ERROR) {
    // A short or malformed error is a protocol error, and so is an ack: a dump ends with DONE.
    int32_t rc = nkb_nlio_status(h, &err);
    return rc == 1 && err < 0 ? err : -EPROTO;
  }
  if (h->nlmsg_type == NLMSG_DONE) {
    int32_t rc = nkb_nlio_status(h, &err); // a DONE without status ends the dump cleanly
    if (rc < 0) return rc;
    return err < 0 ? err : 1;
  }
  if (h->nlmsg_type == NLMSG_OVERRUN) return -EOVERFLOW;
  if (h->nlmsg_type < NLMSG_MIN_TYPE) return 0; // NOOP and other control types
  uint32_t w = d->weigh(h);
  assert(w <= 1);
  d->count = pol_add_sat(d->count, w);
  return 0;
}

// One dump on a fresh socket: 0 with d->count set, -EAGAIN if it raced with a change, or -errno.
static int32_t pol_nl_dump_once(int protocol, const struct nlmsghdr *req, pol_dump_t *d) {
  int32_t fd = nkb_nlio_open(protocol);
  if (fd < 0) return fd;
  d->count = 0;
  d->intr = false;
  // On the stack like netlink.c's: setup time only, and the caller's stack is a thread's.
  pol_rxbuf_t rx;
  int32_t rc = nkb_nlio_send(fd, req);
  for (uint32_t i = 0; rc == 0 && i < POL_RECV_MAX; i++) {
    int32_t n = nkb_nlio_recv(fd, rx.buf, sizeof(rx.buf));
    rc = n < 0 ? n : nkb_nlio_each(rx.buf, (uint32_t)n, pol_nl_msg, d);
  }
  (void)close(fd); // nothing useful to do if closing a socket we only read from fails
  if (rc == 0) return -EOVERFLOW; // POL_RECV_MAX datagrams without NLMSG_DONE
  if (rc < 0) return rc;
  assert(rc == 1);
  return d->intr ? -EAGAIN : 0;
}

// Counts the messages of a dump that weigh() accepts. 0 or -errno; *count is set either way
// (on a persistent race it holds the last attempt's count).
static int32_t pol_nl_count(int protocol, uint16_t type, const void *fam, uint32_t fam_len,
                            pol_weigh_fn weigh, uint32_t *count) {
  union {
    struct nlmsghdr hdr;
    uint8_t buf[NLMSG_HDRLEN + 16];
  } req;
  assert(fam_len <= 16);
  assert(weigh != NULL);
  memset(&req, 0, sizeof(req));
  req.hdr.nlmsg_len = NLMSG_HDRLEN + fam_len;
  req.hdr.nlmsg_type = type;
  req.hdr.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.hdr.nlmsg_seq = POL_SEQ;
  if (fam_len > 0) memcpy(req.buf + NLMSG_HDRLEN, fam, fam_len);
  pol_dump_t d = {.weigh = weigh, .count = 0, .intr = false};
  int32_t rc = -EAGAIN;
  for (uint32_t t = 0; t < POL_TRIES && rc == -EAGAIN; t++) {
    rc = pol_nl_dump_once(protocol, &req.hdr, &d);
  }
  *count = d.count;
  assert(rc <= 0);
  return rc;
}

// ---- nftables ------------------------------------------------------------------

#define POL_NFT_TYPE(msg) ((uint16_t)((NFNL_SUBSYS_NFTABLES << 8) | (msg)))

static uint32_t pol_nft_rule(const struct nlmsghdr *h) {
  return h->nlmsg_type == POL_NFT_TYPE(NFT_MSG_NEWRULE) ? 1u : 0u;
}

// A base chain (one with a hook) whose policy is not accept filters even without rules.
static uint32_t pol_nft_chain(const struct nlmsghdr *h) {
  if (h->nlmsg_type != POL_NFT_TYPE(NFT_MSG_NEWCHAIN)) return 0;
  uint32_t hdr = NLMSG_HDRLEN + NLMSG_ALIGN((uint32_t)sizeof(struct nfgenmsg));
  if (h->nlmsg_len < hdr) return 0;
  const uint8_t *p = (const uint8_t *)h;
  bool hooked = false;
  uint32_t policy = NF_ACCEPT;
  uint32_t off = hdr;
  for (uint32_t i = 0; i < POL_ATTRS_MAX && h->nlmsg_len - off >= sizeof(struct nlattr); i++) {
    struct nlattr a;
    memcpy(&a, p + off, sizeof(a));
    if (a.nla_len < sizeof(a) || a.nla_len > h->nlmsg_len - off) break; // malformed: stop
    uint16_t type = (uint16_t)(a.nla_type & NLA_TYPE_MASK);
    if (type == NFTA_CHAIN_HOOK) hooked = true;
    if (type == NFTA_CHAIN_POLICY && a.nla_len == sizeof(a) + sizeof(uint32_t)) {
      uint32_t be = 0;
      memcpy(&be, p + off + sizeof(a), sizeof(be));
      policy = ntohl(be);
    }
    uint32_t step = ((uint32_t)a.nla_len + 3u) & ~3u;
    if (step >= h->nlmsg_len - off) break;
    off += step;
  }
  return hooked && policy != NF_ACCEPT ? 1u : 0u;
}

static void pol_nft_probe(nkb_policy_t *out) {
  // NFPROTO_UNSPEC: every table of every family (ip, ip6, inet, arp, bridge, netdev).
  struct nfgenmsg fam = {.nfgen_family = NFPROTO_UNSPEC, .version = NFNETLINK_V0, .res_id = 0};
  uint32_t rules = 0;
  uint32_t chains = 0;
  int32_t rc = pol_nl_count(NETLINK_NETFILTER, POL_NFT_TYPE(NFT_MSG_GETRULE), &fam, sizeof(fam),
                            pol_nft_rule, &rules);
  if (rc == 0) {
    rc = pol_nl_count(NETLINK_NETFILTER, POL_NFT_TYPE(NFT_MSG_GETCHAIN), &fam, sizeof(fam),
                      pol_nft_chain, &chains);
  }
  out->nft_rules = pol_add_sat(rules, chains);
  if (rc != 0) out->flags |= POL_NFT_UNKNOWN;
}

// ---- xfrm --------------------------------------------------------------------------

static uint32_t pol_xfrm_policy(const struct nlmsghdr *h) {
  return h->nlmsg_type == XFRM_MSG_NEWPOLICY ? 1u : 0u;
}

static uint32_t pol_xfrm_sa(const struct nlmsghdr *h) {
  return h->nlmsg_type == XFRM_MSG_NEWSA ? 1u : 0u;
}

static void pol_xfrm_probe(nkb_policy_t *out) {
  // The dump requests carry no body: the kernel starts xfrm dumps before parsing one, and an
  // empty request asks for no address or protocol filter.
  int32_t rc = pol_nl_count(NETLINK_XFRM, XFRM_MSG_GETPOLICY, NULL, 0, pol_xfrm_policy,
                            &out->xfrm_policies);
  int32_t rc2 = pol_nl_count(NETLINK_XFRM, XFRM_MSG_GETSA, NULL, 0, pol_xfrm_sa,
                             &out->xfrm_states);
  if (rc != 0 || rc2 != 0) out->flags |= POL_XFRM_UNKNOWN;
}

// ---- legacy iptables -----------------------------------------------------------------

// Reads the names of the instantiated IPv4 x_tables of the calling thread's namespace.
// /proc/thread-self, not /proc/self: a thread may sit in another namespace than the leader.
// Returns the length read, 0 when legacy x_tables is not loaded, or -errno.
static int32_t pol_ipt_names(char *buf, uint32_t size) {
  assert(size > 1);
  int fd = open("/proc/thread-self/net/ip_tables_names", O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int32_t err = -(int32_t)errno;
    struct stat st;
    // Absent file with /proc mounted: ip_tables is not loaded, so no table can hold rules.
    if (err == -ENOENT && stat("/proc/thread-self/net", &st) == 0) return 0;
    return err;
  }
  uint32_t len = 0;
  int32_t rc = 0;
  for (uint32_t i = 0; i < POL_EINTR_MAX + size && len < size - 1; i++) {
    ssize_t n = read(fd, buf + len, size - 1 - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) rc = -(int32_t)errno;
    if (n <= 0) break;
    len += (uint32_t)n;
  }
  (void)close(fd);
  if (rc < 0) return rc;
  if (len >= size - 1) return -EOVERFLOW; // more names than expected: don't guess
  buf[len] = '\0';
  return (int32_t)len;
}

// Counts ERROR targets (chain heads, plus the table's final entry) and built-in chain
// policies other than ACCEPT, checking the walk agrees with the table's header.
static int32_t pol_ipt_walk(const struct ipt_getinfo *info, const uint8_t *tab,
                            uint32_t *errors, uint32_t *drop_policies) {
  const uint32_t min_entry = (uint32_t)(sizeof(struct ipt_entry) + sizeof(struct xt_entry_target));
  uint32_t off = 0;
  uint32_t n = 0;
  *errors = 0;
  *drop_policies = 0;
  for (; n < info->num_entries && off < info->size; n++) {
    struct ipt_entry e;
    if (info->size - off < min_entry) return -EPROTO;
    memcpy(&e, tab + off, sizeof(e));
    if (e.next_offset < min_entry || e.next_offset > info->size - off) return -EPROTO;
    if (e.target_offset < sizeof(e) ||
        e.target_offset > e.next_offset - sizeof(struct xt_entry_target)) {
      return -EPROTO;
    }
    struct xt_entry_target t;
    memcpy(&t, tab + off + e.target_offset, sizeof(t));
    t.u.user.name[sizeof(t.u.user.name) - 1] = '\0';
    if (strcmp(t.u.user.name, XT_ERROR_TARGET) == 0) *errors += 1;
    for (uint32_t h = 0; h < NF_INET_NUMHOOKS; h++) {
      if ((info->valid_hooks & (1u << h)) == 0 || info->underflow[h] != off) continue;
      int32_t verdict = 0;
      if (t.u.user.name[0] != '\0' ||
          (uint32_t)(e.next_offset - e.target_offset) < sizeof(struct xt_standard_target)) {
        *drop_policies += 1; // not a plain verdict: not ACCEPT
        break;
      }
      memcpy(&verdict, tab + off + e.target_offset + sizeof(t), sizeof(verdict));
      if (verdict != -NF_ACCEPT - 1) *drop_policies += 1; // standard targets store -verdict-1
      break;
    }
    off += e.next_offset;
  }
  if (n != info->num_entries || off != info->size || *errors == 0) return -EPROTO;
  return 0;
}

// User rules of one table: every entry except the built-in chains' policies, each user
// chain's head (ERROR target naming it) and tail (RETURN), and the final ERROR entry; plus
// built-in policies other than ACCEPT, which filter on their own.
static int32_t pol_ipt_rules(const struct ipt_getinfo *info, const struct ipt_get_entries *ge,
                             uint32_t *rules) {
  uint32_t hook_mask = info->valid_hooks & ((1u << NF_INET_NUMHOOKS) - 1u);
  uint32_t hooks = (uint32_t)__builtin_popcount(hook_mask);
  uint32_t errors = 0;
  uint32_t drops = 0;
  if (ge != NULL) {
    int32_t rc = pol_ipt_walk(info, (const uint8_t *)ge->entrytable, &errors, &drops);
    if (rc < 0) return rc;
  } else {
    errors = 1; // not read: user chains' heads and tails count as rules (overcount, safe)
  }
  assert(errors >= 1);
  uint64_t fixed = (uint64_t)hooks + 1u + 2u * ((uint64_t)errors - 1u);
  if (info->num_entries < fixed) return -EPROTO;
  *rules = pol_add_sat(info->num_entries - (uint32_t)fixed, drops);
  return 0;
}

// One table's user rules; -EAGAIN when the table changed between the two reads.
static int32_t pol_ipt_table(int32_t fd, const char *name, uint32_t *rules) {
  struct ipt_getinfo info;
  memset(&info, 0, sizeof(info));
  if (strlen(name) >= sizeof(info.name)) return -EPROTO;
  strcpy(info.name, name);
  socklen_t len = sizeof(info);
  if (getsockopt(fd, SOL_IP, IPT_SO_GET_INFO, &info, &len) < 0) return -(int32_t)errno;
  if (len != sizeof(info)) return -EPROTO;
  if (info.size > POL_IPT_ENTRIES_MAX) return pol_ipt_rules(&info, NULL, rules);
  // The entries show which entries are user chains' heads and tails, and the policies.
  size_t ge_len = sizeof(struct ipt_get_entries) + (size_t)info.size;
  struct ipt_get_entries *ge = calloc(1, ge_len);
  if (ge == NULL) return -ENOMEM;
  strcpy(ge->name, name);
  ge->size = info.size;
  len = (socklen_t)ge_len;
  int32_t rc = 0;
  if (getsockopt(fd, SOL_IP, IPT_SO_GET_ENTRIES, ge, &len) < 0) rc = -(int32_t)errno;
  if (rc == 0 && len != ge_len) rc = -EPROTO;
  if (rc == 0) rc = pol_ipt_rules(&info, ge, rules);
  free(ge);
  return rc;
}

static int32_t pol_ipt_count(int32_t fd, const char *name, uint32_t *rules) {
  int32_t rc = -EAGAIN;
  for (uint32_t t = 0; t < POL_TRIES && rc == -EAGAIN; t++) rc = pol_ipt_table(fd, name, rules);
  // Dropped between listing and reading: a table that is gone holds no rules.
  if (rc == -ENOENT) *rules = 0;
  return rc == -ENOENT ? 0 : rc;
}

static void pol_ipt_probe(nkb_policy_t *out) {
  char names[POL_NAMES_SIZE];
  int32_t len = pol_ipt_names(names, sizeof(names));
  if (len <= 0) { // 0: no legacy tables in this namespace, so no rules
    if (len < 0) out->flags |= POL_IPT_UNKNOWN;
    return;
  }
  // Only opened when a table exists: the socket needs CAP_NET_RAW, the reads CAP_NET_ADMIN.
  int fd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
  if (fd < 0) {
    out->flags |= POL_IPT_UNKNOWN;
    return;
  }
  char *save = NULL;
  char *name = strtok_r(names, "\n", &save);
  for (uint32_t i = 0; name != NULL && i < POL_NAMES_SIZE; i++) {
    uint32_t rules = 0;
    if (pol_ipt_count((int32_t)fd, name, &rules) < 0) out->flags |= POL_IPT_UNKNOWN;
    out->ipt_legacy_rules = pol_add_sat(out->ipt_legacy_rules, rules);
    name = strtok_r(NULL, "\n", &save);
  }
  (void)close(fd);
}

// ---- entry -----------------------------------------------------------------------------

int32_t nkb_policy_probe(nkb_policy_t *out) {
  if (out == NULL) return -EINVAL;
  memset(out, 0, sizeof(*out));
  pol_nft_probe(out);
  pol_ipt_probe(out);
  pol_xfrm_probe(out);
  assert((out->flags & ~(POL_NFT_UNKNOWN | POL_IPT_UNKNOWN | POL_XFRM_UNKNOWN)) == 0);
  return 0;
}
