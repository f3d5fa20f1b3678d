/**
 * Batches: many datagrams laid out in caller-owned buffers, moved by one FFI
 * call each way. Nothing is allocated per datagram on the way in or out.
 *
 * @module
 */

import { BATCH_MAX, byteLengthOf, lib, RECV_META_WORDS, SEND_META_WORDS } from "./ffi.ts";
import { formatIpv4 } from "./ipv4.ts";
import { destinationNoLookup, HostNameLookup } from "./resolve.ts";

// Optimized code reads an imported binding again at every use, behind a check that it is
// initialized; the per-datagram paths read these module-local copies instead, which it
// treats as constants.
const RECV_WORDS = RECV_META_WORDS;
const SEND_WORDS = SEND_META_WORDS;

const MAX_DATAGRAM = 65507;
const RX_KERNEL = 1;
const RX_TRUNCATED = 2;

// A batch's buffers and sizes live in private fields, and the length the shim is given is
// read from the very array passed, at call time (byteLengthOf: not a property JavaScript
// can redefine): a batch whose public properties were redefined, or whose buffers were
// replaced, transferred or detached, can mislead neither the shim nor the socket.
// What no hostname is: the parse caches start from it.
const NO_HOST: unique symbol = Symbol("no host");

function detached(what: string): never {
  throw new TypeError(
    `${what}: its buffers were transferred or detached (postMessage, ArrayBuffer.transfer): ` +
      "make a new batch",
  );
}

function checkCapacity(maxDatagrams: number, maxBytes: number): void {
  if (!Number.isInteger(maxDatagrams) || maxDatagrams < 1 || maxDatagrams > BATCH_MAX) {
    throw new RangeError(`maxDatagrams must be 1..${BATCH_MAX}, got ${maxDatagrams}`);
  }
  if (!Number.isInteger(maxBytes) || maxBytes < 1 || maxBytes > 64 * 1024 * 1024) {
    throw new RangeError(`maxBytes must be 1..64 MiB, got ${maxBytes}`);
  }
}

// The socket's ways into a batch's private state (set by the classes' static blocks).
let isSend: (b: unknown) => boolean;
let isRecv: (b: unknown) => boolean;
let sendFrom: (b: SendBatch, h: number, first: number) => number;
let receiveInto: (b: RecvBatch, h: number) => number;
let recvMeta: (b: RecvBatch) => Uint32Array<ArrayBuffer>;

/**
 * Datagrams to send with {@linkcode UdpBypass.sendBatch}: payloads are copied in by `add`.
 *
 * @example Send any number of datagrams, a full batch at a time
 * ```ts
 * const out = new SendBatch(256);
 * for (const p of payloads) {
 *   if (out.add(p, to)) continue;
 *   sock.sendBatch(out); // full: send it, empty it, and add p again
 *   out.clear();
 *   if (!out.add(p, to)) throw new RangeError("a payload larger than the batch's bytes");
 * }
 * if (out.length > 0) sock.sendBatch(out);
 * out.clear();
 * ```
 */
export class SendBatch {
  #bytes: Uint8Array<ArrayBuffer>;
  #meta: Uint32Array<ArrayBuffer>;
  #metaBytes: Uint8Array<ArrayBuffer>;
  #count = 0;
  #used = 0;
  // The last hostname parsed (never equal to a caller's before the first: null is a host).
  #lastHost: unknown = NO_HOST;
  #lastIp = 0;

  /**
   * Room for `maxDatagrams` datagrams of `maxBytes` payload bytes in all.
   *
   * @param maxDatagrams Optional: datagrams the batch holds, 1..1024 (default 256).
   * @param maxBytes Optional: payload bytes it holds, 1 byte..64 MiB (default
   *   `maxDatagrams * 1500`).
   * @throws {RangeError} when either is not an integer in its range.
   */
  constructor(maxDatagrams: number = 256, maxBytes: number = maxDatagrams * 1500) {
    checkCapacity(maxDatagrams, maxBytes);
    this.#bytes = new Uint8Array(maxBytes);
    this.#meta = new Uint32Array(maxDatagrams * SEND_META_WORDS);
    this.#metaBytes = new Uint8Array(this.#meta.buffer);
  }

