/**
 * Receive-side worker: receives sequence-numbered datagrams until the first
 * end marker (or `--max-ms`), then prints what it got.
 *
 * `--impl nkb|kernel [--mode copy|batch] [--recv-mode 0|1] [--busy-us N] --host IP
 *  --port N --max-ms N`
 *
 * nkb modes (recvMode 1, busy-polling; `copy` and `batch` also in `--recv-mode 0`): `copy` (default)
 * calls `receiveSync` once per datagram; `batch` calls `receiveBatch` with a `RecvBatch`
 * of 256 and reads each datagram's offset and length from the batch.
 *
 * With `--busy-us N` (nkb only) the receiver never waits: it is busy elsewhere for N us
 * (a spin), then drains what the ring gathered meanwhile until a receive finds it empty,
 * and again. While it drains it is saturated, so datagrams drained per second of
 * draining is what its core can take: its capacity, whatever the generator's rate
 * (`drainP50Mpps`, the median over the datagrams of their drain's rate: a drain that
 * the VM's scheduler interrupted is not the receiver's rate; `drained` over `drainMs` is
 * the mean), after a warm-up of busy polling (RATE_WARMUP_MS).
 *
 * Prints `{ready, bypass}` once listening, then `{result}` with the counts and the CPU
 * time the process used from the first datagram to the end marker (`cpuMs` over
 * `windowMs`).
 *
 * @module
 */

import { RecvBatch, UdpBypass } from "../../mod.ts";
import {
  emit,
  impl,
  int,
  listenArgs,
  nkbMode,
  parseArgs,
  recvMode,
  runWorker,
  SEQ_END,
  SEQ_WARM,
  spinFor,
} from "./common.ts";

/** What a sink counted. */
interface Tally {
  received: number;
  warm: number;
  short: number;
  ended: boolean;
  firstMs: number;
  lastMs: number;
  maxSeq: number;
  /** The process's CPU time (all threads) when the first datagram was counted, in ns. */
  cpuAtFirstNs: number;
  /** Whether counting reads the clock (every TIME_EVERY datagrams) for lastMs. */
  timed: boolean;
}

/** What the drains of a `--busy-us` receiver took, and how long they took. */
interface Drains {
  drainMs: number;
  drained: number;
  drains: number;
  maxDrain: number;
  /** Each drain's rate (Mpps), weighted by its datagrams: 10th, 50th, 90th percentile. */
  drainP10Mpps: number;
  drainP50Mpps: number;
  drainP90Mpps: number;
}

/** The counts, and the CPU the process used from the first datagram to the end marker. */
function finish(t: Tally): Record<string, unknown> {
  const endMs = performance.now();
  const cpuMs = t.received > 0 ? (processCpuNs() - t.cpuAtFirstNs) / 1e6 : 0;
  const windowMs = t.received > 0 ? endMs - t.firstMs : 0;
  const { timed: _, ...counts } = t;
  return { ...counts, spanMs: t.lastMs - t.firstMs, cpuMs, windowMs };
}

/**
 * CPU time of this process's threads so far (/proc/self/task/<tid>/schedstat, ns): the
 * work of a receiver that sleeps when idle (the kernel path, recvMode 0).
 */
function processCpuNs(): number {
  let ns = 0;
  for (const task of Deno.readDirSync("/proc/self/task")) {
    try {
      ns += Number(Deno.readTextFileSync(`/proc/self/task/${task.name}/schedstat`).split(" ")[0]);
    } catch {
      // the thread ended meanwhile
    }
  }
  return ns;
}

const TIME_EVERY = 64; // packets between clock reads
// The marks as module-local constants: the per-datagram compare reads no imported binding
// (which optimized code re-reads, checking it is initialized, at every use).
const END = SEQ_END;
const WARM = SEQ_WARM;
const SLICE_MS = 20;
const BATCH = 256;

function newTally(timed = true): Tally {
  return {
    received: 0,
    warm: 0,
    short: 0,
    ended: false,
    firstMs: 0,
    lastMs: 0,
    maxSeq: -1,
    cpuAtFirstNs: 0,
    timed,
  };
}

// Counts one datagram; returns false at the end marker.
function count(t: Tally, view: DataView, off: number, len: number): boolean {
  if (len < 4) {
    t.short++;
    return true;
  }
  return countSeq(t, view.getUint32(off, true));
}

// Counts one datagram of sequence number `seq`; returns false at the end marker.
function countSeq(t: Tally, seq: number): boolean {
  if (seq === END) {
    t.ended = true;
    return false;
  }
  if (seq === WARM) {
    t.warm++;
    return true;
  }
  if (t.received === 0) {
    t.cpuAtFirstNs = processCpuNs();
    t.firstMs = t.lastMs = performance.now();
  }
  t.received++;
  if (seq > t.maxSeq) t.maxSeq = seq;
  if (t.timed && t.received % TIME_EVERY === 0) t.lastMs = performance.now();
  return true;
}

