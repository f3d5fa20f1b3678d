/**
 * Fallback rules 1-5 of the contract: where bypass is decided (socket creation,
 * bind, connect, the first send, the multicast interface choice), wildcard
 * binds and their multicast exception, one group per bypass socket, per-datagram
 * destination and size rules. Each case checks the datagrams delivered, the
 * socket's `bypass` state and the path they took (stats and /proc/net/snmp).
 */

import assert from "node:assert/strict";
import {
  addSecondLink,
  assertBypass,
  bindActive,
  bindNew,
  createFbTestbed,
  type Ctl,
  delta,
  exchange,
  exitAll,
  multicastRoutes,
  OPTS,
  seqTags,
  show,
  sockPair,
  startPair,
  tags,
  type Testbed,
  udp,
} from "./fixtures/fb_driver.ts";

// Multicast groups cannot come from 198.18.0.0/15: these are administratively scoped.
const G1 = "239.255.18.1";
const G2 = "239.255.18.2";

/**
 * Multicast routed out of both veth ends; the agent in a and the peer in b with
 * its socket "m" that sends to groups (and with `peerPort`, "p" as in startPair).
 */
async function startMulticast(tb: Testbed, peerPort?: number): Promise<[Ctl, Ctl]> {
  await multicastRoutes(tb);
  const [ag, peer] = await startPair(tb, peerPort);
  await peer.ok("open", { id: "m", host: tb.b.ip, port: 0, mcastIf: tb.b.ip });
  return [ag, peer];
}

Deno.test({
  name: "rule 1: new, bind, connect, first sendSync/send and the multicast choices each decide",
  ...OPTS,
  fn: async (t) => {
    await using tb = await createFbTestbed();
    const [ag, peer] = await startPair(tb, 9000);
    const to: [string, number] = [tb.b.ip, 9000];

    await t.step("new UdpBypass(): tracked, undecided (active false, reason null)", async () => {
      const r = await ag.ok("new", { id: "n" });
      assertBypass(r, { active: false, reason: null });
      assert.equal(r.bypass.interface, null, show(r));
    });

    await t.step("bind to the veth address: active, traffic through the rings", async () => {
      await bindActive(ag, "b", tb.a.ip, 9001, tb.a.ifname);
      await exchange(tb, ag, peer, { ...sockPair(tb, "b", 9001), path: "bypass", tag: "bind" });
    });

    await t.step("connect on an unbound socket: the kernel's local address decides", async () => {
      await ag.ok("new", { id: "c" });
      const r = await ag.ok("connect", { id: "c", host: tb.b.ip, port: 9000 });
      assertBypass(r, { active: true, ifname: tb.a.ifname });
      const addr = (await ag.ok("addr", { id: "c" })).addr as { hostname: string; port: number };
      assert.equal(addr.hostname, tb.a.ip, show(addr));
      const socks = sockPair(tb, "c", addr.port);
      await exchange(tb, ag, peer, { ...socks, to: null, path: "bypass", tag: "conn" });
    });

    for (const api of ["sync", "async"] as const) {
      await t.step(
        `first ${api} send on an unbound socket binds to the route's source`,
        async () => {
          const id = `s-${api}`;
          const r0 = await ag.ok("new", { id });
          assertBypass(r0, { active: false, reason: null });
          const s = await ag.ok("send", { id, to, tag: `first-${api}`, api });
          assert.equal(s.sent, 1, show(s));
          assertBypass(s, { active: true, ifname: tb.a.ifname });
          // The first datagram itself went through the rings.
          assert.equal(s.stats.opkts, 1, show(s));
          const got = await peer.ok("recv", { id: "p", max: 1, timeoutMs: 3000 });
          assert.deepEqual(tags(got.got), [`first-${api}`], show(got));
          const addr = (await ag.ok("addr", { id })).addr as { hostname: string; port: number };
          assert.equal(addr.hostname, tb.a.ip, show(addr));
          const socks = sockPair(tb, id, addr.port);
          await exchange(tb, ag, peer, { ...socks, path: "bypass", tag: `snd-${api}` });
        },
      );
    }

    await t.step("bound to 0.0.0.0, setMulticastInterface(veth address) decides", async () => {
      const r = await bindNew(ag, "mi", "0.0.0.0", 9005);
      assertBypass(r, { active: false, reason: "wildcard-bind" });
      const m = await ag.ok("setMulticastInterface", { id: "mi", iface: tb.a.ip });
      assertBypass(m, { active: true, ifname: tb.a.ifname });
    });

    await t.step("bound to 0.0.0.0, joinMulticastV4(group, veth address) decides", async () => {
      const r = await bindNew(ag, "mj", "0.0.0.0", 9006);
      assertBypass(r, { active: false, reason: "wildcard-bind" });
      const j = await ag.ok("join", { id: "mj", mid: "mj1", group: G1, iface: tb.a.ip });
      assertBypass(j, { active: true, ifname: tb.a.ifname });
    });
    await exitAll(ag, peer);
  },
});

