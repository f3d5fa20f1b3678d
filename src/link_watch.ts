/**
 * Watching the bypass interface while a socket uses it: the interface can go
 * down, change its MTU or MAC, lose the socket's address or disappear.
 *
 * @module
 */

import { addrIfindex, linkGet, linkIsUp } from "./netinfo.ts";
import { errnoName } from "./errors.ts";

/** What changed, if anything. */
export type LinkVerdict =
  | { state: "up"; mtu: number; mac: Uint8Array }
  | { state: "down"; mtu: number; mac: Uint8Array }
  | { state: "address-removed"; detail: string }
  | { state: "interface-gone"; detail: string };

/** How often a busy socket looks at its interface. */
export const WATCH_INTERVAL_MS = 250;

/** Looks at interface `ifindex` and the socket's local address `localBe` (0: wildcard). */
export function watchLink(ifindex: number, localBe: number): LinkVerdict {
  const link = linkGet(ifindex);
  if (typeof link === "number") {
    return { state: "interface-gone", detail: `ifindex ${ifindex}: ${errnoName(link)}` };
  }
  if (localBe !== 0 && addrIfindex(localBe) !== ifindex) {
    return { state: "address-removed", detail: `${link.name} no longer has the socket's address` };
  }
  return { state: linkIsUp(link) ? "up" : "down", mtu: link.mtu, mac: link.mac };
}
