/**
 * Whether a socket whose interface is now known may bypass the kernel, and
 * through which interface. Every "no" carries a stable reason code.
 *
 * @module
 */

import {
  addrIfindex,
  isNkbProgram,
  linkGet,
  type LinkInfo,
  linkIsLoopback,
  linkIsUp,
  NKB_PROG_NAME,
  policy,
  privileges,
  progName,
} from "./netinfo.ts";
import { errnoName } from "./errors.ts";
import { lib } from "./ffi.ts";

/** Stable codes for why a socket is on the kernel path (documented in README.md). */
export type FallbackReason =
  | "forced-kernel"
  | "wildcard-bind"
  | "no-interface"
  | "loopback"
  | "link-aggregation"
  | "bridge"
  | "vlan"
  | "virtual-interface"
  | "unsupported-interface"
  | "foreign-xdp-program"
  | "interface-down"
  | "mtu-too-large"
  | "missing-privilege"
  | "packet-filter"
  | "ipsec"
  | "queue-busy"
  | "setup-failed"
  | "address-removed"
  | "interface-gone";

/** What the engine for an interface is made of. */
export interface Plan {
  link: LinkInfo;
  frameSize: number;
  queues: number;
  /** Another nkb process's filter is on the interface: this one joins it (CAP_SYS_ADMIN). */
  shared: boolean;
}

/** The verdict: an interface to attach to, or a reason not to. */
export type Decision =
  | ({ ok: true } & Plan)
  | { ok: false; reason: FallbackReason; detail: string };

const ARPHRD_ETHER = 1;
const XDP_HEADROOM = 256;
const ETH_HEADER = 14;
const MAX_QUEUES = 8;
const RX_FRAMES_PER_QUEUE = 8192;
const TX_FRAMES = 2048;

const CAP_NET_ADMIN = 12n;
const CAP_NET_RAW = 13n;
const CAP_IPC_LOCK = 14n;
const CAP_SYS_ADMIN = 21n;
const CAP_BPF = 39n;

function no(reason: FallbackReason, detail: string): Decision {
  return { ok: false, reason, detail };
}

/** The reason an interface kind cannot bypass, or null for physical devices and veth. */
function kindReason(kind: string): FallbackReason | null {
  if (kind === "" || kind === "veth") return null;
  if (kind === "bond" || kind === "team") return "link-aggregation";
  if (kind === "bridge") return "bridge";
  if (kind === "vlan") return "vlan";
  return "virtual-interface";
}

/** Finds a link by index (rtnetlink by default; tests pass their own). */
export type LinkLookup = (ifindex: number) => LinkInfo | number;
/** Whether an XDP program is this process's own filter (any Worker's). */
export type ProgramOwner = (progId: number) => boolean;

/** Asks the shim, which knows every engine of the process whichever Worker made it. */
export function ownProgram(progId: number): boolean {
  return lib().nkb_prog_is_ours(progId) === 1;
}

function judgeKind(link: LinkInfo, lookup: LinkLookup): Decision | null {
  const own = kindReason(link.kind);
  if (own !== null) return no(own, `${link.name} is a ${link.kind} interface`);
  if (link.arptype !== ARPHRD_ETHER) {
    return no("unsupported-interface", `${link.name} is not Ethernet (ARPHRD ${link.arptype})`);
  }
  if (link.masterIfindex !== 0) {
    const master = lookup(link.masterIfindex);
    const kind = typeof master === "number" ? "unknown" : master.kind;
    const name = typeof master === "number" ? `ifindex ${link.masterIfindex}` : master.name;
    return no(
      kindReason(kind) ?? "virtual-interface",
      `${link.name} is enslaved to ${kind} ${name}`,
    );
  }
  return null;
}

// null: no program, ours, or another nkb process's filter of this version (joined, not
// taken: shared says so); else why not.
function judgeProgram(
  link: LinkInfo,
  isOurs: ProgramOwner,
): { shared: boolean } | Decision {
  if (link.xdpProgId === 0 || isOurs(link.xdpProgId)) return { shared: false };
  const name = progName(link.xdpProgId);
  if (name === NKB_PROG_NAME) return { shared: true };
  if (typeof name === "number") {
    // Names are CAP_SYS_ADMIN's (BPF_PROG_GET_FD_BY_ID): ours or not cannot be told.
    return no(
      "missing-privilege",
      `cannot tell whether XDP program ${link.xdpProgId} on ${link.name} is another nkb ` +
        `process's filter (${errnoName(name)}: reading its name needs CAP_SYS_ADMIN)`,
    );
  }
  if (isNkbProgram(name)) {
    return no(
      "queue-busy",
      `an nkb process of another version holds ${link.name} (XDP program ${link.xdpProgId}, ${name})`,
    );
  }
  return no("foreign-xdp-program", `${link.name} already runs XDP program ${link.xdpProgId}`);
}

