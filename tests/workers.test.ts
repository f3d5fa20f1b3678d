/**
 * Workers: sockets made in two Workers of one process share the process's
 * engine on the interface (neither sees the other's XDP filter as another
 * process's), and each receives its own datagrams through the rings.
 */

import assert from "node:assert/strict";
import { createTestbed } from "./helpers/testbed.ts";

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
    if i % 64 == 63: time.sleep(0.001)
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
