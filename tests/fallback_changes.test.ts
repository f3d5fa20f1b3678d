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
  bindActive,
  createFbTestbed,
  type Ctl,
  exchange,
  OPTS,
  type Reply,
  sh,
  show,
  sleep,
  sockPair,
  startPair,
  type Testbed,
  TYPED_ERRORS,
  waitOperUp,
} from "./fixtures/fb_driver.ts";

const NO_HANG_MS = 1000;

/**
 * A testbed with a bypass socket "s" on a.ip:9800 and a kernel peer "p" on
 * b.ip:9000 (also returned: the peer's address, where "s" sends).
 */
async function setup(): Promise<[Testbed, Ctl, Ctl, [string, number]]> {
  const tb = await createFbTestbed();
  const [ag, peer] = await startPair(tb, 9000);
  await bindActive(ag, "s", tb.a.ip, 9800, tb.a.ifname);
  await exchange(tb, ag, peer, { ...sockPair(tb, "s", 9800), path: "bypass", tag: "before", n: 5 });
  return [tb, ag, peer, [tb.b.ip, 9000]];
}

/**
 * Polls socket "s" (probing with sends tagged `probeTag` to the peer) until it
 * reports inactive with `reason`, for at most 1.5 s; asserts it did.
 */
async function pollFallback(
  tb: Testbed,
  ag: Ctl,
  reason: string,
  probeTag: string,
): Promise<Reply> {
  const r = await ag.ok("poll", {
    id: "s",
    active: false,
    reason,
    timeoutMs: 1500,
    probe: { to: [tb.b.ip, 9000], tag: probeTag },
  });
  assert.equal(r.matched, true, `not ${reason}: ${show(r)}`);
  return r;
}

/** Every probe of a poll that failed threw a typed error. */
function assertProbeErrorsTyped(r: Reply): void {
  for (const e of r.probeErrors as string[]) {
    assert.ok(TYPED_ERRORS.has(e.split(":")[0]), `untyped probe error ${e}`);
  }
}

/** Every send of `r` either succeeded or threw a typed error, none took long. */
function assertSendsSane(r: Reply, what: string): void {
  for (const name of r.errorNames) {
    assert.ok(TYPED_ERRORS.has(name), `${what}: untyped error ${name}: ${show(r.errors)}`);
  }
  assert.ok((r.maxMs as number) < NO_HANG_MS, `${what}: a send took ${r.maxMs} ms`);
}

/** The agent is alive, its socket answers and close() works, it exits with 0; then the peer exits. */
async function assertAliveThenClose(ag: Ctl, peer: Ctl): Promise<void> {
  assert.equal(ag.proc.exited, null, `agent died: ${ag.proc.stderr}`);
  await ag.ok("state", { id: "s" });
  await ag.ok("close", { id: "s" });
  await ag.exit();
  const status = ag.proc.exited as Deno.CommandStatus | null;
  assert.equal(status?.code, 0, `agent exit: ${ag.proc.stderr}`);
  await peer.exit();
}

Deno.test({
  name: "rule 11a: link down -> interface-down within 1 s, typed errors; up -> bypass again",
  ...OPTS,
  fn: async () => {
    const [tb, ag, peer, to] = await setup();
    await using _tb = tb;
    await sh(tb, "a", ["ip", "link", "set", "dev", tb.a.ifname, "down"]);
    const down = await pollFallback(tb, ag, "interface-down", "probe-down");
    assert.ok((down.ms as number) <= 1200, `interface-down after ${down.ms} ms`);
    assertProbeErrorsTyped(down);
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
      ...sockPair(tb, "s", 9800),
      path: "bypass",
      tag: "after",
      n: 5,
    });
    await assertAliveThenClose(ag, peer);
  },
});

Deno.test({
  name: "rule 11b: MTU lowered to 1000: a 1200-byte datagram goes through the kernel and arrives",
  ...OPTS,
  fn: async () => {
    const [tb, ag, peer, to] = await setup();
    await using _tb = tb;
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
    await assertAliveThenClose(ag, peer);
  },
});

Deno.test({
  name: "rule 11c: the address removed: address-removed, sends typed or via the kernel",
  ...OPTS,
  fn: async () => {
    const [tb, ag, peer, to] = await setup();
    await using _tb = tb;
    await sh(tb, "a", ["ip", "addr", "del", tb.a.cidr, "dev", tb.a.ifname]);
    assertProbeErrorsTyped(await pollFallback(tb, ag, "address-removed", "probe-gone"));
    const st0 = (await ag.ok("state", { id: "s" })).stats;
    const s = await ag.ok("send", { id: "s", to, tag: "noaddr", count: 5, gapMs: 10 });
    assertSendsSane(s, "after the address was removed");
    assert.equal(s.stats.opkts, st0.opkts, `bypass sends after removal: ${show([st0, s.stats])}`);
    const rx = await ag.ok("recv", { id: "s", max: 1, timeoutMs: 200 });
    if (rx.error) assertTyped(rx.error, "recv");
    await assertAliveThenClose(ag, peer);
  },
});

Deno.test({
  name: "rule 11d: the veth deleted: interface-gone, sends throw typed errors, close works",
  ...OPTS,
  fn: async () => {
    const [tb, ag, peer, to] = await setup();
    await using _tb = tb;
    await sh(tb, "a", ["ip", "link", "del", "dev", tb.a.ifname]);
    await pollFallback(tb, ag, "interface-gone", "probe-del");
    const s = await ag.ok("send", { id: "s", to, tag: "nodev", count: 5, gapMs: 10 });
    assertSendsSane(s, "after the veth was deleted");
    assert.equal(s.sent, 0, `sends succeeded without a device: ${show(s)}`);
    const rx = await ag.ok("recv", { id: "s", max: 1, timeoutMs: 200 });
    if (rx.error) assertTyped(rx.error, "recv");
    assert.deepEqual(rx.got, [], show(rx));
    await assertAliveThenClose(ag, peer);
  },
});
