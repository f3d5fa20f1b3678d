/**
 * An unmodified program (Deno's API only, nothing of nkb): a `for await` UDP receiver that
 * counts the benchmark's sequence-numbered datagrams (a little-endian u32 at offset 0;
 * 0xfffffffe warm-up, not counted; 0xffffffff the end). The benchmark runs it with
 * `deno run` and with `deno run --preload preload.ts` (what `nkb run` does), and compares.
 *
 * `deno run --allow-net --unstable-net plain_sink.ts HOST PORT MAX_MS`
 *
 * Prints `{"ready":true}` once listening; at the end marker (or after MAX_MS) prints
 * `{"result":{...}}` with the counts and the CPU time its threads used from the first
 * datagram to the last (`cpuMs` over `windowMs`; read with the clock every 64 datagrams,
 * as bench/workers/sink.ts reads the clock: `process.cpuUsage()`, about 2 us a read).
 *
 * @module
 */

import process from "node:process";

const SEQ_END = 0xffff_ffff;
const SEQ_WARM = 0xffff_fffe;
const TIME_EVERY = 64; // datagrams between clock reads

// CPU time of this process's threads so far, in ns (getrusage: user + system).
function cpuNs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) * 1000;
}

const [host, port, maxMs] = Deno.args;
const conn = Deno.listenDatagram({ transport: "udp", hostname: host, port: Number(port) });
console.log(JSON.stringify({ ready: true }));

let closed = false;
// The hard bound: closing the socket ends the loop.
const timer = setTimeout(() => {
  closed = true;
  conn.close();
}, Number(maxMs));

let received = 0;
let warm = 0;
let short = 0;
let ended = false;
let maxSeq = -1;
let firstMs = 0;
let lastMs = 0;
let cpuAtFirstNs = 0;
let cpuAtLastNs = 0;
try {
  for await (const [data] of conn) {
    if (data.length < 4) {
      short++;
      continue;
    }
    const seq = (data[0] | data[1] << 8 | data[2] << 16 | data[3] << 24) >>> 0;
    if (seq === SEQ_END) {
      ended = true;
      break;
    }
    if (seq === SEQ_WARM) {
      warm++;
      continue;
    }
    if (received === 0) {
      cpuAtFirstNs = cpuAtLastNs = cpuNs();
      firstMs = lastMs = performance.now();
    }
    received++;
    if (seq > maxSeq) maxSeq = seq;
    if (received % TIME_EVERY === 0) {
      lastMs = performance.now();
      cpuAtLastNs = cpuNs();
    }
  }
} catch (e) {
  if (!closed) throw e;
}
// Up to the last clock read among the data, not to the end marker: what a receiver does
// after the data (under the pre-load, spin while it waits for the marker) is not its work.
const cpuMs = (cpuAtLastNs - cpuAtFirstNs) / 1e6;
const windowMs = lastMs - firstMs;
clearTimeout(timer);
console.log(JSON.stringify({
  result: {
    received,
    warm,
    short,
    ended,
    maxSeq,
    firstMs,
    lastMs,
    spanMs: lastMs - firstMs,
    cpuMs,
    windowMs,
  },
}));
if (!closed) conn.close();
