/**
 * node:dgram under the pre-load: `udp4` sockets of `node:dgram` bound while the pre-load
 * may take sockets over become nkb sockets, whatever way the program (or an npm package)
 * reached node:dgram (`import`, named import, `require`).
 *
 * Deno's node:dgram `Socket` does every Node-level thing (argument checks, DNS lookups,
 * the send queue before 'listening', events, error objects) and reaches the network only
 * through its handle, an instance of Deno's internal `UDP` class whose methods answer
 * with a uv errno. This module patches those methods on `UDP.prototype`: a handle whose
 * `bind` is taken over carries an nkb socket and answers from it; every other handle
 * (udp6, opened from an fd, bound before the pre-load could decide, or whenever the
 * pre-load may not take sockets over) runs Deno's own code untouched. So the Node layer,
 * and with it every value, error and event a program sees, stays Deno's own.
 *
 * The handle answers as Deno's does, including where Deno's differs from Node's:
 * `connect` only records the peer (no kernel connect: datagrams from others still
 * arrive), any failure of a membership or socket option is EINVAL, a send's OS error is
 * EMSGSIZE. Deliberate differences: a received Buffer's ArrayBuffer is the datagram's
 * length (Deno's is the receive buffer size), and source-specific multicast is refused
 * with EINVAL on a taken-over socket (nkb's filter has no source lists).
 *
 * @module
 */

import dgram from "node:dgram";
import { getSystemErrorMap } from "node:util";
import { Buffer } from "node:buffer";
import { byteLengthOf, Mcast, Opt } from "./ffi.ts";
import { isMulticast, parseIpv4 } from "./ipv4.ts";
import { BypassSetupError, TxRingFullError } from "./errors.ts";
import { type SocketInternals, socketInternals, UdpBypass } from "./udp_bypass.ts";

/** uv's flag for SO_REUSEADDR in `bind`'s flags (libuv's UV_UDP_REUSEADDR). */
const UV_UDP_REUSEADDR = 4;
/** Deno's UDP_DGRAM_MAXSIZE: the receive buffer before any `recvBufferSize`. */
const UDP_DGRAM_MAXSIZE = 64 * 1024;
/** The largest IPv4 UDP payload: nkb's receive never needs more. */
const MAX_PAYLOAD = 65507;
/** Deno's test for a send's OS error that it reports as EMSGSIZE. */
const OS_ERROR = /os error (40|90|10040)/;

// What this module calls while the program runs, as it was when the pre-load ran: the
// program may replace any of it (fake timers replace setImmediate and queueMicrotask), and
// Deno's own handle, which calls its primordials, goes on regardless. (Before: a patched
// Reflect.apply, WeakMap.prototype.get, setImmediate, queueMicrotask or array iterator
// broke every taken-over socket.) Buffer is the program's in Deno's handle too.
const apply = Reflect.apply;
const enqueueImmediate = setImmediate;
const promiseThen = Promise.prototype.then;
const Bytes = Uint8Array;
const weakMapGet = WeakMap.prototype.get;
const weakMapSet = WeakMap.prototype.set;
const weakMapHas = WeakMap.prototype.has;
const weakMapDelete = WeakMap.prototype.delete;
const mapGet = Map.prototype.get;
const typedArrayGetter = (name: string): (a: ArrayBufferView) => unknown => {
  const get = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Bytes.prototype), name)!.get!;
  return (a) => apply(get, a, []);
};
const bufferOf = typedArrayGetter("buffer") as (a: ArrayBufferView) => ArrayBuffer;
const byteOffsetOf = typedArrayGetter("byteOffset") as (a: ArrayBufferView) => number;

