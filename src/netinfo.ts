/**
 * Kernel network facts the control plane decides on: links, routes, local
 * addresses and neighbours, all looked up over rtnetlink by the shim.
 *
 * @module
 */

import { byteLengthOf, lib } from "./ffi.ts";

/** One interface as rtnetlink describes it. */
export interface LinkInfo {
  ifindex: number;
  name: string;
  mtu: number;
  flags: number;
  rxQueues: number;
  txQueues: number;
  xdpProgId: number;
  operstate: number;
  arptype: number;
  masterIfindex: number;
  mac: Uint8Array;
  kind: string;
}

/** A route lookup's answer. */
export interface RouteInfo {
  oif: number;
  type: number;
  prefsrcBe: number;
  gatewayBe: number;
}

/** Route types (rtnetlink RTN_*). */
export const RouteType = { unicast: 1, local: 2, broadcast: 3, multicast: 5 } as const;

const IFF_UP = 0x1;
const IFF_LOOPBACK = 0x8;
const decoder = new TextDecoder();

function cString(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return decoder.decode(end < 0 ? bytes : bytes.subarray(0, end));
}

/** Link facts of `ifindex`, or a negative errno. */
export function linkGet(ifindex: number): LinkInfo | number {
  const out = new Uint8Array(76);
  const rc = lib().nkb_link_get(ifindex, out, byteLengthOf(out));
  if (rc < 0) return rc;
  const w = new Uint32Array(out.buffer, 0, 9);
  return {
    ifindex: w[0],
    mtu: w[1],
    flags: w[2],
    rxQueues: w[3],
    txQueues: w[4],
    xdpProgId: w[5],
    operstate: w[6],
    arptype: w[7],
    masterIfindex: w[8],
    mac: out.slice(36, 42),
    kind: cString(out.subarray(44, 60)),
    name: cString(out.subarray(60, 76)),
  };
}

/** True when the interface is administratively up. */
export function linkIsUp(link: LinkInfo): boolean {
  return (link.flags & IFF_UP) !== 0;
}

/** True for the loopback device. */
export function linkIsLoopback(link: LinkInfo): boolean {
  return (link.flags & IFF_LOOPBACK) !== 0 || link.arptype === 772;
}

/** Where the kernel would send a datagram to `dstBe`, or a negative errno. */
export function routeGet(dstBe: number): RouteInfo | number {
  const out = new Uint32Array(4);
  const rc = lib().nkb_route_get(dstBe, out, byteLengthOf(out));
  if (rc < 0) return rc;
  return { oif: out[0], type: out[1], prefsrcBe: out[2], gatewayBe: out[3] };
}

/** The interface that owns local address `ipBe`, or a negative errno. */
export function addrIfindex(ipBe: number): number {
  return lib().nkb_addr_ifindex(ipBe);
}

/** The first IPv4 address of an interface, or a negative errno. */
export function addrFirst(ifindex: number): number {
  const out = new Uint32Array(1);
  const rc = lib().nkb_addr_first(ifindex, out, byteLengthOf(out));
  return rc < 0 ? rc : out[0];
}

const NUD_REACHABLE = 0x02;
const NUD_STALE = 0x04;
const NUD_DELAY = 0x08;
const NUD_PROBE = 0x10;
const NUD_NOARP = 0x40;
const NUD_PERMANENT = 0x80;
const NUD_USABLE = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_NOARP |
  NUD_PERMANENT;

// Requests of askResolve still running on Deno's FFI pool; more are dropped meanwhile
// (the kernel's own ARP, for the datagrams it carries, resolves the next hop anyway).
const MAX_RESOLVES_RUNNING = 4;
let resolvesRunning = 0;
const resolveDone = (): void => void resolvesRunning--;

/**
 * Asks the kernel to resolve next hop `ipBe` on `ifindex` (NTF_USE: it sends the ARP
 * request itself), on a thread of Deno's FFI pool, unawaited: RTM_NEWNEIGH takes the
 * kernel's rtnl lock, which another process changing links or namespaces holds for
 * milliseconds (this request took up to 4 ms on the event loop while one did).
 */
function askResolve(ifindex: number, ipBe: number): void {
  if (resolvesRunning >= MAX_RESOLVES_RUNNING) return;
  resolvesRunning++;
  lib().nkb_neigh_resolve_async(ifindex, ipBe).then(resolveDone, resolveDone);
}

/**
 * The Ethernet address of next hop `ipBe` on `ifindex` when the kernel knows it;
 * else asks the kernel to resolve it (see askResolve) and returns null at once. One
 * local rtnetlink request on the event loop; nothing waits on the network.
 */
export function neighbourMac(ifindex: number, ipBe: number): Uint8Array | null {
  const mac = new Uint8Array(6);
  const state = lib().nkb_neigh_get(ifindex, ipBe, mac, byteLengthOf(mac));
  if (state > 0 && (state & NUD_USABLE) !== 0) {
    // Stale entries are still right almost always; ask the kernel to confirm them.
    if ((state & NUD_REACHABLE) === 0 && (state & (NUD_PERMANENT | NUD_NOARP)) === 0) {
      askResolve(ifindex, ipBe);
    }
    return mac;
  }
  askResolve(ifindex, ipBe);
  return null;
}

/** Effective capabilities and the memlock limit of this process. */
export interface Privileges {
  effective: bigint;
  memlockCur: bigint;
  memlockMax: bigint;
  euid: number;
}

/** Reads this process's privileges, or a negative errno. */
export function privileges(): Privileges | number {
  const out = new BigUint64Array(4);
  const rc = lib().nkb_caps(out, byteLengthOf(out));
  if (rc < 0) return rc;
  return { effective: out[0], memlockCur: out[1], memlockMax: out[2], euid: Number(out[3]) };
}

/**
 * The name of our XDP filter (NKB_PROG_NAME, ffi/nkb_net.h; tests/filter_rules.test.ts
 * compares them). Version 3's control block holds a record per process asking for a queue;
 * version 2 ("nkb_xdp2") keyed flows by queue and was shared by every nkb process on the
 * interface; "nkb_xdp" was version 1.
 */
export const NKB_PROG_NAME = "nkb_xdp3";

/** Whether a program of this name is some version of nkb's filter. */
export function isNkbProgram(name: string): boolean {
  return name === "nkb_xdp" || /^nkb_xdp\d+$/.test(name);
}

/** The name of a loaded BPF program (NKB_PROG_NAME for ours), or a negative errno. */
export function progName(progId: number): string | number {
  const out = new Uint8Array(16);
  const rc = lib().nkb_prog_name(progId, out, byteLengthOf(out));
  return rc < 0 ? rc : cString(out);
}

/** Packet filtering and IPsec present in this network namespace. */
export interface PolicyInfo {
  nftRules: number;
  iptLegacyRules: number;
  xfrmPolicies: number;
  xfrmStates: number;
  /** bit 0: nftables unknown, bit 1: legacy iptables unknown, bit 2: xfrm unknown. */
  unknown: number;
}

/** Counts nftables/iptables rules and xfrm policies/states, or a negative errno. */
export function policy(): PolicyInfo | number {
  const out = new Uint32Array(5);
  const rc = lib().nkb_policy(out, byteLengthOf(out));
  if (rc < 0) return rc;
  return {
    nftRules: out[0],
    iptLegacyRules: out[1],
    xfrmPolicies: out[2],
    xfrmStates: out[3],
    unknown: out[4],
  };
}
