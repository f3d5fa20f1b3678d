/**
 * Fallback rule 11: the interface changes under an active bypass socket (down
 * and up again, a lower MTU, its address removed, the device deleted). Sends
 * either succeed through the kernel or throw a typed error, never hang; the
 * socket reports why; the process stays alive and `close()` works.
 */

import assert from "node:assert/strict";
import {
  assertBypass,
  assertTyped,
  createFbTestbed,
  type Ctl,
  exchange,
  OPTS,
  type Reply,
  sh,
  show,
  sleep,
  startAgent,
  startPeer,
  type Testbed,
  TYPED_ERRORS,
  waitOperUp,
} from "./fixtures/fb_driver.ts";

const NO_HANG_MS = 1000;

/** A testbed with a bypass socket "s" on a.ip:9800 and a kernel peer "p" on b.ip:9000. */
async function setup(): Promise<[Testbed, Ctl, Ctl]> {
  const tb = await createFbTestbed();
  const ag = await startAgent(tb, "a");
  const peer = await startPeer(tb, "b");
  await peer.ok("open", { id: "p", host: tb.b.ip, port: 9000 });
  await ag.ok("new", { id: "s" });
  assertBypass(await ag.ok("bind", { id: "s", host: tb.a.ip, port: 9800 }), {
    active: true,
    ifname: tb.a.ifname,
  });
  await exchange(tb, ag, peer, {
    id: "s",
    peerSock: "p",
    to: [tb.b.ip, 9000],
    back: [tb.a.ip, 9800],
    path: "bypass",
    tag: "before",
    n: 5,
  });
  return [tb, ag, peer];
}

/** Every send of `r` either succeeded or threw a typed error, none took long. */
function assertSendsSane(r: Reply, what: string): void {
  for (const name of r.errorNames) {
    assert.ok(TYPED_ERRORS.has(name), `${what}: untyped error ${name}: ${show(r.errors)}`);
  }
  assert.ok((r.maxMs as number) < NO_HANG_MS, `${what}: a send took ${r.maxMs} ms`);
}

/** The process is alive, the socket answers, and close() works. */
async function assertAliveThenClose(ag: Ctl): Promise<void> {
  assert.equal(ag.proc.exited, null, `agent died: ${ag.proc.stderr}`);
  await ag.ok("state", { id: "s" });
  await ag.ok("close", { id: "s" });
  await ag.exit();
  const status = ag.proc.exited as Deno.CommandStatus | null;
  assert.equal(status?.code, 0, `agent exit: ${ag.proc.stderr}`);
}

Deno.test({
  name: "rule 11a: link down -> interface-down within 1 s, typed errors; up -> bypass again",
  ...OPTS,
  fn: async () => {
    const [tb, ag, peer] = await setup();
    await using _tb = tb;
    const to: [string, number] = [tb.b.ip, 9000];
    await sh(tb, "a", ["ip", "link", "set", "dev", tb.a.ifname, "down"]);
    const down = await ag.ok("poll", {
      id: "s",
      active: false,
      reason: "interface-down",
      timeoutMs: 1500,
      probe: { to, tag: "probe-down" },
    });
    assert.equal(down.matched, true, `not interface-down: ${show(down)}`);
    assert.ok((down.ms as number) <= 1200, `interface-down after ${down.ms} ms`);
    for (const e of down.probeErrors as string[]) {
      assert.ok(TYPED_ERRORS.has(e.split(":")[0]), `untyped probe error ${e}`);
    }
    const whileDown = await ag.ok("send", { id: "s", to, tag: "down", count: 10, gapMs: 10 });
    assertSendsSane(whileDown, "while down");
    assert.equal(whileDown.bypass.reason, "interface-down", show(whileDown.bypass));

    await sh(tb, "a", ["ip", "link", "set", "dev", tb.a.ifname, "up"]);
    await waitOperUp(tb, "a", tb.a.ifname);
    const up = await ag.ok("poll", {
      id: "s",
      active: true,
      timeoutMs: 3000,
      probe: { to, tag: "probe-up" },
    });
    assert.equal(up.matched, true, `not active again: ${show(up)}`);
    assertBypass(up, { active: true, ifname: tb.a.ifname });

    // Whatever a send accepted while the link was down arrives after it came back.
    const accepted = [
      ...(down.probesAccepted as string[]),
      ...whileDown.accepted,
      ...(up.probesAccepted as string[]),
    ];
    const got = await peer.ok("recv", { id: "p", max: 1000, timeoutMs: 2000, quietMs: 700 });
    const seen = new Set(got.got.map((g) => g.tag));
    const lost = accepted.filter((tag) => !seen.has(tag));
    assert.deepEqual(lost, [], `accepted but never delivered; peer got ${[...seen]}`);

    await exchange(tb, ag, peer, {
      id: "s",
      peerSock: "p",
      to,
      back: [tb.a.ip, 9800],
      path: "bypass",
      tag: "after",
      n: 5,
    });
    await assertAliveThenClose(ag);
    await peer.exit();
  },
});

