/**
 * A terminated Worker never crashes the process: Workers that alone loaded libnkb.so
 * are terminated while a bypass socket's receive() waits inside the shim. Deno unloads
 * the library with the last isolate that opened it; before the library pinned itself
 * (RTLD_NODELETE) the waiting thread returned into unmapped code: exit 139 at the first
 * round, 3 of 3 runs. The child must exit 0 having run every round on a bypass socket.
 */

import assert from "node:assert/strict";
import { createTestbed } from "./helpers/testbed.ts";

const ROUNDS = 4;

Deno.test({
  name: "terminating the only Worker that loaded the shim, during a receive, does not crash",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using tb = await createTestbed();
    const child = tb.spawnDeno("a", "worker_unload.ts", [
      `--host=${tb.a.ip}`,
      "--port=9700",
      `--rounds=${ROUNDS}`,
    ]);
    const status = await child.wait(60_000);
    const done = child.messages.find((m) => "done" in m);
    const what = `exit ${status.code} signal ${status.signal} ${JSON.stringify(done)}\n` +
      child.stderr.slice(-2000);
    assert.equal(status.code, 0, what);
    assert.equal(done?.done, ROUNDS, what);
    // Every round's socket was on the bypass path (its wait was the shim's).
    assert.deepEqual(done?.active, Array(ROUNDS).fill(true), what);
  },
});
