/**
 * Zero-copy receive: a datagram's bytes seen in place, in the UMEM frame the
 * device wrote them to, until released. Release detaches the view's buffer
 * first, so no reference the caller kept can read the frame once the device
 * may reuse it.
 *
 * @module
 */

/** A received datagram whose `data` is a view into device memory; release it (or `using`). */
export class ZeroCopyDatagram implements Disposable {
  /** The sender. */
  readonly address: Deno.NetAddr;
  /** True when it came through the kernel socket (then `data` is an ordinary copy). */
  readonly viaKernel: boolean;
  #data: Uint8Array<ArrayBuffer>;
  #buffer: ArrayBuffer | null;
  #giveBack: (() => void) | null;

  /** Made by {@linkcode UdpBypass.receiveZeroCopy}. */
  constructor(
    data: Uint8Array<ArrayBuffer>,
    address: Deno.NetAddr,
    buffer: ArrayBuffer | null,
    giveBack: (() => void) | null,
  ) {
    this.#data = data;
    this.address = address;
    this.viaKernel = buffer === null;
    this.#buffer = buffer;
    this.#giveBack = giveBack;
  }

  /** The payload. Reading it after `release()` throws; views taken earlier read as empty. */
  get data(): Uint8Array<ArrayBuffer> {
    if (this.#giveBack === null && this.#buffer === null && !this.viaKernel) {
      throw new Deno.errors.BadResource("zero-copy datagram already released");
    }
    return this.#data;
  }

  /** True once released. */
  get released(): boolean {
    return this.#giveBack === null && !this.viaKernel;
  }

  /** Gives the frame back to the device; idempotent. */
  release(): void {
    const giveBack = this.#giveBack;
    if (giveBack === null) return;
    this.#giveBack = null;
    // Detach before the frame can be reused: every view of it now reads as empty.
    this.#buffer?.transfer(0);
    this.#buffer = null;
    this.#data = new Uint8Array(0);
    giveBack();
  }

  /** `using dg = sock.receiveZeroCopy()` releases at the end of the block. */
  [Symbol.dispose](): void {
    this.release();
  }
}
