/**
 * Multicast and broadcast as the kernel delivers them (issue 13 items 3, 4, 8, 9 and
 * loopback): each case runs the same traffic against a Deno.listenDatagram socket and an
 * nkb socket bound and joined the same way, side by side in one namespace on two ports,
 * and asserts they got the same datagrams, that the nkb socket stayed on the bypass
 * path, and which of its datagrams came through the ring (tests/fixtures/mcast_agent.ts).
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  createFbTestbed,
  Ctl,
  exitAll,
  FIXTURES,
  multicastRoutes,
  OPTS,
  type Reply,
  show,
  type Testbed,
} from "./fixtures/fb_driver.ts";
import type { Side } from "../examples/testbed.ts";

// Administratively scoped (multicast cannot come from 198.18.0.0/15).
const G = "239.255.19.1";
const OTHER_G = "239.255.19.2";
const N = 8;
// The far side's socket for datagrams sent by the receivers.
const REPLY_PORT = 9099;
const RECV = { timeoutMs: 4000, quietMs: 700 };

async function startMcast(tb: Testbed, s: Side): Promise<Ctl> {
  const cmd = [Deno.execPath(), "run", "-A", "--unstable-net", "--no-lock"];
  const proc = tb.spawn(s, [...cmd, `${FIXTURES}mcast_agent.ts`], {
    stdin: true,
    name: `mcast_agent@${s}`,
  });
  await proc.nextWith("ready", 20_000);
  return new Ctl(proc);
}

/** The directed broadcast address of the subnet of `cidr` ("198.18.7.1/24" -> 198.18.7.255). */
function directedBroadcast(cidr: string): string {
  const [ip, len] = cidr.split("/");
  const octets = ip.split(".").map(Number);
  const v = ((octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3]) >>> 0;
  const host = Number(len) === 0 ? 0xffffffff : (2 ** (32 - Number(len)) - 1);
  const b = (v | host) >>> 0;
  return [b >>> 24, (b >>> 16) & 255, (b >>> 8) & 255, b & 255].join(".");
}

/** How many datagrams of each tag prefix ("grp-3" counts as "grp"). */
function counts(r: Reply): Record<string, number> {
  const out: Record<string, number> = {};
  for (const g of r.got) {
    const label = g.tag.replace(/-\d+$/, "");
    out[label] = (out[label] ?? 0) + 1;
  }
  return out;
}

/** Multicast routes on both sides, a receiving agent in a and a sending one in b. */
async function agents(tb: Testbed): Promise<[Ctl, Ctl]> {
  await multicastRoutes(tb);
  return [await startMcast(tb, "a"), await startMcast(tb, "b")];
}

interface Kind {
  name: string;
  host: (tb: Testbed) => string;
  iface: (tb: Testbed) => string;
  /** What the kernel gives such a socket of the four sends, N each. */
  want: string[];
  /** Of those, what comes through the ring. */
  ring: string[];
  /** Watch the socket over a few watch intervals after joining. */
  watchMs: number;
}

const KINDS: Kind[] = [
  {
    name: "unicast-bound, joined on its address",
    host: (tb) => tb.a.ip,
    iface: (tb) => tb.a.ip,
    want: ["uni"],
    ring: ["uni"],
    watchMs: 0,
  },
  {
    name: "group-bound, joined on the veth address",
    host: () => G,
    iface: (tb) => tb.a.ip,
    want: ["grp"],
    ring: ["grp"],
    watchMs: 1200,
  },
  {
    name: "group-bound, joined on 0.0.0.0",
    host: () => G,
    iface: () => "0.0.0.0",
    want: ["grp"],
    ring: ["grp"],
    watchMs: 1200,
  },
  {
    name: "bound to another group, joined on the veth address",
    host: () => OTHER_G,
    iface: (tb) => tb.a.ip,
    want: [],
    ring: [],
    watchMs: 600,
  },
  {
    name: "wildcard-bound, joined on 0.0.0.0",
    host: () => "0.0.0.0",
    iface: () => "0.0.0.0",
    want: ["dbc", "grp", "lbc", "uni"],
    ring: ["grp"],
    watchMs: 1200,
  },
  {
    name: "wildcard-bound, joined on the veth address",
    host: () => "0.0.0.0",
    iface: (tb) => tb.a.ip,
    want: ["dbc", "grp", "lbc", "uni"],
    ring: ["grp"],
    watchMs: 0,
  },
];

