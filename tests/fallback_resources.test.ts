/**
 * Fallback rule 9, resources: two bypass sockets of one process share an
 * interface and each gets its own datagrams; on a 4-queue veth, flows from 64
 * source ports (spread over the queues by the sender's flow hash) all arrive
 * through the rings. (Another process holding the interface, queue-busy, is
 * errexit.test.ts.)
 */

import assert from "node:assert/strict";
import {
  bindActive,
  createFbTestbed,
  delta,
  exchange,
  exitAll,
  FIXTURES,
  OPTS,
  show,
  SLACK,
  sockPair,
  startPair,
  udp,
} from "./fixtures/fb_driver.ts";

Deno.test({
  name: "rule 9: two bypass sockets in one process on one interface, each gets its own datagrams",
  ...OPTS,
  fn: async () => {
    await using tb = await createFbTestbed();
    const [ag, peer] = await startPair(tb);
    const socks = [["s1", 9500, "p1", 9000, "one"], ["s2", 9501, "p2", 9001, "two"]] as const;
    for (const [, , ps, peerPort] of socks) {
      await peer.ok("open", { id: ps, host: tb.b.ip, port: peerPort });
    }
    for (const [id, port] of socks) await bindActive(ag, id, tb.a.ip, port, tb.a.ifname);
    // Interleaved: both sockets stay active while the other one moves datagrams.
    for (let round = 0; round < 2; round++) {
      for (const [id, port, ps, peerPort, tag] of socks) {
        const pair = sockPair(tb, id, port, ps, peerPort);
        await exchange(tb, ag, peer, { ...pair, path: "bypass", tag: `${tag}${round}` });
      }
    }
    // Both at once: each socket gets exactly its own.
    await peer.ok("send", { id: "p1", to: tb.a.ip, port: 9500, tag: "to1", count: 20 });
    await peer.ok("send", { id: "p2", to: tb.a.ip, port: 9501, tag: "to2", count: 20 });
    for (const [id, tag] of [["s1", "to1"], ["s2", "to2"]]) {
      const r = await ag.ok("recv", { id, max: 40, timeoutMs: 3000, quietMs: 500 });
      assert.equal(r.got.length, 20, show(r));
      assert.ok(r.got.every((g) => g.tag.startsWith(`${tag}-`)), show(r));
    }
    await exitAll(ag, peer);
  },
});

Deno.test({
  name: "rule 9: 4-queue veth, 64 source ports: every datagram through the rings, none via IP",
  ...OPTS,
  fn: async () => {
    await using tb = await createFbTestbed({ numRxQueues: 4, numTxQueues: 4 });
    const queues = await tb.execOk("a", ["ls", `/sys/class/net/${tb.a.ifname}/queues`]);
    assert.match(queues, /rx-3/, queues);
    const [ag, peer] = await startPair(tb);
    await bindActive(ag, "s", tb.a.ip, 9600, tb.a.ifname);
    const sockets = 64;
    const each = 8;
    const queueStats = async (): Promise<Record<string, number>> =>
      JSON.parse(await tb.execOk("a", ["python3", `${FIXTURES}fb_ethtool.py`, tb.a.ifname]));
    const q0 = await queueStats();
    const before = await udp(tb, "a");
    const m = await peer.ok("multi", {
      host: tb.b.ip,
      to: tb.a.ip,
      port: 9600,
      sockets,
      each,
    }, 20_000);
    assert.equal(m.sent, sockets * each, show(m));
    assert.equal(m.ports, sockets, show(m));
    const r = await ag.ok("recv", {
      id: "s",
      max: sockets * each,
      timeoutMs: 10_000,
      quietMs: 2000,
    }, 20_000);
    const after = await udp(tb, "a");
    const q1 = await queueStats();
    // The premise: the flows really spread over the queues (veth counts XDP redirects per queue).
    const redirected = [0, 1, 2, 3].map((q) =>
      q1[`rx_queue_${q}_xdp_redirect`] - q0[`rx_queue_${q}_xdp_redirect`]
    );
    const unique = new Set(r.got.map((g) => g.tag));
    const ports = new Set(r.got.map((g) => g.from[1]));
    const summary = `got ${r.got.length} (unique ${unique.size}, ${ports.size} ports), stats ${
      show(r.stats)
    }`;
    assert.equal(unique.size, sockets * each, summary);
    assert.equal(ports.size, sockets, summary);
    assert.equal(r.stats.ipkts, sockets * each, summary);
    assert.equal(r.stats.kernelIpkts, 0, summary);
    const inD = delta(before, after, "InDatagrams");
    assert.ok(inD < SLACK, `Udp InDatagrams in a grew by ${inD}; ${summary}`);
    const used = redirected.filter((x) => x > 0).length;
    assert.ok(used >= 2, `XDP redirects per rx queue ${redirected}: flows did not spread`);
    await exitAll(ag, peer);
  },
});
