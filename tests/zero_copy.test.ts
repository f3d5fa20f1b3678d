/**
 * Zero-copy receive: datagrams read in place are intact; a view can never be
 * read after its frame went back to the device (release, close); a second
 * release is harmless; holding more than the limit is refused with a typed error.
 */

import assert from "node:assert/strict";
import { createTestbed } from "./helpers/testbed.ts";

const COUNT = 20_000;
const HOLD = 1100;

Deno.test({
  name: "zero-copy receive: intact in place, dead after release and close, bounded",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using tb = await createTestbed();
    const rx = tb.spawnDeno("a", "zc_rx.ts", [
      `--host=${tb.a.ip}`,
      "--port=9000",
      `--count=${COUNT}`,
    ]);
    const ready = await rx.nextWith("ready", 15_000);
    assert.equal((ready.bypass as { active: boolean }).active, true, JSON.stringify(ready));
    // A python kernel sender, paced in small bursts so the receiver sees every datagram.
    const code = `
import socket, struct, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
pattern = bytes(i & 255 for i in range(256 + 2048))
def payload(seq, size):
    head = struct.pack(">I", seq)
    start = (seq * 13 + 4) & 255
    return head + pattern[start:start + size - 4]
for seq in range(${COUNT + HOLD}):
    s.sendto(payload(seq, 4 + seq % 1469), ("${tb.a.ip}", 9000))
    if seq % 64 == 63: time.sleep(0.0005)
`;
    await tb.execOk("b", ["python3", "-c", code], 60_000);
    const done = await rx.nextWith("done", 60_000);
    const st = done.stats as Record<string, number>;
    const summary = JSON.stringify(done);
    assert.equal(done.good, COUNT, summary);
    assert.equal(done.bad, 0, summary);
    assert.equal(done.viaKernel, 0, summary);
    assert.ok((done.keptBefore as number) > 0, summary);
    assert.deepEqual(done.keptAfter, { length: 0, first: null }, summary);
    assert.equal(done.afterRelease, "BadResource", summary);
    assert.equal(done.held, 1024, summary);
    assert.equal((done.limit as { code?: string } | null)?.code, "ERR_ZC_EXHAUSTED", summary);
    assert.equal(done.lastViewAfterClose, 0, summary);
    assert.equal(done.releasedAfterClose, true, summary);
    assert.equal(st.kernelIpkts, 0, summary);
    assert.equal((await rx.wait(10_000)).code, 0, rx.stderr);
  },
});
