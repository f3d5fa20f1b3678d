/**
 * One receiving Worker of mq_sink.ts: a UdpBypass socket (queue-affine when told a
 * queue), `receiveBatch` in recvMode 1, and `workIters` rounds of a xorshift per
 * datagram, standing in for the application's own work on each datagram. Ends when
 * it has seen the end marker of `flows` senders, or at `maxMs`.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { RecvBatch, UdpBypass } from "../../mod.ts";
import { SEQ_END, SEQ_WARM, work } from "./common.ts";

/** What the main thread asks of a Worker. */
export interface MqJob {
  host: string;
  port: number;
  queue: number | null;
  flows: number;
  workIters: number;
  maxMs: number;
}

const BATCH = 256;
const SLICE_MS = 20;

function serve(job: MqJob): void {
  const affine = job.queue === null ? {} : { queue: job.queue, reusePort: true };
  const sock = UdpBypass.listenDatagram({
    transport: "udp",
    hostname: job.host,
    port: job.port,
    recvMode: 1,
    ...affine,
  });
  self.postMessage({ ready: true, bypass: sock.bypass });
  const batch = new RecvBatch(BATCH);
  const view = new DataView(batch.bytes.buffer);
  const stride = RecvBatch.WORDS;
  const ended = new Set<number>(); // source ports whose end marker came
  const dataFrom = new Set<number>(); // source ports whose datagrams came
  let received = 0;
  let warm = 0;
  let firstMs = 0;
  let lastMs = 0;
  let acc = 0;
  const hardEnd = performance.now() + job.maxMs;
  const maxIter = 1e10;
  // Done when every flow that sent here has ended. Not at the first end marker: once the
  // other Worker's socket closed, its flow's last markers reach this one through the
  // kernel path, ahead of datagrams still queued in this socket's ring. Looked at when an
  // end marker comes, not per receive. Even then markers that came through the kernel may
  // have overtaken the ring (839 datagrams left unread once): once done, what the ring
  // still holds is read too (every sender stopped its data 150 ms before its markers).
  let done = false;
  for (let i = 0; i < maxIter; i++) {
    // Once done, what is left is already in the ring: a receive that finds nothing ends it.
    const n = sock.receiveBatch(batch, { timeoutMs: done ? 0 : SLICE_MS });
    if (n === 0) {
      if (done || performance.now() > hardEnd) break;
      continue;
    }
    const before = received;
    for (let k = 0; k < n; k++) {
      const seq = batch.size(k) < 4 ? 0 : view.getUint32(batch.offset(k), true);
      const from = batch.meta[k * stride + 3];
      if (seq === SEQ_END) {
        ended.add(from);
        done = ended.size >= job.flows ||
          (dataFrom.size > 0 && [...dataFrom].every((p) => ended.has(p)));
      } else if (seq === SEQ_WARM) warm++;
      else {
        dataFrom.add(from);
        acc ^= work(seq, job.workIters);
        received++;
      }
    }
    if (received > before) {
      // Wall-clock time, comparable between Workers (performance.now() is per Worker).
      lastMs = performance.timeOrigin + performance.now();
      if (firstMs === 0) firstMs = lastMs;
    }
    if ((i & 1023) === 0 && performance.now() > hardEnd) break;
  }
  const stats = sock.stats();
  sock.close();
  self.postMessage({
    done: true,
    result: { queue: job.queue, received, warm, ended: ended.size, firstMs, lastMs, acc, stats },
  });
}

self.onmessage = (e: MessageEvent<MqJob>) => {
  try {
    serve(e.data);
  } catch (err) {
    self.postMessage({ error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) });
  }
  self.close();
};
