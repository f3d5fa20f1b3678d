/**
 * ffi/ring_groups.c's queue requests without root or a filter: the control block in shared
 * memory, forked children as the other processes (tests/native/asks_check.c). Run as
 * nobody when the test is root: nothing here needs privilege.
 */

import assert from "node:assert/strict";
import { GROUP_STATE } from "../src/phys.ts";
import { buildWithShim, CHECK_FLAGS, runNativeCheck } from "./helpers/zig.ts";

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

// Found by a review: a fork's child kept its parent's cached identity, which a grandchild
// that got the grandparent's pid again then took for its own. Needs root (it picks the
// next pid with ns_last_pid): in a pid namespace of its own, so that only its pids move.
Deno.test("ring groups: a grandchild with a reused pid names itself, not its grandparent", async () => {
  assert.equal(Deno.uid(), 0, "needs root (a pid namespace, ns_last_pid)");
  const bin = await Deno.makeTempFile({ prefix: "nkb-self-cache-" });
  try {
    const build = await buildWithShim("tests/native/self_cache_check.c", bin, CHECK_FLAGS);
    assert.equal(build.code, 0, build.stderr);
    await Deno.chmod(bin, 0o755);
    const run = await new Deno.Command("unshare", {
      args: ["--pid", "--fork", "--kill-child", "--mount-proc", bin],
      signal: AbortSignal.timeout(60_000),
    }).output();
    const out = new TextDecoder().decode(run.stdout);
    console.log(out.trim());
    assert.equal(run.code, 0, out + new TextDecoder().decode(run.stderr));
    assert.match(out, /^stale identity: failures 0$/m);
  } finally {
    await Deno.remove(bin);
  }
});