/** A WeakMap whose methods are the ones this module found (see `apply` above). */
class Weak<V> {
  readonly #map = new WeakMap<object, V>();
  get(key: unknown): V | undefined {
    return apply(weakMapGet, this.#map, [key]);
  }
  has(key: unknown): boolean {
    return apply(weakMapHas, this.#map, [key]);
  }
  set(key: object, value: V): void {
    apply(weakMapSet, this.#map, [key, value]);
  }
  delete(key: unknown): void {
    apply(weakMapDelete, this.#map, [key]);
  }
}

/** uv error numbers by name (Deno's codeMap), e.g. EADDRINUSE -> -98. */
const CODES: Map<string, number> = (() => {
  const codes = new Map<string, number>();
  for (const [errno, [name]] of getSystemErrorMap()) codes.set(name, errno);
  return codes;
})();

function code(name: string): number {
  return apply(mapGet, CODES, [name]) ?? apply(mapGet, CODES, ["UNKNOWN"]) ?? -4094;
}

type Bufs = ArrayLike<string | ArrayBufferView>;

/** The part of Deno's UDP handle this module uses (its public surface, in Deno 2.x). */
interface Handle {
  onmessage: (nread: number, handle: Handle, buf?: Buffer, rinfo?: RemoteInfo) => void;
}

interface RemoteInfo {
  address: string;
  family: "IPv4";
  port: number;
}

interface SendReq {
  oncomplete?: (err: number | null, sent?: number) => void;
}

type Method = (this: Handle, ...args: never[]) => unknown;

const PATCHED = [
  "bind",
  "connect",
  "disconnect",
  "send",
  "recvStart",
  "recvStop",
  "getsockname",
  "getpeername",
  "bufferSize",
  "addMembership",
  "dropMembership",
  "addSourceSpecificMembership",
  "dropSourceSpecificMembership",
  "setBroadcast",
  "setMulticastInterface",
  "setMulticastLoopback",
  "setMulticastTTL",
  "setTTL",
  "ref",
  "unref",
  "_onClose",
] as const;

/** The nkb socket of one taken-over handle, and what Deno's handle keeps beside its rid. */
class Bypassed {
  readonly sock: UdpBypass;
  readonly internals: SocketInternals;
  readonly address: string;
  readonly port: number;
  remoteAddress: string | undefined = undefined;
  remotePort: number | undefined = undefined;
  receiving = false;
  looping = false;
  recvBufferSize = UDP_DGRAM_MAXSIZE;
  sendBufferSize = UDP_DGRAM_MAXSIZE;
  // Completions of sends that went out, waiting for their turn (see completeSoon).
  #completions: (() => void)[] = [];
  #flushQueued = false;
  readonly #flush = (): void => this.flushCompletions();

  constructor(sock: UdpBypass) {
    this.sock = sock;
    this.internals = socketInternals(sock);
    const addr = sock.addr as Deno.NetAddr;
    this.address = addr.hostname;
    this.port = addr.port;
  }

  /**
   * Runs a send's completion at the next turn of the event loop, as Deno's op completes
   * (a callback after the microtasks the send's caller queued, and a chain of sends from
   * callbacks lets timers run), and before any datagram this socket receives is delivered
   * (a reply never comes before its send's callback): all of a turn's in one immediate.
   */
  completeSoon(fn: () => void): void {
    this.#completions.push(fn);
    if (this.#flushQueued) return;
    this.#flushQueued = true;
    enqueueImmediate(this.#flush);
  }

  /** Runs the completions waiting now (those they cause wait for the next turn). */
  flushCompletions(): void {
    this.#flushQueued = false;
    const due = this.#completions;
    if (due.length === 0) return;
    this.#completions = [];
    for (let i = 0; i < due.length; i++) due[i]();
  }
}

const bypassed = new Weak<Bypassed>();
// Handles unref()'d before their bind (hot-shots unrefs a socket at creation): the nkb
// socket a bind makes must be unref'd too, or it would keep the program alive.
const unrefedEarly = new Weak<true>();

/** What this module reaches of Deno's node:dgram, from a socket made and closed for it. */
interface DenoDgram {
  /** Deno's UDP class's prototype. */
  udp: Record<string, unknown>;
  /** The symbol of a Socket's state (its `handle`, `bindState`, `connectState`). */
  state: symbol;
}

function denoDgram(): DenoDgram | null {
  const probe = dgram.createSocket("udp4");
  try {
    for (const sym of Object.getOwnPropertySymbols(probe)) {
      const state = (probe as unknown as Record<symbol, unknown>)[sym];
      if (typeof state !== "object" || state === null || !("handle" in state)) continue;
      const { handle, bindState, connectState } = state as SocketState;
      if (typeof handle !== "object" || handle === null) return null;
      if (bindState !== BIND_STATE_UNBOUND || connectState !== CONNECT_STATE_DISCONNECTED) {
        return null;
      }
      return { udp: Object.getPrototypeOf(handle), state: sym };
    }
    return null;
  } finally {
    probe.close();
  }
}

interface SocketState {
  handle: object | null;
  bindState: number;
  connectState: number;
}

/** Deno's Socket states (ext/node/polyfills/dgram.ts), as the probe checks them. */
const BIND_STATE_UNBOUND = 0;
const CONNECT_STATE_DISCONNECTED = 0;

/**
 * The destination of a send on a socket neither bound nor connected, as Node's send reads
 * its overloads: `send(msg, [offset, length,] port, address, cb)`. An address that is not
 * an IPv4 literal (a name, or none: Node's 127.0.0.1) gives null.
 */
function firstDestination(args: unknown[]): number | null {
  const length = args[2];
  const port = args[3];
  const address = args[4];
  const full = Boolean(address) || (Boolean(port) && typeof port !== "function");
  const to = full ? address : length;
  if (typeof to !== "string") return null;
  const ip = parseIpv4(to);
  // Loopback stays as Node binds it: it never leaves through an interface that bypasses.
  if (ip === null || (ip & 0xff) === 127 || isMulticast(ip) || ip === 0xffffffff) return null;
  return ip;
}

// Handles whose socket's first send (before any bind) went to this destination: Node then
// binds the socket to 0.0.0.0:0 itself, which is the kernel's autobind of a sendto, and
// the contract decides such a socket by its first destination.
const firstSend = new Weak<number>();

/**
 * A taken-over handle's bind: an nkb socket bound where Deno's would be (or, for Node's
 * own bind before a first send, where that send's route leaves from); an errno.
 */
function bindBypass(
  handle: Handle,
  sock: UdpBypass,
  ip: string,
  port: number,
  flags: number,
): number {
  try {
    const internals = socketInternals(sock);
    // Deno's node handle leaves IP_MULTICAST_LOOP at the kernel's default (on); the
    // binding must know it to send multicast the way that loops back. SO_BROADCAST too
    // (off, where nkb's sockets open with it on, as Deno.listenDatagram's): a broadcast
    // before setBroadcast(true) fails, as Deno's (it went out).
    let rc = internals.setOption(Opt.multicastLoop, 1);
    if (rc >= 0) rc = internals.setOption(Opt.broadcast, 0);
    if (rc >= 0 && (flags & UV_UDP_REUSEADDR) !== 0) {
      rc = internals.setOption(Opt.reuseAddress, 1);
    }
    // A uv error number is the negative errno on Linux: the shim's rc is Deno's answer.
    if (rc < 0) return closeAnd(sock, rc);
    const dst = firstSend.get(handle);
    firstSend.delete(handle);
    if (dst !== undefined && ip === "0.0.0.0" && port === 0) internals.bindForSend(dst);
    else sock.bind({ hostname: ip, port });
    const b = new Bypassed(sock);
    if (unrefedEarly.has(handle)) sock.unref();
    bypassed.set(handle, b);
    return 0;
  } catch (e) {
    // _NET_KERNEL_BYPASS_ERR_EXIT=1: the contract's exit, as Deno lets NotCapable out.
    if (e instanceof BypassSetupError) throw closeAnd(sock, e);
    return closeAnd(sock, code((e as { code?: string })?.code ?? "UNKNOWN"));
  }
}

/** Closes a socket whose bind failed; returns `result`. */
function closeAnd<T>(sock: UdpBypass, result: T): T {
  try {
    sock.close();
  } catch {
    // closed already
  }
  return result;
}

/**
 * A new nkb socket, or null when nkb cannot open one: its table is full (1024 sockets a
 * process: EMFILE, where Deno's own socket still binds), or the kernel refused it. Such a
 * handle stays Deno's, as without the pre-load.
 */
function openBypass(): UdpBypass | null {
  try {
    return new UdpBypass();
  } catch (e) {
    if (e instanceof BypassSetupError) throw e;
    return null;
  }
}

/** The payload of a send: Deno concatenates the list; one view is sent as it is. */
function payload(bufs: Bufs): Uint8Array {
  if (bufs.length === 1 && typeof bufs[0] !== "string") {
    // A view of the program's memory, made as Deno's handle makes it (Buffer.from throws
    // its TypeError for what is no view: a direct call's [5] sent an empty datagram).
    const b = bufs[0];
    return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  }
  const parts: Uint8Array[] = [];
  for (let i = 0; i < bufs.length; i++) {
    const b = bufs[i];
    // Read as Deno's handle reads them (a lying byteLength fails both alike).
    parts[i] = typeof b === "string"
      ? Buffer.from(b)
      : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  }
  return Buffer.concat(parts);
}

function send(b: Bypassed, req: SendReq, bufs: Bufs, args: unknown[]): number {
  let hasCallback: boolean;
  if (args.length === 3) {
    // As Deno's: a send with an address makes it the handle's remote one.
    b.remotePort = args[0] as number;
    b.remoteAddress = args[1] as string;
    hasCallback = Boolean(args[2]);
  } else {
    hasCallback = Boolean(args[0]);
  }
  const data = payload(bufs);
  const to: Deno.NetAddr = { transport: "udp", hostname: b.remoteAddress!, port: b.remotePort! };
  let sent: number;
  try {
    sent = b.sock.sendSync(data, to);
  } catch (e) {
    if (e instanceof Deno.errors.WouldBlock || e instanceof TxRingFullError) {
      // No room now: the socket's own send waits for it (bounded) without blocking. Deno's
      // handle sends a copy made at this call; `data` may be the program's own memory, which
      // it is free to change once send() returned (a reused Buffer: half the datagrams went
      // out with its later content, tests/dgram_reuse.test.ts).
      apply(promiseThen, b.sock.send(new Bytes(data), to), [
        (n: number) => complete(req, hasCallback, null, n),
        // BadResource here is a close() while the send waited, which cancels Deno's send
        // op (Interrupted: UNKNOWN); EBADF is Deno's for a send after the close only.
        (e: unknown) =>
          complete(
            req,
            hasCallback,
            e instanceof Deno.errors.BadResource ? code("UNKNOWN") : sendErrno(e),
            0,
          ),
      ]);
      return 0;
    }
    b.completeSoon(() => complete(req, hasCallback, sendErrno(e), 0));
    return 0;
  }
  b.completeSoon(() => complete(req, hasCallback, null, sent));
  return 0;
}

/** Deno's mapping of a failed send to an errno. */
function sendErrno(e: unknown): number {
  if (e instanceof Deno.errors.BadResource) return code("EBADF");
  if (e instanceof Error && OS_ERROR.test(e.message)) return code("EMSGSIZE");
  return code("UNKNOWN");
}

function complete(req: SendReq, hasCallback: boolean, err: number | null, sent: number): void {
  if (!hasCallback) return;
  try {
    req.oncomplete?.(err, sent);
  } catch {
    // Deno's handle swallows callback errors
  }
}

/** The receive loop of a taken-over handle: Deno's #receive, over the nkb socket. */
async function receiveLoop(handle: Handle, b: Bypassed): Promise<void> {
  if (b.looping) return;
  b.looping = true;
  try {
    while (b.receiving) {
      let nread: number;
      let buf: Buffer;
      let rinfo: RemoteInfo | undefined;
      try {
        const got = await b.sock.receive();
        const data = got[0];
        const addr = got[1] as Deno.NetAddr;
        nread = byteLengthOf(data);
        buf = Buffer.from(bufferOf(data), byteOffsetOf(data), nread);
        rinfo = { address: addr.hostname, port: addr.port, family: "IPv4" };
      } catch (e) {
        const closed = e instanceof Deno.errors.Interrupted || e instanceof Deno.errors.BadResource;
        nread = closed ? 0 : code("UNKNOWN");
        buf = Buffer.alloc(0);
        rinfo = undefined;
        if (closed) b.receiving = false;
      }
      b.flushCompletions();
      try {
        handle.onmessage(nread, handle, buf, rinfo);
      } catch {
        // Deno's handle swallows callback errors
      }
      // What the 'message' listeners started runs before the next receive: a reply's
      // send() waits for its address lookup (a nextTick), and a receive in mode 1 spins
      // on this thread before it waits; without the turn, the spin delayed the reply. A
      // receive that fails at once (a negative bufferSize from a direct call) then waits
      // for a turn too, as Deno's op does, instead of spinning on microtasks.
      await new Promise((resolve) => enqueueImmediate(resolve));
    }
  } finally {
    b.looping = false;
  }
}

/** The methods a taken-over handle answers with, by name. */
function bypassMethods(
  mayBypass: (ip: string, port: number) => boolean,
  deno: Record<string, Method>,
): Record<string, Method> {
  const denoCall = (name: string, handle: Handle, args: unknown[]): unknown =>
    apply(deno[name], handle, args);
  return {
    bind(this: Handle, ip: string, port: number, flags: number): number {
      if (
        bypassed.has(this) || !unboundHandle(deno, this) || typeof ip !== "string" ||
        parseIpv4(ip) === null || !mayBypass(ip, port)
      ) {
        return denoCall("bind", this, [ip, port, flags]) as number;
      }
      const sock = openBypass();
      if (sock === null) return denoCall("bind", this, [ip, port, flags]) as number;
      return bindBypass(this, sock, ip, port, flags);
    },
    connect(this: Handle, b: Bypassed, ip: string, port: number): number {
      b.remoteAddress = ip;
      b.remotePort = port;
      return 0;
    },
    disconnect(this: Handle, b: Bypassed): number {
      b.remoteAddress = undefined;
      b.remotePort = undefined;
      return 0;
    },
    send(
      this: Handle,
      b: Bypassed,
      req: SendReq,
      bufs: Bufs,
      _count: number,
      ...args: unknown[]
    ): number {
      return send(b, req, bufs, args);
    },
    recvStart(this: Handle, b: Bypassed): number {
      if (!b.receiving) {
        b.receiving = true;
        void receiveLoop(this, b);
      }
      return 0;
    },
    recvStop(this: Handle, b: Bypassed): number {
      b.receiving = false;
      return 0;
    },
    getsockname(this: Handle, b: Bypassed, out: Record<string, unknown>): number {
      out.address = b.address;
      out.port = b.port;
      out.family = "IPv4";
      return 0;
    },
    getpeername(this: Handle, b: Bypassed, out: Record<string, unknown>): number {
      if (b.remoteAddress === undefined) return code("EBADF");
      out.address = b.remoteAddress;
      out.port = b.remotePort;
      out.family = "IPv4";
      return 0;
    },
    bufferSize(this: Handle, b: Bypassed, size: number, recv: boolean): number {
      // As Deno's: sizes are kept, doubled as Linux reports them, not set on the socket;
      // the receive size bounds the datagrams received.
      if (size !== 0) {
        size *= 2;
        if (!recv) return (b.sendBufferSize = size);
        b.recvBufferSize = size;
        // A size only a direct call can give (Node checks its own): Deno's receive throws
        // on a negative one (an unhandled rejection); nkb's receives keep theirs.
        if (size >= 0) b.sock.bufSize = Math.min(size, MAX_PAYLOAD);
        return size;
      }
      return recv ? b.recvBufferSize : b.sendBufferSize;
    },
    addMembership(this: Handle, b: Bypassed, group: string, iface?: string): number {
      return membership(b, true, group, iface);
    },
    dropMembership(this: Handle, b: Bypassed, group: string, iface?: string): number {
      return membership(b, false, group, iface);
    },
    addSourceSpecificMembership(): number {
      return code("EINVAL");
    },
    dropSourceSpecificMembership(): number {
      return code("EINVAL");
    },
    setBroadcast(this: Handle, b: Bypassed, on: number): number {
      return option(b, Opt.broadcast, on === 1 ? 1 : 0);
    },
    setMulticastInterface(this: Handle, b: Bypassed, iface: string): number {
      // An interface's address, or "0.0.0.0": Node's way to give the choice back to the
      // kernel (the kernel refuses an address no interface has).
      const ifaceBe = typeof iface === "string" ? parseIpv4(iface) : null;
      if (ifaceBe === null) return code("EINVAL");
      return b.internals.mcast(Mcast.setInterface, 0, ifaceBe) < 0 ? code("EINVAL") : 0;
    },
    setMulticastLoopback(this: Handle, b: Bypassed, on: number): number {
      return option(b, Opt.multicastLoop, on === 1 ? 1 : 0);
    },
    setMulticastTTL(this: Handle, b: Bypassed, ttl: number): number {
      if (ttl < 1 || ttl > 255) return code("EINVAL");
      return ttlOption(b, Opt.multicastTtl, ttl);
    },
    setTTL(this: Handle, b: Bypassed, ttl: number): number {
      if (ttl < 1 || ttl > 255) return code("EINVAL");
      return ttlOption(b, Opt.ttl, ttl);
    },
    ref(this: Handle, b: Bypassed): void {
      b.sock.ref();
      denoCall("ref", this, []);
    },
    unref(this: Handle, b: Bypassed): void {
      b.sock.unref();
      denoCall("unref", this, []);
    },
    _onClose(this: Handle, b: Bypassed): number {
      b.receiving = false;
      bypassed.delete(this);
      try {
        b.sock.close();
      } catch {
        // closed already
      }
      return denoCall("_onClose", this, []) as number;
    },
  };
}

/**
 * A TTL option as Deno's op sets it: Node checks only that the TTL is a number, so 1.5
 * and NaN get here (the FFI call would throw a TypeError for both); the op truncates, NaN
 * is 0. What is not a number at all fails the op's conversion: Deno's EINVAL.
 */
function ttlOption(b: Bypassed, opt: number, ttl: unknown): number {
  if (typeof ttl !== "number") return code("EINVAL");
  return option(b, opt, Math.trunc(ttl) || 0);
}

/**
 * Whether `handle` is one of Deno's UDP handles, not yet bound: Deno's getsockname reads
 * its private fields, which throws for any other object (a foreign `this`, such as
 * `UDP.prototype.bind.call({})`: Deno's bind throws its TypeError there, where a socket
 * made for it would be one no close ever reaches), and answers EBADF until a bind.
 */
function unboundHandle(deno: Record<string, Method>, handle: unknown): boolean {
  try {
    return apply(deno.getsockname, handle, [{}]) === code("EBADF");
  } catch {
    return false;
  }
}

function option(b: Bypassed, opt: number, value: number): number {
  return b.internals.setOption(opt, value) < 0 ? code("EINVAL") : 0;
}

/** Deno's checks of a membership's addresses, then the kernel's answer (any failure EINVAL). */
function membership(b: Bypassed, join: boolean, group: string, iface?: string): number {
  const groupBe = typeof group === "string" ? parseIpv4(group) : null;
  const ifaceBe = iface === undefined ? 0 : typeof iface === "string" ? parseIpv4(iface) : null;
  if (groupBe === null || !isMulticast(groupBe) || ifaceBe === null) return code("EINVAL");
  const rc = b.internals.mcast(join ? Mcast.join : Mcast.leave, groupBe, ifaceBe);
  return rc < 0 ? code("EINVAL") : 0;
}

/**
 * Patches Deno's node:dgram handle so that `udp4` sockets bound while `mayBypass(ip, port)`
 * is true are nkb sockets. Returns false, changing nothing, when Deno's handle is not the
 * one this module knows (another Deno version): node:dgram then stays Deno's own.
 */
export function installNodeDgram(mayBypass: (ip: string, port: number) => boolean): boolean {
  const found = denoDgram();
  const socketSend = dgram.Socket.prototype.send;
  if (found === null || typeof socketSend !== "function") return false;
  const proto = found.udp;
  const deno: Record<string, Method> = {};
  for (const name of PATCHED) {
    const fn = proto[name];
    if (typeof fn !== "function") return false;
    deno[name] = fn as Method;
  }
  const ours = bypassMethods(mayBypass, deno);
  for (const name of PATCHED) {
    const own = ours[name];
    const original = deno[name];
    const patched = name === "bind" ? own : function (this: Handle, ...args: unknown[]): unknown {
      const b = bypassed.get(this);
      if (b === undefined) {
        // Deno's first: it throws its own TypeError for a `this` that is no handle.
        const result = apply(original, this, args);
        if (name === "unref") unrefedEarly.set(this, true);
        if (name === "ref") unrefedEarly.delete(this);
        return result;
      }
      // The socket first, then the arguments (a spread would call the array iterator).
      const all: unknown[] = [b];
      for (let i = 0; i < args.length; i++) all[i + 1] = args[i];
      return apply(own, this, all);
    };
    // Deno's name and declared parameter count: a program may read either.
    Object.defineProperty(patched, "name", { value: name });
    Object.defineProperty(patched, "length", { value: original.length });
    Object.defineProperty(proto, name, {
      value: patched,
      writable: true,
      configurable: true,
      enumerable: false,
    });
  }
  const stateOf = found.state;
  // Socket.send, to learn the first destination of a socket Node binds for that send.
  const send = function send(this: dgram.Socket, ...args: unknown[]): unknown {
    const state = (this as unknown as Record<symbol, SocketState | undefined>)[stateOf];
    const handle = state?.handle;
    if (
      handle && state.bindState === BIND_STATE_UNBOUND &&
      state.connectState === CONNECT_STATE_DISCONNECTED
    ) {
      const dst = firstDestination(args);
      if (dst !== null) firstSend.set(handle, dst);
    }
    try {
      return apply(socketSend, this, args);
    } finally {
      // A send that threw (a bad port, say) bound nothing: a later bind(0) of the
      // program's own is to 0.0.0.0, as Deno's, not where this send would have gone.
      if (handle && state.bindState === BIND_STATE_UNBOUND) firstSend.delete(handle);
    }
  };
  Object.defineProperty(send, "length", { value: socketSend.length });
  Object.defineProperty(dgram.Socket.prototype, "send", {
    value: send,
    writable: true,
    configurable: true,
    enumerable: false,
  });
  return true;
}
