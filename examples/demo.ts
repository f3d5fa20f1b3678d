/**
 * The demo (`./nkbw demo`): makes its own two network namespaces joined by a
 * veth pair and times round trips from a busy-polling kernel UDP client in one
 * (the benchmark's client, `bench/workers/rtt_client.py`) to an echo service in
 * the other, written three ways: on nkb's bypass path, the same nkb code forced
 * onto the kernel path, and on Deno.listenDatagram. Prints the round trips, the
 * nkb service's `bypass` and `stats()`, then removes everything.
 *
 * The client never sleeps, and it is the same in the three runs: they differ in
 * the service only, by its path (rings or kernel socket) and its API (nkb's
 * synchronous busy-polling calls, or Deno's async ones, which sleep in the event
 * loop and pay a wake-up per datagram).
 *
 * @module
 */

import { Testbed, type TestbedProcess } from "./testbed.ts";

const ROUND_TRIPS = 20_000;
const WARMUP = 2_000;
const PAYLOAD_BYTES = 64;
const CLIENT_MAX_S = 10;
const CLIENT_TIMEOUT_MS = 1000; // a reply later than this counts as lost
const PORT = 9000;
const here = new URL(".", import.meta.url).pathname;
const CLIENT = new URL("../bench/workers/rtt_client.py", import.meta.url).pathname;

type Rtt = { measured: number; lost: number; p50: number; p99: number; p999: number };

await using tb = await Testbed.create({ thirdOctet: 0 });
console.log(
  `network: ${tb.a.ns} (${tb.a.cidr}, ${tb.a.ifname}) <-veth-> ${tb.b.ns} (${tb.b.cidr})`,
);

// Two busy loops on two CPUs: the service's on CPU 0, the client's on CPU 1 (as the
// benchmark does); left to the scheduler, they sometimes share one and wait for each other.
async function pin(p: TestbedProcess, cpu: number): Promise<void> {
  if (navigator.hardwareConcurrency < 2) return;
  const cmd = new Deno.Command("taskset", { args: ["-a", "-p", "-c", `${cpu}`, `${p.pid}`] });
  try {
    await cmd.output();
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e; // no taskset: unpinned, still correct
  }
}

function us(x: number): string {
  return x.toFixed(1);
}

type Service = "bypass" | "kernel" | "deno";
const LABEL: Record<Service, string> = {
  bypass: "nkb, bypass path",
  kernel: "nkb, kernel path",
  deno: "Deno.listenDatagram",
};

async function echoRun(path: Service): Promise<Rtt> {
  const port = PORT + Object.keys(LABEL).indexOf(path);
  const count = `${WARMUP + ROUND_TRIPS}`;
  const server = tb.spawnDeno("a", `${here}demo_echo_server.ts`, [tb.a.ip, `${port}`, count, path]);
  const ready = await server.nextWith("ready", 30_000);
  await pin(server, 0);
  const tag = `[${LABEL[path]}]`;
  console.log(`\n${tag} echo service on ${tb.a.ip}:${port}, bypass:`, ready.bypass);
  const before = await tb.udpCounters("a");
  const client = tb.spawn("b", [
    "python3",
    CLIENT,
    ...[tb.b.ip, tb.a.ip, `${port}`, `${PAYLOAD_BYTES}`, `${ROUND_TRIPS}`, `${WARMUP}`],
    ...[`${CLIENT_MAX_S}`, `${CLIENT_TIMEOUT_MS}`],
  ], { name: "rtt_client.py@b" });
  await client.nextWith("ready", 30_000);
  await pin(client, 1);
  const rtt = (await client.nextWith("result", 60_000)).result as Rtt;
  console.log(
    `${tag} round trips (${rtt.measured} measured, ${rtt.lost} lost), microseconds: ` +
      `p50 ${us(rtt.p50)}, p99 ${us(rtt.p99)}, p99.9 ${us(rtt.p999)}`,
  );
  const done = await server.nextWith("done", 30_000);
  const after = await tb.udpCounters("a");
  if (done.stats !== null) console.log(`${tag} echo service stats():`, done.stats);
  console.log(
    `${tag} kernel UDP counters on the service's side grew by: InDatagrams ` +
      `${after.InDatagrams - before.InDatagrams}, OutDatagrams ${
        after.OutDatagrams - before.OutDatagrams
      }`,
  );
  return rtt;
}

const bypass = await echoRun("bypass");
const kernel = await echoRun("kernel");
const deno = await echoRun("deno");
console.log(
  `\nRound trip of a ${PAYLOAD_BYTES}-byte datagram from a busy-polling kernel UDP client, ` +
    `p50 (p99) in microseconds: ${us(bypass.p50)} (${us(bypass.p99)}) to an nkb echo on the ` +
    `bypass path, ${us(kernel.p50)} (${us(kernel.p99)}) to the same echo on the kernel path, ` +
    `${us(deno.p50)} (${us(deno.p99)}) to an echo written on Deno.listenDatagram: ` +
    `${(bypass.p50 / deno.p50).toFixed(2)}x Deno's p50.`,
);
