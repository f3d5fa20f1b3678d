/**
 * `UdpBypass`: a UDP socket that tracks its own bind/connect/send/multicast
 * choices and, when they name one interface that can bypass the kernel, moves
 * its datagrams through that interface's AF_XDP rings. Otherwise it is a plain
 * kernel socket.
 *
 * @module
 */

import {
  checkSendBatch,
  receiveBatchInto,
  type RecvBatch,
  type SendBatch,
  sendBatchFrom,
} from "./batch.ts";
import { BypassBinding } from "./binding.ts";
import { type BypassOptions, type ResolvedOptions, resolveOptions } from "./config.ts";
import { errorFromErrno, TxRingFullError } from "./errors.ts";
import {
  byteLengthOf,
  E_LINK_CHANGE,
  E_NEED_ROUTE,
  lib,
  Mcast,
  Opt,
  RECV_META_WORDS,
} from "./ffi.ts";
import { formatIpv4, isMulticast, parseIpv4 } from "./ipv4.ts";
import { membership } from "./membership.ts";
import { routeGet } from "./netinfo.ts";
import {
  destinationNoLookup,
  firstForSend,
  HostNameLookup,
  resolveAsync,
  resolveForBind,
} from "./resolve.ts";
import {
  type BypassState,
  type BypassStats,
  type ListenOptions,
  readStats,
  type ReceiveOptions,
} from "./types.ts";

const WAIT_SLICE_US = 100_000;
// An idle async receive in mode 0 sleeps in poll() this long per round trip through
// the thread pool: each round costs CPU (the hop, the link watch), so the slice is long
// enough that an idle receiver costs next to nothing, as Deno.listenDatagram's wait does.
// A close ends the wait at once (the socket's eventfd is in the poll set), a vanished
// interface too (its AF_XDP sockets report an error); the `bypass` getter and every send
// look at the link on their own.
const IDLE_WAIT_SLICE_US = 10_000_000;
// An async receive first spins this long on the calling thread (mode 1): a datagram
// that is about to arrive is then taken without the hop through the thread pool.
const SYNC_SPIN_US = 50;
// Bound on the wait slices of one synchronous receive (each ends at a deadline anyway).
const MAX_WAITS = 1e9;
// A stream of datagrams that are always ready, or a loop of sends that all succeed at
// once, would never let timers run: yield to the event loop at least this often (see
// #yieldThen). A 1 ms interval timer then keeps within a few ms.
const YIELD_EVERY_MS = 2;
const MAX_DATAGRAM = 65507;
const EBUSY = -16;
const ENODEV = -19;
const NO_HOST: unique symbol = Symbol("no host");
const META_BYTES = RECV_META_WORDS * 4;
const ENOBUFS = -105;
const EAGAIN = -11;
// How long an async send waits for room in the kernel socket's send buffer, as Deno's
// send waits for writability. Datagrams queued behind ARP for next hops that never
// answer (spoofed sources an echo server replies to) hold that room until the kernel
// gives up on them: about 3 s (3 solicitations 1 s apart).
const SEND_ROOM_WAIT_MS = 5000;
const SEND_ROOM_MAX_DELAY_MS = 64;

function show(v: unknown): string {
  return typeof v === "string" ? JSON.stringify(v) : String(v);
}

// Addresses as Deno.listenDatagram takes them: hostname null or undefined is 0.0.0.0, a
// name is resolved (blocking, as Deno's listenDatagram does); a port that is not a number
// (or NaN) is a TypeError, one out of 0..65535 a RangeError.
function checkAddr(
  addr: { hostname?: string; port: number },
  what: string,
): [number, number] {
  const ip = resolveForBind(addr?.hostname, what, "0.0.0.0");
  const port: unknown = addr.port;
  if (typeof port !== "number" || Number.isNaN(port)) {
    throw new TypeError(`${what}: invalid port ${show(port)} (a number 0..65535)`);
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`${what}: port ${port} is out of range 0..65535`);
  }
  return [ip, port];
}

