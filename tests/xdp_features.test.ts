/**
 * XDP features: nkb_link_xdp_features reads a driver's NETDEV_XDP_ACT_* bits
 * from the generic netlink family "netdev", in the caller's namespace. On the
 * testbed's veth it answers, and the zero-copy bit is clear (veth has no
 * AF_XDP zero-copy); an interface the namespace does not have is -ENOENT (the
 * kernel says -ENODEV, which the shim maps to what nkb.h promises), and no
 * ifindex, however bogus, crashes the call.
 */

import assert from "node:assert/strict";
import { createTestbed, type Message } from "./helpers/testbed.ts";

const ENOENT = 2;
const EINVAL = 22;
/** NETDEV_XDP_ACT_XSK_ZEROCOPY (include/uapi/linux/netdev.h). */
const XSK_ZEROCOPY = 1n << 3n;
/** Not in any namespace: ifindex is an int in the kernel, and these are far from in use. */
const BOGUS = ["0x7fffffff", "0xffffffff", "0x80000000", "0"];

interface Query {
  name: string | null;
  ifindex: number;
  rc: number;
  err: string | null;
  features: string;
  bits: string[];
}

Deno.test({
  name: "xdp features: veth answers without zero-copy; a missing ifindex is ENOENT, not a crash",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using tb = await createTestbed();
    const child = tb.spawnDeno("a", "xdp_features.ts", [
      `--ifnames=${tb.a.ifname},lo`,
      `--ifindexes=${BOGUS.join(",")}`,
      "--null",
    ]);
    await child.nextWith("done", 30_000);
    const status = await child.wait(10_000);
    assert.equal(status.code, 0, child.stderr);
    const all = JSON.stringify(child.messages);
    const queries = child.messages.filter((m: Message) => "query" in m) as unknown as Query[];
    assert.equal(queries.length, 2 + BOGUS.length, all);

    // What the kernel reports is driver and version dependent: print it, assert the certain.
    const veth = queries[0];
    console.log(`veth ${veth.name}: features ${veth.features} [${veth.bits.join(" ")}]`);
    assert.equal(veth.name, tb.a.ifname, all);
    assert.equal(veth.rc, 0, all);
    assert.equal(BigInt(veth.features) & XSK_ZEROCOPY, 0n, `veth claims zero-copy: ${all}`);
    const lo = queries[1];
    console.log(`lo: features ${lo.features} [${lo.bits.join(" ")}]`);
    assert.equal(lo.rc, 0, all);
    assert.equal(BigInt(lo.features) & XSK_ZEROCOPY, 0n, all);

    for (const [i, v] of BOGUS.entries()) {
      const q = queries[2 + i];
      assert.equal(q.ifindex, Number(v), all);
      assert.equal(q.rc, -ENOENT, `ifindex ${v}: ${all}`);
      assert.equal(q.features, "0", `ifindex ${v}: output not cleared: ${all}`);
    }
    const nullOut = child.messages.find((m: Message) => "nullOut" in m);
    assert.equal(nullOut?.rc, -EINVAL, all);
  },
});
