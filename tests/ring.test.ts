/**
 * The ring functions of ffi/xsk.h (reserve/submit, peek/release) against rings in plain
 * memory, without root: model checks across index wrap-around, full and empty rings, and
 * a producer and a consumer thread moving 4,000,000 entries (tests/native/ring_check.c,
 * built with assertions on and undefined behaviour trapping).
 */

import assert from "node:assert/strict";
import { CHECK_FLAGS, ROOT, SHIM_FLAGS, zigCc } from "./helpers/zig.ts";

Deno.test("rings: wrap-around, full and empty, two threads", async () => {
  const bin = await Deno.makeTempFile({ prefix: "nkb-ring-check-" });
  try {
    const build = await zigCc([
      ...SHIM_FLAGS,
      ...CHECK_FLAGS,
      "-o",
      bin,
      `${ROOT}tests/native/ring_check.c`,
    ]);
    assert.equal(build.code, 0, build.stderr);
    const run = await new Deno.Command(bin, { signal: AbortSignal.timeout(60_000) }).output();
    const out = new TextDecoder().decode(run.stdout);
    console.log(out.trim());
    assert.equal(run.code, 0, out + new TextDecoder().decode(run.stderr));
    assert.match(out, /^failures 0$/m);
    assert.match(out, /two threads: 4000000 of 4000000 in order, failures 0/);
  } finally {
    await Deno.remove(bin);
  }
});
