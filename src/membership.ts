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
  /** True while the socket sends through the bypass path. */
  bypassActive(): boolean;
  /** Called after the kernel membership of `groupBe` is dropped. */
  left(groupBe: number): void;
  /** Called after the multicast TTL changed (cached headers carry it). */
  ttlChanged(): void;
}

// Deno's membership calls resolve with null (their ops' unit result), not undefined.
const DONE = Promise.resolve(null as unknown as void);

function settle(rc: number, what: string): Promise<void> {
  return rc < 0 ? Promise.reject(errorFromErrno(rc, what)) : DONE;
}

function attempt(fn: () => Promise<void>): Promise<void> {
  try {
    return fn();
  } catch (e) {
    return Promise.reject(e);
  }
}

/** The membership of `groupBe` joined on the interface with address `ifaceBe`. */
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
        // Frames sent through the ring never pass the kernel, so no local socket sees them.
        if (loopback && host.bypassActive()) {
          throw new Deno.errors.NotSupported(
            "multicast loopback cannot happen on the bypass path: local sockets never see " +
              "datagrams sent through the ring",
          );
        }
        return settle(
          lib().nkb_sock_setopt(host.handle(), Opt.multicastLoop, loopback ? 1 : 0),
          "IP_MULTICAST_LOOP",
        );
      }),
    setTTL: (ttl: number): Promise<void> =>
      attempt(() => {
        // As Deno's: a number is taken as an i32 (1.5 is 1, NaN 0), -1 is the kernel's
        // default (1), and what IP_MULTICAST_TTL refuses is Deno's TypeError for EINVAL.
        if (typeof ttl !== "number") throw new TypeError("expected i32");
        let value = ttl | 0;
        if (value === -1) value = 1;
        if (value < 0 || value > 255) throw new TypeError("Invalid argument (os error 22)");
        const rc = lib().nkb_sock_setopt(host.handle(), Opt.multicastTtl, value);
        if (rc >= 0) host.ttlChanged();
        return settle(rc, "IP_MULTICAST_TTL");
      }),
  };
}
