/**
 * The demo's service: an echo service, as a program would write it on each API.
 * `bypass` and `kernel`: UdpBypass busy-polling its socket (`receiveSync` +
 * `sendSync`, receive mode 1), on the bypass path or forced onto the kernel path.
 * `deno`: Deno.listenDatagram with `await receive()` + `await send()` (no nkb).
 * Prints JSON lines: `{ready, bypass}` once bound, then `{done, echoed, bypass, stats}`.
 *
 * Usage: demo_echo_server.ts HOST PORT COUNT bypass|kernel|deno
 *   stops after COUNT echoes, at the client's end marker (sequence number 0xFFFFFFFF,
 *   little-endian, as bench/workers/rtt_client.py sends) or after 5 s without a datagram
 *
 * @module
 */

import { UdpBypass } from "../mod.ts";

const [host, port, count] = [Deno.args[0], Number(Deno.args[1]), Number(Deno.args[2])];
const api = Deno.args[3];
const SEQ_END = 0xffffffff;
const QUIET_MS = 5000;

function isEnd(data: Uint8Array): boolean {
  return data.byteLength >= 4 &&
    new DataView(data.buffer, data.byteOffset, 4).getUint32(0, true) === SEQ_END;
}

function echoNkb(kernelOnly: boolean): void {
  const sock = UdpBypass.listenDatagram({ transport: "udp", hostname: host, port, kernelOnly });
  console.log(JSON.stringify({ ready: true, bypass: sock.bypass }));
  const buf = new Uint8Array(2048);
  let echoed = 0;
  // Bounded by count and by a quiet period: a lost client never leaves the demo hanging.
  for (let i = 0; i < count; i++) {
    const got = sock.receiveSync(buf, { timeoutMs: QUIET_MS });
    if (got === null || isEnd(got[0])) break;
    sock.sendSync(got[0], got[1]);
    echoed++;
  }
  console.log(JSON.stringify({ done: true, echoed, bypass: sock.bypass, stats: sock.stats() }));
  sock.close();
}

async function echoDeno(): Promise<void> {
  const conn = Deno.listenDatagram({ transport: "udp", hostname: host, port });
  console.log(JSON.stringify({ ready: true, bypass: null }));
  const buf = new Uint8Array(2048);
  let echoed = 0;
  let last = performance.now();
  let closed = false;
  // One watchdog for the quiet period (not a timer per datagram, which would slow Deno's echo).
  const watchdog = setInterval(() => {
    if (performance.now() - last < QUIET_MS) return;
    closed = true;
    conn.close(); // ends the pending receive
  }, 500);
  try {
    for (let i = 0; i < count; i++) {
      const [data, from] = await conn.receive(buf);
      last = performance.now();
      if (isEnd(data)) break;
      await conn.send(data, from);
      echoed++;
    }
  } catch (e) {
    if (!closed) throw e;
  }
  clearInterval(watchdog);
  console.log(JSON.stringify({ done: true, echoed, bypass: null, stats: null }));
  if (!closed) conn.close();
}

if (api === "deno") await echoDeno();
else echoNkb(api === "kernel");
