/**
 * The shim's C on its own: frames it builds carry checksums that an
 * independent RFC 1071 implementation accepts and parse back to what was sent;
 * every single-bit change of a header or payload is rejected or reported;
 * 200,000 random frames never crash the parser (undefined behaviour traps on).
 * And the benchmark's native ceiling still compiles against the shim's API.
 */

import assert from "node:assert/strict";
import { buildWithShim, ROOT, SHIM_FLAGS, zigCc } from "./helpers/zig.ts";

Deno.test("frames: checksums, round trips, mutations and random input", async () => {
  const bin = await Deno.makeTempFile({ prefix: "nkb-frame-check-" });
  try {
    const build = await zigCc([
      ...SHIM_FLAGS,
      "-fsanitize=undefined",
      "-fsanitize-trap=undefined",
      "-o",
      bin,
      `${ROOT}tests/native/frame_check.c`,
      `${ROOT}ffi/frame.c`,
    ]);
    assert.equal(build.code, 0, build.stderr);
    const run = await new Deno.Command(bin).output();
    const out = new TextDecoder().decode(run.stdout);
    console.log(out.trim());
    assert.equal(run.code, 0, out + new TextDecoder().decode(run.stderr));
    assert.match(out, /round-trip failures 0\n/);
    assert.match(out, /unnoticed mutations 0\n/);
  } finally {
    await Deno.remove(bin);
  }
});

Deno.test("bench/native/ceiling.c compiles against the shim (warnings are errors)", async () => {
  const bin = await Deno.makeTempFile({ prefix: "nkb-ceiling-" });
  try {
    const build = await buildWithShim("bench/native/ceiling.c", bin);
    assert.equal(build.code, 0, build.stderr);
  } finally {
    await Deno.remove(bin);
  }
});
