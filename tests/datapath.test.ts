/**
 * Bulk data path: 100,000 datagrams (sizes 1..1472, sequence numbers, payload
 * derived from the seq) each way between a bypass socket and a kernel peer in
 * two network namespaces, with the namespaces' /proc/net/snmp Udp counters
 * showing which path carried them; and echo round trips.
 */

import assert from "node:assert/strict";
import { createTestbed, type Testbed } from "./helpers/testbed.ts";
import { bypass, bypassToKernel, kernelToA, SLACK, stats, WINDOW } from "./helpers/stream.ts";

const N = 100_000;
const opts = { sanitizeResources: false, sanitizeOps: false };

Deno.test({
  name: "rx: 100k datagrams from a kernel peer reach a bypass socket intact, in order, not via IP",
  ...opts,
  fn: async () => {
    await using tb = await createTestbed();
    const { rx, inA, ready } = await kernelToA(tb, N, { mode: "bypass", api: "sync" });
    assert.equal(bypass(ready).active, true, `bypass not active: ${JSON.stringify(ready)}`);
    assert.equal(bypass(ready).interface, tb.a.ifname);
    assert.equal(stats(rx).ipkts, N, `stats ${JSON.stringify(rx.stats)}`);
    assert.equal(stats(rx).kernelIpkts, 0, `stats ${JSON.stringify(rx.stats)}`);
    assert.ok(inA < SLACK, `receiver namespace Udp InDatagrams grew by ${inA}`);
  },
});

Deno.test({
  name: "rx: 100k datagrams through async receive() (DatagramConn), windowed kernel sender",
  ...opts,
  fn: async () => {
    await using tb = await createTestbed();
    const { rx, inA, ready } = await kernelToA(tb, N, { mode: "bypass", api: "async" }, WINDOW);
    assert.equal(bypass(ready).active, true, `bypass not active: ${JSON.stringify(ready)}`);
    assert.equal(stats(rx).ipkts, N, `stats ${JSON.stringify(rx.stats)}`);
    assert.ok(inA < SLACK, `receiver namespace Udp InDatagrams grew by ${inA}`);
  },
});

Deno.test({
  name: "rx: kernelOnly socket gets the same 100k datagrams through the kernel (InDatagrams grows)",
  ...opts,
  fn: async () => {
    await using tb = await createTestbed();
    const { rx, inA, ready } = await kernelToA(
      tb,
      N,
      { mode: "kernelOnly", api: "sync" },
      WINDOW,
    );
    assert.equal(bypass(ready).active, false, JSON.stringify(ready));
    assert.notEqual(bypass(ready).reason, null, JSON.stringify(ready));
    assert.equal(stats(rx).ipkts, 0, `stats ${JSON.stringify(rx.stats)}`);
    assert.equal(stats(rx).kernelIpkts, N, `stats ${JSON.stringify(rx.stats)}`);
    assert.ok(inA >= N && inA < N + SLACK, `receiver namespace Udp InDatagrams grew by ${inA}`);
  },
});

Deno.test({
  name: "tx: 100k datagrams from a bypass socket reach a kernel peer intact, not via IP",
  ...opts,
  fn: async () => {
    await using tb = await createTestbed();
    await bypassToKernel(tb, N, { api: "sync" });
  },
});

async function echo(
  tb: Testbed,
  serverApi: "iter" | "sync",
  clientMode: "kernel" | "bypass",
  clientApi: "async" | "sync",
): Promise<void> {
  const rounds = 1000;
  const server = tb.spawnDeno("a", "echo_server.ts", [
    "--mode=bypass",
    `--host=${tb.a.ip}`,
    "--port=9000",
    `--count=${rounds}`,
    `--api=${serverApi}`,
  ]);
  const sReady = await server.nextWith("ready", 15_000);
  assert.equal(bypass(sReady).active, true, `server not bypassed: ${JSON.stringify(sReady)}`);
  const client = tb.spawnDeno("b", "echo_client.ts", [
    `--mode=${clientMode}`,
    `--host=${tb.b.ip}`,
    "--port=9100",
    `--to=${tb.a.ip}`,
    "--toPort=9000",
    `--count=${rounds}`,
    `--api=${clientApi}`,
  ]);
  const cReady = await client.nextWith("ready", 15_000);
  if (clientMode === "bypass") {
    assert.equal(bypass(cReady).active, true, `client not bypassed: ${JSON.stringify(cReady)}`);
  }
  const c = await client.nextWith("done", 60_000);
  const s = await server.nextWith("done", 15_000);
  const all = `client ${JSON.stringify(c)}\nserver ${JSON.stringify(s)}`;
  assert.equal(c.error, null, all);
  assert.equal(c.answered, rounds, all);
  assert.equal(c.corrupt, 0, all);
  assert.equal(s.echoed, rounds, all);
  assert.equal(stats(s).ipkts, rounds, all);
  assert.equal(stats(s).opkts, rounds, all);
  if (clientMode === "bypass") {
    assert.equal(stats(c).opkts, rounds, all);
    assert.equal(stats(c).ipkts, rounds, all);
  }
}

Deno.test({
  name: "echo: kernel client, bypass echo server (listenDatagram + for await), 1000 round trips",
  ...opts,
  fn: async () => {
    await using tb = await createTestbed();
    await echo(tb, "iter", "kernel", "async");
  },
});

Deno.test({
  name: "echo: bypass client (async send/receive), bypass echo server (sync), 1000 round trips",
  ...opts,
  fn: async () => {
    await using tb = await createTestbed();
    await echo(tb, "sync", "bypass", "async");
  },
});
