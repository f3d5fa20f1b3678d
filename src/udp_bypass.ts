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
import { CLOSED_MESSAGE, errorFromErrno, TxRingFullError } from "./errors.ts";
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
import { membership, type MembershipHost } from "./membership.ts";
import { waitShared } from "./shared_wait.ts";
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
// An unreferenced socket's receives (unref()) must not keep the process alive, and a call
// on the FFI thread holds the event loop while it runs: they wait in slices this long,
// with a turn on an unreferenced timer between them, where the loop can end.
const UNREF_WAIT_SLICE_US = 10_000;
// An async receive first spins this long on the calling thread (mode 1): a datagram
// that is about to arrive is then taken without the hop through the thread pool.
const SYNC_SPIN_US = 50;
// Bound on the wait slices of one synchronous receive (each ends at a deadline anyway).
const MAX_WAITS = 1e9;
// A stream of datagrams that are always ready, or a loop of sends that all succeed at
// once, would never let timers run: yield to the event loop at least this often (see
// #yieldThen). A 1 ms interval timer then keeps within a few ms.
const YIELD_EVERY_MS = 1;
const MAX_DATAGRAM = 65507;
// Receives pending on one socket at most: a loop that races receive() against a timer
// leaves one behind per lost race (as with Deno's, which keeps them all), and each holds
// its buffer. Beyond it the oldest gives way (the likeliest to be a lost race's).
const MAX_PENDING_RECEIVES = 65536;
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

// The timers as this module found them: a program may replace the globals (fake timers
// do), which would stall every wait of a socket (a throwing setImmediate broke receives).
const enqueueImmediate = setImmediate;
const startTimeout = setTimeout;
const cancelTimeout = clearTimeout;
// A receive's copy is made by the engine (as Deno's receive's array), not by a `slice`
// the program may have replaced on Uint8Array.prototype (every receive threw).
const Bytes = Uint8Array;

// %TypedArray%.prototype.subarray as this module found it: the view a receive returns is
// cut by the engine, as Deno's (its primordial), not by a subclass's own subarray.
const subarrayOf = Function.prototype.call.bind(
  Object.getPrototypeOf(Uint8Array.prototype).subarray,
) as (a: Uint8Array<ArrayBuffer>, begin: number, end: number) => Uint8Array<ArrayBuffer>;

/** A receive() that waits for a datagram. */
interface Waiter extends PromiseWithResolvers<[Uint8Array<ArrayBuffer>, Deno.Addr]> {
  target: Uint8Array<ArrayBuffer>;
  copy: boolean;
  seq: number;
}

// What Deno's send throws for a datagram over 65507 bytes: the kernel's EMSGSIZE as a
// plain Error with Deno's message and code.
function messageTooLong(): Error {
  return Object.assign(new Error("Message too long (os error 90)"), { code: "EMSGSIZE" });
}

// What a send that waits for room retries on: the kernel socket's send buffer or the TX
// ring was full.
function noRoom(e: unknown): e is Error {
  return e instanceof Deno.errors.WouldBlock || e instanceof TxRingFullError;
}

// Deno's send holds the payload's memory from the call on: a payload changed while the
// send waits goes as it is then, one detached meanwhile as it was (`kept`, its copy).
function asGiven(data: Uint8Array, kept: Uint8Array): Uint8Array {
  return byteLengthOf(data) === kept.byteLength ? data : kept;
}

// Deno.listenDatagram's port rule (its validatePort): null or undefined is 0, a number
// or a numeric string 0..65535 is taken; the messages are Deno's.
function listenPort(port: unknown): number {
  if (port === null || port === undefined) return 0;
  if (typeof port !== "number" && typeof port !== "string") {
    throw new TypeError(`Invalid port (expected number): ${String(port)}`);
  }
  if (port === "") throw new TypeError("Invalid port: ''");
  const n = Number(port);
  if (!Number.isInteger(n)) {
    if (Number.isNaN(n) && typeof port === "string") {
      throw new TypeError(`Invalid port: '${port}'`);
    }
    throw new TypeError(`Invalid port: ${port}`);
  }
  if (n < 0 || n > 65535) throw new RangeError(`Invalid port (out of range): ${port}`);
  return n;
}

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
  // Deno's send takes a number only (its argument conversion's words otherwise). Port 0
  // reaches the kernel, which refuses it: Deno's EINVAL TypeError; so do -1 and NaN.
  if (typeof port !== "number") {
    throw new TypeError("expected type `v8::data::Number`, got `v8::data::Value`");
  }
  if (!(port > 0)) throw errorFromErrno(-22, "send");
  // Deno truncates these and sends (1.5 to port 1, 65536 to port 0): nkb refuses them.
  if (!Number.isInteger(port) || port > 65535) {
    throw new TypeError(`send: invalid port ${port} (an integer 1..65535)`);
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
    throw new Error("invalid IPv4 address syntax"); // Deno's words, for the group or interface
  }
  return ip;
}

