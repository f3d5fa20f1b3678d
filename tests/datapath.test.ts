/**
 * Bulk data path: 100,000 datagrams (sizes 1..1472, sequence numbers, payload
 * derived from the seq) each way between a bypass socket and a kernel peer in
 * two network namespaces, with the namespaces' /proc/net/snmp Udp counters
 * showing which path carried them; and echo round trips.
 */

import assert from "node:assert/strict";
import { createTestbed, type Message, type Testbed } from "./helpers/testbed.ts";

const N = 100_000;
const SLACK = 100; // unrelated UDP a namespace may see
const WAIT_MS = 90_000;
// Datagrams in flight for kernel receivers: 32 full-size skbs fit the default 208 KiB
// receive buffer even on an interface with native XDP (larger truesize); 64 did not.
const WINDOW = 32;
const opts = { sanitizeResources: false, sanitizeOps: false };

interface Stats {
  ipkts: number;
  opkts: number;
  kernelIpkts: number;
  kernelOpkts: number;
  rxInvalid: number;
  rxDropped: number;
  txFull: number;
  sendSpinMax: number;
}

interface Bypass {
  active: boolean;
  interface: string | null;
  reason: string | null;
}

function stats(m: Message): Stats {
  return m.stats as Stats;
}

function bypass(m: Message): Bypass {
  return m.bypass as Bypass;
}

/** Runs a kernel sender in b against a receiver in a; returns both summaries and a's snmp delta. */
async function kernelToA(
  tb: Testbed,
  mode: "bypass" | "kernelOnly",
  window: number,
  api: "sync" | "async" = "sync",
): Promise<{ rx: Message; tx: Message; inA: number; ready: Message; udpB: string }> {
  const ack = window > 0 ? [`--ackTo=${tb.b.ip}`, "--ackPort=9900"] : [];
  const rx = tb.spawnDeno("a", "rx.ts", [
    `--mode=${mode}`,
    `--host=${tb.a.ip}`,
    "--port=9000",
    `--count=${N}`,
    `--api=${api}`,
    ...ack,
  ]);
  const ready = await rx.nextWith("ready", 15_000);
  const before = await tb.udpCounters("a");
  const beforeB = await tb.udpCounters("b");
  const tx = tb.spawnDeno("b", "tx.ts", [
    "--mode=kernel",
    `--host=${tb.b.ip}`,
    "--port=9100",
    `--to=${tb.a.ip}`,
    "--toPort=9000",
    `--count=${N}`,
    "--api=async",
    ...(window > 0 ? [`--window=${window}`, "--ackPort=9900"] : []),
  ]);
  // The receiver ends on its own (count, idle, time); a sender still going then is stuck.
  const rxDone = await rx.nextWith("done", WAIT_MS);
  const txDone = await tx.nextWith("done", 10_000).catch((e) => ({ unfinished: String(e) }));
  const after = await tb.udpCounters("a");
  const afterB = await tb.udpCounters("b");
  // The sender's side, to tell its own losses (SndbufErrors) from the receiver's.
  const udpB = JSON.stringify(
    Object.fromEntries(Object.entries(afterB).map(([k, v]) => [k, v - beforeB[k]])),
  );
  return { rx: rxDone, tx: txDone, inA: after.InDatagrams - before.InDatagrams, ready, udpB };
}

function assertAllIntact(rx: Message, what: string): void {
  const summary = JSON.stringify({ ...rx, stats: undefined, bypass: undefined });
  assert.equal(rx.error, null, `${what}: receiver error ${summary}`);
  assert.equal(rx.missing, 0, `${what}: lost datagrams ${summary}`);
  assert.equal(rx.corrupt, 0, `${what}: corrupt datagrams ${summary}`);
  assert.equal(rx.wrongSize, 0, `${what}: wrong sizes ${summary}`);
  assert.equal(rx.duplicates, 0, `${what}: duplicates ${summary}`);
  assert.equal(rx.reordered, 0, `${what}: out of order ${summary}`);
}

