/**
 * The native-entry audit, executed: tests/fixtures/ffi_boundary.ts calls every entry of
 * libnkb.so directly with hostile sizes (null, empty, detached, short and misaligned
 * buffers; counts, offsets and lengths past what was given; stale, forged and negative
 * handles; out-of-range numbers; for the registry's read side, a tree of its own where R,
 * R/<uid> and the files are links, FIFOs, directories or another owner's) in a child process
 * inside a testbed namespace. The child must exit 0, every answer be the error code
 * ffi/README.md promises, no output buffer be written past the length given, and every
 * symbol the shim exports (nm -D) be called.
 */

import assert from "node:assert/strict";
import { symbols } from "../src/ffi.ts";
import { createTestbed } from "./helpers/testbed.ts";
import { ROOT } from "./helpers/zig.ts";

async function exportedSymbols(): Promise<string[]> {
  const out = await new Deno.Command("nm", {
    args: ["-D", "--defined-only", `${ROOT}zig-out/lib/libnkb.so`],
    stdout: "piped",
  }).output();
  assert.equal(out.code, 0, "nm -D");
  return new TextDecoder().decode(out.stdout).split("\n")
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length === 3 && f[1] === "T" && f[2].startsWith("nkb_"))
    .map((f) => f[2])
    .sort();
}

Deno.test({
  name: "ffi boundary: every exported entry answers hostile sizes and handles with an error code",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using tb = await createTestbed();
    const child = tb.spawnDeno("a", "ffi_boundary.ts", [], {
      env: { NKB_BOUNDARY_X: "42" },
    });
    const status = await child.wait(60_000);
    const done = child.messages.find((m) => "covered" in m);
    assert.equal(status.code, 0, `exit ${status.code} ${status.signal}\n${child.stderr}`);
    assert.ok(done !== undefined, child.stderr);
    assert.deepEqual(done.mismatches, []);
    const covered = new Set(done.covered as string[]);
    const exported = await exportedSymbols();
    assert.ok(exported.length >= 35, exported.join());
    // Every exported symbol is called, and is bound by src/ffi.ts (and nothing else is).
    assert.deepEqual(exported.filter((s) => !covered.has(s)), []);
    const bound = new Set(
      Object.entries(symbols).map(([k, v]) => ("name" in v ? v.name : k) as string),
    );
    assert.deepEqual(exported.filter((s) => !bound.has(s)), []);
    assert.deepEqual([...bound].filter((s) => !exported.includes(s)), []);
  },
});
