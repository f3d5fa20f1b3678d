/**
 * The interface rules of the fallback decision on synthetic links, for the
 * kinds this machine's kernel cannot create (bond, team, VLAN, ipvlan) as well
 * as the others: every kind gets its own reason, and a device enslaved to a
 * bond or bridge takes its master's.
 */

import assert from "node:assert/strict";
import { judgeLink } from "../src/decide.ts";
import type { LinkInfo } from "../src/netinfo.ts";

const IFF_UP = 0x1;
const IFF_LOOPBACK = 0x8;

function link(over: Partial<LinkInfo>): LinkInfo {
  return {
    ifindex: 7,
    name: "x0",
    mtu: 1500,
    flags: IFF_UP,
    rxQueues: 1,
    txQueues: 1,
    xdpProgId: 0,
    operstate: 6,
    arptype: 1,
    masterIfindex: 0,
    mac: new Uint8Array([2, 0, 0, 0, 0, 1]),
    kind: "",
    ...over,
  };
}

function reason(l: LinkInfo, masters: LinkInfo[] = []): string {
  const lookup = (i: number): LinkInfo | number => masters.find((m) => m.ifindex === i) ?? -19;
  const d = judgeLink(l, () => false, lookup);
  return d.ok ? "ok" : d.reason;
}

Deno.test("interface kinds: each gets its reason; physical and veth can bypass", () => {
  assert.equal(reason(link({ kind: "" })), "ok");
  assert.equal(reason(link({ kind: "veth" })), "ok");
  assert.equal(reason(link({ flags: IFF_UP | IFF_LOOPBACK, arptype: 772 })), "loopback");
  assert.equal(reason(link({ kind: "bond" })), "link-aggregation");
  assert.equal(reason(link({ kind: "team" })), "link-aggregation");
  assert.equal(reason(link({ kind: "bridge" })), "bridge");
  assert.equal(reason(link({ kind: "vlan" })), "vlan");
  for (const kind of ["macvlan", "macvtap", "ipvlan", "ipvtap", "tun", "vxlan", "dummy"]) {
    assert.equal(reason(link({ kind })), "virtual-interface", kind);
  }
  assert.equal(reason(link({ arptype: 65534 })), "unsupported-interface");
});

Deno.test("enslaved devices take their master's reason", () => {
  const bond = link({ ifindex: 3, name: "bond0", kind: "bond" });
  const team = link({ ifindex: 4, name: "team0", kind: "team" });
  const br = link({ ifindex: 5, name: "br0", kind: "bridge" });
  assert.equal(reason(link({ kind: "veth", masterIfindex: 3 }), [bond]), "link-aggregation");
  assert.equal(reason(link({ kind: "", masterIfindex: 4 }), [team]), "link-aggregation");
  assert.equal(reason(link({ kind: "veth", masterIfindex: 5 }), [br]), "bridge");
  assert.equal(reason(link({ kind: "veth", masterIfindex: 99 })), "virtual-interface");
});

Deno.test("state and size: down, MTU over a 4 KiB chunk, frame size and queues", () => {
  assert.equal(reason(link({ flags: 0 })), "interface-down");
  assert.equal(reason(link({ mtu: 3827 })), "mtu-too-large");
  const small = judgeLink(link({ mtu: 1500, rxQueues: 64 }), () => false, () => -19);
  assert.ok(small.ok);
  assert.equal(small.frameSize, 2048);
  assert.equal(small.queues, 8);
  const big = judgeLink(link({ mtu: 3000 }), () => false, () => -19);
  assert.ok(big.ok);
  assert.equal(big.frameSize, 4096);
});
