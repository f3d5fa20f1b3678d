/**
 * ffi/datapath.c against an engine in plain memory, without root: receive batches with
 * demux and park, malformed descriptors, batch boundaries, sends through the TX ring,
 * waits, the companion socket's turns and the lock order, with every UMEM frame accounted for after each step
 * (tests/native/datapath_check.c plays the kernel's side of the rings). Built from the
 * shim's own sources with assertions on and undefined behaviour trapping.
 */

import assert from "node:assert/strict";
import { ROOT, SHIM_FLAGS, zigCc } from "./helpers/zig.ts";

Deno.test("datapath: rings in plain memory, every frame accounted for", async () => {
  const bin = await Deno.makeTempFile({ prefix: "nkb-datapath-check-" });
  try {
    const sources: string[] = [];
    for (const e of Deno.readDirSync(`${ROOT}ffi`)) {
      if (e.name.endsWith(".c")) sources.push(`${ROOT}ffi/${e.name}`);
    }
    assert.ok(sources.includes(`${ROOT}ffi/datapath.c`), sources.join(", "));
    const build = await zigCc([
      ...SHIM_FLAGS,
      "-UNDEBUG",
      "-fsanitize=undefined",
      "-fsanitize-trap=undefined",
      "-pthread",
      "-I",
      `${ROOT}ffi`,
      "-o",
      bin,
      `${ROOT}tests/native/datapath_check.c`,
      ...sources,
    ]);
    assert.equal(build.code, 0, build.stderr);
    const run = await new Deno.Command(bin, { signal: AbortSignal.timeout(60_000) }).output();
    const out = new TextDecoder().decode(run.stdout);
    console.log(out.trim());
    assert.equal(run.code, 0, out + new TextDecoder().decode(run.stderr));
    for (
      const check of [
        "rx rounds",
        "demux and park",
        "invalid descriptors",
        "batch boundaries",
        "send",
        "wait",
        "companion socket",
        "lock order",
      ]
    ) {
      assert.match(out, new RegExp(`^${check}: .*failures 0$`, "m"), check);
    }
    assert.match(out, /^rx rounds: 3000 rounds, \d+ delivered, [1-9]\d* truncated, /m);
    assert.match(out, /^failures 0$/m);
  } finally {
    await Deno.remove(bin);
  }
});
