/**
 * An unmodified program (Deno's API only, nothing of nkb): an async UDP echo server, the
 * plain `await receive()` + `await send()` loop. The benchmark runs it with `deno run`
 * and with `deno run --preload preload.ts` (what `nkb run` does), and compares.
 *
 * `deno run --allow-net --unstable-net plain_echo.ts HOST PORT MAX_MS`
 *
 * Prints `{"ready":true}` once listening; stops at the first datagram whose first four
 * bytes are 0xff (the benchmark's end marker) or after MAX_MS, and prints
 * `{"result":{"echoed":N,"ended":BOOL}}`.
 *
 * @module
 */

const [host, port, maxMs] = Deno.args;
const conn = Deno.listenDatagram({ transport: "udp", hostname: host, port: Number(port) });
console.log(JSON.stringify({ ready: true }));

let closed = false;
// The hard bound: closing the socket makes the pending receive reject.
const timer = setTimeout(() => {
  closed = true;
  conn.close();
}, Number(maxMs));

let echoed = 0;
let ended = false;
for (let i = 0; i < 1e10; i++) {
  let data: Uint8Array;
  let from: Deno.Addr;
  try {
    [data, from] = await conn.receive();
  } catch (e) {
    if (closed) break;
    throw e;
  }
  if (
    data.length >= 4 && data[0] === 255 && data[1] === 255 && data[2] === 255 && data[3] === 255
  ) {
    ended = true;
    break;
  }
  await conn.send(data, from);
  echoed++;
}
clearTimeout(timer);
console.log(JSON.stringify({ result: { echoed, ended } }));
if (!closed) conn.close();
