/**
 * Echo-server worker: sends every datagram back to its sender until the first
 * end marker (or `--max-ms`). The nkb variant loops on `receiveSync` + `sendSync`
 * (`--mode copy`, default) or on `receiveBatch` + `SendBatch.reply` + `sendBatch`
 * (`--mode batch`: whatever arrived together goes back with one call);
 * `--recv-mode 1` (default) busy-polls, `--recv-mode 0` sleeps in the shim's wait.
 *
 * `--impl nkb|kernel [--mode copy|batch] [--recv-mode 0|1] --host IP --port N --max-ms N`
 *
 * Prints `{ready, bypass}` once listening, then `{result}`.
 *
 * @module
 */

import { RecvBatch, SendBatch, UdpBypass } from "../../mod.ts";
import {
  emit,
  impl,
  listenArgs,
  nkbMode,
  parseArgs,
  recvMode,
  runWorker,
  SEQ_END,
} from "./common.ts";

const SLICE_MS = 20;
const SEND_BUSY_WAIT_CNT = 1000;
const BATCH = 64;

// Whether the datagram at `off` (of `len` bytes) in `view`'s buffer is the end marker. The
// view is made once per buffer: a round trip allocates nothing here.
function isEnd(view: DataView, off: number, len: number): boolean {
  return len >= 4 && view.getUint32(off, true) === SEQ_END;
}

// The echo's socket, announced as ready once bound.
function listenEcho(host: string, port: number, mode: 0 | 1): UdpBypass {
  const sock = UdpBypass.listenDatagram({
    transport: "udp",
    hostname: host,
    port,
    recvMode: mode,
    sendBusyWaitCnt: SEND_BUSY_WAIT_CNT,
  });
  emit({ ready: true, bypass: sock.bypass });
  return sock;
}

function echoNkb(host: string, port: number, maxMs: number, mode: 0 | 1): void {
  const sock = listenEcho(host, port, mode);
  const buf = new Uint8Array(65536);
  const view = new DataView(buf.buffer);
  const hardEnd = performance.now() + maxMs;
  let echoed = 0;
  let ended = false;
  const maxIter = 1e10;
  for (let i = 0; i < maxIter; i++) {
    const got = sock.receiveSync(buf, { timeoutMs: SLICE_MS });
    if (got === null) {
      if (performance.now() > hardEnd) break;
      continue;
    }
    if (isEnd(view, got[0].byteOffset, got[0].byteLength)) {
      ended = true;
      break;
    }
    sock.sendSync(got[0], got[1]);
    echoed++;
    if ((i & 4095) === 0 && performance.now() > hardEnd) break;
  }
  emit({ result: { echoed, ended, stats: sock.stats() } });
  sock.close();
}

function echoBatch(host: string, port: number, maxMs: number, mode: 0 | 1): void {
  const sock = listenEcho(host, port, mode);
  const rx = new RecvBatch(BATCH);
  const rxView = new DataView(rx.bytes.buffer);
  const tx = new SendBatch(BATCH, BATCH * 2048);
  const hardEnd = performance.now() + maxMs;
  let echoed = 0;
  let ended = false;
  const maxIter = 1e10;
  for (let i = 0; i < maxIter && !ended; i++) {
    const n = sock.receiveBatch(rx, { timeoutMs: SLICE_MS });
    if (n === 0) {
      if (performance.now() > hardEnd) break;
      continue;
    }
    tx.clear();
    for (let k = 0; k < n && !ended; k++) {
      if (isEnd(rxView, rx.offset(k), rx.size(k))) ended = true;
      else tx.reply(rx, k);
    }
    if (tx.length > 0) echoed += sock.sendBatch(tx);
    if ((i & 4095) === 0 && performance.now() > hardEnd) break;
  }
  emit({ result: { echoed, ended, stats: sock.stats() } });
  sock.close();
}

async function echoKernel(host: string, port: number, maxMs: number): Promise<void> {
  const conn = Deno.listenDatagram({ transport: "udp", hostname: host, port });
  emit({ ready: true, bypass: null });
  const buf = new Uint8Array(65536);
  const view = new DataView(buf.buffer);
  let closed = false;
  const timer = setTimeout(() => {
    closed = true;
    conn.close();
  }, maxMs);
  let echoed = 0;
  let ended = false;
  const maxIter = 1e10;
  for (let i = 0; i < maxIter; i++) {
    let data: Uint8Array;
    let from: Deno.Addr;
    try {
      [data, from] = await conn.receive(buf);
    } catch (e) {
      if (closed) break;
      throw e;
    }
    if (isEnd(view, data.byteOffset, data.byteLength)) {
      ended = true;
      break;
    }
    await conn.send(data, from);
    echoed++;
  }
  clearTimeout(timer);
  emit({ result: { echoed, ended, stats: null } });
  if (!closed) conn.close();
}

await runWorker(async () => {
  const args = parseArgs(Deno.args);
  const { host, port, maxMs } = listenArgs(args);
  if (impl(args) === "kernel") await echoKernel(host, port, maxMs);
  else if (nkbMode(args, ["copy", "batch"] as const) === "batch") {
    echoBatch(host, port, maxMs, recvMode(args));
  } else echoNkb(host, port, maxMs, recvMode(args));
});
