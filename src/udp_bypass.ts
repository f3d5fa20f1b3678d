/**
 * `UdpBypass`: a UDP socket that tracks its own bind/connect/send choices and,
 * when they name one interface that can bypass the kernel, moves its datagrams
 * through that interface's AF_XDP rings. Otherwise it is a plain kernel socket.
 *
 * @module
 */

import { type BypassOptions, type ResolvedOptions, resolveOptions } from "./config.ts";
import { decide, type FallbackReason } from "./decide.ts";
import { BypassSetupError, errnoName, errorFromErrno, TxRingFullError } from "./errors.ts";
import { Dest, E_NEED_ROUTE, lib, Mcast, Opt, RECV_META_WORDS, Stat } from "./ffi.ts";
import { formatIpv4, isMulticast, multicastMac, parseIpv4 } from "./ipv4.ts";
import { type LinkInfo, neighbourMac, routeGet, RouteType } from "./netinfo.ts";

/** Where a socket's datagrams go, and why not through the rings when they don't. */
export interface BypassState {
  /** True when send and receive use the AF_XDP rings. */
  active: boolean;
  /** The bypass interface, or null. */
  interface: string | null;
  /** The first receive queue covered (all queues of the interface are), or null. */
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
  /** Drops the kernel counted on the interface's AF_XDP sockets (all sockets of this process). */
  interfaceDrops: number;
  /** Bypass datagrams dropped because they came from someone other than the connected peer. */
  rxForeign: number;
}

/** Options of {@linkcode UdpBypass.listenDatagram}. */
export interface ListenOptions extends BypassOptions {
  /** Only "udp". */
  transport: "udp";
  /** Local IPv4 address (default 0.0.0.0, which keeps the socket on the kernel path). */
  hostname?: string;
  /** Local port (0: the kernel picks one). */
  port: number;
  /** SO_REUSEADDR on the kernel socket. */
  reuseAddress?: boolean;
}

/** Options of {@linkcode UdpBypass.receiveSync}. */
export interface ReceiveOptions {
  /** 0: do not wait; absent: wait until a datagram arrives. */
  timeoutMs?: number;
}

type Phase = "open" | "bypass" | "kernel" | "closed";

const DEST_TTL_MS = 5000;
const NEIGH_TIMEOUT_MS = 200;
const WAIT_SLICE_US = 100_000;
// An async receive first spins this long on the calling thread (mode 1): a datagram
// that is about to arrive is then taken without the ~40 us hop through a thread.
const SYNC_SPIN_US = 50;
// A stream of datagrams that are always ready would never let timers run: yield to
// the event loop at least this often.
const YIELD_EVERY_MS = 4;
const MAX_DATAGRAM = 65507;
const ownProgIds = new Set<number>();
// Reasons where bypass was possible in principle but setting it up failed: the
// cases _NET_KERNEL_BYPASS_ERR_EXIT=1 turns into an exit. The others (wildcard,
// loopback, other kinds of interface) are not failures: the socket is simply not
// a bypass candidate, as in the contract.
const SETUP_FAILURES: ReadonlySet<FallbackReason> = new Set([
  "missing-privilege",
  "queue-busy",
  "setup-failed",
  "foreign-xdp-program",
]);

function checkAddr(addr: { hostname?: string; port: number }, what: string): [number, number] {
  const host = addr.hostname ?? "0.0.0.0";
  const ip = parseIpv4(host);
  if (ip === null) throw new TypeError(`${what}: "${host}" is not an IPv4 address`);
  if (!Number.isInteger(addr.port) || addr.port < 0 || addr.port > 65535) {
    throw new RangeError(`${what}: port ${addr.port} is out of range 0..65535`);
  }
  return [ip, addr.port];
}

function netAddr(ipBe: number, port: number): Deno.NetAddr {
  return { transport: "udp", hostname: formatIpv4(ipBe), port };
}

/**
 * A tracked UDP socket. Its kernel socket exists from construction; bind,
 * connect, the first send and the multicast interface choice are the moments
 * bypass is decided, once.
 *
 * @example
 * ```ts
 * const sock = UdpBypass.listenDatagram({ transport: "udp", hostname: "198.18.0.1", port: 9000 });
 * const [data, from] = await sock.receive();
 * await sock.send(data, from);
 * console.log(sock.bypass, sock.stats());
 * sock.close();
 * ```
 */
