/**
 * The demo (`./nkbw demo`): makes its own two network namespaces joined by a
 * veth pair, runs a bypass echo service in one and an ordinary kernel UDP
 * client in the other, prints the round trips and the service's `bypass` and
 * `stats()`, then removes everything.
 *
 * @module
 */

import { Testbed } from "./testbed.ts";

const ROUND_TRIPS = 2000;
const PORT = 9000;
const here = new URL(".", import.meta.url).pathname;

await using tb = await Testbed.create({ thirdOctet: 0 });
console.log(
  `network: ${tb.a.ns} (${tb.a.cidr}, ${tb.a.ifname}) <-veth-> ${tb.b.ns} (${tb.b.cidr})`,
);

async function echoRun(path: "bypass" | "kernel"): Promise<Record<string, number>> {
  const port = path === "bypass" ? PORT : PORT + 1;
  const args = [tb.a.ip, `${port}`, `${ROUND_TRIPS}`, path];
  const server = tb.spawnDeno("a", `${here}demo_echo_server.ts`, args);
  const ready = await server.nextWith("ready", 30_000);
  console.log(`\n[${path} path] echo service on ${tb.a.ip}:${port}, bypass:`, ready.bypass);
  const before = await tb.udpCounters("a");
  const client = tb.spawnDeno("b", `${here}demo_kernel_client.ts`, args.slice(0, 3));
  const { rtt } = await client.nextWith("rtt", 60_000);
  console.log(`[${path} path] kernel client round trips (64-byte payload, microseconds):`, rtt);
  const done = await server.nextWith("done", 30_000);
  const after = await tb.udpCounters("a");
  console.log(`[${path} path] echo service stats():`, done.stats);
  console.log(
    `[${path} path] kernel UDP counters on the service's side grew by: InDatagrams ` +
      `${after.InDatagrams - before.InDatagrams}, OutDatagrams ${
        after.OutDatagrams - before.OutDatagrams
      }`,
  );
  return rtt as Record<string, number>;
}

const bypass = await echoRun("bypass");
const kernel = await echoRun("kernel");
console.log(
  `\nround trip p50: bypass ${bypass.p50Us} us, kernel ${kernel.p50Us} us ` +
    `(${(bypass.p50Us / kernel.p50Us).toFixed(2)}x); p99: bypass ${bypass.p99Us} us, kernel ` +
    `${kernel.p99Us} us. The client is an ordinary async Deno socket: its own cost dominates; ` +
    "`deno task bench` measures against a busy-polling client.",
);
