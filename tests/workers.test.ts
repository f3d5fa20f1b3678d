/**
 * Workers: sockets made in two Workers of one process share the process's
 * filter on the interface (neither sees the other's XDP filter as another
 * process's), and each receives its own datagrams through the rings; with one
 * queue-affine socket per queue, Workers split one address's flows by queue.
 */

import assert from "node:assert/strict";
import { createTestbed, FIXTURES, Testbed } from "./helpers/testbed.ts";

const COUNT = 2000;

Deno.test({
  name: "two Workers, two bypass sockets on one interface: both active, each gets its own",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using tb = await createTestbed();
    const child = tb.spawnDeno("a", "workers.ts", [
      `--host=${tb.a.ip}`,
      "--port=9000",
      `--count=${COUNT}`,
    ]);
    const ready = await child.nextWith("ready", 30_000);
    const states = ready.states as { active: boolean; reason: string | null }[];
    assert.deepEqual(states.map((s) => s.active), [true, true], JSON.stringify(ready));
    const code = `
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(${COUNT}):
    for port in (9000, 9001):
        s.sendto(b"w%d" % i, ("${tb.a.ip}", port))
    if i % 16 == 15: time.sleep(0.001)
`;
    await tb.execOk("b", ["python3", "-c", code], 60_000);
    const done = await child.nextWith("done", 60_000);
    const results = done.results as { got: number; stats: Record<string, number> }[];
    for (const r of results) {
      assert.equal(r.got, COUNT, JSON.stringify(done));
      assert.equal(r.stats.ipkts, COUNT, JSON.stringify(done));
      assert.equal(r.stats.kernelIpkts, 0, JSON.stringify(done));
    }
  },
});

Deno.test({
  name: "queue-affine sockets: two Workers, one per queue of a 2-queue veth, share all flows",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using tb = await Testbed.create({
      thirdOctet: "next",
      numRxQueues: 2,
      numTxQueues: 2,
      scriptDir: FIXTURES,
    });
    const total = 64 * 100;
    const child = tb.spawnDeno("a", "workers.ts", [
      `--host=${tb.a.ip}`,
      "--port=9000",
      `--count=${total}`,
      "--affine",
    ]);
    const ready = await child.nextWith("ready", 30_000);
    const states = ready.states as { active: boolean; queue: number | null }[];
    assert.deepEqual(
      states.map((s) => [s.active, s.queue]),
      [[true, 0], [true, 1]],
      JSON.stringify(ready),
    );
    // 64 sender sockets: their flows hash over both TX queues of the peer, which on veth
    // are the receive queues here.
    const code = `
import socket, time
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(64)]
for i in range(100):
    for s in socks:
        s.sendto(b"q%d" % i, ("${tb.a.ip}", 9000))
    time.sleep(0.002)
`;
    await tb.execOk("b", ["python3", "-c", code], 60_000);
    const done = await child.nextWith("done", 60_000);
    const results = done.results as { got: number; stats: Record<string, number> }[];
    const summary = JSON.stringify(done);
    assert.equal(results[0].got + results[1].got, total, summary);
    assert.ok(results[0].got > 0 && results[1].got > 0, `one queue got nothing: ${summary}`);
    for (const r of results) {
      assert.equal(r.stats.ipkts, r.got, summary);
      assert.equal(r.stats.kernelIpkts, 0, summary);
    }
    console.log(`queue 0 got ${results[0].got}, queue 1 got ${results[1].got} of ${total}`);
  },
});