Deno.test({
  name: "rx: 100k datagrams from a kernel peer reach a bypass socket intact, in order, not via IP",
  ...opts,
  fn: async () => {
    await using tb = await createTestbed();
    const { rx, tx, inA, ready, udpB } = await kernelToA(tb, "bypass", 0);
    assert.equal(bypass(ready).active, true, `bypass not active: ${JSON.stringify(ready)}`);
    assert.equal(bypass(ready).interface, tb.a.ifname);
    assert.equal(tx.sent, N, `sender: ${JSON.stringify(tx)}`);
    assertAllIntact(rx, `bypass rx (stats ${JSON.stringify(rx.stats)}, sender Udp delta ${udpB})`);
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
    const { rx, tx, inA, ready } = await kernelToA(tb, "bypass", WINDOW, "async");
    assert.equal(bypass(ready).active, true, `bypass not active: ${JSON.stringify(ready)}`);
    assert.equal(tx.sent, N, `sender: ${JSON.stringify(tx)}`);
    assertAllIntact(rx, `bypass async rx (stats ${JSON.stringify(rx.stats)})`);
    assert.equal(stats(rx).ipkts, N, `stats ${JSON.stringify(rx.stats)}`);
    assert.ok(inA < SLACK, `receiver namespace Udp InDatagrams grew by ${inA}`);
  },
});

Deno.test({
  name: "rx: kernelOnly socket gets the same 100k datagrams through the kernel (InDatagrams grows)",
  ...opts,
  fn: async () => {
    await using tb = await createTestbed();
    const { rx, tx, inA, ready } = await kernelToA(tb, "kernelOnly", WINDOW);
    assert.equal(bypass(ready).active, false, JSON.stringify(ready));
    assert.notEqual(bypass(ready).reason, null, JSON.stringify(ready));
    assert.equal(tx.sent, N, `sender: ${JSON.stringify(tx)}`);
    assertAllIntact(rx, "kernelOnly rx");
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
    const rx = tb.spawnDeno("b", "rx.ts", [
      "--mode=kernel",
      `--host=${tb.b.ip}`,
      "--port=9000",
      `--count=${N}`,
      "--api=async",
      `--ackTo=${tb.a.ip}`,
      "--ackPort=9900",
    ]);
    await rx.nextWith("ready", 15_000);
    const beforeA = await tb.udpCounters("a");
    const beforeB = await tb.udpCounters("b");
    const tx = tb.spawnDeno("a", "tx.ts", [
      "--mode=bypass",
      `--host=${tb.a.ip}`,
      "--port=9100",
      `--to=${tb.b.ip}`,
      "--toPort=9000",
      `--count=${N}`,
      "--api=sync",
      `--window=${WINDOW}`,
      "--ackPort=9900",
    ]);
    const ready = await tx.nextWith("ready", 15_000);
    assert.equal(bypass(ready).active, true, `bypass not active: ${JSON.stringify(ready)}`);
    const rxDone = await rx.nextWith("done", WAIT_MS);
    const txDone = await tx.nextWith("done", 10_000);
    const afterA = await tb.udpCounters("a");
    const afterB = await tb.udpCounters("b");
    assert.equal(txDone.sent, N, `sender: ${JSON.stringify(txDone)}`);
    assert.equal(txDone.errors, 0, `sender: ${JSON.stringify(txDone)}`);
    assertAllIntact(rxDone, `kernel rx of bypass tx (sender ${JSON.stringify(txDone)})`);
    assert.equal(bypass(txDone).active, true, JSON.stringify(txDone));
    assert.equal(stats(txDone).opkts, N, `stats ${JSON.stringify(txDone.stats)}`);
    assert.equal(stats(txDone).kernelOpkts, 0, `stats ${JSON.stringify(txDone.stats)}`);
    assert.equal(afterB.InCsumErrors - beforeB.InCsumErrors, 0, "peer InCsumErrors grew");
    assert.equal(afterB.InErrors - beforeB.InErrors, 0, "peer InErrors grew");
    const outA = afterA.OutDatagrams - beforeA.OutDatagrams;
    assert.ok(outA < SLACK, `sender namespace Udp OutDatagrams grew by ${outA}`);
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
