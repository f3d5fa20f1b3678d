/**
 * nkb's rules for pending receive() calls where Deno shows none to compare with
 * (tests/conformance.test.ts has those it does): a datagram that arrives while receives
 * wait goes to the newest; receiveSync and receiveBatch throw Busy while receives wait;
 * at most 65536 wait (the oldest gives way with Busy); close rejects every one with
 * Interrupted, in call order.
 */

import assert from "node:assert/strict";
import { createTestbed, sendUdp } from "./helpers/testbed.ts";

Deno.test({
  name: "receive queue: newest first, Busy for sync receives, the bound, close",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using tb = await createTestbed();
    const child = tb.spawnDeno("a", "receive_queue.ts", [`--host=${tb.a.ip}`], { stdin: true });
    for (let i = 0; i < 2; i++) {
      const m = await child.next((m) => "want" in m, 20_000, "want");
      await sendUdp(tb, "b", String(i), tb.a.ip, m.port as number);
      await child.send({ raw: "go" });
    }
    const done = (await child.next((m) => "done" in m, 60_000, "done")).done as Record<
      string,
      unknown
    >;
    assert.equal(done.active, true, JSON.stringify(done));
    assert.equal(done.receiveSync, "Busy");
    assert.equal(done.receiveBatch, "Busy");
    // sendUdp sends the text "0", then "1": bytes 48 and 49.
    assert.deepEqual(done.order, ["newer got 48", "older got 49"]);
    assert.deepEqual(done.afterBound, ["r0 Busy"]);
    assert.deepEqual(done.onClose, { Interrupted: 65536 });
    assert.equal(done.lastRejected, "r65536 Interrupted");
    const status = await child.wait(10_000);
    assert.equal(status.code, 0, child.stderr);
  },
});