// A bound on cycles far above what `maxMs` allows, even for warm-up cycles (no spin).
const MAX_CYCLES = 1e9;
const MAX_DRAINS_KEPT = 65536;
/**
 * The warm-up: for this long after its first datagram a `--busy-us` receiver busy-polls
 * (no spin between drains) and its drains count nowhere. The receive path is then as hot
 * as in a loaded server, and V8 optimizes it (TurboFan) within the warm-up. Spinning from
 * the start, the receive path ran too rarely for that: V8 had compiled it only with Maglev
 * seconds later (`--v8-flags=--trace-opt`), and the first drains ran below the rest
 * (bench/README.md). The native receiver warms up the same way (RATE_WARMUP_MS in ceiling.c).
 */
const RATE_WARMUP_MS = 300;
const MAX_CALLS_PER_DRAIN = 1e7;
const NOW = { timeoutMs: 0 }; // a receive that never waits

/**
 * One drain: `take()` until the ring is empty or the end marker came; how many it took.
 * A function of its own, called once a drain, so that V8 optimizes it whole once it is
 * hot. As a loop inside drainCycles it ran as on-stack-replaced code, which the cycle's
 * bookkeeping deoptimized when the warm-up ended (a compare without type feedback), and it
 * then ran unoptimized for the rest of the run (`--v8-flags=--trace-deopt`).
 */
function drainOnce(t: Tally, hardEnd: number, take: () => number): number {
  let n = 0;
  for (let i = 0; i < MAX_CALLS_PER_DRAIN && !t.ended; i++) {
    const k = take();
    if (k === 0) break;
    n += k;
    if ((i & 4095) === 4095 && performance.now() > hardEnd) break;
  }
  return n;
}

/**
 * The `--busy-us` receiver: busy elsewhere for `busyUs`, then `take()` (one receive call:
 * how many datagrams it took, 0 when the ring was empty) until the ring is empty or the
 * end marker came, timing each drain; until `maxMs`. The first RATE_WARMUP_MS after the
 * first datagram are a warm-up: no spin, and no drain counted.
 */
function drainCycles(t: Tally, busyUs: number, maxMs: number, take: () => number): Drains {
  const d: Drains = {
    drainMs: 0,
    drained: 0,
    drains: 0,
    maxDrain: 0,
    drainP10Mpps: 0,
    drainP50Mpps: 0,
    drainP90Mpps: 0,
  };
  const kept: [number, number][] = []; // [rate Mpps, datagrams] of each drain
  const hardEnd = performance.now() + maxMs;
  let warm = false;
  for (let cycle = 0; cycle < MAX_CYCLES && !t.ended; cycle++) {
    if (warm) spinFor(busyUs / 1000);
    const t0 = performance.now();
    if (t0 > hardEnd) break;
    const before = t.received;
    const n = drainOnce(t, hardEnd, take);
    if (n === 0) continue;
    const t1 = performance.now();
    if (t.received > before) t.lastMs = t1; // a drain of end markers only is not data
    if (!warm) {
      warm = t.firstMs > 0 && t1 - t.firstMs >= RATE_WARMUP_MS;
      continue;
    }
    d.drainMs += t1 - t0;
    d.drained += n;
    d.drains++;
    if (n > d.maxDrain) d.maxDrain = n;
    if (kept.length < MAX_DRAINS_KEPT && t1 > t0) kept.push([n / (t1 - t0) / 1000, n]);
  }
  d.drainP10Mpps = weightedPercentile(kept, 0.1);
  d.drainP50Mpps = weightedPercentile(kept, 0.5);
  d.drainP90Mpps = weightedPercentile(kept, 0.9);
  return d;
}

/**
 * The rate at which the fraction `q` of the datagrams had been drained, drains sorted by
 * rate: each drain weighs what it took, so that the few datagrams of a drain cut short
 * (the end, a receiver that fell behind and drained for long) count for what they are.
 */
function weightedPercentile(drains: [number, number][], q: number): number {
  const sorted = [...drains].sort((x, y) => x[0] - y[0]);
  const total = sorted.reduce((sum, [, n]) => sum + n, 0);
  let seen = 0;
  for (const [rate, n] of sorted) {
    seen += n;
    if (seen >= q * total) return rate;
  }
  return 0;
}

/** What an nkb sink is told. */
interface SinkArgs {
  host: string;
  port: number;
  maxMs: number;
  recvMode: 0 | 1;
  busyUs: number;
}

// The sink's socket, announced as ready once bound.
function listenSink(a: SinkArgs): UdpBypass {
  const { host: hostname, port, recvMode } = a;
  const sock = UdpBypass.listenDatagram({ transport: "udp", hostname, port, recvMode });
  emit({ ready: true, bypass: sock.bypass });
  return sock;
}