export class UdpBypass implements Deno.DatagramConn {
  readonly #h: number;
  readonly #opts: ResolvedOptions;
  #phase: Phase = "open";
  #reason: FallbackReason | null = null;
  #detail: string | null = null;
  #link: LinkInfo | null = null;
  #localBe = 0;
  #localPort = 0;
  #bound = false;
  #peer: [number, number] | null = null;
  #meta = new Uint32Array(RECV_META_WORDS);
  #metaBytes = new Uint8Array(this.#meta.buffer);
  #scratch: Uint8Array<ArrayBuffer> | null = null;
  #pendingWait: Promise<number> | null = null;
  #receiving = false;
  #lastYield = 0;

  /** Creates the kernel UDP socket and starts tracking it. */
  constructor(options: BypassOptions = {}) {
    this.#opts = resolveOptions(options);
    const h = lib().nkb_sock_open();
    if (h < 0) throw errorFromErrno(h, "socket");
    this.#h = h;
    this.#check(lib().nkb_sock_setopt(h, Opt.busyWaitCnt, this.#opts.sendBusyWaitCnt), "setopt");
    if (this.#opts.kernelOnly) this.#fallback("forced-kernel", "kernelOnly option");
  }

  /** Creates a socket and binds it: like `Deno.listenDatagram`. */
  static listenDatagram(options: ListenOptions): UdpBypass {
    if (options.transport !== "udp") throw new TypeError('transport must be "udp"');
    const sock = new UdpBypass(options);
    try {
      if (options.reuseAddress) {
        sock.#check(lib().nkb_sock_setopt(sock.#h, Opt.reuseAddress, 1), "setopt");
      }
      sock.bind({ hostname: options.hostname ?? "0.0.0.0", port: options.port });
    } catch (e) {
      sock.close();
      throw e;
    }
    return sock;
  }

  /** Where this socket's datagrams go. */
  get bypass(): BypassState {
    const active = this.#phase === "bypass";
    return {
      active,
      interface: active && this.#link ? this.#link.name : null,
      queue: active ? 0 : null,
      reason: this.#reason,
      detail: this.#detail,
    };
  }

  /** The local address (kernel's view). */
  get addr(): Deno.NetAddr {
    this.#open("addr");
    const out = new Uint32Array(2);
    this.#check(lib().nkb_sock_name(this.#h, new Uint8Array(out.buffer)), "getsockname");
    return netAddr(out[0], out[1]);
  }

  /** bind(): binds the kernel socket, then decides bypass for the address. */
  bind(addr: { hostname?: string; port: number }): void {
    this.#open("bind");
    const [ip, port] = checkAddr(addr, "bind");
    if (this.#bound) throw new Deno.errors.AddrInUse("bind: socket is already bound");
    this.#check(lib().nkb_sock_bind(this.#h, ip, port), "bind");
    this.#bound = true;
    this.#decideNow();
  }

  /** connect(): fixes the peer; decides bypass from the local address the kernel chose. */
  connect(addr: { hostname: string; port: number }): void {
    this.#open("connect");
    const [ip, port] = checkAddr(addr, "connect");
    if (port === 0) throw new RangeError("connect: port 0");
    this.#check(lib().nkb_sock_connect(this.#h, ip, port), "connect");
    this.#peer = [ip, port];
    this.#bound = true;
    this.#decideNow();
  }

  /** Sends one datagram; returns its length. Throws {@linkcode TxRingFullError} when the ring stays full. */
  sendSync(data: Uint8Array, addr?: Deno.NetAddr): number {
    this.#open("send");
    if (!(data instanceof Uint8Array)) throw new TypeError("send: data must be a Uint8Array");
    if (data.byteLength > MAX_DATAGRAM) {
      throw new RangeError(`send: ${data.byteLength} bytes exceed the UDP maximum ${MAX_DATAGRAM}`);
    }
    const [ip, port] = this.#destination(addr);
    if (!this.#bound) this.#bindForSend(ip);
    let rc = lib().nkb_send(this.#h, data, data.byteLength, ip, port);
    if (rc === E_NEED_ROUTE) {
      this.#resolveDestination(ip, port);
      rc = lib().nkb_send(this.#h, data, data.byteLength, ip, port);
    }
    if (rc >= 0) return rc;
    if (rc === -105) throw new TxRingFullError(this.#opts.sendBusyWaitCnt);
    throw errorFromErrno(rc, "send");
  }

  /** Sends one datagram (Deno.DatagramConn). */
  send(p: Uint8Array, addr: Deno.Addr): Promise<number> {
    try {
      if (addr.transport !== "udp") throw new TypeError("send: address must be udp");
      return Promise.resolve(this.sendSync(p, addr));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * Receives one datagram into `buf` (or a new buffer), from either path.
   * Returns null when `timeoutMs` passes first.
   */
  receiveSync(
    buf?: Uint8Array<ArrayBuffer>,
    opts: ReceiveOptions = {},
  ): [Uint8Array<ArrayBuffer>, Deno.NetAddr] | null {
    this.#open("receive");
    const target = this.#target(buf);
    const timeout = opts.timeoutMs ?? Infinity;
    if (!(timeout >= 0)) throw new RangeError("receive: timeoutMs must be >= 0");
    const deadline = performance.now() + timeout;
    for (let slice = 0; slice < 1e9; slice++) {
      const got = this.#receiveNow(target, buf === undefined);
      if (got !== null) return got;
      const left = deadline - performance.now();
      if (left <= 0) return null;
      const us = Math.min(Math.ceil(left * 1000), WAIT_SLICE_US);
      const rc = lib().nkb_wait(this.#h, us, this.#opts.recvMode);
      if (rc < 0) throw errorFromErrno(rc, "receive");
    }
    return null;
  }

  /** Receives one datagram without blocking the event loop (Deno.DatagramConn). */
  async receive(p?: Uint8Array<ArrayBuffer>): Promise<[Uint8Array<ArrayBuffer>, Deno.Addr]> {
    this.#open("receive");
    if (this.#receiving) throw new Deno.errors.Busy("receive: another receive is in progress");
    this.#receiving = true;
    try {
      const target = this.#target(p);
      if (performance.now() - this.#lastYield > YIELD_EVERY_MS) {
        await new Promise((resolve) => setTimeout(resolve, 0));
        this.#lastYield = performance.now();
        this.#open("receive");
      }
      for (let slice = 0; slice < Number.MAX_SAFE_INTEGER; slice++) {
        const got = this.#receiveNow(target, p === undefined);
        if (got !== null) return got;
        if (this.#opts.recvMode === 1 && slice === 0) {
          const rc = lib().nkb_wait(this.#h, SYNC_SPIN_US, 1);
          if (rc < 0) throw errorFromErrno(rc, "receive");
          if (rc === 1) continue;
        }
        // The wait runs on another thread: the event loop stays free in both modes.
        this.#pendingWait = lib().nkb_wait_async(this.#h, WAIT_SLICE_US, this.#opts.recvMode);
        const rc = await this.#pendingWait;
        this.#pendingWait = null;
        this.#lastYield = performance.now();
        if (this.#phase === "closed") throw new Deno.errors.BadResource("receive: socket closed");
        if (rc < 0) throw errorFromErrno(rc, "receive");
      }
      throw new Deno.errors.TimedOut("receive: gave up");
    } finally {
      this.#receiving = false;
    }
  }

  /** Per-socket counters (SO_NET_KERNEL_BYPASS_STATS and more). */
  stats(): BypassStats {
    this.#open("stats");
    const out = new BigUint64Array(Stat.count);
    this.#check(lib().nkb_sock_stats(this.#h, new Uint8Array(out.buffer), Stat.count), "stats");
    const n = (i: number): number => Number(out[i]);
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
      rxForeign: n(Stat.rxForeign),
    };
  }

  /** Joins an IPv4 group on the interface with address `networkInterface`. */
  joinMulticastV4(address: string, networkInterface: string): Promise<Deno.MulticastV4Membership> {
    try {
      this.#open("joinMulticastV4");
      const group = parseIpv4(address);
      const iface = parseIpv4(networkInterface);
      if (group === null || !isMulticast(group)) {
        throw new TypeError(`${address} is not an IPv4 group`);
      }
      if (iface === null) throw new TypeError(`${networkInterface} is not an IPv4 address`);
      this.#check(lib().nkb_sock_mcast(this.#h, Mcast.join, group, iface), "IP_ADD_MEMBERSHIP");
      const h = this.#h;
      const membership: Deno.MulticastV4Membership = {
        leave: (): Promise<void> => {
          const rc = lib().nkb_sock_mcast(h, Mcast.leave, group, iface);
          return rc < 0
            ? Promise.reject(errorFromErrno(rc, "IP_DROP_MEMBERSHIP"))
            : Promise.resolve();
        },
        setLoopback: (loopback: boolean): Promise<void> => {
          const rc = lib().nkb_sock_setopt(h, Opt.multicastLoop, loopback ? 1 : 0);
          return rc < 0
            ? Promise.reject(errorFromErrno(rc, "IP_MULTICAST_LOOP"))
            : Promise.resolve();
        },
        setTTL: (ttl: number): Promise<void> => {
          const rc = lib().nkb_sock_setopt(h, Opt.multicastTtl, ttl);
          return rc < 0
            ? Promise.reject(errorFromErrno(rc, "IP_MULTICAST_TTL"))
            : Promise.resolve();
        },
      };
      return Promise.resolve(membership);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** IPv6 is not supported: nkb is an IPv4 library. */
  joinMulticastV6(
    _address: string,
    _networkInterface: number,
  ): Promise<Deno.MulticastV6Membership> {
    return Promise.reject(new Deno.errors.NotSupported("nkb supports IPv4 only"));
  }

  /** Closes the socket; a pending receive rejects with BadResource. */
  close(): void {
    if (this.#phase === "closed") throw new Deno.errors.BadResource("close: socket already closed");
    this.#phase = "closed";
    lib().nkb_sock_shutdown(this.#h);
    const pending = this.#pendingWait;
    if (pending === null) {
      this.#free();
    } else {
      // A wait runs on another thread with this socket: free it when that wait returns.
      pending.finally(() => this.#free());
    }
  }

  /** Async iteration over received datagrams until the socket closes. */
  async *[Symbol.asyncIterator](): AsyncIterableIterator<[Uint8Array<ArrayBuffer>, Deno.Addr]> {
    while (this.#phase !== "closed") {
      try {
        yield await this.receive();
      } catch (e) {
        if (e instanceof Deno.errors.BadResource) return;
        throw e;
      }
    }
  }

  /** Releases the socket with `using`. */
  [Symbol.dispose](): void {
    if (this.#phase !== "closed") this.close();
  }

  #free(): void {
    for (let i = 0; i < 100; i++) {
      const rc = lib().nkb_sock_free(this.#h);
      if (rc !== -16) return;
    }
  }

  #open(what: string): void {
    if (this.#phase === "closed") throw new Deno.errors.BadResource(`${what}: socket is closed`);
  }

  #check(rc: number, what: string): void {
    if (rc < 0) throw errorFromErrno(rc, what);
  }

  #target(buf: Uint8Array<ArrayBuffer> | undefined): Uint8Array<ArrayBuffer> {
    if (buf === undefined) return this.#scratch ??= new Uint8Array(MAX_DATAGRAM);
    if (!(buf instanceof Uint8Array)) throw new TypeError("receive: buffer must be a Uint8Array");
    if (buf.byteLength === 0) throw new RangeError("receive: buffer is empty");
    return buf;
  }

  #receiveNow(
    target: Uint8Array<ArrayBuffer>,
    copy: boolean,
  ): [Uint8Array<ArrayBuffer>, Deno.NetAddr] | null {
    const n = lib().nkb_recv_batch(this.#h, target, target.byteLength, this.#metaBytes, 1);
    if (n < 0) throw errorFromErrno(n, "receive");
    if (n === 0) return null;
    const m = this.#meta;
    const data = target.subarray(m[0], m[0] + m[1]);
    return [copy ? data.slice() : data, netAddr(m[2], m[3])];
  }

  #destination(addr?: Deno.NetAddr): [number, number] {
    if (addr !== undefined) {
      const [ip, port] = checkAddr(addr, "send");
      if (port === 0) throw new RangeError("send: port 0");
      return [ip, port];
    }
    if (this.#peer === null) {
      throw new Deno.errors.NotConnected("send: no address and not connected");
    }
    return this.#peer;
  }

  // sendto() on an unbound socket: bind to the route's source address so that
  // the reply path and the bypass decision name one interface.
  #bindForSend(dstBe: number): void {
    const route = routeGet(dstBe);
    const src = typeof route === "number" ? 0 : route.prefsrcBe;
    this.#check(lib().nkb_sock_bind(this.#h, src, 0), "bind");
    this.#bound = true;
    this.#decideNow();
  }

  #decideNow(): void {
    if (this.#phase !== "open") return;
    const name = new Uint32Array(2);
    this.#check(lib().nkb_sock_name(this.#h, new Uint8Array(name.buffer)), "getsockname");
    this.#localBe = name[0];
    this.#localPort = name[1];
    const verdict = decide(this.#localBe, ownProgIds);
    if (!verdict.ok) return this.#fallback(verdict.reason, verdict.detail);
    const { link, frameSize, queues } = verdict;
    const rc = lib().nkb_sock_attach(this.#h, link.ifindex, queues, frameSize, 0, link.mtu);
    if (rc < 0) {
      const reason = rc === -16 ? "queue-busy" : "setup-failed";
      return this.#fallback(reason, `AF_XDP on ${link.name}: ${errnoName(rc)}`);
    }
    const flow = lib().nkb_sock_add_flow(this.#h, this.#localBe, this.#localPort);
    if (flow < 0) {
      lib().nkb_sock_detach(this.#h);
      return this.#fallback("setup-failed", `filter flow: ${errnoName(flow)}`);
    }
    const info = new Uint32Array(8);
    lib().nkb_sock_info(this.#h, new Uint8Array(info.buffer), 8);
    ownProgIds.add(info[5]);
    this.#link = link;
    this.#phase = "bypass";
    this.#reason = null;
  }

  #fallback(reason: FallbackReason, detail: string): void {
    this.#phase = "kernel";
    this.#reason = reason;
    this.#detail = detail;
    if (this.#opts.errExit === 1 && SETUP_FAILURES.has(reason)) {
      const err = new BypassSetupError(reason, detail);
      console.error(`nkb: ${err.message}; exiting (_NET_KERNEL_BYPASS_ERR_EXIT=1)`);
      Deno.exit(1);
    }
  }

  // Fills the shim's header cache for one destination: through the ring when its
  // route leaves through our interface and its next hop resolves, else the kernel.
  #resolveDestination(ipBe: number, port: number): void {
    const kernel = (): void => {
      this.#check(
        lib().nkb_dest_set(this.#h, ipBe, port, Dest.kernel, null, 0, DEST_TTL_MS),
        "dest",
      );
    };
    const link = this.#link;
    if (this.#phase !== "bypass" || link === null) return kernel();
    let mac: Uint8Array | null;
    if (isMulticast(ipBe)) {
      mac = multicastMac(ipBe);
    } else {
      const route = routeGet(ipBe);
      if (typeof route === "number" || route.oif !== link.ifindex) return kernel();
      if (route.type !== RouteType.unicast) return kernel();
      mac = neighbourMac(link.ifindex, route.gatewayBe || ipBe, NEIGH_TIMEOUT_MS);
      // Unresolved: the kernel queues this datagram behind ARP; the next send retries.
      if (mac === null) {
        this.#check(lib().nkb_dest_set(this.#h, ipBe, port, Dest.kernel, null, 0, 100), "dest");
        return;
      }
    }
    const macs = new Uint8Array(12);
    macs.set(mac, 0);
    macs.set(link.mac, 6);
    this.#check(
      lib().nkb_dest_set(this.#h, ipBe, port, Dest.bypass, macs, this.#localBe, DEST_TTL_MS),
      "dest",
    );
  }
}