/** Checks a link's own fitness for bypass. */
export function judgeLink(
  link: LinkInfo,
  isOurs: ProgramOwner = ownProgram,
  lookup: LinkLookup = linkGet,
): Decision {
  if (linkIsLoopback(link)) return no("loopback", `${link.name} is the loopback device`);
  const byKind = judgeKind(link, lookup);
  if (byKind !== null) return byKind;
  const byProgram = judgeProgram(link, isOurs);
  if ("ok" in byProgram) return byProgram;
  if (!linkIsUp(link)) return no("interface-down", `${link.name} is down`);
  const need = link.mtu + ETH_HEADER + XDP_HEADROOM;
  if (need > 4096) return no("mtu-too-large", `${link.name} MTU ${link.mtu} exceeds 3826`);
  const queues = Math.max(1, Math.min(link.rxQueues, MAX_QUEUES));
  return {
    ok: true,
    link,
    frameSize: need <= 2048 ? 2048 : 4096,
    queues,
    shared: byProgram.shared,
  };
}

function has(caps: bigint, cap: bigint): boolean {
  return ((caps >> cap) & 1n) === 1n;
}

/** What this process lacks for an engine of `plan`, or null. */
export function missingPrivileges(plan: Plan): string | null {
  const p = privileges();
  if (typeof p === "number") return `capget failed: ${errnoName(p)}`;
  const missing: string[] = [];
  if (!has(p.effective, CAP_NET_RAW)) missing.push("CAP_NET_RAW");
  if (!has(p.effective, CAP_NET_ADMIN)) missing.push("CAP_NET_ADMIN");
  if (plan.shared && !has(p.effective, CAP_SYS_ADMIN)) {
    // Finding another process's filter by its ids (no bpffs to pin it in) is SYS_ADMIN's.
    missing.push(
      `CAP_SYS_ADMIN (to join the filter another nkb process runs on ${plan.link.name})`,
    );
  } else if (!has(p.effective, CAP_BPF) && !has(p.effective, CAP_SYS_ADMIN)) {
    missing.push("CAP_BPF or CAP_SYS_ADMIN");
  }
  // UMEM pages are locked memory: CAP_IPC_LOCK, or a hard limit the shim can raise to.
  const umem = BigInt((RX_FRAMES_PER_QUEUE * plan.queues + TX_FRAMES) * plan.frameSize);
  if (!has(p.effective, CAP_IPC_LOCK) && p.memlockMax < umem) {
    missing.push(`CAP_IPC_LOCK or a memlock limit of ${umem} bytes (hard limit ${p.memlockMax})`);
  }
  return missing.length === 0 ? null : missing.join(", ");
}

/** Netfilter rules or IPsec in this namespace forbid bypass (the contract): why, or null. */
export function policyVerdict(): Decision | null {
  const p = policy();
  if (typeof p === "number") return null;
  const rules = p.nftRules + p.iptLegacyRules;
  if (rules > 0) {
    return no("packet-filter", `${p.nftRules} nftables and ${p.iptLegacyRules} iptables rules`);
  }
  if (p.xfrmPolicies + p.xfrmStates > 0) {
    return no("ipsec", `${p.xfrmPolicies} IPsec policies and ${p.xfrmStates} states`);
  }
  return null;
}

/** Decides for the interface that owns local address `ipBe`. */
export function decide(ipBe: number): Decision {
  if (ipBe === 0) return no("wildcard-bind", "bound to 0.0.0.0: no single interface");
  const ifindex = addrIfindex(ipBe);
  if (ifindex < 0) {
    return no("no-interface", `no interface has this address (${errnoName(ifindex)})`);
  }
  return decideLink(ifindex);
}

/** Decides for interface `ifindex`. */
export function decideLink(ifindex: number): Decision {
  const link = linkGet(ifindex);
  if (typeof link === "number") return no("no-interface", `link lookup: ${errnoName(link)}`);
  const verdict = judgeLink(link);
  if (!verdict.ok) return verdict;
  const missing = missingPrivileges(verdict);
  if (missing !== null) return no("missing-privilege", `missing ${missing}`);
  return policyVerdict() ?? verdict;
}
