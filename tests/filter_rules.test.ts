/**
 * The XDP filter's rules, one frame each (issue 16): tests/native/filter_check.c opens the
 * shim's filter on a veth (2 receive queues) in a testbed namespace, binds the shim's own
 * AF_XDP engine to queue 0, and runs the loaded program on crafted frames with
 * BPF_PROG_TEST_RUN. Each frame is the flow-hit frame with one change, so exactly one rule
 * decides it: runt, not untagged IPv4 (802.1Q, ARP, IPv6), version/IHL not 0x45, not UDP,
 * any fragment (DF alone is none), flow miss (port, address), unicast to another MAC (either
 * half), group MACs, the queue's socket, a MAC change followed by nkb_filter_sync_mac, and a
 * deleted flow. That the rules run at all shows the program loads and passes the verifier.
 * Needs root; it fails (never skips) without.
 */

import { NKB_PROG_NAME } from "../src/netinfo.ts";
import assert from "node:assert/strict";
import { buildWithShim } from "./helpers/zig.ts";
import { FIXTURES, Testbed } from "./helpers/testbed.ts";

const PASS = 2;
const REDIRECT = 4;

/** Every case the driver must report, with the action it must see. */
const CASES: Record<string, number> = {
  "hit-no-socket": PASS, // the redirect's fallback while no socket is on the queue
  "swept-at-bind": PASS, // binding a queue deletes the keys left for it
  "hit-socket-queue-0": REDIRECT,
  "flow-held-on-other-queue": PASS, // a key for queue 1 only: queue 0's frame goes to the kernel
  "group-hit": REDIRECT,
  "group-shared": PASS, // held on more than one queue: the kernel copies it to every member
  "hit-no-socket-queue-1": PASS,
  "hit-42-bytes": REDIRECT,
  "runt-41-bytes": PASS,
  "runt-14-bytes": PASS,
  "vlan-tagged": PASS,
  "ethertype-arp": PASS,
  "ethertype-ipv6": PASS,
  "ihl-6": PASS,
  "version-6": PASS,
  "ihl-4": PASS,
  "tcp": PASS,
  "df-not-fragment": REDIRECT,
  "fragment-mf": PASS,
  "fragment-offset-1": PASS,
  "fragment-offset-max": PASS,
  "fragment-mf-and-offset": PASS,
  "flow-hit": REDIRECT,
  "flow-miss-port": PASS,
  "flow-miss-address": PASS,
  "flow-hit-other-source-port": REDIRECT,
  "mac-other-unicast-low": PASS,
  "mac-other-unicast-high": PASS,
  "mac-multicast": REDIRECT,
  "mac-broadcast": REDIRECT,
  "mac-changed-new": REDIRECT,
  "mac-changed-old": PASS,
  "flow-deleted": PASS,
};

async function buildDriver(bin: string): Promise<void> {
  const build = await buildWithShim("tests/native/filter_check.c", bin);
  assert.equal(build.code, 0, build.stderr);
}

Deno.test({
  name: "filter: every rule on one crafted frame each (BPF_PROG_TEST_RUN)",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    assert.equal(Deno.uid(), 0, "this test needs root (network namespaces, BPF)");
    const bin = await Deno.makeTempFile({ prefix: "nkb-filter-check-" });
    try {
      await buildDriver(bin);
      await using tb = await Testbed.create({
        thirdOctet: "next",
        numRxQueues: 2,
        numTxQueues: 2,
        scriptDir: FIXTURES,
      });
      const run = await tb.exec("a", [bin, tb.a.ifname, tb.a.ip], 60_000);
      const out = run.stdout;
      console.log(out.trim());
      const what = `${out}\n${run.stderr}`;
      assert.equal(run.code, 0, what);
      assert.match(out, /^filter_open: 0$/m, what);
      // The name TypeScript knows our filter by (src/netinfo.ts) is the one the shim loads.
      const loaded = new RegExp(
        `^loaded: rc 0 name ${NKB_PROG_NAME} insns \\d+ verified_insns [1-9]\\d*$`,
        "m",
      );
      assert.match(out, loaded, what);
      assert.match(out, /^engine_open queue 0: 0$/m, what);
      assert.match(out, /^add_flow queue 0: 0$/m, what);
      assert.match(out, /^add_flow queue 0 again: 0$/m, what);
      assert.match(out, /^group flows: 0$/m, what);
      assert.match(out, /^sync_mac after the change: 1$/m, what);
      const seen = new Map<string, string>();
      for (const m of out.matchAll(/^case (\S+): want (\d+) got (\d+) rc (-?\d+) (\S+)$/gm)) {
        assert.ok(!seen.has(m[1]), `case ${m[1]} twice: ${what}`);
        seen.set(m[1], m[0]);
        assert.ok(m[1] in CASES, `unexpected case ${m[1]}: ${what}`);
        // The driver's expectation must be this file's, and what the program returned.
        assert.equal(Number(m[2]), CASES[m[1]], m[0]);
        assert.equal(Number(m[3]), CASES[m[1]], m[0]);
        assert.equal(m[4], "0", m[0]);
      }
      assert.deepEqual([...seen.keys()].sort(), Object.keys(CASES).sort(), what);
      assert.match(out, new RegExp(`^cases ${Object.keys(CASES).length} failures 0$`, "m"), what);
    } finally {
      await Deno.remove(bin);
    }
  },
});