interface Case {
  tb: Testbed;
  rx: Ctl;
  tx: Ctl;
  kind: Kind;
  pDeno: number;
  pNkb: number;
  dbc: string;
}

// One kind of receiver: a Deno socket on pDeno and an nkb socket on pNkb, same traffic.
async function oneKind({ tb, rx, tx, kind, pDeno, pNkb, dbc }: Case): Promise<void> {
  const host = kind.host(tb);
  const iface = kind.iface(tb);
  await rx.ok("open", { id: `d${pDeno}`, kind: "deno", host, port: pDeno });
  await rx.ok("open", { id: `n${pNkb}`, kind: "nkb", host, port: pNkb });
  await rx.ok("join", { id: `d${pDeno}`, mid: `d${pDeno}`, group: G, iface });
  const j = await rx.ok("join", { id: `n${pNkb}`, mid: `n${pNkb}`, group: G, iface });
  assert.equal(j.bypass.active, true, `after join: ${show(j)}`);
  if (kind.watchMs > 0) {
    // Longer than a few link-watch intervals (250 ms), looking at `bypass` meanwhile.
    const w = await rx.ok("watch", { id: `n${pNkb}`, ms: kind.watchMs });
    assert.ok(Number(w.looks) >= 10, show(w));
    assert.equal(w.inactive, 0, `fell off the bypass path: ${show(w)}`);
  }
  const st0 = (await rx.ok("state", { id: `n${pNkb}` })).stats;
  const dests = [["grp", G], ["uni", tb.a.ip], ["lbc", "255.255.255.255"], ["dbc", dbc]];
  for (const p of [pDeno, pNkb]) {
    for (const [tag, to] of dests) {
      const s = await tx.ok("send", { id: "s", to, port: p, tag, count: N });
      assert.equal(s.sent, N, `send ${tag} to ${to}:${p}: ${show(s)}`);
    }
  }
  const rd = await rx.ok("recv", { id: `d${pDeno}`, max: 4 * N, ...RECV });
  const rn = await rx.ok("recv", { id: `n${pNkb}`, max: 4 * N, ...RECV });
  const want = Object.fromEntries(kind.want.map((k) => [k, N]));
  assert.deepEqual(counts(rd), want, `Deno's socket (the kernel's answer): ${show(rd)}`);
  assert.deepEqual(counts(rn), counts(rd), `nkb against Deno: ${show(rn)}`);
  assert.equal(rn.bypass.active, true, `after traffic: ${show(rn.bypass)}`);
  const ring = kind.ring.length * N;
  assert.equal(rn.stats.ipkts - st0.ipkts, ring, `through the ring: ${show(rn.stats)}`);
  assert.equal(
    rn.stats.kernelIpkts - st0.kernelIpkts,
    (kind.want.length - kind.ring.length) * N,
    `through the kernel socket: ${show(rn.stats)}`,
  );
  // Replies: unicast to b and to the group, from the address the kernel would pick (a
  // group-bound socket's source is not its group).
  for (const [id, p] of [[`d${pDeno}`, pDeno], [`n${pNkb}`, pNkb]] as const) {
    const u = await rx.ok("send", { id, to: tb.b.ip, port: REPLY_PORT, tag: `u${p}`, count: N });
    const g = await rx.ok("send", { id, to: G, port: REPLY_PORT, tag: `g${p}`, count: N });
    assert.equal(u.sent + g.sent, 2 * N, show([u, g]));
  }
  const back = await tx.ok("recv", { id: "r", max: 4 * N, ...RECV });
  const from = (p: number, kind: string) =>
    back.got.filter((x) => x.tag.startsWith(`${kind}${p}-`)).map((x) => x.from[0]);
  for (const k of ["u", "g"]) {
    assert.deepEqual(from(pDeno, k), Array(N).fill(tb.a.ip), `Deno's ${k}: ${show(back)}`);
    assert.deepEqual(from(pNkb, k), from(pDeno, k), `nkb's ${k} against Deno's: ${show(back)}`);
  }
  const sent = (await rx.ok("state", { id: `n${pNkb}` })).stats;
  assert.equal(sent.opkts - rn.stats.opkts, 2 * N, `replies through the ring: ${show(sent)}`);
  // Both leave (with the interface they joined on): the group stops for both.
  await rx.ok("leave", { mid: `d${pDeno}` });
  await rx.ok("leave", { mid: `n${pNkb}` });
  for (const p of [pDeno, pNkb]) {
    await tx.ok("send", { id: "s", to: G, port: p, tag: "left" });
  }
  const ld = await rx.ok("recv", { id: `d${pDeno}`, max: 1, ...RECV });
  const ln = await rx.ok("recv", { id: `n${pNkb}`, max: 1, ...RECV });
  assert.deepEqual([counts(ln), counts(ld)], [{}, {}], `after leave: ${show([ln, ld])}`);
  assert.equal(ln.stats.ipkts, rn.stats.ipkts, `after leave: ${show(ln.stats)}`);
}

