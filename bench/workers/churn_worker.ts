/**
 * A Worker of churn_sink.ts, in one of two roles.
 *
 * - `rx`: a queue-affine UdpBypass socket (`{ queue, reusePort: true }`), `receiveBatch`
 *   in recvMode 1; records the gap between one receive that brought datagrams and the
 *   next, from the first data datagram to the end marker (or `maxMs`).
 * - `churn`: opens a queue-affine bypass socket on another queue and closes it, again and
 *   again until `maxMs`: its interface's engine (UMEM, rings, XDP socket bind) opens and
 *   closes with every cycle, since no other socket holds it.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { RecvBatch, UdpBypass } from "../../mod.ts";
import { SEQ_END, SEQ_WARM } from "./common.ts";

/** What the main thread asks of a Worker. */
export interface ChurnJob {
  role: "rx" | "churn";
  host: string;
  port: number;
  queue: number;
  maxMs: number;
  /** churn: the loop ends when the main thread sets word 0 (the receiver is done). */
  stop?: SharedArrayBuffer;
}

const BATCH = 256;
const SLICE_MS = 20;
const MAX_GAPS = 1_000_000;
const MAX_CYCLES = 100_000;

function listen(job: ChurnJob): UdpBypass {
  return UdpBypass.listenDatagram({
    transport: "udp",
    hostname: job.host,
    port: job.port,
    recvMode: 1,
    queue: job.queue,
    reusePort: true,
  });
}

function quantile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function receive(job: ChurnJob): void {
  const sock = listen(job);
  self.postMessage({ ready: true, bypass: sock.bypass });
  const batch = new RecvBatch(BATCH);
  const view = new DataView(batch.bytes.buffer);
  const gaps = new Float64Array(MAX_GAPS);
  let n = 0;
  let received = 0;
  let lastMs = 0;
  const t0 = performance.now();
  const hardEnd = t0 + job.maxMs;
  let ended = false;
  for (let i = 0; i < 1e10 && !ended; i++) {
    const got = sock.receiveBatch(batch, { timeoutMs: SLICE_MS });
    const now = performance.now();
    if (now > hardEnd) break;
    let data = 0;
    for (let k = 0; k < got; k++) {
      const seq = batch.size(k) < 4 ? 0 : view.getUint32(batch.offset(k), true);
      if (seq === SEQ_END) ended = true;
      else if (seq !== SEQ_WARM) data++;
    }
    if (data === 0) continue;
    received += data;
    if (lastMs > 0 && n < MAX_GAPS) gaps[n++] = now - lastMs;
    lastMs = now;
  }
  const stats = sock.stats();
  sock.close();
  const sorted = gaps.slice(0, n).sort();
  self.postMessage({
    done: true,
    result: {
      role: "rx",
      received,
      ended,
      gaps: n,
      maxGapMs: n > 0 ? sorted[n - 1] : 0,
      p99GapMs: quantile(sorted, 0.99),
      p999GapMs: quantile(sorted, 0.999),
      p50GapMs: quantile(sorted, 0.5),
      stats,
    },
  });
}

function churn(job: ChurnJob): void {
  self.postMessage({ ready: true, bypass: { active: true } });
  const end = performance.now() + job.maxMs;
  const stop = new Int32Array(job.stop ?? new SharedArrayBuffer(4));
  let cycles = 0;
  let bypassed = 0;
  let longestMs = 0;
  const reasons: Record<string, number> = {};
  for (let i = 0; i < MAX_CYCLES && performance.now() < end && Atomics.load(stop, 0) === 0; i++) {
    const t = performance.now();
    const sock = listen(job);
    if (sock.bypass.active) bypassed++;
    else reasons[sock.bypass.reason ?? "?"] = (reasons[sock.bypass.reason ?? "?"] ?? 0) + 1;
    sock.close();
    longestMs = Math.max(longestMs, performance.now() - t);
    cycles++;
  }
  self.postMessage({ done: true, result: { role: "churn", cycles, bypassed, longestMs, reasons } });
}

self.onmessage = (e: MessageEvent<ChurnJob>) => {
  try {
    if (e.data.role === "rx") receive(e.data);
    else churn(e.data);
  } catch (err) {
    self.postMessage({ error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) });
  }
  self.close();
};
