/**
 * The demo's bypass side: an echo service on UdpBypass. Prints JSON lines:
 * `{ready, bypass}` once bound, then `{done, echoed, bypass, stats}`.
 *
 * Usage: demo_echo_server.ts HOST PORT COUNT [kernel]   (kernel: force the kernel path)
 *
 * @module
 */

import { UdpBypass } from "../mod.ts";

const [host, port, count] = [Deno.args[0], Number(Deno.args[1]), Number(Deno.args[2])];
const kernelOnly = Deno.args[3] === "kernel";
const sock = UdpBypass.listenDatagram({ transport: "udp", hostname: host, port, kernelOnly });
console.log(JSON.stringify({ ready: true, bypass: sock.bypass }));

const buf = new Uint8Array(2048);
let echoed = 0;
// Bounded by count and by a quiet period: a lost client never leaves the demo hanging.
for (let i = 0; i < count; i++) {
  const got = sock.receiveSync(buf, { timeoutMs: 5000 });
  if (got === null) break;
  sock.sendSync(got[0], got[1]);
  echoed++;
}
console.log(JSON.stringify({ done: true, echoed, bypass: sock.bypass, stats: sock.stats() }));
sock.close();