Deno.test({
  name: "rule 11b: MTU lowered to 1000: a 1200-byte datagram goes through the kernel and arrives",
  ...OPTS,
  fn: async () => {
    const [tb, ag, peer] = await setup();
    await using _tb = tb;
    const to: [string, number] = [tb.b.ip, 9000];
    await sh(tb, "a", ["ip", "link", "set", "dev", tb.a.ifname, "mtu", "1000"]);
    // The shim reads the kernel's link notifications before a send (at most every
    // millisecond): a send made right after the change already follows it.
    await sleep(20);
    const st0 = (await ag.ok("state", { id: "s" })).stats;
    const s = await ag.ok("send", { id: "s", to, tag: "mtu1200", size: 1200 });
    assert.equal(s.sent, 1, show(s));
    const r = await peer.ok("recv", { id: "p", max: 1, timeoutMs: 3000 });
    assert.equal(r.got[0]?.tag, "mtu1200", show(r));
    assert.equal(r.got[0]?.len, 1200, show(r));
    assert.equal(r.got[0]?.intact, true, show(r));
    const st1 = s.stats;
    assert.equal(st1.kernelOpkts - st0.kernelOpkts, 1, `kernelOpkts ${show([st0, st1])}`);
    assert.equal(st1.opkts - st0.opkts, 0, `opkts ${show([st0, st1])}`);
    // One that fits the new MTU still takes the ring.
    const small = await ag.ok("send", { id: "s", to, tag: "mtu-small", size: 900 });
    assert.equal(small.sent, 1, show(small));
    const r2 = await peer.ok("recv", { id: "p", max: 1, timeoutMs: 3000 });
    assert.equal(r2.got[0]?.len, 900, show(r2));
    assertBypass(small, { active: true, ifname: tb.a.ifname });
    assert.equal(small.stats.opkts - st1.opkts, 1, `opkts ${show([st1, small.stats])}`);
    await assertAliveThenClose(ag);
    await peer.exit();
  },
});

Deno.test({
  name: "rule 11c: the address removed: address-removed, sends typed or via the kernel",
  ...OPTS,
  fn: async () => {
    const [tb, ag, peer] = await setup();
    await using _tb = tb;
    const to: [string, number] = [tb.b.ip, 9000];
    await sh(tb, "a", ["ip", "addr", "del", tb.a.cidr, "dev", tb.a.ifname]);
    const r = await ag.ok("poll", {
      id: "s",
      active: false,
      reason: "address-removed",
      timeoutMs: 1500,
      probe: { to, tag: "probe-gone" },
    });
    assert.equal(r.matched, true, `not address-removed: ${show(r)}`);
    for (const e of r.probeErrors as string[]) {
      assert.ok(TYPED_ERRORS.has(e.split(":")[0]), `untyped probe error ${e}`);
    }
    const st0 = (await ag.ok("state", { id: "s" })).stats;
    const s = await ag.ok("send", { id: "s", to, tag: "noaddr", count: 5, gapMs: 10 });
    assertSendsSane(s, "after the address was removed");
    assert.equal(s.stats.opkts, st0.opkts, `bypass sends after removal: ${show([st0, s.stats])}`);
    const rx = await ag.ok("recv", { id: "s", max: 1, timeoutMs: 200 });
    if (rx.error) assertTyped(rx.error, "recv");
    await assertAliveThenClose(ag);
    await peer.exit();
  },
});

Deno.test({
  name: "rule 11d: the veth deleted: interface-gone, sends throw typed errors, close works",
  ...OPTS,
  fn: async () => {
    const [tb, ag, peer] = await setup();
    await using _tb = tb;
    const to: [string, number] = [tb.b.ip, 9000];
    await sh(tb, "a", ["ip", "link", "del", "dev", tb.a.ifname]);
    const r = await ag.ok("poll", {
      id: "s",
      active: false,
      reason: "interface-gone",
      timeoutMs: 1500,
      probe: { to, tag: "probe-del" },
    });
    assert.equal(r.matched, true, `not interface-gone: ${show(r)}`);
    const s = await ag.ok("send", { id: "s", to, tag: "nodev", count: 5, gapMs: 10 });
    assertSendsSane(s, "after the veth was deleted");
    assert.equal(s.sent, 0, `sends succeeded without a device: ${show(s)}`);
    const rx = await ag.ok("recv", { id: "s", max: 1, timeoutMs: 200 });
    if (rx.error) assertTyped(rx.error, "recv");
    assert.deepEqual(rx.got, [], show(rx));
    await assertAliveThenClose(ag);
    await peer.exit();
  },
});