  /** Where payloads are laid out. */
  get bytes(): Uint8Array<ArrayBuffer> {
    return this.#bytes;
  }

  /** Per datagram: offset, length, destination (network order), port. */
  get meta(): Uint32Array<ArrayBuffer> {
    return this.#meta;
  }

  /** `meta` as bytes, for the shim. */
  get metaBytes(): Uint8Array<ArrayBuffer> {
    return this.#metaBytes;
  }

  /** Datagrams in the batch. */
  get length(): number {
    return this.#count;
  }

  /**
   * Adds one datagram (its payload is copied). Returns false, and adds nothing, when the
   * batch is full: its datagrams or its bytes. Send it (`sendBatch`), `clear()` it, and
   * add the datagram again.
   *
   * @throws {TypeError} when `payload` is not a Uint8Array, when `addr.hostname` is not
   *   dotted-quad IPv4 text, or when the batch's buffers were transferred or detached.
   * @throws {URIError} when `addr.hostname` has characters no host name has (as Deno).
   * @throws {RangeError} when `addr.port` is not an integer in 1..65535, or the payload
   *   is larger than a UDP datagram can be (65,507 bytes).
   */
  add(payload: Uint8Array, addr: Deno.NetAddr): boolean {
    if (!(payload instanceof Uint8Array)) throw new TypeError("payload must be a Uint8Array");
    const port = addr?.port;
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new RangeError(`port ${port} is out of range 1..65535`);
    }
    // A batch usually goes to few destinations: parse each hostname once. Read once: a
    // getter answering differently on each read must not map one hostname to another's IP.
    const hostname: unknown = addr.hostname;
    if (hostname !== this.#lastHost) {
      let ip: number;
      try {
        ip = destinationNoLookup(hostname, "SendBatch.add", "127.0.0.1");
      } catch (e) {
        throw e instanceof HostNameLookup ? e.typeError() : e;
      }
      // An object's text comes from its own toString, which may answer differently next time.
      if (typeof hostname !== "object" || hostname === null) {
        this.#lastHost = hostname;
        this.#lastIp = ip;
      } else {
        return this.#put(payload, ip, port);
      }
    }
    return this.#put(payload, this.#lastIp, port);
  }

  /**
   * Adds `payload` (by default datagram `i` of `from` itself) addressed to the sender
   * of datagram `i` of `from`: a reply without building an address. False (and
   * nothing added) when the batch is full.
   *
   * @param payload Optional: what to send (default: datagram `i` of `from`).
   * @throws {TypeError} when `payload` is not a Uint8Array, or the batch's buffers were
   *   transferred or detached.
   * @throws {RangeError} when datagram `i` is not in `from`, or the payload is larger
   *   than a UDP datagram can be.
   */
  reply(from: RecvBatch, i: number, payload: Uint8Array = from.data(i)): boolean {
    if (!(payload instanceof Uint8Array)) throw new TypeError("payload must be a Uint8Array");
    from.offset(i); // a RangeError unless datagram i is in the batch
    const at = i * RECV_WORDS;
    const meta = recvMeta(from);
    return this.#put(payload, meta[at + 2], meta[at + 3]);
  }

  #put(payload: Uint8Array, ipBe: number, port: number): boolean {
    if (payload.byteLength > MAX_DATAGRAM) {
      throw new RangeError(`${payload.byteLength} bytes exceed the UDP maximum ${MAX_DATAGRAM}`);
    }
    if (port < 1 || port > 65535) throw new RangeError(`port ${port} is out of range 1..65535`);
    const slot = this.#count * SEND_WORDS;
    const meta = this.#meta;
    if (slot >= meta.length || this.#used + payload.byteLength > this.#bytes.byteLength) {
      // Full; or (a detached array reads as empty) dead: say so rather than "full".
      if (byteLengthOf(this.#bytes) === 0 || byteLengthOf(meta) === 0) detached("SendBatch.add");
      return false;
    }
    this.#bytes.set(payload, this.#used);
    meta[slot] = this.#used;
    meta[slot + 1] = payload.byteLength;
    meta[slot + 2] = ipBe;
    meta[slot + 3] = port;
    this.#used += payload.byteLength;
    this.#count++;
    return true;
  }

  /** Empties the batch for reuse. */
  clear(): void {
    this.#count = 0;
    this.#used = 0;
  }

  /** Destination of datagram `i`, network order (for the socket's route resolution). */
  destination(i: number): [number, number] {
    return [this.#meta[i * SEND_WORDS + 2], this.#meta[i * SEND_WORDS + 3]];
  }

  static {
    isSend = (b: unknown): boolean => typeof b === "object" && b !== null && #bytes in b;
    sendFrom = (b: SendBatch, h: number, first: number): number => b.#send(h, first);
  }

  // Datagrams [first, length) with one call; what nkb_send_batch returns.
  #send(h: number, first: number): number {
    const bytes = this.#bytes;
    const metaBytes = this.#metaBytes;
    const len = byteLengthOf(bytes);
    const metaLen = byteLengthOf(metaBytes);
    if (len === 0 || metaLen === 0) detached("sendBatch");
    return lib().nkb_send_batch(h, bytes, len, metaBytes, metaLen, first, this.#count - first);
  }
}

/**
 * Sends datagrams `first..` of `batch` on socket handle `h` (nkb_send_batch): for
 * `UdpBypass.sendBatch`.
 *
 * @throws {TypeError} for anything but a `SendBatch`, or a dead one.
 */
export function sendBatchFrom(batch: SendBatch, h: number, first: number): number {
  checkSendBatch(batch);
  return sendFrom(batch, h, first);
}

/**
 * Checks that `batch` was made by the `SendBatch` constructor.
 *
 * @throws {TypeError} when it was not.
 */
export function checkSendBatch(batch: SendBatch): void {
  if (!isSend(batch)) throw new TypeError("sendBatch: not a SendBatch");
}

/**
 * Receives into `batch` on socket handle `h` (nkb_recv_batch), and sets its length when
 * that succeeds: for `UdpBypass.receiveBatch`.
 *
 * @throws {TypeError} for anything but a `RecvBatch`, or a dead one.
 */
export function receiveBatchInto(batch: RecvBatch, h: number): number {
  if (!isRecv(batch)) throw new TypeError("receiveBatch: not a RecvBatch");
  return receiveInto(batch, h);
}

/**
 * Datagrams received by {@linkcode UdpBypass.receiveBatch}. Their bytes stay
 * valid until the next receive into the same batch.
 */
export class RecvBatch {
  /**
   * Words of `meta` per datagram: datagram `i`'s entry starts at `i * RecvBatch.WORDS`
   * (for loops that read `meta` directly).
   */
  static readonly WORDS: number = RECV_WORDS;
  #bytes: Uint8Array<ArrayBuffer>;
  #meta: Uint32Array<ArrayBuffer>;
  #metaBytes: Uint8Array<ArrayBuffer>;
  #capacity: number;
  #count = 0;

  /**
   * Room for `maxDatagrams` datagrams of `maxBytes` payload bytes in all.
   *
   * @param maxDatagrams Optional: most datagrams one receive takes, 1..1024 (default 256).
   * @param maxBytes Optional: payload bytes it holds, 1 byte..64 MiB (default
   *   `maxDatagrams * 2048`).
   * @throws {RangeError} when either is not an integer in its range.
   */
  constructor(maxDatagrams: number = 256, maxBytes: number = maxDatagrams * 2048) {
    checkCapacity(maxDatagrams, maxBytes);
    this.#capacity = maxDatagrams;
    this.#bytes = new Uint8Array(maxBytes);
    this.#meta = new Uint32Array(maxDatagrams * RECV_META_WORDS);
    this.#metaBytes = new Uint8Array(this.#meta.buffer);
  }

  /** Where payloads are laid out. */
  get bytes(): Uint8Array<ArrayBuffer> {
    return this.#bytes;
  }

  /** Per datagram ({@linkcode RecvBatch.WORDS} words): offset, length, source (network order), port, flags, 0, 0, 0. */
  get meta(): Uint32Array<ArrayBuffer> {
    return this.#meta;
  }

  /** `meta` as bytes, for the shim. */
  get metaBytes(): Uint8Array<ArrayBuffer> {
    return this.#metaBytes;
  }

  /** Most datagrams one receive takes. */
  get capacity(): number {
    return this.#capacity;
  }

  /** Datagrams received by the last receive. */
  get length(): number {
    return this.#count;
  }

  /**
   * Set by the socket after a receive (or by code that fills `meta` itself): 0..capacity,
   * the capacity the batch was made with. It bounds only what `data(i)` and its kin read.
   *
   * @throws {RangeError} when `n` is not an integer in 0..capacity.
   */
  set length(n: number) {
    if (!Number.isInteger(n) || n < 0 || n > this.#capacity) throw new RangeError(`bad count ${n}`);
    this.#count = n;
  }

  static {
    isRecv = (b: unknown): boolean => typeof b === "object" && b !== null && #bytes in b;
    receiveInto = (b: RecvBatch, h: number): number => b.#receive(h);
    recvMeta = (b: RecvBatch): Uint32Array<ArrayBuffer> => b.#meta;
  }

  // One nkb_recv_batch into this batch's own arrays, with their real lengths.
  #receive(h: number): number {
    const bytes = this.#bytes;
    const metaBytes = this.#metaBytes;
    const len = byteLengthOf(bytes);
    const metaLen = byteLengthOf(metaBytes);
    if (len === 0 || metaLen === 0) detached("receiveBatch");
    const n = lib().nkb_recv_batch(h, bytes, len, metaBytes, metaLen, this.#capacity);
    if (n >= 0) this.#count = n;
    return n;
  }

  /**
   * Offset of datagram `i` in `bytes`.
   *
   * @throws {RangeError} when datagram `i` is not in the batch (`i` not in 0..length-1).
   */
  offset(i: number): number {
    return this.#meta[this.#at(i)];
  }

  /**
   * Length of datagram `i`.
   *
   * @throws {RangeError} when datagram `i` is not in the batch (`i` not in 0..length-1).
   */
  size(i: number): number {
    return this.#meta[this.#at(i) + 1];
  }

  /**
   * Datagram `i` as a view into `bytes` (no copy).
   *
   * @throws {RangeError} when datagram `i` is not in the batch (`i` not in 0..length-1).
   */
  data(i: number): Uint8Array<ArrayBuffer> {
    const at = this.#at(i);
    const meta = this.#meta;
    return this.#bytes.subarray(meta[at], meta[at] + meta[at + 1]);
  }

  /**
   * Sender of datagram `i`.
   *
   * @throws {RangeError} when datagram `i` is not in the batch (`i` not in 0..length-1).
   */
  address(i: number): Deno.NetAddr {
    const at = this.#at(i);
    return { transport: "udp", hostname: formatIpv4(this.#meta[at + 2]), port: this.#meta[at + 3] };
  }

  /**
   * True when datagram `i` came through the kernel socket.
   *
   * @throws {RangeError} when datagram `i` is not in the batch (`i` not in 0..length-1).
   */
  viaKernel(i: number): boolean {
    return (this.#meta[this.#at(i) + 4] & RX_KERNEL) !== 0;
  }

  /**
   * True when datagram `i` was cut to fit.
   *
   * @throws {RangeError} when datagram `i` is not in the batch (`i` not in 0..length-1).
   */
  truncated(i: number): boolean {
    return (this.#meta[this.#at(i) + 4] & RX_TRUNCATED) !== 0;
  }

  #at(i: number): number {
    // `i >>> 0 === i` holds for the integers 0..2^32-1 only: one integer compare on the hot
    // path where Number.isInteger and a sign test cost a call and a branch more. The throw
    // lives in a function of its own, so that this one stays small enough to be inlined.
    if (i >>> 0 !== i || i >= this.#count) notInBatch(i, this.#count);
    return i * RECV_WORDS;
  }
}

function notInBatch(i: number, length: number): never {
  throw new RangeError(`datagram ${i} is not in the batch (length ${length})`);
}
