/**
 * The control-plane half of the per-destination header cache: for a
 * destination the shim has not seen (or whose entry expired), decide whether it
 * leaves through the bypass interface and with which Ethernet addresses.
 *
 * @module
 */

import { byteLengthOf, Dest, lib } from "./ffi.ts";
import { errorFromErrno } from "./errors.ts";
import { isMulticast, multicastMac } from "./ipv4.ts";
import { type LinkInfo, neighbourMac, routeGet, RouteType } from "./netinfo.ts";

/** How long a resolved destination is trusted before its neighbour is looked up again. */
export const DEST_TTL_MS = 5000;
/**
 * How long a destination whose next hop is unresolved goes through the kernel
 * (which queues its datagrams behind ARP) before nkb looks again: this, doubled
 * at each look that finds it still unresolved, up to UNRESOLVED_MAX_MS. A
 * neighbour that answers is on the ring after a few milliseconds; one that
 * never answers costs one look (a route and a neighbour request to the local
 * kernel) per second at most.
 */
export const UNRESOLVED_FIRST_MS = 2;
/** The longest an unresolved next hop is left to the kernel before nkb looks again. */
export const UNRESOLVED_MAX_MS = 1000;
// Next hops being backed off, per Worker: a bounded table whose oldest entry goes when
// it is full (that next hop then starts again at UNRESOLVED_FIRST_MS: more looks, no wait).
const MAX_UNRESOLVED = 1024;
const unresolved = new Map<string, number>(); // "ifindex/ipBe" -> looks that found it unresolved

/** What resolving needs to know about the socket. */
export interface DestinationContext {
  /** The socket's shim handle. */
  handle: number;
  /** The bypass interface. */
  link: LinkInfo;
  /** Source address of bypass frames. */
  srcBe: number;
  /** The interface chosen with IP_MULTICAST_IF, or 0 to follow the routes. */
  multicastIfindex: number;
}

function set(
  h: number,
  ipBe: number,
  port: number,
  kind: number,
  macs: Uint8Array | null,
  src: number,
  ttl: number,
): void {
  const macsLen = macs === null ? 0 : byteLengthOf(macs);
  const rc = lib().nkb_dest_set(h, ipBe, port, kind, macs, macsLen, src, ttl);
  if (rc < 0) throw errorFromErrno(rc, "destination cache");
}

/** Sends to `ipBe:port` through the kernel from now on (for `ttlMs`). */
export function useKernel(h: number, ipBe: number, port: number, ttlMs = DEST_TTL_MS): void {
  set(h, ipBe, port, Dest.kernel, null, 0, ttlMs);
}

/** How long to leave next hop `key` to the kernel after one more look found it unresolved. */
function unresolvedTtl(key: string): number {
  const looks = unresolved.get(key) ?? 0;
  unresolved.delete(key); // re-inserted last: the Map's order is then oldest look first
  if (unresolved.size >= MAX_UNRESOLVED) {
    const oldest = unresolved.keys().next().value;
    if (oldest !== undefined) unresolved.delete(oldest);
  }
  unresolved.set(key, Math.min(looks + 1, 16));
  return Math.min(UNRESOLVED_FIRST_MS * 2 ** looks, UNRESOLVED_MAX_MS);
}

type NextHop = { mac: Uint8Array | null; key: string } | "kernel";

function nextHop(ctx: DestinationContext, ipBe: number): NextHop {
  if (isMulticast(ipBe)) {
    // A bypass socket has one interface for both directions: multicast leaves through it
    // unless IP_MULTICAST_IF names another.
    const oif = ctx.multicastIfindex || ctx.link.ifindex;
    return oif === ctx.link.ifindex ? { mac: multicastMac(ipBe), key: "" } : "kernel";
  }
  const route = routeGet(ipBe);
  if (typeof route === "number" || route.oif !== ctx.link.ifindex) return "kernel";
  if (route.type !== RouteType.unicast) return "kernel";
  const hopBe = route.gatewayBe || ipBe;
  return { mac: neighbourMac(ctx.link.ifindex, hopBe), key: `${ctx.link.ifindex}/${hopBe}` };
}

/**
 * Fills the shim's cache entry for `ipBe:port`: through the ring when its route
 * leaves through the bypass interface and the next hop is resolved, else the
 * kernel. Never waits for a neighbour: an unresolved one is left to the kernel
 * for a while (see UNRESOLVED_FIRST_MS) and looked at again by a later send.
 */
export function resolveDestination(ctx: DestinationContext, ipBe: number, port: number): void {
  const hop = nextHop(ctx, ipBe);
  if (hop === "kernel") return useKernel(ctx.handle, ipBe, port);
  const mac = hop.mac;
  // Unresolved: the kernel queues this datagram behind ARP; a later send looks again.
  if (mac === null) return useKernel(ctx.handle, ipBe, port, unresolvedTtl(hop.key));
  if (hop.key !== "") unresolved.delete(hop.key);
  const macs = new Uint8Array(12);
  macs.set(mac, 0);
  macs.set(ctx.link.mac, 6);
  set(ctx.handle, ipBe, port, Dest.bypass, macs, ctx.srcBe, DEST_TTL_MS);
}
