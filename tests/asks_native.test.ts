/**
 * ffi/ring_groups.c's queue requests without root or a filter: the control block in shared
 * memory, forked children as the other processes (tests/native/asks_check.c). Run as
 * nobody when the test is root: nothing here needs privilege.
 */

import assert from "node:assert/strict";
import { GROUP_STATE } from "../src/phys.ts";
import { buildWithShim, CHECK_FLAGS } from "./helpers/zig.ts";

Deno.test("ring groups: ask records, one per process, each taken once; queue states", async () => {
  const bin = await Deno.makeTempFile({ prefix: "nkb-asks-check-" });
  try {
    const build = await buildWithShim("tests/native/asks_check.c", bin, CHECK_FLAGS);
    assert.equal(build.code, 0, build.stderr);
    await Deno.chmod(bin, 0o755);
    const argv = Deno.uid() === 0
      ? ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", bin]
      : [bin];
    const run = await new Deno.Command(argv[0], {
      args: argv.slice(1),
      signal: AbortSignal.timeout(60_000),
    }).output();
    const out = new TextDecoder().decode(run.stdout);
    console.log(out.trim());
    assert.equal(run.code, 0, out + new TextDecoder().decode(run.stderr));
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
  } finally {
    await Deno.remove(bin);
  }
});