Deno.test({
  name: "rule 2: 0.0.0.0 stays on the kernel; a wildcard or group bind that joins is bypassed",
  ...OPTS,
  fn: async (t) => {
    await using tb = await createFbTestbed();
    const [ag, peer] = await startMulticast(tb, 9000);

    await t.step("bind 0.0.0.0: wildcard-bind, traffic works through the kernel", async () => {
      const r = await bindNew(ag, "w", "0.0.0.0", 9010);
      assertBypass(r, { active: false, reason: "wildcard-bind" });
      await exchange(tb, ag, peer, { ...sockPair(tb, "w", 9010), path: "kernel", tag: "wild" });
    });

    await t.step("bind 0.0.0.0, sendBatch to a unicast address, then join: kernel", async () => {
      await bindNew(ag, "wb", "0.0.0.0", 9019);
      const r = await ag.ok("sendBatch", { id: "wb", to: [[tb.b.ip, 9000]], count: 2, tag: "wb" });
      assert.equal(r.result, 2, show(r));
      const j = await ag.ok("join", { id: "wb", mid: "wb-m", group: G1, iface: tb.a.ip });
      // As after sendSync: a unicast send settled it on the kernel path for good.
      assertBypass(j, { active: false, reason: "wildcard-bind" });
    });

    for (const bindHost of ["0.0.0.0", G1]) {
      await t.step(
        `bound to ${bindHost}:P, joins ${G1}: group datagrams via the rings`,
        async () => {
          const id = `j-${bindHost}`;
          const port = bindHost === G1 ? 9012 : 9011;
          await bindNew(ag, id, bindHost, port);
          const j = await ag.ok("join", { id, mid: `${id}-m`, group: G1, iface: tb.a.ip });
          assertBypass(j, { active: true, ifname: tb.a.ifname });
          const n = 20;
          const before = await udp(tb, "a");
          const s = await peer.ok("send", { id: "m", to: G1, port, tag: `grp-${port}`, count: n });
          assert.equal(s.sent, n, show(s));
          const r = await ag.ok("recv", { id, max: n, timeoutMs: 5000, quietMs: 1000 });
          const after = await udp(tb, "a");
          assert.deepEqual(tags(r.got), seqTags(`grp-${port}`, n), show(r));
          assert.equal(r.stats.ipkts, n, show(r));
          assert.equal(r.stats.kernelIpkts, 0, show(r));
          const inD = delta(before, after, "InDatagrams");
          assert.ok(inD < 5, `Udp InDatagrams in a grew by ${inD}`);
        },
      );
    }

    await t.step(
      "setMulticastInterface(veth address), send to the group: via the rings",
      async () => {
        await bindNew(ag, "tx", "0.0.0.0", 9013);
        const m = await ag.ok("setMulticastInterface", { id: "tx", iface: tb.a.ip });
        assertBypass(m, { active: true, ifname: tb.a.ifname });
        await peer.ok("open", { id: "g", host: "0.0.0.0", port: 9014, join: [G1, tb.b.ip] });
        const n = 20;
        const before = await udp(tb, "a");
        const s = await ag.ok("send", { id: "tx", to: [G1, 9014], tag: "mtx", count: n });
        assert.equal(s.sent, n, show(s));
        const r = await peer.ok("recv", { id: "g", max: n, timeoutMs: 5000, quietMs: 1000 });
        const after = await udp(tb, "a");
        assert.deepEqual(tags(r.got), seqTags("mtx", n), show(r));
        const st = (await ag.ok("state", { id: "tx" })).stats;
        assert.equal(st.opkts, n, JSON.stringify(st));
        assert.equal(st.kernelOpkts, 0, JSON.stringify(st));
        const outD = delta(before, after, "OutDatagrams");
        assert.ok(outD < 5, `Udp OutDatagrams in a grew by ${outD}`);
      },
    );
    await exitAll(ag, peer);
  },
});

