/**
 * The shim's frame code on its own: frames it builds carry checksums that an
 * independent RFC 1071 implementation accepts and parse back to what was sent;
 * every single-bit change of a header or payload is rejected or reported; and
 * 200,000 random frames never crash the parser (undefined behaviour traps on).
 */

import assert from "node:assert/strict";

const root = new URL("../", import.meta.url).pathname;
const zig = `${root}.tools/zig/ziglang/zig`;

Deno.test("frames: checksums, round trips, mutations and random input", async () => {
  const bin = await Deno.makeTempFile({ prefix: "nkb-frame-check-" });
  try {
    const build = await new Deno.Command(zig, {
      args: [
        "cc",
        "-std=gnu11",
        "-O2",
        "-UNDEBUG",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-fsanitize=undefined",
        "-fsanitize-trap=undefined",
        "-o",
        bin,
        `${root}tests/native/frame_check.c`,
        `${root}ffi/frame.c`,
      ],
    }).output();
    assert.equal(build.code, 0, new TextDecoder().decode(build.stderr));
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
