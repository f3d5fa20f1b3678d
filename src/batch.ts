/**
 * Batches: many datagrams laid out in caller-owned buffers, moved by one FFI
 * call each way. Nothing is allocated per datagram on the way in or out.
 *
 * @module
 */

import { BATCH_MAX, RECV_META_WORDS, SEND_META_WORDS } from "./ffi.ts";
import { formatIpv4, parseIpv4 } from "./ipv4.ts";

// Optimized code reads an imported binding again at every use, behind a check that it is
// initialized; the per-datagram paths read these module-local copies instead (a loop over
// offset(), size() and a payload read: 3.9-4.4 -> 3.3 ns a datagram, measured).
const RECV_WORDS = RECV_META_WORDS;
const SEND_WORDS = SEND_META_WORDS;

const MAX_DATAGRAM = 65507;
const RX_KERNEL = 1;
const RX_TRUNCATED = 2;

function checkCapacity(maxDatagrams: number, maxBytes: number): void {
  if (!Number.isInteger(maxDatagrams) || maxDatagrams < 1 || maxDatagrams > BATCH_MAX) {
    throw new RangeError(`maxDatagrams must be 1..${BATCH_MAX}, got ${maxDatagrams}`);
  }
  if (!Number.isInteger(maxBytes) || maxBytes < 1 || maxBytes > 64 * 1024 * 1024) {
    throw new RangeError(`maxBytes must be 1..64 MiB, got ${maxBytes}`);
  }
}

/** Datagrams to send with {@linkcode UdpBypass.sendBatch}: payloads are copied in by `add`. */
export class SendBatch {
  /** Where payloads are laid out. */
  readonly bytes: Uint8Array<ArrayBuffer>;
  /** Per datagram: offset, length, destination (network order), port. */
  readonly meta: Uint32Array<ArrayBuffer>;
  /** `meta` as bytes, for the shim. */
  readonly metaBytes: Uint8Array<ArrayBuffer>;
  #count = 0;
  #used = 0;
  #lastHost: string | null = null;
  #lastIp = 0;

  /** Room for `maxDatagrams` datagrams (at most 1024) of `maxBytes` payload bytes in all. */
  constructor(maxDatagrams: number = 256, maxBytes: number = maxDatagrams * 1500) {
    checkCapacity(maxDatagrams, maxBytes);
    this.bytes = new Uint8Array(maxBytes);
    this.meta = new Uint32Array(maxDatagrams * SEND_META_WORDS);
    this.metaBytes = new Uint8Array(this.meta.buffer);
  }

  /** Datagrams in the batch. */
  get length(): number {
    return this.#count;
  }

  /** Adds one datagram; false (and nothing added) when the batch is full. */
  add(payload: Uint8Array, addr: Deno.NetAddr): boolean {
    if (!(payload instanceof Uint8Array)) throw new TypeError("payload must be a Uint8Array");
    const port = addr?.port;
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new RangeError(`port ${port} is out of range 1..65535`);
    }
    // A batch usually goes to few destinations: parse each hostname once.
    if (addr.hostname !== this.#lastHost) {
      const ip = parseIpv4(addr.hostname);
      if (ip === null) throw new TypeError(`"${addr.hostname}" is not an IPv4 address`);
      this.#lastHost = addr.hostname;
      this.#lastIp = ip;
    }
    return this.#put(payload, this.#lastIp, port);
  }

  /**
   * Adds `payload` (by default datagram `i` of `from` itself) addressed to the sender
   * of datagram `i` of `from`: a reply without building an address. False (and
   * nothing added) when the batch is full.
   */
  reply(from: RecvBatch, i: number, payload: Uint8Array = from.data(i)): boolean {
    if (!(payload instanceof Uint8Array)) throw new TypeError("payload must be a Uint8Array");
    from.offset(i); // a RangeError unless datagram i is in the batch
    const at = i * RECV_WORDS;
    return this.#put(payload, from.meta[at + 2], from.meta[at + 3]);
  }

  #put(payload: Uint8Array, ipBe: number, port: number): boolean {
    if (payload.byteLength > MAX_DATAGRAM) {
      throw new RangeError(`${payload.byteLength} bytes exceed the UDP maximum ${MAX_DATAGRAM}`);
    }
    if (port < 1 || port > 65535) throw new RangeError(`port ${port} is out of range 1..65535`);
    const slot = this.#count * SEND_WORDS;
    if (slot >= this.meta.length || this.#used + payload.byteLength > this.bytes.byteLength) {
      return false;
    }
    this.bytes.set(payload, this.#used);
    this.meta[slot] = this.#used;
    this.meta[slot + 1] = payload.byteLength;
    this.meta[slot + 2] = ipBe;
    this.meta[slot + 3] = port;
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
    return [this.meta[i * SEND_WORDS + 2], this.meta[i * SEND_WORDS + 3]];
  }
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
  /** Where payloads are laid out. */
  readonly bytes: Uint8Array<ArrayBuffer>;
  /** Per datagram ({@linkcode RecvBatch.WORDS} words): offset, length, source (network order), port, flags, 0, 0, 0. */
  readonly meta: Uint32Array<ArrayBuffer>;
  /** `meta` as bytes, for the shim. */
  readonly metaBytes: Uint8Array<ArrayBuffer>;
  /** Most datagrams one receive takes. */
  readonly capacity: number;
  #count = 0;

  /** Room for `maxDatagrams` datagrams (at most 1024) of `maxBytes` payload bytes in all. */
  constructor(maxDatagrams: number = 256, maxBytes: number = maxDatagrams * 2048) {
    checkCapacity(maxDatagrams, maxBytes);
    this.capacity = maxDatagrams;
    this.bytes = new Uint8Array(maxBytes);
    this.meta = new Uint32Array(maxDatagrams * RECV_META_WORDS);
    this.metaBytes = new Uint8Array(this.meta.buffer);
  }

  /** Datagrams received by the last receive. */
  get length(): number {
    return this.#count;
  }

  /** Set by the socket after a receive. */
  set length(n: number) {
    if (!Number.isInteger(n) || n < 0 || n > this.capacity) throw new RangeError(`bad count ${n}`);
    this.#count = n;
  }

  /** Offset of datagram `i` in `bytes`. */
  offset(i: number): number {
    return this.meta[this.#at(i)];
  }

  /** Length of datagram `i`. */
  size(i: number): number {
    return this.meta[this.#at(i) + 1];
  }

  /** Datagram `i` as a view into `bytes` (no copy). */
  data(i: number): Uint8Array<ArrayBuffer> {
    const at = this.#at(i);
    return this.bytes.subarray(this.meta[at], this.meta[at] + this.meta[at + 1]);
  }

  /** Sender of datagram `i`. */
  address(i: number): Deno.NetAddr {
    const at = this.#at(i);
    return { transport: "udp", hostname: formatIpv4(this.meta[at + 2]), port: this.meta[at + 3] };
  }

  /** True when datagram `i` came through the kernel socket. */
  viaKernel(i: number): boolean {
    return (this.meta[this.#at(i) + 4] & RX_KERNEL) !== 0;
  }

  /** True when datagram `i` was cut to fit. */
  truncated(i: number): boolean {
    return (this.meta[this.#at(i) + 4] & RX_TRUNCATED) !== 0;
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
