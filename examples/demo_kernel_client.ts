/**
 * The demo's kernel side: an ordinary Deno UDP client (no nkb) that sends
 * COUNT datagrams to the echo service one at a time and times each round trip.
 * Prints `{rtt: {count, lost, p50Us, p99Us, maxUs}}`.
 *
 * Usage: demo_kernel_client.ts HOST PORT COUNT
 *
 * @module
 */

const [host, port, count] = [Deno.args[0], Number(Deno.args[1]), Number(Deno.args[2])];
const conn = Deno.listenDatagram({ transport: "udp", hostname: "0.0.0.0", port: 0 });
const to: Deno.NetAddr = { transport: "udp", hostname: host, port };
const payload = new Uint8Array(64);
const rtts: number[] = [];

function report(lost: number): void {
  rtts.sort((a, b) => a - b);
  const pick = (q: number): number =>
    Math.round(rtts[Math.min(rtts.length - 1, Math.floor(q * rtts.length))] ?? 0);
  console.log(JSON.stringify({
    rtt: { count: rtts.length, lost, p50Us: pick(0.5), p99Us: pick(0.99), maxUs: pick(1) },
  }));
}

// One reply that never comes ends the run (and says so) instead of hanging it.
const watchdog = setTimeout(() => {
  report(count - rtts.length);
  Deno.exit(1);
}, 30_000);
for (let i = 0; i < count; i++) {
  new DataView(payload.buffer).setUint32(0, i);
  const t0 = performance.now();
  await conn.send(payload, to);
  const [reply] = await conn.receive();
  if (new DataView(reply.buffer).getUint32(0) !== i) throw new Error(`reply ${i} out of order`);
  rtts.push((performance.now() - t0) * 1000);
}
clearTimeout(watchdog);
report(0);
conn.close();
