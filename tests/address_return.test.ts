/**
 * The socket's address removed and added again (issue 12, item 9): the socket
 * falls back with `address-removed` while the address is gone, and when it is
 * back on the same interface (same index) the socket returns to the bypass path,
 * as it does after link down/up: `reason` is null again and datagrams both ways
 * go through the rings (ring counters rise, the kernel's UDP counters do not).
 * Also when the address comes back while the link is down: then once it is up.
 */

import assert from "node:assert/strict";
import {
  assertBypass,
  bindActive,
  createFbTestbed,
  exchange,
  OPTS,
  sh,
  show,
  sleep,
  sockPair,
  startPair,
  waitOperUp,
} from "./fixtures/fb_driver.ts";

Deno.test({
  name: "address removed, then added again: back on the bypass path, reason null",
  ...OPTS,
  fn: async () => {
    await using tb = await createFbTestbed();
    const [ag, peer] = await startPair(tb, 9000);
    await bindActive(ag, "s", tb.a.ip, 9800, tb.a.ifname);
    const pair = sockPair(tb, "s", 9800);
    await exchange(tb, ag, peer, { ...pair, path: "bypass", tag: "before", n: 5 });
    const to = [tb.b.ip, 9000];
    const addr = (op: "add" | "del") =>
      sh(tb, "a", ["ip", "addr", op, tb.a.cidr, "dev", tb.a.ifname]);
    // Deletes the address; the socket must fall back with address-removed.
    const removed = async (round: string): Promise<void> => {
      await addr("del");
      const gone = await ag.ok("poll", {
        id: "s",
        active: false,
        reason: "address-removed",
        timeoutMs: 1500,
        probe: { to, tag: `probe-gone${round}` },
      });
      assert.equal(gone.matched, true, `not address-removed (${round}): ${show(gone)}`);
    };
    // The socket must be active again within 3 s.
    const returned = async (round: string) => {
      const back = await ag.ok("poll", {
        id: "s",
        active: true,
        timeoutMs: 3000,
        probe: { to, tag: `probe-back${round}` },
      });
      assert.equal(back.matched, true, `not active again (${round}): ${show(back)}`);
      return back;
    };

    await removed("1");
    await addr("add");
    const back = await returned("1");
    assertBypass(back, { active: true, ifname: tb.a.ifname });
    assert.equal(back.bypass.reason, null, show(back.bypass));
    // Drain what the peer got meanwhile (probes), then the rings carry both directions.
    await peer.ok("recv", { id: "p", max: 1000, timeoutMs: 500, quietMs: 300 });
    await exchange(tb, ag, peer, { ...pair, path: "bypass", tag: "after", n: 20 });
    const st = await ag.ok("state", { id: "s" });
    assert.equal(st.bypass.reason, null, show(st.bypass));

    // A second round: the way back is not a one-off.
    await removed("2");
    await addr("add");
    await returned("2");
    await peer.ok("recv", { id: "p", max: 1000, timeoutMs: 500, quietMs: 300 });
    await exchange(tb, ag, peer, { ...pair, path: "bypass", tag: "after2", n: 20 });

    // A third: the address comes back while the link is down, then the link comes up.
    await removed("3");
    await sh(tb, "a", ["ip", "link", "set", "dev", tb.a.ifname, "down"]);
    await addr("add");
    await sleep(600); // more than two looks (WATCH_INTERVAL_MS 250) with the link down
    const st3 = await ag.ok("state", { id: "s" });
    assert.equal(st3.bypass.active, false, show(st3.bypass));
    await sh(tb, "a", ["ip", "link", "set", "dev", tb.a.ifname, "up"]);
    await waitOperUp(tb, "a", tb.a.ifname);
    const back3 = await returned("3");
    assert.equal(back3.bypass.reason, null, show(back3.bypass));
    // The link going down flushed a's neighbour table, and nkb never waits for ARP: one
    // datagram through the kernel makes it resolve b again (bounded wait), and the next
    // look at the destination (2 ms later) finds it.
    await ag.ok("send", { id: "s", to, tag: "warm3", count: 1 });
    for (let i = 0; i < 40 && !/lladdr/.test(await tb.neigh("a")); i++) await sleep(50);
    assert.match(await tb.neigh("a"), /lladdr/);
    await sleep(20);
    await peer.ok("recv", { id: "p", max: 1000, timeoutMs: 500, quietMs: 300 });
    await exchange(tb, ag, peer, { ...pair, path: "bypass", tag: "after3", n: 20 });

    assert.equal(ag.proc.exited, null, `agent died: ${ag.proc.stderr}`);
    await ag.ok("close", { id: "s" });
    await ag.exit();
    assert.equal((ag.proc.exited as Deno.CommandStatus | null)?.code, 0, ag.proc.stderr);
    await peer.exit();
  },
});