function sinkNkb(a: SinkArgs): void {
  const { maxMs, busyUs } = a;
  const sock = listenSink(a);
  const buf = new Uint8Array(65536);
  const view = new DataView(buf.buffer);
  const t = newTally(busyUs === 0);
  let drains: Drains | null = null;
  if (busyUs > 0) {
    drains = drainCycles(t, busyUs, maxMs, () => {
      const got = sock.receiveSync(buf, NOW);
      if (got === null) return 0;
      count(t, view, got[0].byteOffset, got[0].byteLength);
      return 1;
    });
  } else {
    const hardEnd = performance.now() + maxMs;
    const maxIter = 1e10;
    for (let i = 0; i < maxIter; i++) {
      const got = sock.receiveSync(buf, { timeoutMs: SLICE_MS });
      if (got === null) {
        if (performance.now() > hardEnd) break;
        continue;
      }
      const data = got[0];
      if (!count(t, view, data.byteOffset, data.byteLength)) break;
      if ((i & 4095) === 0 && performance.now() > hardEnd) break;
    }
  }
  emit({ result: { ...finish(t), ...drains, stats: sock.stats() } });
  sock.close();
}

function sinkBatch(a: SinkArgs): void {
  const { maxMs, busyUs } = a;
  const sock = listenSink(a);
  const batch = new RecvBatch(BATCH);
  const view = new DataView(batch.bytes.buffer);
  const t = newTally(busyUs === 0);
  let calls = 0;
  const { meta } = batch;
  const words = RecvBatch.WORDS; // per datagram: offset, length, ...
  // Counts one batch of n; false at the end marker. The loop reads offsets and lengths
  // from `meta` and keeps the counts in locals, as a hot loop over a batch is written (closer
  // to a C loop over the same socket than a count() call per datagram: bench/README.md). The
  // first datagram (which starts the clocks) and a timed tally take count().
  const countBatch = (n: number): boolean => {
    if (t.received === 0 || t.timed) {
      let more = true;
      for (let k = 0; k < n && more; k++) more = count(t, view, batch.offset(k), batch.size(k));
      return more;
    }
    let received = t.received;
    let maxSeq = t.maxSeq;
    let more = true;
    for (let k = 0, at = 0; k < n; k++, at += words) {
      if (meta[at + 1] < 4) {
        t.short++;
        continue;
      }
      const seq = view.getUint32(meta[at], true);
      if (seq === END) {
        t.ended = true;
        more = false;
        break;
      }
      if (seq === WARM) {
        t.warm++;
        continue;
      }
      received++;
      if (seq > maxSeq) maxSeq = seq;
    }
    t.received = received;
    t.maxSeq = maxSeq;
    return more;
  };
  let drains: Drains | null = null;
  if (busyUs > 0) {
    drains = drainCycles(t, busyUs, maxMs, () => {
      const n = sock.receiveBatch(batch, NOW);
      calls++;
      countBatch(n);
      return n;
    });
  } else {
    const hardEnd = performance.now() + maxMs;
    let more = true;
    const maxIter = 1e10;
    for (let i = 0; i < maxIter && more; i++) {
      const n = sock.receiveBatch(batch, { timeoutMs: SLICE_MS });
      calls++;
      if (n === 0) {
        if (performance.now() > hardEnd) break;
        continue;
      }
      more = countBatch(n);
      if ((i & 1023) === 0 && performance.now() > hardEnd) break;
    }
  }
  emit({ result: { ...finish(t), ...drains, calls, stats: sock.stats() } });
  sock.close();
}

async function sinkKernel(host: string, port: number, maxMs: number): Promise<void> {
  const conn = Deno.listenDatagram({ transport: "udp", hostname: host, port });
  emit({ ready: true, bypass: null });
  const buf = new Uint8Array(65536);
  const view = new DataView(buf.buffer);
  const t = newTally();
  let closed = false;
  // The hard bound: closing the socket makes the pending receive reject.
  const timer = setTimeout(() => {
    closed = true;
    conn.close();
  }, maxMs);
  const maxIter = 1e10;
  for (let i = 0; i < maxIter; i++) {
    let data: Uint8Array;
    try {
      [data] = await conn.receive(buf);
    } catch (e) {
      if (closed) break;
      throw e;
    }
    if (!count(t, view, data.byteOffset, data.byteLength)) break;
  }
  clearTimeout(timer);
  emit({ result: { ...finish(t), stats: null } });
  if (!closed) conn.close();
}

await runWorker(async () => {
  const args = parseArgs(Deno.args);
  const { host, port, maxMs } = listenArgs(args);
  const mode = impl(args) === "kernel" ? null : nkbMode(args, ["copy", "batch"] as const);
  const busyUs = args.has("busy-us") ? int(args, "busy-us") : 0;
  if (mode === null && busyUs > 0) throw new Error("--busy-us is for nkb receivers");
  if (mode === null) return await sinkKernel(host, port, maxMs);
  const a: SinkArgs = { host, port, maxMs, recvMode: recvMode(args), busyUs };
  if (mode === "batch") sinkBatch(a);
  else sinkNkb(a);
});