// Deno's key order (its op returns hostname and port, then transport is added): a program
// that prints JSON.stringify(addr) prints the same text.
function netAddr(ipBe: number, port: number): Deno.NetAddr {
  return { hostname: formatIpv4(ipBe), port, transport: "udp" };
}

/**
 * What nkb's own node:dgram handle (src/node_dgram.ts) needs of a socket beyond its public
 * API: Node's handle methods are synchronous and answer with an errno, where the public
 * API's multicast calls answer with promises. Not exported from mod.ts. `setOption` and
 * `mcast` answer -EBADF once the socket is closed.
 */
export interface SocketInternals extends MembershipHost {
  /** Binds an unbound socket as its first send to `dstBe` would (sendto's rule); throws. */
  bindForSend(dstBe: number): void;
}

/** The internals of an open socket (assigned in UdpBypass's static block). */
export let socketInternals: (sock: UdpBypass) => SocketInternals;

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
  /**
   * The size of the array `receive()` allocates when given no buffer (Deno's
   * `DatagramConn.bufSize`): a longer datagram is cut to it. At the default, 65507, the
   * result's buffer is the datagram's length (Deno's is 65507 bytes).
   */
  bufSize: number = MAX_DATAGRAM;
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
  // The socket's one wait on the FFI thread, and the receives it serves (see #park).
  #pendingWait: Promise<number> | null = null;
  #zeroWait = false;
  #unref = false;
  #unrefGap = false;
  #queued: Waiter[] = [];
  #stacked: Waiter[] = [];
  #seq = 0;
  #waitReturned = (rc: number): void => this.#onWait(rc);
  // #serve runs (see #onWait).
  #serving = false;
  #lastYield = 0;
  // The local address, kept for `addr` after close (as Deno's).
  #addr: Deno.NetAddr | null = null;
  #addrIp = 0;
  #addrPort = 0;
  // The wait of a synchronous receive in progress (see #wait), kept here so that a
  // receive that waits allocates no closure.
  #waitTimeout = 0;
  #waitDeadline = -1;
  #waitUs = 0;
  #waitRc = 0;
  // The destination of the last synchronous send attempt, as checked (see send()).
  #sentIp = 0;
  #sentPort = 0;
  // Sends waiting for room (see #sendWhenRoom): close() wakes them to reject at once.
  #roomWaits = new Set<() => void>();

  /**
   * Creates the kernel UDP socket (unbound) and starts tracking it.
   *
   * @param options nkb's knobs (optional; each defaults as {@linkcode BypassOptions} says).
   * @throws {RangeError} when an option is out of its range.
   * @throws {Deno.errors.PermissionDenied} when the socket may not be created.
   * @throws {Error} when the socket cannot be created (Deno's message; `code` names the errno).
   */
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

  /**
   * Creates a socket and binds it, as `Deno.listenDatagram` does: `hostname` defaults to
   * 0.0.0.0, `port` to 0 (the kernel picks one; a numeric string is taken, as Deno's),
   * `loopback` (IP_MULTICAST_LOOP) to false, `reuseAddress` sets SO_REUSEADDR; `reusePort`
   * (SO_REUSEPORT) is nkb's own. Accepts any `Deno.UdpListenOptions & { transport: "udp" }`.
   *
   * @throws {TypeError} when `transport` is not "udp", the hostname is not an IPv4
   *   address or the port is not a number (Deno's messages).
   * @throws {RangeError} when the port is out of 0..65535 (Deno's message) or an nkb option
   *   is out of range.
   * @throws {Deno.errors.AddrInUse} when the address and port are taken.
   * @throws {Deno.errors.AddrNotAvailable} when no interface has the address.
   * @throws {BypassSetupError} when bypass setup fails and `errExit` is 1.
   */
  static listenDatagram(options: ListenOptions): UdpBypass {
    if (options?.transport !== "udp") {
      throw new TypeError('transport must be "udp"');
    }
    const port = listenPort(options.port);
    const sock = new UdpBypass(options);
    try {
      // As Deno: IP_MULTICAST_LOOP follows `loopback` (default false) on every socket; with
      // it on, the socket's multicast sends take the kernel path, which loops them back.
      const loop = Boolean(options.loopback);
      sock.#check(sock.#setOption(Opt.multicastLoop, loop ? 1 : 0), "IP_MULTICAST_LOOP");
      if (options.reuseAddress) {
        sock.#check(lib().nkb_sock_setopt(sock.#h, Opt.reuseAddress, 1), "SO_REUSEADDR");
      }
      if (options.reusePort) {
        sock.#check(lib().nkb_sock_setopt(sock.#h, Opt.reusePort, 1), "SO_REUSEPORT");
      }
      sock.bind({ hostname: options.hostname ?? "0.0.0.0", port });
    } catch (e) {
      sock.close();
      throw e;
    }
    return sock;
  }

  /** Where this socket's datagrams go (after close: where they went). */
  get bypass(): BypassState {
    if (!this.#closed) this.#binding.maybeWatch();
    return this.#binding.state();
  }

  /**
   * The local address (the kernel's view); after `close()`, the one it had, as Deno's.
   *
   * @throws {Error} when the kernel does not answer getsockname (not seen).
   */
  get addr(): Deno.NetAddr {
    if (this.#closed && this.#addr !== null) return this.#addr;
    return this.#readAddr();
  }

  // One object while the address stays (Deno's addr is the same object at every read, and
  // after close); a new one once a bind changed it.
  #readAddr(): Deno.NetAddr {
    const out = new Uint32Array(2);
    this.#check(lib().nkb_sock_name(this.#h, out, out.byteLength), "getsockname");
    if (this.#addr === null || out[0] !== this.#addrIp || out[1] !== this.#addrPort) {
      this.#addrIp = out[0];
      this.#addrPort = out[1];
      this.#addr = netAddr(out[0], out[1]);
    }
    return this.#addr;
  }

  /**
   * bind(): binds the kernel socket, then decides bypass for the address.
   *
   * @param addr The local address: `hostname` (optional, default 0.0.0.0) and `port`.
   * @throws {Deno.errors.BadResource} when the socket is closed.
   * @throws {TypeError} when the hostname is not an IPv4 address or the port not a number.
   * @throws {RangeError} when the port is out of 0..65535.
   * @throws {Deno.errors.AddrInUse} when the socket is already bound, or the address taken.
   * @throws {Deno.errors.AddrNotAvailable} when no interface has the address.
   * @throws {BypassSetupError} when bypass setup fails and `errExit` is 1.
   */
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

  /**
   * connect(): fixes the peer (sends without an address go there, datagrams from others
   * are dropped); decides bypass from the local address the kernel chose.
   *
   * @throws {Deno.errors.BadResource} when the socket is closed.
   * @throws {TypeError} when the hostname is not an IPv4 address or the port not a number.
   * @throws {RangeError} when the port is 0 or out of 0..65535.
   * @throws {Deno.errors.NetworkUnreachable} when there is no route to the peer.
   * @throws {BypassSetupError} when bypass setup fails and `errExit` is 1.
   */
  connect(addr: { hostname: string; port: number }): void {
    this.#open("connect");
    const [ip, port] = checkAddr(addr, "connect");
    if (port === 0) throw new RangeError("connect: port 0");
    this.#check(lib().nkb_sock_connect(this.#h, ip, port), "connect");
    this.#peer = [ip, port];
    this.#bound = true;
    this.#binding.decideLocal();
  }

  /**
   * IP_MULTICAST_IF: multicast leaves through the interface with address `ifaceAddr`.
   *
   * @throws {Deno.errors.BadResource} when the socket is closed.
   * @throws {TypeError} when `ifaceAddr` is not an interface's IPv4 address.
   * @throws {Deno.errors.AddrNotAvailable} when no interface has it.
   */
  setMulticastInterface(ifaceAddr: string): void {
    this.#open("setMulticastInterface");
    const iface = checkIface(ifaceAddr, "setMulticastInterface");
    this.#check(this.#mcast(Mcast.setInterface, 0, iface), "IP_MULTICAST_IF");
  }

  /**
   * Sends one datagram now; returns its length. Datagrams over the interface's MTU, to
   * other interfaces or on a kernel-path socket go through the kernel socket.
   *
   * @param addr The destination (optional on a connected socket; hostname null or
   *   undefined is 127.0.0.1, as Deno's).
   * @throws {Deno.errors.BadResource} when the socket is closed.
   * @throws {TypeError} when `data` is not a Uint8Array, the port is not an integer
   *   1..65535, or the hostname is a name: a lookup could block, so only addresses (every
   *   numeric form getaddrinfo reads) are taken here; `send()` resolves names.
   * @throws {URIError} when the hostname has characters no host name has.
   * @throws {Error} when `data` is over 65507 bytes: Deno's "Message too long (os error
   *   90)", `code` "EMSGSIZE".
   * @throws {Deno.errors.NotConnected} when `addr` is missing and the socket is not connected.
   * @throws {TxRingFullError} when the TX ring stays full through every busy-wait try.
   * @throws {Deno.errors.WouldBlock} when the kernel socket's send buffer is full.
   * @throws {Deno.errors.NetworkUnreachable} when there is no route to the destination.
   * @throws {Deno.errors.ConnectionRefused} when a kernel-path socket got an ICMP error.
   * @throws {Deno.errors.PermissionDenied} when the kernel refuses the send (a filter).
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
      throw new TypeError("expected typed ArrayBufferView"); // Deno's words
    }
    // As Deno's send, which looks its socket up last: a bad address (and a name's lookup)
    // fails as on an open socket, a closed socket only then.
    const [ip, port] = this.#destination(addr);
    this.#open("send");
    // The length of the array itself (not a property JavaScript can redefine), read once for
    // every try below, after the address's getters ran JavaScript: a detached array is empty
    // and sends an empty datagram, as Deno's does, not a length the shim refuses (EFAULT).
    const sendLen = byteLengthOf(data);
    if (sendLen > MAX_DATAGRAM) throw messageTooLong();
    if (!this.#bound) this.#bindForSend(ip);
    if (!isMulticast(ip)) this.#binding.unicastFromWildcard(ip);
    this.#binding.maybeWatch();
    this.#sentIp = ip;
    this.#sentPort = port;
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
   * only when the TX ring stayed full or a later datagram failed.
   *
   * @throws {Deno.errors.BadResource} when the socket is closed.
   * @throws {TypeError} when `batch` is not a {@linkcode SendBatch}.
   * @throws {TxRingFullError} when not even the first datagram found room in the ring.
   * @throws {Error} what {@linkcode UdpBypass.sendSync} throws, for the first datagram.
   */
  sendBatch(batch: SendBatch): number {
    this.#open("sendBatch");
    checkSendBatch(batch);
    const n = batch.length;
    if (n > 0 && !this.#bound) this.#bindForSend(batch.destination(0)[0]);
    // As sendSync: a unicast datagram from a socket waiting for a multicast choice settles
    // it on the kernel path (only then are the destinations looked at).
    for (let i = 0; i < n && this.#binding.waitingForMulticast; i++) {
      const ip = batch.destination(i)[0];
      if (!isMulticast(ip)) this.#binding.unicastFromWildcard(ip);
    }
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
   * call; waits (per the receive mode) up to `opts.timeoutMs` (optional, default:
   * until one arrives) when none is ready, blocking the calling thread. Returns how
   * many arrived (0: timed out).
   *
   * @throws {Deno.errors.BadResource} when the socket is closed.
   * @throws {Deno.errors.Busy} while `receive()` calls are pending on this socket (it would
   *   take their datagrams, and block the event loop that serves them).
   * @throws {TypeError} when `batch` is not a {@linkcode RecvBatch}.
   * @throws {RangeError} when `timeoutMs` is negative.
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
   * Sends one datagram (Deno.DatagramConn); resolves with its length. Only `hostname` and
   * `port` of `addr` are read, as Deno's. A host name is resolved at each send, as Deno's
   * send resolves it, on Deno's FFI thread pool: the event loop never waits on DNS. When
   * the kernel socket's send buffer or the TX ring is full it waits for room (on timers,
   * up to 5 s) without blocking the event loop.
   *
   * @throws {TypeError} rejects with it when `addr` is missing, or as `sendSync` throws it
   *   (but for host names).
   * @throws {Error} rejects with it when a host name does not resolve (Deno's "failed to
   *   lookup address information"), or resolves to IPv6 first (os error 97).
   * @throws {Error} rejects with it when `p` is over 65507 bytes (Deno's EMSGSIZE error).
   * @throws {Deno.errors.BadResource} rejects with it when the socket is closed, also at once
   *   when `close()` ends a wait for room (the payload and the address are kept as they were
   *   at the call while it waits).
   * @throws {TxRingFullError} rejects with it when the TX ring stays full 5 s.
   * @throws {Deno.errors.WouldBlock} rejects with it when the send buffer stays full 5 s.
   */
  send(p: Uint8Array, addr: Deno.Addr): Promise<number> {
    try {
      // Deno's send reads only hostname and port (a "tcp" transport sends all the same).
      if (addr === undefined || addr === null) {
        // V8's words for Deno's read of `addr.hostname`.
        throw new TypeError(`Cannot read properties of ${addr} (reading 'hostname')`);
      }
      const n = this.#sendSync(p, addr as Deno.NetAddr);
      if (lib().nkb_now_ms() - this.#lastYield <= YIELD_EVERY_MS) return Promise.resolve(n);
      return this.#yieldThen(n);
    } catch (e) {
      if (noRoom(e)) {
        // The address as this call read and checked it: its getters ran once, as Deno's
        // send reads them (before: again at every retry, so a getter could redirect one).
        return this.#sendWhenRoom(p, netAddr(this.#sentIp, this.#sentPort), e);
      }
      if (e instanceof HostNameLookup) return this.#sendAfterLookup(p, e);
      return Promise.reject(e);
    }
  }

  // A host name: resolved on Deno's FFI thread pool at each send, as Deno's send resolves
  // it, then sent as to its first address; the payload as given (asGiven).
  async #sendAfterLookup(data: Uint8Array, name: HostNameLookup): Promise<number> {
    const kept = new Uint8Array(data);
    const ip = firstForSend(await resolveAsync(name.lookup, "send"), name.text, "send");
    const to: Deno.NetAddr = { transport: "udp", hostname: formatIpv4(ip), port: name.port };
    try {
      return this.sendSync(asGiven(data, kept), to);
    } catch (e) {
      if (noRoom(e)) return this.#sendWhenRoom(data, to, e, kept);
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
    await new Promise((resolve) => enqueueImmediate(resolve));
    this.#lastYield = lib().nkb_now_ms();
    return value;
  }

  // The kernel path's send buffer or the TX ring is full: wait for room without blocking
  // the event loop (timers, bounded), then send, as Deno's send waits for a writable
  // socket; the first error when room never comes, BadResource at once on close(). The
  // payload as given (asGiven; `kept`: a copy made at the call, by #sendAfterLookup).
  async #sendWhenRoom(
    data: Uint8Array,
    addr: Deno.NetAddr,
    first: Error,
    kept: Uint8Array = new Uint8Array(data),
  ): Promise<number> {
    let delay = 1;
    for (let waited = 0; waited < SEND_ROOM_WAIT_MS; waited += delay) {
      await this.#roomWait(delay);
      try {
        return this.sendSync(asGiven(data, kept), addr);
      } catch (e) {
        if (!noRoom(e)) throw e;
      }
      delay = Math.min(delay * 2, SEND_ROOM_MAX_DELAY_MS);
    }
    throw first;
  }

  // A timer of #sendWhenRoom that close() ends early.
  #roomWait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        cancelTimeout(timer);
        this.#roomWaits.delete(wake);
        resolve();
      };
      const timer = startTimeout(wake, ms);
      this.#roomWaits.add(wake);
    });
  }

  /**
   * Receives one datagram into `buf` (optional: else a new array), from either path,
   * waiting on the calling thread (per the receive mode) up to `opts.timeoutMs`
   * (optional, default: until one arrives). Returns null when `timeoutMs` passes first.
   * The result is a view of `buf`, cut to its length (a 0-length `buf` takes a datagram
   * and returns an empty view).
   *
   * @throws {Deno.errors.BadResource} when the socket is closed.
   * @throws {Deno.errors.Busy} while `receive()` calls are pending on this socket (it would
   *   take their datagrams, and block the event loop that serves them).
   * @throws {TypeError} when `buf` is not a Uint8Array, or was detached (after taking a
   *   datagram, as Deno's receive).
   * @throws {RangeError} when `timeoutMs` is negative.
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
  // made every batch receive slower). A synchronous receive while receive() calls wait
  // would take their datagrams (and block the event loop that serves them): refused.
  #receivable(opts: ReceiveOptions): void {
    if (this.#queued.length + this.#stacked.length > 0) {
      throw new Deno.errors.Busy("receive: receive() calls are pending on this socket");
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

  /**
   * Receives one datagram without blocking the event loop (Deno.DatagramConn). Into `p`
   * when given (the result is a view of it, cut to its length: a longer datagram is
   * truncated, a 0-length `p` takes a datagram and returns an empty view), else into a new
   * array. Several receives may be pending: each datagram resolves one of them. A datagram
   * that is ready at the call is taken by that call, in call order; one that arrives while
   * receives wait goes to the most recent of them, as Deno's does, so that
   * `Promise.race([conn.receive(), timeout])` in a loop gets every datagram. At most 65536
   * receives are pending: beyond that the oldest is rejected with `Deno.errors.Busy`.
   *
   * @param p The buffer to receive into (optional: undefined or null, a new array).
   * @throws {Deno.errors.BadResource} rejects with it when the socket is closed.
   * @throws {Deno.errors.Interrupted} rejects with it when `close()` ends the wait.
   * @throws {Deno.errors.Busy} rejects with it when 65536 newer receives are pending.
   * @throws {TypeError} rejects with it when `p` is not a Uint8Array, or was detached (after
   *   taking a datagram, as Deno's).
   */
  receive(
    p?: Uint8Array<ArrayBuffer>,
  ): Promise<[Uint8Array<ArrayBuffer>, Deno.Addr]> {
    try {
      this.#open("receive");
      // Deno's receive allocates for any falsy `p` (null too), as `p || new Uint8Array(...)`.
      let buf = p || undefined;
      // Another bufSize: an array of that size, as Deno's (which throws for a bad one).
      if (buf === undefined && this.bufSize !== MAX_DATAGRAM) buf = new Uint8Array(this.bufSize);
      const target = this.#target(buf);
      const copy = buf === undefined;
      if (lib().nkb_now_ms() - this.#lastYield <= YIELD_EVERY_MS) {
        let got = this.#receiveNow(target, copy);
        if (got === null && this.#opts.recvMode === 1) {
          const rc = lib().nkb_wait(this.#h, SYNC_SPIN_US, 1);
          if (rc < 0) throw errorFromErrno(rc, "receive");
          if (rc === 1) got = this.#receiveNow(target, copy);
        }
        if (got !== null) return Promise.resolve(got);
        return this.#park(target, copy, false);
      }
      // A stream that is always ready would never let timers run: this receive takes its
      // datagram after a turn of the event loop (an immediate: see #yieldThen).
      return this.#park(target, copy, true);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  // A receive that waits: queued (`ready`: it did not look yet, the datagrams ready now are
  // its in call order) or stacked (it found none: the next to arrive is the newest's). One
  // wait on the FFI thread serves them all. A receive that did not look while a slice wait
  // runs is stacked: that wait returns as soon as anything is ready, and the newest takes it.
  #park(
    target: Uint8Array<ArrayBuffer>,
    copy: boolean,
    ready: boolean,
  ): Promise<[Uint8Array<ArrayBuffer>, Deno.Addr]> {
    if (this.#queued.length + this.#stacked.length >= MAX_PENDING_RECEIVES) {
      // #serve walks the queues by index: a receive called from inside it (see #onWait)
      // gives way itself rather than shift them under it (which left a receive unserved).
      if (this.#serving) return Promise.reject(this.#busy());
      this.#evictOldest();
    }
    const w = Promise.withResolvers<[Uint8Array<ArrayBuffer>, Deno.Addr]>() as Waiter;
    w.target = target;
    w.copy = copy;
    w.seq = this.#seq++;
    const queue = ready && (this.#pendingWait === null || this.#zeroWait);
    (queue ? this.#queued : this.#stacked).push(w);
    if (this.#pendingWait === null) this.#startWait(ready);
    return w.promise;
  }

  // The socket's one wait: for queued receives a turn of the event loop (an immediate:
  // a nonblocking FFI call is no such turn, timers starved behind a loop of them), else
  // a slice per the receive mode on the FFI thread.
  #startWait(zero: boolean): void {
    this.#zeroWait = zero;
    if (zero) {
      this.#pendingWait = new Promise<number>((resolve) => enqueueImmediate(() => resolve(0)));
    } else if (this.#unref && !this.#unrefGap) {
      this.#unrefGap = true;
      this.#pendingWait = new Promise<number>((resolve) => {
        Deno.unrefTimer(startTimeout(() => resolve(0), 0));
      });
    } else {
      this.#unrefGap = false;
      this.#binding.maybeWatch();
      const mode = this.#opts.recvMode;
      const us = this.#unref
        ? UNREF_WAIT_SLICE_US
        : mode === 0
        ? IDLE_WAIT_SLICE_US
        : WAIT_SLICE_US;
      this.#pendingWait = waitShared(this.#h, us, mode === 1);
    }
    this.#pendingWait.then(this.#waitReturned);
  }

  // The wait returned: the waiting receives take what is ready; the wait goes on while
  // some are left. After close() (which rejected them) the socket's memory is freed here:
  // the other thread no longer uses it.
  // #pendingWait stays set while the receives are served: each resolve reads `then` of its
  // result, which JavaScript can make a getter (on Array.prototype) that runs inside
  // #serve. A receive() it calls then joins this wait (it started another: one more wait
  // on the FFI thread pool per such receive, for as long as the socket lived), and a
  // close() it calls leaves the free to the end of this call.
  #onWait(rc: number): void {
    if (this.#closed) {
      this.#pendingWait = null;
      this.#free();
      return;
    }
    this.#lastYield = lib().nkb_now_ms();
    try {
      this.#binding.afterWait();
      if (rc < 0) throw errorFromErrno(rc, "receive");
      this.#serving = true;
      this.#serve();
    } catch (e) {
      this.#rejectAll(() => e);
    } finally {
      this.#serving = false;
      this.#pendingWait = null;
    }
    if (this.#closed) this.#free();
    else if (this.#queued.length + this.#stacked.length > 0) this.#startWait(false);
  }

  // Queued receives first, oldest first (they were there when these datagrams were);
  // those that find none join the stack, then the stack, newest first. A receive leaves
  // the stack before it is served: serving runs JavaScript (see #onWait) whose receive()
  // pushes onto it (popping after serving dropped that one: it never settled, not even
  // on close, and the served one took the next datagram to nowhere). Bounded by the
  // number of pending receives (a receive called meanwhile waits for the next round).
  #serve(): void {
    const queued = this.#queued;
    let i = 0;
    for (; i < queued.length; i++) {
      if (!this.#serveOne(queued[i])) break;
    }
    for (let j = i; j < queued.length; j++) this.#stacked.push(queued[j]);
    queued.length = 0;
    const stacked = this.#stacked;
    for (let k = 0; k < MAX_PENDING_RECEIVES && stacked.length > 0; k++) {
      const w = stacked.pop()!;
      if (!this.#serveOne(w)) {
        stacked.push(w); // it found none: no JavaScript ran, the stack is as it was
        break;
      }
    }
  }

  // One receive takes a datagram (true), is rejected for its own buffer (true), or finds
  // none (false).
  #serveOne(w: Waiter): boolean {
    let got: [Uint8Array<ArrayBuffer>, Deno.NetAddr] | null;
    try {
      got = this.#receiveNow(w.target, w.copy);
    } catch (e) {
      w.reject(e);
      return true;
    }
    if (got === null) return false;
    w.resolve(got);
    return true;
  }

  // Rejects the receive pending longest (a lost race's, most likely: the newest take the
  // datagrams) to make room for a new one.
  #evictOldest(): void {
    const q = this.#queued;
    const st = this.#stacked;
    const fromQueue = q.length > 0 && (st.length === 0 || q[0].seq < st[0].seq);
    const w = fromQueue ? q.shift() : st.shift();
    w?.reject(this.#busy());
  }

  #busy(): Error {
    return new Deno.errors.Busy(
      `receive: more than ${MAX_PENDING_RECEIVES} receives pending; the oldest gave way`,
    );
  }

  // Every pending receive, in call order.
  #rejectAll(error: () => unknown): void {
    const all = this.#queued.concat(this.#stacked).sort((a, b) => a.seq - b.seq);
    this.#queued.length = 0;
    this.#stacked.length = 0;
    for (const w of all) w.reject(error());
  }

  /**
   * Per-socket counters (SO_NET_KERNEL_BYPASS_STATS and more).
   *
   * @throws {Deno.errors.BadResource} when the socket is closed.
   */
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
   *
   * @throws {Deno.errors.BadResource} rejects with it when the socket is closed.
   * @throws {TypeError} rejects with it when `address` is not an IPv4 group or
   *   `networkInterface` not an interface's IPv4 address.
   * @throws {Deno.errors.AddrNotAvailable} rejects with it when no interface has that address.
   */
  joinMulticastV4(
    address: string,
    networkInterface: string,
  ): Promise<Deno.MulticastV4Membership> {
    try {
      this.#open("joinMulticastV4");
      const group = joinAddress(address, "group");
      // The kernel's EINVAL, as Deno's join gets it.
      if (!isMulticast(group)) throw errorFromErrno(-22, "joinMulticastV4");
      // INADDR_ANY as Deno passes it: the kernel picks the interface. Any other address is
      // the kernel's to judge, as for Deno's join (no interface has it: ENODEV).
      const iface = joinAddress(networkInterface, "interface");
      if (!this.#bound) this.bind({ hostname: "0.0.0.0", port: 0 });
      const rc = this.#mcast(Mcast.join, group, iface);
      if (rc === ENODEV) {
        // Deno's words and class for it.
        throw new Error(
          `joinMulticastV4: no interface has "${networkInterface}": No such device (os error 19)`,
        );
      }
      this.#check(rc, "IP_ADD_MEMBERSHIP");
      return Promise.resolve(membership(socketInternals(this), group, iface));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * IPv6 is not supported: nkb is an IPv4 library, and its sockets answer as Deno's IPv4
   * sockets do (the kernel's ENOPROTOOPT for an IPv6 option on an IPv4 socket).
   *
   * @throws {Error} rejects with "Protocol not available (os error 92)" always on an open
   *   socket (Deno's error on an IPv4 socket).
   * @throws {Deno.errors.BadResource} rejects with it when the socket is closed.
   */
  joinMulticastV6(
    _address: string,
    _networkInterface: number,
  ): Promise<Deno.MulticastV6Membership> {
    if (this.#closed) {
      return Promise.reject(new Deno.errors.BadResource(CLOSED_MESSAGE));
    }
    return Promise.reject(new Error("Protocol not available (os error 92)"));
  }

  /**
   * Closes the socket. Every pending receive rejects at once (before any timer runs), in
   * call order, with `Deno.errors.Interrupted`, as Deno's. The socket's native memory is
   * freed when the wait on the FFI thread has returned. A `send()` waiting for room rejects
   * at once with `Deno.errors.BadResource` (nkb's choice: the datagram cannot go out of a
   * closed socket).
   *
   * @throws {Deno.errors.BadResource} when the socket is already closed.
   */
  close(): void {
    if (this.#closed) {
      throw new Deno.errors.BadResource("Bad resource ID"); // Deno's, for a second close
    }
    try {
      this.#addr = this.#readAddr();
    } catch {
      // The address stays what it was last read as.
    }
    this.#closed = true;
    this.#binding.dispose();
    lib().nkb_sock_shutdown(this.#h);
    // Deno's error, with the code Deno gives it.
    this.#rejectAll(() =>
      Object.assign(new Deno.errors.Interrupted("operation canceled"), { code: "EINTR" })
    );
    // Sends waiting for room try once more now, and reject (the socket is closed).
    for (const wake of this.#roomWaits) wake();
    // A wait still running on another thread with this socket frees it when it returns.
    if (this.#pendingWait === null) this.#free();
  }

  /**
   * Async iteration over received datagrams. It ends (without an error) when the socket
   * closes, also when the socket was closed before, as Deno's.
   *
   * @throws {Error} rejects with what a receive rejects with, other than a close.
   */
  async *[Symbol.asyncIterator](): AsyncIterableIterator<
    [Uint8Array<ArrayBuffer>, Deno.Addr]
  > {
    // Bounded as every loop here; 2^53 datagrams outlast any socket.
    for (let i = 0; i < Number.MAX_SAFE_INTEGER; i++) {
      try {
        yield await this.receive();
      } catch (e) {
        if (e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted) return;
        throw e;
      }
    }
  }

  /**
   * Lets the process exit while receives are pending on this socket, as Deno's
   * `DatagramConn.unref()`: they stay pending (and resolve if the program goes on for
   * other reasons). Idle, such a socket wakes every 10 ms.
   */
  unref(): void {
    if (this.#unref) return;
    this.#unref = true;
    // A wait already sleeping (up to 10 s idle) would hold the loop: it ends now, and the
    // receives go on in unreferenced slices.
    if (this.#pendingWait !== null && !this.#zeroWait && !this.#closed) {
      lib().nkb_sock_wake(this.#h);
    }
  }

  /** Undoes `unref()`: a pending receive keeps the process alive again (the default). */
  ref(): void {
    this.#unref = false;
  }

  /** Releases the socket with `using` (closes it unless it is closed). */
  [Symbol.dispose](): void {
    if (!this.#closed) this.close();
  }

  #free(): void {
    for (let i = 0; i < 100; i++) {
      if (lib().nkb_sock_free(this.#h) !== EBUSY) return;
    }
  }

  // Deno's message for every call on a closed socket; `_what` names the call for readers.
  #open(_what: string): void {
    if (this.#closed) {
      throw new Deno.errors.BadResource(CLOSED_MESSAGE);
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
      throw new TypeError("expected typed ArrayBufferView"); // Deno's words
    }
    return buf;
  }

  #receiveNow(
    target: Uint8Array<ArrayBuffer>,
    copy: boolean,
  ): [Uint8Array<ArrayBuffer>, Deno.NetAddr] | null {
    // The target's own length, at this call: a receive() that waited may find it detached
    // (transferred meanwhile) or shrunk (a resizable buffer).
    let into = target;
    let len = byteLengthOf(target);
    let empty: Uint8Array<ArrayBuffer> | null = null;
    let unusable = false;
    if (len === 0) {
      // An empty buffer takes a datagram and keeps none of it, as Deno's. So does one that
      // is detached, or a view its resized buffer no longer covers; then Deno's view of it
      // (a subarray) throws V8's error, and so does this one, below.
      try {
        empty = target.buffer.detached ? null : subarrayOf(target, 0, 0);
      } catch {
        empty = null;
      }
      unusable = empty === null;
      into = this.#scratch ??= new Uint8Array(MAX_DATAGRAM);
      len = byteLengthOf(into);
    }
    const n = lib().nkb_recv_batch(this.#h, into, len, this.#metaBytes, META_BYTES, 1);
    if (n < 0) throw errorFromErrno(n, "receive");
    if (n === 0) return null;
    const m = this.#meta;
    if (unusable) return [subarrayOf(target, 0, m[1]), this.#source(m[2], m[3])];
    const data = empty ?? subarrayOf(target, m[0], m[0] + m[1]);
    return [copy ? new Bytes(data) : data, this.#source(m[2], m[3])];
  }

  // Datagrams mostly come from, and go to, the same few peers: the last address
  // text is kept with its number, saving a parse (or a format) per datagram.
  #source(ipBe: number, port: number): Deno.NetAddr {
    if (ipBe !== this.#srcIp) {
      this.#srcIp = ipBe;
      this.#srcHost = formatIpv4(ipBe);
    }
    return { hostname: this.#srcHost, port, transport: "udp" };
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

  // A socket option, and what depends on it: cached headers carry the TTLs, and the loop
  // decides the path of multicast sends. The shim's rc.
  #setOption(opt: number, value: number): number {
    const rc = lib().nkb_sock_setopt(this.#h, opt, value);
    if (rc < 0) return rc;
    if (opt === Opt.ttl || opt === Opt.multicastTtl) lib().nkb_dest_clear(this.#h);
    if (opt === Opt.multicastLoop) this.#binding.multicastLoop(value !== 0);
    return rc;
  }

  // A membership or the multicast interface, and the binding told of it. The shim's rc.
  #mcast(op: number, groupBe: number, ifaceBe: number): number {
    const rc = lib().nkb_sock_mcast(this.#h, op, groupBe, ifaceBe);
    if (rc < 0) return rc;
    if (op === Mcast.join) this.#binding.joined(groupBe, ifaceBe);
    else if (op === Mcast.leave) this.#binding.left(groupBe);
    else this.#binding.multicastInterface(ifaceBe);
    return rc;
  }

  static {
    socketInternals = (sock: UdpBypass): SocketInternals => ({
      open: (): void => sock.#open("multicast membership"),
      setOption: (opt: number, value: number): number =>
        sock.#closed ? -9 : sock.#setOption(opt, value),
      mcast: (op: number, groupBe: number, ifaceBe: number): number =>
        sock.#closed ? -9 : sock.#mcast(op, groupBe, ifaceBe),
      bindForSend: (dstBe: number): void => {
        sock.#open("bind");
        if (sock.#bound) throw new Deno.errors.AddrInUse("bind: socket is already bound");
        sock.#bindForSend(dstBe);
      },
    });
  }
}