// A destination as Deno's DatagramConn.send takes it: hostname null or undefined is
// 127.0.0.1; every bad port is a TypeError there (EINVAL, or a failed conversion). Deno
// sends to ports 65536 and up and to 1.5 after truncating them; nkb refuses those too.
// A host name is a HostNameLookup: send() resolves it off the event loop, the
// synchronous sends refuse it with a TypeError.
function checkDestination(hostname: unknown, port: unknown): [number, number] {
  let ip: number;
  try {
    ip = destinationNoLookup(hostname, "send", "127.0.0.1");
  } catch (e) {
    // The port goes with the name to send(), read once as every property of the address.
    if (e instanceof HostNameLookup) e.port = checkSendPort(port);
    throw e;
  }
  return [ip, checkSendPort(port)];
}

function checkSendPort(port: unknown): number {
  if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new TypeError(`send: invalid port ${show(port)} (an integer 1..65535)`);
  }
  return port;
}

function checkIface(text: string, what: string): number {
  const ip = typeof text === "string" ? parseIpv4(text) : null;
  if (ip === null || ip === 0 || isMulticast(ip)) {
    throw new TypeError(
      `${what}: "${text}" is not the IPv4 address of an interface`,
    );
  }
  return ip;
}

// An address argument of joinMulticastV4, read as Deno's join reads it: text that is
// not a dotted quad is Deno's Error "invalid IPv4 address syntax" (a TypeError for what
// is not text at all).
function joinAddress(text: unknown, what: string): number {
  if (typeof text !== "string") {
    throw new TypeError(`joinMulticastV4: the ${what} address must be a string`);
  }
  const ip = parseIpv4(text);
  if (ip === null) {
    throw new Error(`joinMulticastV4: ${what} "${text}": invalid IPv4 address syntax`);
  }
  return ip;
}

function netAddr(ipBe: number, port: number): Deno.NetAddr {
  return { transport: "udp", hostname: formatIpv4(ipBe), port };
}

