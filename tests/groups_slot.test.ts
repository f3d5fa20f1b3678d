/**
 * The registry's Group names a group the socket still holds, also past the 32 groups
 * the shim keeps (the kernel allows more with net.ipv4.igmp_max_memberships):
 * tests/fixtures/groups_slot.ts joins 33 groups and leaves some. Leaving the first 32 left
 * the 32nd shown (which the socket had left; it held only the 33rd); now the slot names no
 * group then (the 33rd was joined while the kept list was full), and a count of 1.
 */

import assert from "node:assert/strict";
import { createTestbed } from "./helpers/testbed.ts";

const GROUPS = 33;

Deno.test({
  name: "registry Group: a group still held, also after more joins than the shim keeps",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using tb = await createTestbed();
    await tb.execOk("a", ["sysctl", "-qw", `net.ipv4.igmp_max_memberships=${GROUPS + 7}`]);
    const dir = await Deno.makeTempDir({ prefix: "nkb-groups-reg-" });
    try {
      // Past the kept ones the writer names none: null, never one the socket left.
      const cases: [string, string | null, number][] = [
        ["1-32", null, 1],
        ["1-31", "239.77.9.32", 2],
        ["33,1-30", "239.77.9.31", 2],
        ["2-33", "239.77.9.1", 1],
      ];
      for (const [leave, group, groups] of cases) {
        const child = tb.spawnDeno("a", "groups_slot.ts", [
          `--host=${tb.a.ip}`,
          `--groups=${GROUPS}`,
          `--leave=${leave}`,
        ], { env: { NKB_REGISTRY_DIR: dir } });
        const status = await child.wait(30_000);
        assert.equal(status.code, 0, child.stderr);
        const out = child.messages.find((m) => "group" in m);
        const what = `leave ${leave}: ${JSON.stringify(out)}`;
        assert.equal(out?.groups, groups, what);
        if (group !== null) assert.ok((out?.held as string[]).includes(group), what);
        assert.equal(out?.group, group, what);
      }
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
