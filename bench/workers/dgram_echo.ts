/**
 * An unmodified program (node:dgram only, nothing of nkb): a UDP echo server as npm
 * packages write it, `'message'` sent back to `rinfo`. The benchmark runs it with
 * `deno run` and with `deno run --preload preload.ts` (what `nkb run` does), and compares.
 *
 * `deno run --allow-net dgram_echo.ts HOST PORT MAX_MS`
 *
 * Prints `{"ready":true}` once listening; stops at the first datagram whose first four
 * bytes are 0xff (the benchmark's end marker) or after MAX_MS, and prints
 * `{"result":{"echoed":N,"ended":BOOL}}`.
 *
 * @module
 */

import dgram from "node:dgram";
import process from "node:process";

const [host, port, maxMs] = process.argv.slice(2);
const sock = dgram.createSocket("udp4");
let echoed = 0;
let done = false;

function finish(ended: boolean): void {
  if (done) return;
  done = true;
  clearTimeout(timer);
  console.log(JSON.stringify({ result: { echoed, ended } }));
  sock.close();
}

// The hard bound.
const timer = setTimeout(() => finish(false), Number(maxMs));

sock.on("message", (msg, rinfo) => {
  if (msg.length >= 4 && msg.readUInt32LE(0) === 0xffffffff) return finish(true);
  sock.send(msg, rinfo.port, rinfo.address);
  echoed++;
});
sock.on("error", (e) => {
  console.error(e);
  process.exit(1);
});
sock.on("listening", () => console.log(JSON.stringify({ ready: true })));
sock.bind(Number(port), host);