/**
 * A tracked UDP socket. Its kernel socket exists from construction; bind,
 * connect, the first send and the multicast interface choices are the moments
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
  readonly #binding: BypassBinding;
  #closed = false;
  #bound = false;
  #peer: [number, number] | null = null;
  #srcIp = -1;
  #srcHost = "";
  // The last destination hostname parsed; a symbol at first, since null is a hostname too
  // (Deno's 127.0.0.1) and must not meet the initial #dstIp of 0.
  #dstHost: unknown = NO_HOST;
  #dstIp = 0;
  #meta = new Uint32Array(RECV_META_WORDS);
  #metaBytes = new Uint8Array(this.#meta.buffer);
  #scratch: Uint8Array<ArrayBuffer> | null = null;
  #pendingWait: Promise<number> | null = null;
  #receiving = false;
  #lastYield = 0;
  // The wait of a synchronous receive in progress (see #wait), kept here so that a
  // receive that waits allocates no closure.
  #waitTimeout = 0;
  #waitDeadline = -1;
  #waitUs = 0;
  #waitRc = 0;

  /** Creates the kernel UDP socket and starts tracking it. */
  constructor(options: BypassOptions = {}) {
    this.#opts = resolveOptions(options);
    const h = lib().nkb_sock_open();
    if (h < 0) throw errorFromErrno(h, "socket");
    this.#h = h;
    this.#check(
      lib().nkb_sock_setopt(h, Opt.busyWaitCnt, this.#opts.sendBusyWaitCnt),
      "setopt",
    );
    // Nothing of the socket's views outlives a detach (receives copy): no hook needed.
    this.#binding = new BypassBinding(h, this.#opts, () => {});
  }

  /** Creates a socket and binds it: like `Deno.listenDatagram`. */
  static listenDatagram(options: ListenOptions): UdpBypass {
    if (options?.transport !== "udp") {
      throw new TypeError('transport must be "udp"');
    }
    const sock = new UdpBypass(options);
    try {
      if (options.reuseAddress) {
        sock.#check(lib().nkb_sock_setopt(sock.#h, Opt.reuseAddress, 1), "SO_REUSEADDR");
      }
      if (options.reusePort) {
        sock.#check(lib().nkb_sock_setopt(sock.#h, Opt.reusePort, 1), "SO_REUSEPORT");
      }
      sock.bind({
        hostname: options.hostname ?? "0.0.0.0",
        port: options.port,
      });
    } catch (e) {
      sock.close();
      throw e;
    }
    return sock;
  }

  /** Where this socket's datagrams go. */
  get bypass(): BypassState {
    if (!this.#closed) this.#binding.maybeWatch();
    return this.#binding.state();
  }

  /** The local address (kernel's view). */
  get addr(): Deno.NetAddr {
    this.#open("addr");
    const out = new Uint32Array(2);
    this.#check(lib().nkb_sock_name(this.#h, out, out.byteLength), "getsockname");
    return netAddr(out[0], out[1]);
  }

  /** bind(): binds the kernel socket, then decides bypass for the address. */
  bind(addr: { hostname?: string; port: number }): void {
    this.#open("bind");
    const [ip, port] = checkAddr(addr, "bind");
    if (this.#bound) {
      throw new Deno.errors.AddrInUse("bind: socket is already bound");
    }
    this.#check(lib().nkb_sock_bind(this.#h, ip, port), "bind");
    this.#bound = true;
    this.#binding.decideLocal();
  }

  /** connect(): fixes the peer; decides bypass from the local address the kernel chose. */
  connect(addr: { hostname: string; port: number }): void {
    this.#open("connect");
    const [ip, port] = checkAddr(addr, "connect");
    if (port === 0) throw new RangeError("connect: port 0");
    this.#check(lib().nkb_sock_connect(this.#h, ip, port), "connect");
    this.#peer = [ip, port];
    this.#bound = true;
    this.#binding.decideLocal();
  }

  /** IP_MULTICAST_IF: multicast leaves through the interface with address `ifaceAddr`. */
  setMulticastInterface(ifaceAddr: string): void {
    this.#open("setMulticastInterface");
    const iface = checkIface(ifaceAddr, "setMulticastInterface");
    this.#check(
      lib().nkb_sock_mcast(this.#h, Mcast.setInterface, 0, iface),
      "IP_MULTICAST_IF",
    );
    this.#binding.multicastInterface(iface);
  }

  /**
   * Sends one datagram; returns its length. Throws {@linkcode TxRingFullError} when the ring
   * stays full, and a TypeError for a host name: a lookup could block, so only addresses
   * (every numeric form getaddrinfo reads) are taken here; send() resolves names.
   */
  sendSync(data: Uint8Array, addr?: Deno.NetAddr): number {
    try {
      return this.#sendSync(data, addr);
    } catch (e) {
      throw e instanceof HostNameLookup ? e.typeError() : e;
    }
  }

  // sendSync, where a host name throws HostNameLookup for send() to resolve.
  #sendSync(data: Uint8Array, addr?: Deno.NetAddr): number {
    if (addr === undefined) this.#open("send");
    if (!(data instanceof Uint8Array)) {
      throw new TypeError("send: data must be a Uint8Array");
    }
    // As Deno's send, which looks its socket up last: a bad address (and a name's lookup)
    // fails as on an open socket, a closed socket only then.
    const [ip, port] = this.#destination(addr);
    this.#open("send");
    // The length of the array itself (not a property JavaScript can redefine), read once for
    // every try below, after the address's getters ran JavaScript: a detached array is empty
    // and sends an empty datagram, as Deno's does, not a length the shim refuses (EFAULT).
    const sendLen = byteLengthOf(data);
    if (sendLen > MAX_DATAGRAM) {
      throw new RangeError(`send: ${sendLen} bytes exceed the UDP maximum ${MAX_DATAGRAM}`);
    }
    if (!this.#bound) this.#bindForSend(ip);
    if (!isMulticast(ip)) this.#binding.unicastFromWildcard(ip);
    this.#binding.maybeWatch();
    let rc = lib().nkb_send(this.#h, data, sendLen, ip, port);
    // The shim asks the control plane first when it lacks a destination or saw the
    // interface change; each answer takes one retry.
    for (
      let i = 0;
      i < 3 && (rc === E_NEED_ROUTE || rc === E_LINK_CHANGE);
      i++
    ) {
      if (rc === E_LINK_CHANGE) this.#binding.watchNow();
      else this.#binding.resolve(ip, port);
      rc = lib().nkb_send(this.#h, data, sendLen, ip, port);
    }
    if (rc >= 0) return rc;
    // A full send buffer (the kernel path's EAGAIN) says nothing about the link, and a
    // program may meet it on every send for seconds: no rtnetlink look for it.
    if (rc === EAGAIN) throw errorFromErrno(rc, "send");
    this.#binding.watchNow();
    if (rc === ENOBUFS) throw new TxRingFullError(this.#opts.sendBusyWaitCnt);
    throw errorFromErrno(rc, "send");
  }

  /**
   * Sends every datagram of `batch` with one FFI call (and one TX doorbell) when
   * it can. Returns how many were sent, from the first: fewer than `batch.length`
   * only when the TX ring stayed full; none at all throws {@linkcode TxRingFullError}.
   */
  sendBatch(batch: SendBatch): number {
    this.#open("sendBatch");
    checkSendBatch(batch);
    const n = batch.length;
    if (n > 0 && !this.#bound) this.#bindForSend(batch.destination(0)[0]);
    let sent = 0;
    // Each round either sends the rest or stops at one datagram the control plane must
    // look at (unknown destination, changed link): at most two rounds per datagram.
    for (let round = 0; round < 2 * n + 2 && sent < n; round++) {
      this.#binding.maybeWatch();
      const done = sendBatchFrom(batch, this.#h, sent);
      if (done < 0) throw errorFromErrno(done, "sendBatch");
      sent += done;
      if (sent === n) break;
      const err = lib().nkb_sock_last_error(this.#h);
      if (err === E_LINK_CHANGE) {
        this.#binding.watchNow();
      } else if (err === E_NEED_ROUTE) {
        const [ip, port] = batch.destination(sent);
        this.#binding.resolve(ip, port);
      } else if (err === ENOBUFS) {
        if (sent > 0) return sent;
        throw new TxRingFullError(this.#opts.sendBusyWaitCnt);
      } else {
        if (sent > 0) return sent;
        throw errorFromErrno(err, "sendBatch");
      }
    }
    return sent;
  }

  /**
   * Receives up to `batch.capacity` datagrams from either path with one FFI
   * call; waits (per the receive mode) up to `timeoutMs` (default: until one
   * arrives) when none is ready. Returns how many arrived (0: timed out).
   */
  receiveBatch(batch: RecvBatch, opts: ReceiveOptions = {}): number {
    this.#open("receiveBatch");
    this.#receivable(opts);
    let n = this.#receiveBatchNow(batch);
    for (let w = 0; n === 0 && w < MAX_WAITS && this.#wait(opts, w); w++) {
      n = this.#receiveBatchNow(batch);
    }
    return n;
  }

  // The batch passes its own arrays and their real lengths (src/batch.ts), and sets its length.
  #receiveBatchNow(batch: RecvBatch): number {
    const n = receiveBatchInto(batch, this.#h);
    if (n < 0) throw errorFromErrno(n, "receive");
    return n;
  }

  /**
   * Sends one datagram (Deno.DatagramConn). A host name is resolved at each send, as
   * Deno's send resolves it, on Deno's FFI thread pool: the event loop never waits on DNS.
   */
  send(p: Uint8Array, addr: Deno.Addr): Promise<number> {
    try {
      if (addr?.transport !== "udp") {
        throw new TypeError("send: address must be udp");
      }
      const n = this.#sendSync(p, addr);
      if (lib().nkb_now_ms() - this.#lastYield <= YIELD_EVERY_MS) return Promise.resolve(n);
      return this.#yieldThen(n);
    } catch (e) {
      if (e instanceof Deno.errors.WouldBlock && addr?.transport === "udp") {
        return this.#sendWhenRoom(p, addr, e);
      }
      if (e instanceof HostNameLookup) return this.#sendAfterLookup(p, e);
      return Promise.reject(e);
    }
  }

  // A host name: resolved on Deno's FFI thread pool at each send, as Deno's send resolves
  // it, then sent as to its first address. Deno's send holds the payload's memory from the
  // call on: a payload changed during the lookup goes as it is then, one detached
  // meanwhile goes as it was (its copy, kept here).
  async #sendAfterLookup(data: Uint8Array, name: HostNameLookup): Promise<number> {
    const kept = new Uint8Array(data);
    const ip = firstForSend(await resolveAsync(name.lookup, "send"), name.text, "send");
    const to: Deno.NetAddr = { transport: "udp", hostname: formatIpv4(ip), port: name.port };
    const p = byteLengthOf(data) === kept.byteLength ? data : kept;
    try {
      return this.sendSync(p, to);
    } catch (e) {
      if (e instanceof Deno.errors.WouldBlock) return this.#sendWhenRoom(p, to, e);
      throw e;
    }
  }

  // A loop of `await send()` whose sends all succeed at once (or of `await receive()` over
  // datagrams already waiting) would run on microtasks only and starve timers and I/O for
  // as long as it runs; Deno's calls are async ops, so the event loop turns between them.
  // An immediate (a few microseconds) every YIELD_EVERY_MS does the same here: the event
  // loop polls I/O and runs due timers before immediates. (A nonblocking FFI call is no
  // such turn: timers starved behind a loop of them.)
  async #yieldThen<T>(value: T): Promise<T> {
    this.#lastYield = lib().nkb_now_ms();
    await new Promise((resolve) => setImmediate(resolve));
    this.#lastYield = lib().nkb_now_ms();
    return value;
  }

  // The kernel path's send buffer is full: wait for room without blocking the event loop
  // (timers, bounded), then send; the first WouldBlock when it never comes.
  async #sendWhenRoom(p: Uint8Array, addr: Deno.NetAddr, first: Error): Promise<number> {
    let delay = 1;
    for (let waited = 0; waited < SEND_ROOM_WAIT_MS; waited += delay) {
      await new Promise((resolve) => setTimeout(resolve, delay));
      try {
        return this.sendSync(p, addr);
      } catch (e) {
        if (!(e instanceof Deno.errors.WouldBlock)) throw e;
      }
      delay = Math.min(delay * 2, SEND_ROOM_MAX_DELAY_MS);
    }
    throw first;
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
    this.#receivable(opts);
    const target = this.#target(buf);
    const fresh = buf === undefined;
    let got = this.#receiveNow(target, fresh);
    for (let w = 0; got === null && w < MAX_WAITS && this.#wait(opts, w); w++) {
      got = this.#receiveNow(target, fresh);
    }
    return got;
  }

  // What every synchronous receive checks before its first try. That try is made without
  // a closure, so that the common case under load allocates none (a closure around it
  // made every batch receive slower).
  #receivable(opts: ReceiveOptions): void {
    if (this.#receiving) {
      throw new Deno.errors.Busy("receive: another receive is in progress");
    }
    if (!((opts.timeoutMs ?? Infinity) >= 0)) {
      throw new RangeError("receive: timeoutMs must be >= 0");
    }
  }

  // Wait `w` (from 0) of a synchronous receive whose tries so far found nothing: wait
  // (spinning or in poll(), per the receive mode) for one bounded slice; false once the
  // timeout has passed (a timeout of 0: no wait at all), and the receive returns empty.
  // The state lives in the socket, not in a closure: a receive that waits once per
  // datagram (a round trip) allocates nothing.
  #wait(opts: ReceiveOptions, w: number): boolean {
    if (w === 0) {
      const timeout = opts.timeoutMs ?? Infinity;
      if (timeout === 0) return false;
      // A receiver that keeps up waits once or twice per datagram, and a clock read is not
      // free: the first wait needs none (the timeout bounds it, and it usually ends with a
      // datagram), the deadline is taken only when more waits follow.
      this.#waitTimeout = timeout;
      this.#waitDeadline = -1;
      this.#waitUs = Math.min(Math.ceil(timeout * 1000), WAIT_SLICE_US);
    } else {
      // A first wait that timed out took its whole slice; one that woke with nothing to
      // take (rare) counts as instant, so the timeout can stretch by that wake only.
      if (this.#waitDeadline < 0) {
        const spent = this.#waitRc === 0 ? this.#waitUs / 1000 : 0;
        this.#waitDeadline = lib().nkb_now_ms() + this.#waitTimeout - spent;
      }
      const left = this.#waitDeadline - lib().nkb_now_ms();
      if (left <= 0) return false;
      this.#binding.maybeWatch();
      this.#waitUs = Math.min(Math.ceil(left * 1000), WAIT_SLICE_US);
    }
    this.#binding.maybeWatchSoon();
    const rc = lib().nkb_wait(this.#h, this.#waitUs, this.#opts.recvMode);
    if (rc < 0) throw errorFromErrno(rc, "receive");
    this.#waitRc = rc;
    return true;
  }

  /** Receives one datagram without blocking the event loop (Deno.DatagramConn). */
  async receive(
    p?: Uint8Array<ArrayBuffer>,
  ): Promise<[Uint8Array<ArrayBuffer>, Deno.Addr]> {
    this.#open("receive");
    if (this.#receiving) {
      throw new Deno.errors.Busy("receive: another receive is in progress");
    }
    this.#receiving = true;
    try {
      const target = this.#target(p);
      if (lib().nkb_now_ms() - this.#lastYield > YIELD_EVERY_MS) {
        // An immediate, not setTimeout(0) (about 2 ms here): see #yieldThen.
        await this.#yieldThen(null);
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
        this.#binding.maybeWatch();
        // The wait runs on another thread: the event loop stays free in both modes.
        this.#pendingWait = lib().nkb_wait_async(
          this.#h,
          this.#opts.recvMode === 0 ? IDLE_WAIT_SLICE_US : WAIT_SLICE_US,
          this.#opts.recvMode,
        );
        const rc = await this.#pendingWait;
        this.#pendingWait = null;
        this.#lastYield = lib().nkb_now_ms();
        if (this.#closed) {
          throw new Deno.errors.BadResource("receive: socket closed");
        }
        this.#binding.afterWait();
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
    return readStats(this.#h);
  }

  /**
   * Joins group `address` on the interface with address `networkInterface`
   * ("0.0.0.0": the kernel picks the interface by the route to the group). The
   * first group joined on the bypass interface is received through the rings
   * when the socket is bound to the wildcard or that group's address; other
   * groups through the kernel socket (one group per bypass socket).
   */
  joinMulticastV4(
    address: string,
    networkInterface: string,
  ): Promise<Deno.MulticastV4Membership> {
    try {
      this.#open("joinMulticastV4");
      const group = joinAddress(address, "group");
      if (!isMulticast(group)) {
        throw new TypeError(
          `joinMulticastV4: "${address}" is not an IPv4 group`,
        );
      }
      // INADDR_ANY as Deno passes it: the kernel picks the interface. Any other address is
      // the kernel's to judge, as for Deno's join (no interface has it: ENODEV).
      const iface = joinAddress(networkInterface, "interface");
      if (!this.#bound) this.bind({ hostname: "0.0.0.0", port: 0 });
      const rc = lib().nkb_sock_mcast(this.#h, Mcast.join, group, iface);
      if (rc === ENODEV) {
        // Deno's words and class for it.
        throw new Error(
          `joinMulticastV4: no interface has "${networkInterface}": No such device (os error 19)`,
        );
      }
      this.#check(rc, "IP_ADD_MEMBERSHIP");
      this.#binding.joined(group, iface);
      return Promise.resolve(membership(this.#membershipHost(), group, iface));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** IPv6 is not supported: nkb is an IPv4 library. */
  joinMulticastV6(
    _address: string,
    _networkInterface: number,
  ): Promise<Deno.MulticastV6Membership> {
    return Promise.reject(
      new Deno.errors.NotSupported("nkb supports IPv4 only"),
    );
  }

  /** Closes the socket; a pending receive rejects with BadResource. */
  close(): void {
    if (this.#closed) {
      throw new Deno.errors.BadResource("close: socket already closed");
    }
    this.#closed = true;
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
  async *[Symbol.asyncIterator](): AsyncIterableIterator<
    [Uint8Array<ArrayBuffer>, Deno.Addr]
  > {
    while (!this.#closed) {
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
    if (!this.#closed) this.close();
  }

  #free(): void {
    for (let i = 0; i < 100; i++) {
      if (lib().nkb_sock_free(this.#h) !== EBUSY) return;
    }
  }

  #open(what: string): void {
    if (this.#closed) {
      throw new Deno.errors.BadResource(`${what}: socket is closed`);
    }
  }

  #check(rc: number, what: string): void {
    if (rc < 0) throw errorFromErrno(rc, what);
  }

  #target(buf: Uint8Array<ArrayBuffer> | undefined): Uint8Array<ArrayBuffer> {
    if (buf === undefined) {
      return this.#scratch ??= new Uint8Array(MAX_DATAGRAM);
    }
    if (!(buf instanceof Uint8Array)) {
      throw new TypeError("receive: buffer must be a Uint8Array");
    }
    if (buf.byteLength === 0) throw new RangeError("receive: buffer is empty");
    return buf;
  }

  #receiveNow(
    target: Uint8Array<ArrayBuffer>,
    copy: boolean,
  ): [Uint8Array<ArrayBuffer>, Deno.NetAddr] | null {
    // The target's own length, at this call: a receive() that waited may find it detached
    // (transferred meanwhile) or shrunk (a resizable buffer).
    const len = byteLengthOf(target);
    if (len === 0) throw new TypeError("receive: the buffer was transferred or detached");
    const n = lib().nkb_recv_batch(this.#h, target, len, this.#metaBytes, META_BYTES, 1);
    if (n < 0) throw errorFromErrno(n, "receive");
    if (n === 0) return null;
    const m = this.#meta;
    const data = target.subarray(m[0], m[0] + m[1]);
    return [copy ? data.slice() : data, this.#source(m[2], m[3])];
  }

  // Datagrams mostly come from, and go to, the same few peers: the last address
  // text is kept with its number, saving a parse (or a format) per datagram.
  #source(ipBe: number, port: number): Deno.NetAddr {
    if (ipBe !== this.#srcIp) {
      this.#srcIp = ipBe;
      this.#srcHost = formatIpv4(ipBe);
    }
    return { transport: "udp", hostname: this.#srcHost, port };
  }

  #destination(addr?: Deno.NetAddr): [number, number] {
    if (addr !== undefined) {
      // Each property read once, as Deno's send reads them: a getter answering differently
      // on each read once made the cache map one hostname to another's address (every
      // later send to it misdirected, 5 of 5: tests/js_attacks.test.ts keeps the case).
      const hostname: unknown = addr.hostname;
      const port: unknown = addr.port;
      if (hostname === this.#dstHost && Number.isInteger(port)) {
        if ((port as number) > 0 && (port as number) <= 65535) return [this.#dstIp, port as number];
      }
      const [ip, checked] = checkDestination(hostname, port);
      // Addresses only (names never get here), and only hostnames that are not objects,
      // whose conversion to text could answer differently next time.
      if (typeof hostname !== "object" || hostname === null) {
        this.#dstHost = hostname;
        this.#dstIp = ip;
      }
      return [ip, checked];
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
    const src = typeof route === "number" || isMulticast(dstBe) ? 0 : route.prefsrcBe;
    this.#check(lib().nkb_sock_bind(this.#h, src, 0), "bind");
    this.#bound = true;
    this.#binding.decideLocal();
  }

  #membershipHost(): Parameters<typeof membership>[0] {
    return {
      handle: (): number => {
        this.#open("multicast membership");
        return this.#h;
      },
      left: (groupBe: number): void => this.#binding.left(groupBe),
      ttlChanged: (): void => void lib().nkb_dest_clear(this.#h),
      loopChanged: (on: boolean): void => this.#binding.multicastLoop(on),
    };
  }
}
