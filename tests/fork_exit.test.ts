/**
 * A child forked from a process that uses nkb exits when it calls exit(): the library's
 * destructors run in the child, where none of the parent's threads exist
 * (tests/native/fork_exit.c, linked against libnkb.so). The refresher's destructor joins
 * a thread that only the parent has; glibc marks such threads ended in the child, so the
 * join returns (a join that waited for the thread itself would hang the child here). A
 * kernel-path socket (no refresher thread) is the control; the bypass socket's engine
 * starts the refresher.
 */

import assert from "node:assert/strict";
import { createTestbed } from "./helpers/testbed.ts";
import { ROOT, SHIM_FLAGS, zigCc } from "./helpers/zig.ts";

Deno.test({
  name: "a forked child exits at once, whether the parent's refresher thread runs or not",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const bin = await Deno.makeTempFile({ prefix: "nkb-fork-exit-" });
    try {
      const lib = `${ROOT}zig-out/lib`;
      const cc = await zigCc([
        ...SHIM_FLAGS,
        "-I",
        `${ROOT}ffi`,
        "-o",
        bin,
        `${ROOT}tests/native/fork_exit.c`,
        `-L${lib}`,
        "-lnkb",
        `-Wl,-rpath,${lib}`,
      ]);
      assert.equal(cc.code, 0, cc.stderr);
      await using tb = await createTestbed();
      for (const mode of ["kernel", "attach"]) {
        const out = await tb.exec("a", [bin, tb.a.ip, mode]);
        const what = `${mode}: code ${out.code} ${out.stdout} ${out.stderr}`;
        assert.equal(out.code, 0, what);
        const r = JSON.parse(out.stdout.trim());
        // The attach case really ran the refresher (else it proves nothing).
        assert.equal(r.attached, mode === "attach" ? 1 : 0, what);
        assert.equal(r.exited, 1, what);
        assert.equal(r.status, 0, what);
      }
    } finally {
      await Deno.remove(bin).catch(() => {});
    }
  },
});
