/**
 * `Deno.MulticastV4Membership` objects of nkb sockets.
 *
 * @module
 */

import { lib, Mcast, Opt } from "./ffi.ts";
import { errorFromErrno } from "./errors.ts";

/** What a membership needs from its socket. */
export interface MembershipHost {
  /** The socket's shim handle; throws when the socket is closed. */
  handle(): number;
  /** Called after the kernel membership of `groupBe` is dropped. */
  left(groupBe: number): void;
  /** Called after the multicast TTL changed (cached headers carry it). */
  ttlChanged(): void;
  /** Called after IP_MULTICAST_LOOP was set: multicast sends take the path that loops. */
  loopChanged(on: boolean): void;
}

// What Deno's membership methods resolve with: null, not undefined (their ops return
// nothing, which reaches JavaScript as null).
const NOTHING = null as unknown as void;

function settle(rc: number, what: string): Promise<void> {
  return rc < 0 ? Promise.reject(errorFromErrno(rc, what)) : Promise.resolve(NOTHING);
}

function attempt(fn: () => Promise<void>): Promise<void> {
  try {
    return fn();
  } catch (e) {
    return Promise.reject(e);
  }
}

/**
 * The membership of `groupBe` joined on the interface with address `ifaceBe`. Its methods
 * never throw: they return promises that resolve with null, as Deno's, or reject
 * (`setTTL` outside 0..255 with a RangeError, a failed setsockopt with the error of its
 * errno).
 */
export function membership(
  host: MembershipHost,
  groupBe: number,
  ifaceBe: number,
): Deno.MulticastV4Membership {
  return {
    leave: (): Promise<void> =>
      attempt(() => {
        const rc = lib().nkb_sock_mcast(host.handle(), Mcast.leave, groupBe, ifaceBe);
        if (rc >= 0) host.left(groupBe);
        return settle(rc, "IP_DROP_MEMBERSHIP");
      }),
    setLoopback: (loopback: boolean): Promise<void> =>
      attempt(() => {
        // As Deno's, the option is the socket's: it applies to every group it sends to.
        const on = Boolean(loopback);
        const rc = lib().nkb_sock_setopt(host.handle(), Opt.multicastLoop, on ? 1 : 0);
        if (rc >= 0) host.loopChanged(on);
        return settle(rc, "IP_MULTICAST_LOOP");
      }),
    setTTL: (ttl: number): Promise<void> =>
      attempt(() => {
        if (!Number.isInteger(ttl) || ttl < 0 || ttl > 255) {
          throw new RangeError(`multicast TTL must be 0..255, got ${ttl}`);
        }
        const rc = lib().nkb_sock_setopt(host.handle(), Opt.multicastTtl, ttl);
        if (rc >= 0) host.ttlChanged();
        return settle(rc, "IP_MULTICAST_TTL");
      }),
  };
}
