/**
 * The contract's environment knobs, same names and defaults as Solaris
 * net_kernel_bypass(3LIB). Read through the shim's getenv, so they work with
 * `--allow-ffi` alone.
 *
 * @module
 */

import { byteLengthOf, lib } from "./ffi.ts";

/** How an nkb socket behaves; every field may be set per socket. */
export interface BypassOptions {
  /** 1: exit the process when bypass setup fails; 0 (default): fall back to the kernel path. */
  errExit?: 0 | 1;
  /** 1 (default): a receive with no data spins on the ring; 0: it sleeps in poll(). */
  recvMode?: 0 | 1;
  /** Tries when the TX ring is full before a send fails (default 15). */
  sendBusyWaitCnt?: number;
  /** Keep this socket on the kernel path (reason `forced-kernel`). */
  kernelOnly?: boolean;
  /**
   * Receive only from this queue of the interface (0..63): one socket per queue, each in its
   * own Worker, spreads receive work over cores. Bind them with `reusePort`. Default: every
   * queue.
   */
  queue?: number;
}

/** Options after defaults and environment are applied. */
export interface ResolvedOptions {
  errExit: 0 | 1;
  recvMode: 0 | 1;
  sendBusyWaitCnt: number;
  kernelOnly: boolean;
  queue: number | null;
}

const encoder = new TextEncoder();

function envInt(name: string, fallback: number): number {
  const z = encoder.encode(name + "\0");
  return lib().nkb_env_int(z, byteLengthOf(z), fallback);
}

function bit(value: number, fallback: 0 | 1): 0 | 1 {
  return value === 0 ? 0 : value === 1 ? 1 : fallback;
}

/**
 * Applies constructor options over the environment over the contract's defaults. A bad
 * value in the environment is ignored (the default applies); a bad option throws.
 *
 * @param opts Optional: the socket's options (default: none, the environment decides).
 * @throws {RangeError} when `sendBusyWaitCnt` is not an integer 0..1000000, `errExit` or
 *   `recvMode` is not 0 or 1, or `queue` is not an integer 0..63.
 * @throws {Error} when libnkb.so cannot be loaded (the environment is read through it).
 */
export function resolveOptions(opts: BypassOptions = {}): ResolvedOptions {
  const errExit = opts.errExit ?? bit(envInt("_NET_KERNEL_BYPASS_ERR_EXIT", 0), 0);
  const recvMode = opts.recvMode ?? bit(envInt("_NET_KERNEL_BYPASS_RECV_MODE", 1), 1);
  let cnt = opts.sendBusyWaitCnt ?? envInt("_NET_KERNEL_BYPASS_SEND_BUSY_WAIT_CNT", 15);
  if (!Number.isInteger(cnt) || cnt < 0 || cnt > 1_000_000) {
    if (opts.sendBusyWaitCnt !== undefined) {
      throw new RangeError(`sendBusyWaitCnt must be an integer 0..1000000, got ${cnt}`);
    }
    cnt = 15;
  }
  if (errExit !== 0 && errExit !== 1) throw new RangeError("errExit must be 0 or 1");
  if (recvMode !== 0 && recvMode !== 1) throw new RangeError("recvMode must be 0 or 1");
  const queue = opts.queue ?? null;
  if (queue !== null && (!Number.isInteger(queue) || queue < 0 || queue > 63)) {
    throw new RangeError(`queue must be an integer 0..63, got ${queue}`);
  }
  return { errExit, recvMode, sendBusyWaitCnt: cnt, kernelOnly: opts.kernelOnly ?? false, queue };
}
