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
/** How long an unresolved next hop is left to the kernel before nkb asks again. */
const UNRESOLVED_TTL_MS = 100;
const NEIGH_TIMEOUT_MS = 200;

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

function nextHopMac(ctx: DestinationContext, ipBe: number): Uint8Array | null | "kernel" {
  if (isMulticast(ipBe)) {
    // A bypass socket has one interface for both directions: multicast leaves through it
    // unless IP_MULTICAST_IF names another.
    const oif = ctx.multicastIfindex || ctx.link.ifindex;
    return oif === ctx.link.ifindex ? multicastMac(ipBe) : "kernel";
  }
  const route = routeGet(ipBe);
  if (typeof route === "number" || route.oif !== ctx.link.ifindex) return "kernel";
  if (route.type !== RouteType.unicast) return "kernel";
  return neighbourMac(ctx.link.ifindex, route.gatewayBe || ipBe, NEIGH_TIMEOUT_MS);
}

/**
 * Fills the shim's cache entry for `ipBe:port`: through the ring when its route
 * leaves through the bypass interface and the next hop resolves, else the kernel.
 */
export function resolveDestination(ctx: DestinationContext, ipBe: number, port: number): void {
  const mac = nextHopMac(ctx, ipBe);
  if (mac === "kernel") return useKernel(ctx.handle, ipBe, port);
  // Unresolved: the kernel queues this datagram behind ARP; a later send asks again.
  if (mac === null) return useKernel(ctx.handle, ipBe, port, UNRESOLVED_TTL_MS);
  const macs = new Uint8Array(12);
  macs.set(mac, 0);
  macs.set(ctx.link.mac, 6);
  set(ctx.handle, ipBe, port, Dest.bypass, macs, ctx.srcBe, DEST_TTL_MS);
}
