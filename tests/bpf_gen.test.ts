/**
 * ffi/filter_prog.h is what ffi/bpf/filter.bpf.c compiles to (issue 16): regenerating it
 * with tools/bpf_gen.ts and the pinned zig gives the committed file byte for byte, so a
 * change to the program's source without a regenerated header fails here, as `./nkbw dist
 * --check` does for the prebuilt libraries. A changed source is shown to give another
 * header (the comparison is not vacuous), and the ELF reader refuses objects the shim's
 * loader could not load as they are.
 */

import assert from "node:assert/strict";
import { generate, HEADER, MAPS, parseObject, SOURCE } from "../tools/bpf_gen.ts";
import { ROOT } from "./helpers/zig.ts";

Deno.test("bpf_gen: the committed header is what the source compiles to", async () => {
  const committed = await Deno.readTextFile(`${ROOT}${HEADER}`);
  const generated = await generate();
  assert.equal(generated, committed, `${HEADER} is stale: run ./nkbw deno run -A tools/bpf_gen.ts`);
  // Twice the same: the output depends on the source alone.
  assert.equal(await generate(), generated);
  // Every map the shim creates is named by a relocation (some by more than one), and
  // nothing else is.
  const relocs = [...committed.matchAll(/^ {4}\{(\d+), "(\w+)"\},$/gm)];
  assert.deepEqual([...new Set(relocs.map((m) => m[2]))].sort(), [...MAPS].sort(), committed);
  const count = Number(/^#define NKB_FILTER_PROG_LEN (\d+)u$/m.exec(committed)?.[1]);
  assert.ok(count > 0 && count <= 4096, `NKB_FILTER_PROG_LEN ${count}`);
  assert.equal([...committed.matchAll(/^ {4}\{\.code = /gm)].length, count);
});

Deno.test("bpf_gen --check: exit 0 on the committed tree", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read=.",
      "--allow-run=.tools/zig/ziglang/zig",
      "--allow-write=zig-out,ffi/filter_prog.h",
      "tools/bpf_gen.ts",
      "--check",
    ],
    cwd: ROOT,
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
});

Deno.test("bpf_gen: a changed source gives another header", async () => {
  const source = await Deno.readTextFile(`${ROOT}${SOURCE}`);
  const rule = "if (ip[9] != 17) return XDP_PASS;  // not UDP";
  assert.ok(source.includes(rule), `${SOURCE} no longer has: ${rule}`);
  const dir = await Deno.makeTempDir({ prefix: "nkb-bpf-gen-test-" });
  try {
    const changed = `${dir}/filter.bpf.c`;
    await Deno.writeTextFile(changed, source.replace(rule, rule.replace("17", "6")));
    const header = await generate(changed);
    assert.notEqual(header, await Deno.readTextFile(`${ROOT}${HEADER}`));
    assert.match(header, / != 6 goto \d+$/m); // the protocol test now wants TCP
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bpf_gen: the ELF reader refuses what it cannot vouch for", () => {
  assert.throws(() => parseObject(new Uint8Array(64)), /not ELF/);
  const big = new Uint8Array(64);
  big.set([0x7f, 0x45, 0x4c, 0x46, 2, 2]); // ELF64, big-endian
  assert.throws(() => parseObject(big), /little-endian/);
  const x86 = new Uint8Array(64);
  x86.set([0x7f, 0x45, 0x4c, 0x46, 2, 1]);
  x86[18] = 62; // EM_X86_64
  assert.throws(() => parseObject(x86), /not for BPF/);
});
