/**
 * The public shapes of nkb sockets: their state, counters and options.
 *
 * @module
 */

import type { BypassOptions } from "./config.ts";
import type { FallbackReason } from "./decide.ts";
import { byteLengthOf, lib, Stat } from "./ffi.ts";
import { errorFromErrno } from "./errors.ts";

/** Where a socket's datagrams go, and why not through the rings when they don't. */
export interface BypassState {
  /** True when send and receive use the AF_XDP rings. */
  active: boolean;
  /** The bypass interface, or null. */
  interface: string | null;
  /**
   * The queue a queue-affine socket receives from; 0 for a whole-interface socket, which
   * covers the queues its process holds on the interface (`nkb stat` lists them); null
   * off the bypass path.
   */
  queue: number | null;
  /** Why the socket is on the kernel path (a stable code), or null when active or undecided. */
  reason: FallbackReason | null;
  /** A human explanation of `reason` (what failed, with the errno), or null. */
  detail: string | null;
}

/** The counters of SO_NET_KERNEL_BYPASS_STATS plus nkb's own. */
export interface BypassStats {
  /** Datagrams received through the bypass path. */
  ipkts: number;
  /** Of those, how many arrived after the receiver had to spin. */
  ipktsSpin: number;
  /** Datagrams sent through the bypass path. */
  opkts: number;
  /** Of those, how many needed busy-waiting for a free TX slot. */
  opktsSpin: number;
  /** The most busy-wait tries one send needed. */
  sendSpinMax: number;
  /** Datagrams dropped because this socket's parked queue was full. */
  rxDropped: number;
  /** Frames that failed validation (lengths, checksums). */
  rxInvalid: number;
  /** Datagrams received through the kernel (companion) socket. */
  kernelIpkts: number;
  /** Datagrams sent through the kernel socket (other interface, over the MTU, fallback). */
  kernelOpkts: number;
  /** Sends refused because the TX ring stayed full. */
  txFull: number;
  /** Datagrams cut to fit the caller's buffer. */
  rxTruncated: number;
  /**
   * Drops the kernel counted on the AF_XDP sockets of the rings this socket reads (shared by the
   * sockets on those rings). Read from the kernel by each `stats()` call, and every 250 ms for
   * `nkb stat`: current whether or not the application receives.
   */
  interfaceDrops: number;
  /**
   * Datagrams the device dropped after the TX ring handed them over, on the interface this
   * socket sends on (shared by the sockets sending there). In copy mode the kernel reports
   * each such drop (a veth whose peer's queue is full, a full device queue) as it happens.
   */
  interfaceTxDrops: number;
  /** Bypass datagrams dropped because they came from someone other than the connected peer. */
  rxForeign: number;
  /** ICMP errors the kernel reported for this socket and nkb hid (bypass sockets do not report them). */
  icmpIgnored: number;
  /**
   * Datagrams dropped on the way in (`nkb stat`'s Dpkts): `rxDropped` + `rxInvalid` +
   * `interfaceDrops` (rings full, fill ring empty, invalid descriptors).
   */
  dpkts: number;
  /**
   * Nanoseconds receives spent waiting for a datagram (spinning in recvMode 1, asleep in
   * recvMode 0): with the wall time, how busy the receiving thread really is.
   */
  waitNs: number;
}

/** Options of {@linkcode UdpBypass.listenDatagram}. */
export interface ListenOptions extends BypassOptions {
  /** Only "udp". */
  transport: "udp";
  /** Local IPv4 address (default 0.0.0.0, which keeps the socket on the kernel path). */
  hostname?: string;
  /** Local port (default 0: the kernel picks one). */
  port?: number;
  /** SO_REUSEADDR on the kernel socket. */
  reuseAddress?: boolean;
  /**
   * IP_MULTICAST_LOOP on the kernel socket (default false, as Deno's): whether this
   * host's sockets receive the multicast this socket sends.
   */
  loopback?: boolean;
  /** SO_REUSEPORT on the kernel socket: queue-affine sockets share one address and port. */
  reusePort?: boolean;
}

/** Options of {@linkcode UdpBypass.receiveSync}. */
export interface ReceiveOptions {
  /** 0: do not wait; absent: wait until a datagram arrives. */
  timeoutMs?: number;
}

/**
 * Reads the shim's counters of socket `h`.
 *
 * @throws {Deno.errors.BadResource} when `h` is no longer an open socket (another
 *   failure of the shim: the error {@linkcode errorFromErrno} makes of it).
 */
export function readStats(h: number): BypassStats {
  const out = new BigUint64Array(Stat.count);
  const rc = lib().nkb_sock_stats(h, out, byteLengthOf(out));
  if (rc < 0) throw errorFromErrno(rc, "stats");
  return statsFromWords((i) => Number(out[i]));
}

/** The counters from the shim's words (NKB_ST_*), word `i` read by `n(i)`. */
export function statsFromWords(n: (i: number) => number): BypassStats {
  return {
    ipkts: n(Stat.ipkts),
    ipktsSpin: n(Stat.ipktsSpin),
    opkts: n(Stat.opkts),
    opktsSpin: n(Stat.opktsSpin),
    sendSpinMax: n(Stat.sendSpinMax),
    rxDropped: n(Stat.rxDropped),
    rxInvalid: n(Stat.rxInvalid),
    kernelIpkts: n(Stat.kernelIpkts),
    kernelOpkts: n(Stat.kernelOpkts),
    txFull: n(Stat.txFull),
    rxTruncated: n(Stat.rxTruncated),
    interfaceDrops: n(Stat.engineDrops),
    interfaceTxDrops: n(Stat.engineTxDrops),
    rxForeign: n(Stat.rxForeign),
    icmpIgnored: n(Stat.icmpIgnored),
    dpkts: n(Stat.rxDropped) + n(Stat.rxInvalid) + n(Stat.engineDrops),
    waitNs: n(Stat.waitNs),
  };
}
