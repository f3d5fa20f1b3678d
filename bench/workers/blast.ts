/**
 * Send-side worker: sends sequence-numbered datagrams of `--size` bytes as fast
 * as it can for `--duration-ms` (or `--count` datagrams), waits `--drain-ms`,
 * then sends end markers.
 *
 * `--impl nkb|kernel [--mode copy|batch] --src IP --sport N --dst IP --port N --size N
 *  --duration-ms N --count N --drain-ms N`
 *
 * nkb modes: `copy` (default) calls `sendSync` once per datagram; `batch` fills a
 * `SendBatch` of 256 with `add` (clear, then one `add` per datagram, each stamped with its
 * sequence number first) and sends it with one `sendBatch`. Datagrams a full TX ring
 * refused are rebuilt and sent again, so sequence numbers stay contiguous.
 *
 * Prints `{ready, bypass}` once bound, then `{result}`.
 *
 * @module
 */

import { SendBatch, TxRingFullError, UdpBypass } from "../../mod.ts";
import {
  emit,
  impl,
  int,
  nkbMode,
  parseArgs,
  runWorker,
  SEQ_END,
  SEQ_WARM,
  sleep,
  str,
} from "./common.ts";

const WARM_PACKETS = 5;
const WARM_GAP_MS = 20;
const END_PACKETS = 10;
const END_GAP_MS = 5;
const SEND_BUSY_WAIT_CNT = 1000;
const BATCH = 256;

/** The send function of one implementation. */
type SendFn = (p: Uint8Array) => void | Promise<unknown>;

interface Plan {
  payload: Uint8Array;
  durationMs: number;
  count: number;
  drainMs: number;
}

// Sends `n` datagrams carrying `seq`, `gapMs` apart (warm-up and end markers).
async function markers(
  send: SendFn,
  payload: Uint8Array,
  seq: number,
  n: number,
  gapMs: number,
): Promise<void> {
  const view = new DataView(payload.buffer, payload.byteOffset);
  for (let i = 0; i < n; i++) {
    view.setUint32(0, seq, true);
    await send(payload);
    await sleep(gapMs);
  }
}

function blastNkb(sock: UdpBypass, dst: Deno.NetAddr, plan: Plan): Record<string, number> {
  const { payload, count } = plan;
  const view = new DataView(payload.buffer, payload.byteOffset);
  let seq = 0;
  let txFull = 0;
  const t0 = performance.now();
  const end = t0 + plan.durationMs;
  const maxIter = count * 4;
  for (let i = 0; i < maxIter && seq < count; i++) {
    view.setUint32(0, seq, true);
    try {
      sock.sendSync(payload, dst);
      seq++;
    } catch (e) {
      if (!(e instanceof TxRingFullError)) throw e;
      txFull++;
    }
    if ((i & 1023) === 0 && performance.now() >= end) break;
  }
  return { sent: seq, txFull, elapsedMs: performance.now() - t0 };
}

function blastBatch(sock: UdpBypass, dst: Deno.NetAddr, plan: Plan): Record<string, number> {
  const { payload, count } = plan;
  const view = new DataView(payload.buffer, payload.byteOffset);
  const batch = new SendBatch(BATCH, BATCH * payload.byteLength);
  let seq = 0;
  let txFull = 0;
  let batches = 0;
  const t0 = performance.now();
  const end = t0 + plan.durationMs;
  const maxIter = count * 4 + 1000;
  for (let i = 0; i < maxIter && seq < count; i++) {
    const n = Math.min(BATCH, count - seq);
    batch.clear();
    for (let j = 0; j < n; j++) {
      view.setUint32(0, seq + j, true);
      batch.add(payload, dst);
    }
    try {
      const sent = sock.sendBatch(batch);
      seq += sent;
      if (sent < n) txFull++;
    } catch (e) {
      if (!(e instanceof TxRingFullError)) throw e;
      txFull++;
    }
    batches++;
    if ((i & 7) === 0 && performance.now() >= end) break;
  }
  return { sent: seq, txFull, batches, elapsedMs: performance.now() - t0 };
}

async function blastKernel(
  conn: Deno.DatagramConn,
  dst: Deno.NetAddr,
  plan: Plan,
): Promise<Record<string, number>> {
  const { payload, count } = plan;
  const view = new DataView(payload.buffer, payload.byteOffset);
  let seq = 0;
  const t0 = performance.now();
  const end = t0 + plan.durationMs;
  for (; seq < count; seq++) {
    view.setUint32(0, seq, true);
    await conn.send(payload, dst);
    if ((seq & 1023) === 0 && performance.now() >= end) {
      seq++;
      break;
    }
  }
  return { sent: seq, txFull: 0, elapsedMs: performance.now() - t0 };
}

await runWorker(async () => {
  const args = parseArgs(Deno.args);
  const kind = impl(args);
  const mode = nkbMode(args, ["copy", "batch"] as const);
  const src = str(args, "src");
  const dst: Deno.NetAddr = {
    transport: "udp",
    hostname: str(args, "dst"),
    port: int(args, "port"),
  };
  const plan: Plan = {
    payload: new Uint8Array(int(args, "size")),
    durationMs: int(args, "duration-ms"),
    count: int(args, "count"),
    drainMs: int(args, "drain-ms"),
  };
  if (plan.payload.byteLength < 4) throw new RangeError("--size must be at least 4");
  const opts = { transport: "udp" as const, hostname: src, port: int(args, "sport") };
  const nkb = kind === "nkb"
    ? UdpBypass.listenDatagram({ ...opts, sendBusyWaitCnt: SEND_BUSY_WAIT_CNT })
    : null;
  const conn: Deno.DatagramConn = nkb ?? Deno.listenDatagram(opts);
  emit({ ready: true, bypass: nkb?.bypass ?? null });
  const send = (p: Uint8Array): Promise<number> => conn.send(p, dst);
  await markers(send, plan.payload, SEQ_WARM, WARM_PACKETS, WARM_GAP_MS);
  const r = nkb === null
    ? await blastKernel(conn, dst, plan)
    : mode === "batch"
    ? blastBatch(nkb, dst, plan)
    : blastNkb(nkb, dst, plan);
  await sleep(plan.drainMs);
  await markers(send, plan.payload, SEQ_END, END_PACKETS, END_GAP_MS);
  emit({ result: { ...r, stats: nkb?.stats() ?? null } });
  conn.close();
});
