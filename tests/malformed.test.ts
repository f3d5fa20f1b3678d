/**
 * Malformed frames sent with an AF_PACKET socket from the peer namespace to the
 * bypass socket's MAC/IP/port: the process survives, invalid frames are counted
 * in stats().rxInvalid and never delivered, IP options and fragments go to the
 * kernel (and come out of receive() when complete), and normal traffic still
 * arrives afterwards.
 */

import assert from "node:assert/strict";
import { createTestbed } from "./helpers/testbed.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };
// Frames the bypass socket itself must reject (see fixtures/raw_frames.py).
const INVALID = ["T-trunc", "T-lenbig", "T-lensmall", "T-csum"];

Deno.test({
  name: "malformed frames: counted in rxInvalid, not delivered, no crash; valid traffic continues",
  ...opts,
  fn: async () => {
    await using tb = await createTestbed();
    const rx = tb.spawnDeno("a", "collect.ts", [`--host=${tb.a.ip}`, "--port=9000"]);
    const ready = await rx.nextWith("ready", 15_000);
    assert.equal((ready.bypass as { active: boolean }).active, true, JSON.stringify(ready));
    const macA = await tb.mac("a");
    const macB = await tb.mac("b");
    const sender = tb.spawnPython("b", "raw_frames.py", [
      tb.b.ifname,
      macB,
      macA,
      tb.b.ip,
      tb.a.ip,
      "9100",
      "9000",
    ]);
    await sender.nextWith("done", 15_000);
    const done = await rx.nextWith("done", 20_000);
    const st = done.stats as Record<string, number>;
    const got = done.got as string[];
    const what = `delivered ${JSON.stringify(got)}, stats ${JSON.stringify(st)}`;
    console.log(`malformed: ${what}`);
    assert.equal(done.error, null, what);
    assert.equal(rx.exited, null, `receiver died: ${rx.stderr}`);
    // The controls: well-formed frames before and after the junk, and kernel-sent ones.
    for (const tag of ["RAW-OK", "RAW-OK2", "KERNEL-OK", "FINAL"]) {
      assert.ok(got.includes(tag), `${tag} not delivered: ${what}`);
    }
    for (const tag of INVALID) {
      assert.ok(!got.some((g) => g.startsWith(tag)), `${tag} was delivered: ${what}`);
    }
    assert.equal(st.rxInvalid, INVALID.length, `rxInvalid: ${what}`);
    // Orphan fragments can't be reassembled: never delivered.
    assert.ok(!got.some((g) => g.startsWith("T-fragmf") || g.startsWith("T-fragtail")), what);
    // A complete datagram with IP options, and one in two fragments, are the
    // kernel's: the companion socket receives them and receive() returns them.
    assert.ok(got.includes("T-opts"), `IP-options datagram not delivered: ${what}`);
    assert.ok(
      got.some((g) => g.startsWith("T-frag-")),
      `reassembled datagram not delivered: ${what}`,
    );
    assert.equal(st.kernelIpkts, 2, `kernel-path deliveries: ${what}`);
    assert.equal(st.ipkts, 4, `ring deliveries (RAW-OK, RAW-OK2, KERNEL-OK, FINAL): ${what}`);
  },
});
