/**
 * Workers racing on one interface (issue 12, item 10): three Workers of one
 * process open, check and close bypass sockets on one interface at once. Every
 * socket is active: none falls back with `foreign-xdp-program` naming the
 * process's own filter (which it did when a Worker read the attached program id
 * just before another closed the last engine on the interface); with
 * `_NET_KERNEL_BYPASS_ERR_EXIT=1` the process therefore exits 0.
 */

import assert from "node:assert/strict";
import { createTestbed } from "./helpers/testbed.ts";

const WORKERS = 3;
const CYCLES = 400;

interface Result {
  cycles: number;
  active: number;
  reasons: Record<string, number>;
}

Deno.test({
  name: "three Workers x 400 open/check/close cycles on one interface: all active",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using tb = await createTestbed();
    const args = [`--host=${tb.a.ip}`, "--port=20000", `--cycles=${CYCLES}`];
    const child = tb.spawnDeno("a", "worker_churn.ts", [...args, `--workers=${WORKERS}`], {
      env: { _NET_KERNEL_BYPASS_ERR_EXIT: "0" },
      name: "churn(ERR_EXIT=0)",
    });
    const done = await child.nextWith("done", 180_000);
    const results = done.results as Result[];
    assert.equal(results.length, WORKERS);
    for (const r of results) {
      assert.equal(r.cycles, CYCLES, JSON.stringify(done));
      assert.deepEqual(r.reasons, {}, JSON.stringify(done));
      assert.equal(r.active, CYCLES, JSON.stringify(done));
    }
    assert.equal((await child.wait(30_000)).code, 0, child.stderr);

    const strict = tb.spawnDeno("a", "worker_churn.ts", [...args, `--workers=${WORKERS}`], {
      env: { _NET_KERNEL_BYPASS_ERR_EXIT: "1" },
      name: "churn(ERR_EXIT=1)",
    });
    const st = await strict.wait(180_000);
    assert.equal(st.code, 0, `exit code ${st.code}: ${strict.stderr}`);
    assert.equal(strict.messages.some((m) => "done" in m), true, strict.stderr);
  },
});
