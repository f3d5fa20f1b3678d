/**
 * Frames addressed to another host's MAC (issue 12, item 8): the kernel drops a
 * unicast frame whose destination MAC is not the interface's (PACKET_OTHERHOST),
 * so the XDP filter passes such frames to the kernel instead of the ring; group
 * addresses (here broadcast) are delivered as before. After the interface's MAC
 * changes (`ip link set dev X address ...`), the filter follows it: frames to the
 * new MAC are delivered through the ring, frames to the old one are not.
 */

import assert from "node:assert/strict";
import { createTestbed, sleep } from "./helpers/testbed.ts";

const N = 20;
const OTHER = "02:00:5e:10:20:30"; // a locally administered unicast MAC nobody has
const NEW_MAC = "02:00:5e:aa:bb:cc";
const BROADCAST = "ff:ff:ff:ff:ff:ff";

function count(got: string[], tag: string): number {
  return got.filter((g) => g.startsWith(`${tag}-`)).length;
}

Deno.test({
  name: "filter: unicast frames to another MAC go to the kernel (dropped); follows a MAC change",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using tb = await createTestbed();
    const rx = tb.spawnDeno("a", "collect.ts", [
      `--host=${tb.a.ip}`,
      "--port=9000",
      "--timeMs=30000",
      "--graceMs=300",
    ]);
    const ready = await rx.nextWith("ready", 15_000);
    assert.equal((ready.bypass as { active: boolean }).active, true, JSON.stringify(ready));
    const oldMac = await tb.mac("a");
    const macB = await tb.mac("b");
    const frames = (pairs: string[], count = N): Promise<Record<string, unknown>> =>
      tb.spawnPython("b", "mac_frames.py", [
        tb.b.ifname,
        macB,
        tb.b.ip,
        tb.a.ip,
        "9100",
        "9000",
        String(count),
        ...pairs,
      ]).nextWith("done", 30_000);

    await frames([`other=${OTHER}`, `right=${oldMac}`, `bcast=${BROADCAST}`]);
    await tb.execOk("a", ["ip", "link", "set", "dev", tb.a.ifname, "address", NEW_MAC]);
    assert.equal(await tb.mac("a"), NEW_MAC);
    // The socket looks at its interface at least every 250 ms while it waits for
    // datagrams (WATCH_INTERVAL_MS): four times that is ample on a loaded machine.
    await sleep(1000);
    await frames([`old=${oldMac}`, `new=${NEW_MAC}`]);
    await frames([`FINAL=${NEW_MAC}`], 1);

    const done = await rx.nextWith("done", 30_000);
    const got = done.got as string[];
    const st = done.stats as Record<string, number>;
    const what = `got ${got.length}: ${JSON.stringify(got)}, stats ${JSON.stringify(st)}`;
    assert.equal(done.error, null, what);
    assert.equal(count(got, "other"), 0, `delivered to another host's MAC: ${what}`);
    assert.equal(count(got, "right"), N, what);
    assert.equal(count(got, "bcast"), N, what);
    assert.equal(count(got, "old"), 0, `delivered to the old MAC: ${what}`);
    assert.equal(count(got, "new"), N, what);
    assert.ok(got.includes("FINAL"), what);
    // Everything delivered came through the ring; nothing through the kernel.
    assert.equal(st.ipkts, 3 * N + 1, what);
    assert.equal(st.kernelIpkts, 0, what);
  },
});