Deno.test({
  name: "rule 3: one group per bypass socket; leave, setTTL, setLoopback on a bypass membership",
  ...OPTS,
  fn: async (t) => {
    await using tb = await createFbTestbed();
    const [ag, peer] = await startMulticast(tb);
    await bindNew(ag, "s", "0.0.0.0", 9020);
    const j1 = await ag.ok("join", { id: "s", mid: "g1", group: G1, iface: tb.a.ip });
    assertBypass(j1, { active: true, ifname: tb.a.ifname });
    const j2 = await ag.ok("join", { id: "s", mid: "g2", group: G2, iface: tb.a.ip });
    assertBypass(j2, { active: true, ifname: tb.a.ifname });
    const n = 10;

    await t.step("first group through the rings, second through the kernel socket", async () => {
      const st0 = (await ag.ok("state", { id: "s" })).stats;
      await peer.ok("send", { id: "m", to: G1, port: 9020, tag: "g1", count: n });
      await peer.ok("send", { id: "m", to: G2, port: 9020, tag: "g2", count: n });
      const r = await ag.ok("recv", { id: "s", max: 2 * n, timeoutMs: 5000, quietMs: 1000 });
      assert.deepEqual(tags(r.got), [...seqTags("g1", n), ...seqTags("g2", n)].sort(), show(r));
      const st1 = r.stats;
      assert.equal(st1.ipkts - st0.ipkts, n, `ipkts ${show([st0, st1])}`);
      assert.equal(st1.kernelIpkts - st0.kernelIpkts, n, `kernelIpkts ${show([st0, st1])}`);
    });

    await t.step("setTTL(7) applies to bypass sends (the peer sees TTL 7)", async () => {
      await peer.ok("open", { id: "ttl", host: "0.0.0.0", port: 9021, join: [G1, tb.b.ip] });
      await ag.ok("setTTL", { mid: "g1", ttl: 7 });
      const st0 = (await ag.ok("state", { id: "s" })).stats;
      const s = await ag.ok("send", { id: "s", to: [G1, 9021], tag: "ttl" });
      assert.equal(s.sent, 1, show(s));
      const r = await peer.ok("recv", { id: "ttl", max: 1, timeoutMs: 3000 });
      assert.deepEqual(tags(r.got), ["ttl"], show(r));
      assert.equal(r.got[0].ttl, 7, show(r));
      assert.equal(s.stats.opkts - st0.opkts, 1, `sent through the kernel: ${show(s)}`);
    });

    // What loopback then does to sends: tests/multicast_conformance.test.ts.
    await t.step("setLoopback(true) and (false) resolve; the socket stays bypassed", async () => {
      await ag.ok("setLoopback", { mid: "g1", on: true });
      await ag.ok("setLoopback", { mid: "g1", on: false });
      assertBypass(await ag.ok("state", { id: "s" }), { active: true, ifname: tb.a.ifname });
    });

    await t.step("leave() the first group: its datagrams stop arriving", async () => {
      await ag.ok("leave", { mid: "g1" });
      await peer.ok("send", { id: "m", to: G1, port: 9020, tag: "g1-left", count: 3 });
      await peer.ok("send", { id: "m", to: G2, port: 9020, tag: "g2-still" });
      const r = await ag.ok("recv", { id: "s", max: 4, timeoutMs: 1500, quietMs: 700 });
      assert.deepEqual(tags(r.got), ["g2-still"], show(r));
    });
    await exitAll(ag, peer);
  },
});

Deno.test({
  name: "rule 4: a destination on the bypass veth goes through the rings, another link's kernel",
  ...OPTS,
  fn: async () => {
    await using tb = await createFbTestbed();
    await addSecondLink(tb, "fbx");
    const [ag, peer] = await startPair(tb, 9000);
    await peer.ok("open", { id: "q", host: "198.19.1.2", port: 9001 });
    await bindActive(ag, "s", tb.a.ip, 9030, tb.a.ifname);
    await exchange(tb, ag, peer, {
      ...sockPair(tb, "s", 9030),
      path: "bypass",
      tag: "veth",
      in: false,
    });
    await exchange(tb, ag, peer, {
      ...sockPair(tb, "s", 9030, "q"),
      to: ["198.19.1.2", 9001],
      path: "kernel",
      tag: "other",
      in: false,
    });
    assertBypass(await ag.ok("state", { id: "s" }), { active: true, ifname: tb.a.ifname });
    await exitAll(ag, peer);
  },
});

Deno.test({
  name: "rule 5: no fragmentation on the rings: 3000-byte datagrams both ways via the kernel",
  ...OPTS,
  fn: async (t) => {
    await using tb = await createFbTestbed();
    const [ag, peer] = await startPair(tb, 9000);
    await bindActive(ag, "s", tb.a.ip, 9040, tb.a.ifname);
    const common = sockPair(tb, "s", 9040);

    await t.step("1472 bytes (fits the MTU): through the rings both ways", async () => {
      await exchange(tb, ag, peer, { ...common, path: "bypass", tag: "fit", n: 3, size: 1472 });
    });
    await t.step(
      "3000 bytes out: the kernel fragments it; 3000 in: the companion socket",
      async () => {
        await exchange(tb, ag, peer, { ...common, path: "kernel", tag: "big", n: 3, size: 3000 });
      },
    );
    await t.step("sizes are exact after reassembly", async () => {
      await ag.ok("send", { id: "s", to: [tb.b.ip, 9000], tag: "exact", size: 3000 });
      const r = await peer.ok("recv", { id: "p", max: 1, timeoutMs: 3000 });
      assert.equal(r.got[0]?.len, 3000, show(r));
      assert.equal(r.got[0]?.intact, true, show(r));
      await peer.ok("send", { id: "p", to: tb.a.ip, port: 9040, tag: "exact-in", size: 3000 });
      const g = await ag.ok("recv", { id: "s", max: 1, timeoutMs: 3000 });
      assert.equal(g.got[0]?.len, 3000, show(g));
      assert.equal(g.got[0]?.intact, true, show(g));
    });
    assertBypass(await ag.ok("state", { id: "s" }), { active: true, ifname: tb.a.ifname });
    await exitAll(ag, peer);
  },
});
