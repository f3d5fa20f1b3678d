/**
 * `Deno.MulticastV4Membership` objects of nkb sockets.
 *
 * @module
 */

import { Mcast, Opt } from "./ffi.ts";
import { errorFromErrno } from "./errors.ts";

/** What a membership needs from its socket. */
export interface MembershipHost {
  /** Throws Deno's BadResource when the socket is closed. */
  open(): void;
  /** Sets a socket option (Opt) and what depends on it (cached headers, the multicast
   * path); the shim's rc. */
  setOption(opt: number, value: number): number;
  /** A membership or multicast-interface call (Mcast op), the binding told; the shim's rc. */
  mcast(op: number, groupBe: number, ifaceBe: number): number;
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
        host.open();
        return settle(host.mcast(Mcast.leave, groupBe, ifaceBe), "IP_DROP_MEMBERSHIP");
      }),
    setLoopback: (loopback: boolean): Promise<void> =>
      attempt(() => {
        // As Deno's, the option is the socket's: it applies to every group it sends to.
        const on = Boolean(loopback);
        host.open();
        return settle(host.setOption(Opt.multicastLoop, on ? 1 : 0), "IP_MULTICAST_LOOP");
      }),
    setTTL: (ttl: number): Promise<void> =>
      attempt(() => {
        // As Deno's: a number is taken as an i32 (1.5 is 1, NaN 0), -1 is the kernel's
        // default (1), and what IP_MULTICAST_TTL refuses is Deno's TypeError for EINVAL.
        if (typeof ttl !== "number") throw new TypeError("expected i32");
        let value = ttl | 0;
        if (value === -1) value = 1;
        if (value < 0 || value > 255) throw new TypeError("Invalid argument (os error 22)");
        host.open();
        return settle(host.setOption(Opt.multicastTtl, value), "IP_MULTICAST_TTL");
      }),
  };
}
