/**
 * Whether a socket whose local address is now known may bypass the kernel,
 * and through which interface. Every "no" carries a stable reason code.
 *
 * @module
 */

import {
  addrIfindex,
  linkGet,
  type LinkInfo,
  linkIsLoopback,
  linkIsUp,
  privileges,
  progName,
} from "./netinfo.ts";
import { errnoName } from "./errors.ts";

/** Stable codes for why a socket is on the kernel path (documented in README.md). */
export type FallbackReason =
  | "forced-kernel"
  | "wildcard-bind"
  | "no-interface"
  | "loopback"
  | "unsupported-interface"
  | "foreign-xdp-program"
  | "interface-down"
  | "mtu-too-large"
  | "missing-privilege"
  | "queue-busy"
  | "setup-failed";

/** The verdict: an interface to attach to, or a reason not to. */
export type Decision =
  | { ok: true; link: LinkInfo; frameSize: number; queues: number }
  | { ok: false; reason: FallbackReason; detail: string };

/** Interface kinds that carry AF_XDP and a native XDP program: physical ("") and veth. */
const CAPABLE_KINDS = new Set(["", "veth"]);
const ARPHRD_ETHER = 1;
const XDP_HEADROOM = 256;
const ETH_HEADER = 14;
const MAX_QUEUES = 8;
/** The name our shim gives its XDP program (bpf_filter.c). */
const NKB_PROG_NAME = "nkb_xdp";

const CAP_NET_ADMIN = 12n;
const CAP_NET_RAW = 13n;
const CAP_SYS_ADMIN = 21n;
const CAP_BPF = 39n;

function has(caps: bigint, cap: bigint): boolean {
  return ((caps >> cap) & 1n) === 1n;
}

function missingCapabilities(): string | null {
  const p = privileges();
  if (typeof p === "number") return `capget failed: ${errnoName(p)}`;
  const missing: string[] = [];
  if (!has(p.effective, CAP_NET_RAW)) missing.push("CAP_NET_RAW");
  if (!has(p.effective, CAP_NET_ADMIN)) missing.push("CAP_NET_ADMIN");
  if (!has(p.effective, CAP_BPF) && !has(p.effective, CAP_SYS_ADMIN)) {
    missing.push("CAP_BPF or CAP_SYS_ADMIN");
  }
  return missing.length === 0 ? null : missing.join(", ");
}

function no(reason: FallbackReason, detail: string): Decision {
  return { ok: false, reason, detail };
}

/** Checks a link's own fitness for bypass. */
export function judgeLink(link: LinkInfo, ownProgIds: ReadonlySet<number>): Decision {
  if (linkIsLoopback(link)) return no("loopback", `${link.name} is the loopback device`);
  if (link.arptype !== ARPHRD_ETHER || !CAPABLE_KINDS.has(link.kind)) {
    return no("unsupported-interface", `${link.name} is of kind "${link.kind || link.arptype}"`);
  }
  if (link.masterIfindex !== 0 && link.kind === "") {
    return no("unsupported-interface", `${link.name} is enslaved to ifindex ${link.masterIfindex}`);
  }
  if (link.xdpProgId !== 0 && !ownProgIds.has(link.xdpProgId)) {
    const name = progName(link.xdpProgId);
    if (name === NKB_PROG_NAME) {
      return no(
        "queue-busy",
        `another nkb process holds ${link.name} (XDP program ${link.xdpProgId})`,
      );
    }
    return no("foreign-xdp-program", `${link.name} already runs XDP program ${link.xdpProgId}`);
  }
  if (!linkIsUp(link)) return no("interface-down", `${link.name} is down`);
  const need = link.mtu + ETH_HEADER + XDP_HEADROOM;
  if (need > 4096) return no("mtu-too-large", `${link.name} MTU ${link.mtu} exceeds 3826`);
  const queues = Math.max(1, Math.min(link.rxQueues, MAX_QUEUES));
  return { ok: true, link, frameSize: need <= 2048 ? 2048 : 4096, queues };
}

/** Decides for a socket bound (explicitly or by the kernel) to local address `localBe`. */
export function decide(localBe: number, ownProgIds: ReadonlySet<number>): Decision {
  if (localBe === 0) return no("wildcard-bind", "bound to 0.0.0.0: no single interface");
  const ifindex = addrIfindex(localBe);
  if (ifindex < 0) {
    return no("no-interface", `no interface has this address (${errnoName(ifindex)})`);
  }
  const link = linkGet(ifindex);
  if (typeof link === "number") return no("no-interface", `link lookup: ${errnoName(link)}`);
  const verdict = judgeLink(link, ownProgIds);
  if (!verdict.ok) return verdict;
  const missing = missingCapabilities();
  if (missing !== null) return no("missing-privilege", `missing ${missing}`);
  return verdict;
}