Deno.test({
  name: "multicast: unicast-, group- and wildcard-bound sockets get what Deno's get, via the ring",
  ...OPTS,
  fn: async (t) => {
    await using tb = await createFbTestbed();
    const [rx, tx] = await agents(tb);
    const dbc = directedBroadcast(tb.a.cidr);
    // A sender bound to b's address: a wildcard one has no route to 255.255.255.255.
    await tx.ok("open", { id: "s", kind: "deno", host: tb.b.ip, port: 0 });
    await tx.ok("open", { id: "r", kind: "deno", host: "0.0.0.0", port: REPLY_PORT });
    await tx.ok("join", { id: "r", mid: "r", group: G, iface: tb.b.ip });
    let port = 9100;
    for (const kind of KINDS) {
      const [pDeno, pNkb] = [port, port + 1];
      port += 2;
      await t.step(kind.name, async () => {
        try {
          await oneKind({ tb, rx, tx, kind, pDeno, pNkb, dbc });
        } finally {
          // A failed step must not leave its memberships to the next (IP_MULTICAST_ALL).
          await rx.call("close", { id: `d${pDeno}` });
          await rx.call("close", { id: `n${pNkb}` });
        }
      });
    }
    await exitAll(rx, tx);
  },
});

Deno.test({
  name: "multicast loopback as Deno's: on, group sends loop back via the kernel; off, the ring",
  ...OPTS,
  fn: async () => {
    await using tb = await createFbTestbed();
    const [rx, tx] = await agents(tb);
    const [pDeno, pNkb] = [9200, 9201];
    const socks = [["d", pDeno, "deno"], ["n", pNkb, "nkb"]] as const;
    for (const [id, p, kind] of socks) {
      await rx.ok("open", { id, kind, host: "0.0.0.0", port: p });
      const j = await rx.ok("join", { id, mid: id, group: G, iface: "0.0.0.0" });
      if (kind === "nkb") assert.equal(j.bypass.active, true, show(j));
      // The far side's receivers of each socket's group and unicast sends.
      await tx.ok("open", { id, kind: "deno", host: "0.0.0.0", port: p });
      await tx.ok("join", { id, mid: id, group: G, iface: tb.b.ip });
    }
    // Each round: both sockets send N to the group on their own port (and N unicast to
    // b), then read what came back to themselves; the far side must get everything.
    const round = async (tag: string, loop: boolean | null) => {
      const self: Record<string, number> = {};
      for (const [id, p] of socks) {
        if (loop !== null) await rx.ok("setLoopback", { mid: id, on: loop });
        const g = await rx.ok("send", { id, to: G, port: p, tag: `${tag}g`, count: N });
        const u = await rx.ok("send", { id, to: tb.b.ip, port: p, tag: `${tag}u`, count: N });
        assert.equal(g.sent + u.sent, 2 * N, show([g, u]));
        const far = await tx.ok("recv", { id, max: 2 * N, ...RECV });
        assert.deepEqual(counts(far), { [`${tag}g`]: N, [`${tag}u`]: N }, show(far));
        self[id] = (await rx.ok("recv", { id, max: N, ...RECV })).got.length;
      }
      return self;
    };
    const stats = async () => (await rx.ok("state", { id: "n" })).stats;

    // Deno's listen default: loopback false. nkb's default must be the same.
    let st0 = await stats();
    const off = await round("off", null);
    assert.deepEqual(off, { d: 0, n: 0 }, "no loopback by default");
    let st1 = await stats();
    assert.equal(st1.opkts - st0.opkts, 2 * N, `group and unicast via the ring: ${show(st1)}`);
    assert.equal(st1.kernelOpkts - st0.kernelOpkts, 0, show(st1));

    st0 = st1;
    const on = await round("on", true);
    assert.deepEqual(on, { d: N, n: N }, "setLoopback(true): each socket sees its own sends");
    st1 = await stats();
    assert.equal(st1.kernelOpkts - st0.kernelOpkts, N, `group via the kernel: ${show(st1)}`);
    assert.equal(st1.opkts - st0.opkts, N, `unicast still via the ring: ${show(st1)}`);
    assert.equal((await rx.ok("state", { id: "n" })).bypass.active, true);

    st0 = st1;
    const offAgain = await round("back", false);
    assert.deepEqual(offAgain, { d: 0, n: 0 }, "setLoopback(false): none again");
    st1 = await stats();
    assert.equal(st1.opkts - st0.opkts, 2 * N, `back on the ring: ${show(st1)}`);
    assert.equal(st1.kernelOpkts - st0.kernelOpkts, 0, show(st1));
    await exitAll(rx, tx);
  },
});

