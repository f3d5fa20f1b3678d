/**
 * One wait on Deno's FFI thread pool for all of an isolate's waiting sockets.
 *
 * A nonblocking FFI call holds a thread of Deno's pool until it returns. With one wait per
 * socket, a program with tens of idle sockets (node:dgram receives on every bound socket)
 * held the whole pool: its file reads and other FFI work waited seconds (40 idle sockets,
 * receive mode 0: a 1 ms file read took 9.5 s). Here every socket's wait joins one
 * `nkb_wait_many`; a socket that joins while it runs ends it early (`nkb_sock_wake` of a
 * socket in it) so that the next one covers the newcomer.
 *
 * @module
 */

import { lib } from "./ffi.ts";

/** A socket's wait: its handle, how long it may last, whether it spins, who awaits it. */
interface Entry {
  handle: number;
  deadline: number;
  spin: boolean;
  resolve: (rc: number) => void;
}

const MAX_WAITING = 1024; // NKB_WAIT_MANY_MAX: the shim's socket table
const entries = new Map<number, Entry>();
let running: { handles: Int32Array<ArrayBuffer>; out: Int32Array<ArrayBuffer> } | null = null;
let woken = false;
let startQueued = false;
// Captured: a program that replaces it cannot reach the wait.
const enqueueMicrotask = queueMicrotask;

function now(): number {
  return lib().nkb_now_ms();
}

/**
 * Waits up to `timeoutUs` for socket `handle` (spinning when `spin`); resolves as
 * `nkb_wait` returns: 1 ready, 0 not (the time is up, or a wake), -EBADF closed. One wait
 * per socket at a time (a socket's receives share it).
 */
export function waitShared(handle: number, timeoutUs: number, spin: boolean): Promise<number> {
  const existing = entries.get(handle);
  if (existing !== undefined) existing.resolve(0); // not expected: the older one ends
  const { promise, resolve } = Promise.withResolvers<number>();
  entries.set(handle, { handle, deadline: now() + timeoutUs / 1000, spin, resolve });
  if (running !== null) wakeRunning();
  else queueStart();
  return promise;
}

// The running wait does not cover the newcomer: end it; its return starts the next.
function wakeRunning(): void {
  if (woken || running === null) return;
  woken = true;
  const { handles } = running;
  for (let i = 0; i < handles.length; i++) {
    if (lib().nkb_sock_wake(handles[i]) === 0) return;
  }
}

// After the microtasks of this turn: the receives they start join the same wait.
function queueStart(): void {
  if (startQueued) return;
  startQueued = true;
  enqueueMicrotask(start);
}

function start(): void {
  startQueued = false;
  if (running !== null || entries.size === 0) return;
  const n = Math.min(entries.size, MAX_WAITING);
  const handles = new Int32Array(n);
  const out = new Int32Array(n);
  const t = now();
  let timeoutMs = Infinity;
  let spin = false;
  let i = 0;
  for (const e of entries.values()) {
    if (i === n) break;
    handles[i++] = e.handle;
    timeoutMs = Math.min(timeoutMs, e.deadline - t);
    spin ||= e.spin;
  }
  const timeoutUs = Math.max(0, Math.ceil(timeoutMs * 1000));
  running = { handles, out };
  woken = false;
  lib().nkb_wait_many_async(
    handles,
    handles.byteLength,
    out,
    out.byteLength,
    n,
    timeoutUs,
    spin ? 1 : 0,
  )
    .then((rc) => finish(handles, out, rc));
}

function finish(handles: Int32Array, out: Int32Array, rc: number): void {
  running = null;
  const t = now();
  for (let i = 0; i < handles.length; i++) {
    const e = entries.get(handles[i]);
    if (e === undefined) continue;
    // A failed call (out of memory): every socket's wait ends with it, as nkb_wait's would.
    const r = rc < 0 ? rc : out[i];
    if (r === 0 && t < e.deadline) continue;
    entries.delete(handles[i]);
    e.resolve(r);
  }
  if (entries.size > 0) queueStart();
}
