/**
 * ffi/ring_groups.c's queue requests without root or a filter: the control block in shared
 * memory, forked children as the other processes (tests/native/asks_check.c). Run as
 * nobody when the test is root: nothing here needs privilege.
 */

import assert from "node:assert/strict";
import { GROUP_STATE } from "../src/phys.ts";
import { runNativeCheck } from "./helpers/zig.ts";

Deno.test("ring groups: ask records, one per process, each taken once; queue states", async () => {
  const { code, out } = await runNativeCheck("tests/native/asks_check.c");
  console.log(out.trim());
  assert.equal(code, 0, out);
  for (
    const check of [
      "one record per process",
      "live asker",
      "dead asker",
      "stale asker",
      "full table",
      "hostile records",
      "owners",
    ]
  ) {
    assert.match(out, new RegExp(`^${check}: failures 0$`, "m"), check);
  }
  assert.match(out, /^failures 0$/m);
  // The queue states nkb phys reads (nkb_group_owners) mean the same on both sides.
  const states = Object.fromEntries(
    [...out.matchAll(/^state\.(\w+) (\d+)$/gm)].map((m) => [m[1], Number(m[2])]),
  );
  assert.deepEqual(states, GROUP_STATE);
});
