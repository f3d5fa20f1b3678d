/**
 * _NET_KERNEL_BYPASS_ERR_EXIT: when bypass setup fails (here: another process
 * holds the interface), 0 falls back visibly in `bypass.reason` and 1 ends the
 * process with status 1 and a message naming the reason.
 */

import assert from "node:assert/strict";
import { createTestbed } from "./helpers/testbed.ts";

Deno.test({
  name: "ERR_EXIT: 0 falls back with reason queue-busy, 1 exits 1 naming it",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using tb = await createTestbed();
    const host = `--host=${tb.a.ip}`;
    const holder = tb.spawnDeno("a", "hold.ts", [host, "--port=9000", "--then=wait"]);
    const held = await holder.nextWith("ready", 15_000);
    assert.equal((held.bypass as { active: boolean }).active, true, JSON.stringify(held));

    const quiet = tb.spawnDeno("a", "hold.ts", [host, "--port=9001", "--then=close"], {
      env: { _NET_KERNEL_BYPASS_ERR_EXIT: "0" },
      name: "hold(ERR_EXIT=0)",
    });
    const fell = await quiet.nextWith("ready", 15_000);
    const b = fell.bypass as { active: boolean; reason: string };
    assert.equal(b.active, false, JSON.stringify(fell));
    assert.equal(b.reason, "queue-busy", JSON.stringify(fell));
    assert.equal((await quiet.wait(10_000)).code, 0, quiet.stderr);

    const strict = tb.spawnDeno("a", "hold.ts", [host, "--port=9002", "--then=close"], {
      env: { _NET_KERNEL_BYPASS_ERR_EXIT: "1" },
      name: "hold(ERR_EXIT=1)",
    });
    const st = await strict.wait(15_000);
    assert.equal(st.code, 1, `exit code ${st.code}: ${strict.stderr}`);
    assert.equal(strict.messages.some((m) => "ready" in m), false, "it went on after the failure");
    assert.match(strict.stderr, /queue-busy/);
    assert.match(strict.stderr, /_NET_KERNEL_BYPASS_ERR_EXIT=1/);
    holder.kill();
  },
});