Deno.test({
  name: "broadcast sends succeed and reach local and far sockets as Deno's do",
  ...OPTS,
  fn: async () => {
    await using tb = await createFbTestbed();
    const [rx, tx] = await agents(tb);
    const dbc = directedBroadcast(tb.a.cidr);
    // Senders: bound to a's address (the only way to 255.255.255.255 without a default
    // route), and bound to the wildcard (directed broadcast only).
    const senders = [
      { id: "d", kind: "deno", host: tb.a.ip, port: 9300, q: 9310 },
      { id: "n", kind: "nkb", host: tb.a.ip, port: 9301, q: 9311 },
      { id: "dw", kind: "deno", host: "0.0.0.0", port: 9302, q: 9312 },
      { id: "nw", kind: "nkb", host: "0.0.0.0", port: 9303, q: 9313 },
    ];
    for (const s of senders) {
      await rx.ok("open", { id: s.id, kind: s.kind, host: s.host, port: s.port });
      await rx.ok("open", { id: `l${s.q}`, kind: "deno", host: "0.0.0.0", port: s.q });
      await tx.ok("open", { id: `f${s.q}`, kind: "deno", host: "0.0.0.0", port: s.q });
    }
    const got: Record<string, unknown> = {};
    for (const s of senders) {
      const st0 = (await rx.ok("state", { id: s.id })).stats;
      const l = await rx.ok("send", { id: s.id, to: "255.255.255.255", port: s.q, tag: "lbc" });
      const d = await rx.ok("send", { id: s.id, to: dbc, port: s.q, tag: "dbc", count: N });
      const local = counts(await rx.ok("recv", { id: `l${s.q}`, max: N + 1, ...RECV }));
      const far = counts(await tx.ok("recv", { id: `f${s.q}`, max: N + 1, ...RECV }));
      // Error classes compared; messages differ (nkb names the errno, Deno the OS text).
      const lbcErrors = (l.errors ?? []).map((e) => e.name);
      got[s.id] = { lbcSent: l.sent, lbcErrors, dbcSent: d.sent, local, far };
      if (s.kind === "nkb") {
        const st1 = (await rx.ok("state", { id: s.id })).stats;
        const n = Number(l.sent) + N;
        assert.equal(st1.kernelOpkts - st0.kernelOpkts, n, `via the kernel: ${show(st1)}`);
        assert.equal(st1.opkts - st0.opkts, 0, show(st1));
      }
    }
    const all = { lbc: 1, dbc: N };
    assert.deepEqual(got.d, {
      lbcSent: 1,
      lbcErrors: [],
      dbcSent: N,
      local: all,
      far: all,
    }, show(got));
    assert.deepEqual(got.n, got.d, `bound to a's address: ${show(got)}`);
    assert.deepEqual(got.nw, got.dw, `bound to the wildcard: ${show(got)}`);
    // Deno's wildcard socket has no route to 255.255.255.255 here: the directed one works.
    assert.deepEqual(got.dw, {
      lbcSent: 0,
      lbcErrors: ["NetworkUnreachable"],
      dbcSent: N,
      local: { dbc: N },
      far: { dbc: N },
    }, show(got));
    assert.equal((await rx.ok("state", { id: "n" })).bypass.active, true);
    // A wildcard socket that sent broadcasts still waits for its multicast interface.
    const w = await rx.ok("state", { id: "nw" });
    assert.equal(w.bypass.reason, "wildcard-bind", show(w));
    const j = await rx.ok("join", { id: "nw", mid: "nw", group: G, iface: tb.a.ip });
    assert.equal(j.bypass.active, true, `joined after broadcasts: ${show(j)}`);
    await exitAll(rx, tx);
  },
});
