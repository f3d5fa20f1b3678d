/**
 * The event loop never stalls, seen from the program's side (issue 13, item 10):
 * tests/fixtures/event_loop.ts runs a 1 ms interval timer while it sends to on-link
 * addresses nobody answers ARP for (sendSync bursts, a tight `await send()` loop),
 * mixes those with sends to a resolvable peer while receives are pending, sends to
 * hundreds of new destinations, sends while its interface goes down and up, and
 * joins and leaves a group. Every gap between two ticks stays under 5 ms (five periods
 * of the timer, on a machine whose 1 ms timer is late: see below), and every
 * datagram the program sent is counted: through the ring (`opkts`) or the kernel
 * (`kernelOpkts`); a refused one threw (and `txFull` counts ring refusals). Datagrams
 * the kernel holds behind an ARP request that fails are discarded by the kernel, as
 * for any kernel socket (Deno's too): they were counted as sent (`kernelOpkts`, the
 * kernel's UdpOutDatagrams), and the kernel counts the failed neighbour (arp_cache
 * `res_failed`, host-wide), not the datagrams.
 *
 * Allocation: the workload makes its addresses and payload once; the library's own
 * (one promise per send) gave scavenges only, p90 0.34 ms, longest 2.7 ms (97 in a run).
 * A pending `receive()` in receive mode 1 (the default) spins a thread-pool thread:
 * on a 2-core machine with other load that thread and the event loop's compete, and
 * the mixed phase's gaps are longer than in mode 0 (22 against 3-4 ms, one run each).
 *
 * Setup (`listenDatagram` on a bypass interface: AF_XDP socket, UMEM, XDP attach) is
 * synchronous, as `Deno.listenDatagram` is: it is measured and reported, with Deno's
 * for comparison, not held to 5 ms.
 *
 * The timer bound is tight on purpose. A 2-core VM's scheduler (or a scavenge) now and
 * then delays one tick past it with no library call longer than 2 ms, while a library
 * that blocks the loop does so in every run: so each phase must keep every tick within
 * the bound in at least one of up to three runs (each run's counts are all checked, and
 * each phase's distribution printed).
 *
 * The bound is five periods of the timer as the machine keeps it: 5 ms, or five times
 * the median gap of the same run's `idle` phase (the timer alone, no library call) where
 * that is longer than 1 ms. One VM this ran on fired an idle 1 ms interval every 2.1 ms
 * (median; plain Deno, nothing else running: up to 12-13 ms late in 5 s), and a burst of 16
 * `sendSync` calls (2.8 ms) was followed by its first tick 5.1 ms after it began; another
 * kept 1.0 ms. A library that blocks the loop on the network (an ARP wait, DNS, a setup
 * retry) stalls it for tens or hundreds of milliseconds on either.
 */

import assert from "node:assert/strict";
import { createTestbed, type Message } from "./helpers/testbed.ts";

const OPTS = { sanitizeResources: false, sanitizeOps: false };
const BOUND_MS = 5;
/** The bound in periods of the timer as the machine keeps it (the idle phase's median). */
const BOUND_PERIODS = 5;

/** `count` on-link addresses of `ip`'s /24 that nobody holds. */
function nobody(ip: string, count: number, from = 100): string[] {
  const net = ip.split(".").slice(0, 3).join(".");
  return Array.from({ length: count }, (_, i) => `${net}.${from + i}`);
}

function show(m: Message): string {
  return JSON.stringify(m);
}

/** Every datagram the program sent left through the ring or the kernel; refusals threw. */
function assertCounted(m: Message, sent: number): void {
  const st = m.stats as Record<string, number>;
  assert.equal(st.opkts + st.kernelOpkts, sent, `sent != opkts + kernelOpkts: ${show(m)}`);
  // Every refusal the program saw was counted; an async send that found the ring full
  // waited for room (as Deno's send waits), and its tries are counted too.
  assert.ok(st.txFull >= (m.ringFull as number), `ring refusals > txFull: ${show(m)}`);
  assert.equal(m.other, 0, `unexpected send errors: ${show(m)}`);
}

// Timing is checked after every count, all phases at once: each run's phases over the
// bound, with their distributions.
const overBound = new Map<string, string>();

let runBoundMs = BOUND_MS;

function assertTicks(m: Message): void {
  assert.ok((m.ticks as number) > 10, `the timer ran: ${show(m)}`);
  if ((m.maxGapMs as number) >= runBoundMs) {
    overBound.set(
      m.phase as string,
      `max ${m.maxGapMs} ms (bound ${runBoundMs}), ${JSON.stringify(m.gaps)}, ${
        JSON.stringify(m.hist)
      }, longest call ${m.maxCallMs ?? "-"} ms`,
    );
  }
}

const TIMED = [
  "sendSync-unresolved",
  "send-unresolved",
  "mixed",
  "first-send",
  "link-flap",
  "multicast",
];
const RUNS = 3;

Deno.test({
  name:
    "event loop: a 1 ms timer keeps ticking within 5 of its periods through every networked call",
  ...OPTS,
  fn: async () => {
    const within = new Set<string>();
    const misses: string[] = [];
    for (let run = 1; run <= RUNS && within.size < TIMED.length; run++) {
      overBound.clear();
      await runOnce();
      for (const phase of TIMED) {
        const why = overBound.get(phase);
        if (why === undefined) within.add(phase);
        else misses.push(`run ${run}, ${phase}: ${why}`);
      }
      if (misses.length > 0) console.log(`over the bound so far:\n${misses.join("\n")}`);
    }
    const never = TIMED.filter((phase) => !within.has(phase));
    assert.deepEqual(
      never,
      [],
      `ticks >= ${BOUND_PERIODS} timer periods (${BOUND_MS} ms or more) apart in every run:\n${
        misses.join("\n")
      }`,
    );
  },
});

async function runOnce(): Promise<void> {
  {
    await using tb = await createTestbed();
    const octet = tb.a.ip.split(".")[2];
    const farNet = `198.19.${octet}`;
    // Off-link destinations through the peer: first sends look up a route with a gateway.
    await tb.execOk("a", ["ip", "route", "add", `${farNet}.0/24`, "via", tb.b.ip]);
    const port = 9000;
    // The peer sends to us for the whole run (the mixed phase's pending receives take them).
    const feeder = tb.spawn("b", [
      "python3",
      "-c",
      `
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + 30
n = 0
while time.time() < end and n < 100000:
    s.sendto(b"x" * 32, ("${tb.a.ip}", ${port}))
    n += 1
    time.sleep(0.001)
`,
    ]);
    const proc = tb.spawnDeno("a", "event_loop.ts", [
      `--host=${tb.a.ip}`,
      `--peer=${tb.b.ip}`,
      `--port=${port}`,
      `--nobody=${nobody(tb.a.ip, 16).join(",")}`,
      `--firstNet=${farNet}`,
      `--ifname=${tb.a.ifname}`,
      "--group=239.1.2.3",
      "--phaseMs=1000",
    ]);
    const phases = new Map<string, Message>();
    for (
      const name of [
        "setup",
        "idle",
        "sendSync-unresolved",
        "send-unresolved",
        "mixed",
        "first-send",
        "deno-send",
        "link-flap",
        "multicast",
      ]
    ) {
      const m = await proc.nextWith("phase", 60_000);
      assert.equal(m.phase, name, show(m));
      phases.set(name, m);
      console.log(`${name}: ${show(m)}`);
    }
    const done = await proc.nextWith("done", 30_000);
    assert.equal((await proc.wait(10_000)).code, 0, proc.stderr);
    feeder.kill("SIGKILL");

    const setup = phases.get("setup")!;
    assert.equal(setup.active, true, show(setup));
    const idle = phases.get("idle")!;
    assert.ok((idle.ticks as number) > 10, show(idle));
    const period = (idle.gaps as Record<string, number>).p50;
    runBoundMs = Math.round(BOUND_PERIODS * Math.max(BOUND_MS / BOUND_PERIODS, period) * 100) / 100;

    // Nobody answers: everything through the kernel, which holds the datagrams behind ARP
    // until it gives up; once they fill the socket's send buffer, sendSync throws
    // WouldBlock (the program sees each refusal), as Deno's kernel socket would refuse.
    const sync = phases.get("sendSync-unresolved")!;
    assertCounted(sync, sync.sent as number);
    assert.equal((sync.stats as Record<string, number>).opkts, 0, show(sync));
    assert.ok((sync.sent as number) > 0, show(sync));
    assertTicks(sync);

    // The same loop with `await send()`: a full send buffer is waited out on timers.
    const send = phases.get("send-unresolved")!;
    assertCounted(send, send.sent as number);
    assertTicks(send);

    const mixed = phases.get("mixed")!;
    const toPeer = mixed.peer as Record<string, number>;
    assertCounted(mixed, (mixed.sent as number) + toPeer.sent);
    assert.ok(toPeer.sent > 0 && (mixed.received as number) > 0, show(mixed));
    assert.equal(toPeer.other, 0, show(mixed));
    assertTicks(mixed);

    // 200 off-link destinations (through the peer, resolved) and 200 new ports of the
    // peer: each a route and neighbour lookup, all through the ring.
    const first = phases.get("first-send")!;
    assertCounted(first, 400);
    assert.equal((first.stats as Record<string, number>).opkts, 400, show(first));
    assertTicks(first);

    // A tight `await send()` loop to the peer while the link goes down and up: the ring
    // keeps what it accepted, a full ring refuses (TxRingFullError, counted in txFull),
    // and the loop never holds the event loop (a loop of sends that resolve at once
    // yields, as Deno's does).
    const flap = phases.get("link-flap")!;
    assertCounted(flap, flap.sent as number);
    assert.ok((flap.sent as number) > 1000, show(flap));
    assertTicks(flap);
    assert.equal((flap.bypass as { active: boolean }).active, true, show(flap));

    const mc = phases.get("multicast")!;
    assert.ok((mc.calls as number) > 10, show(mc));
    assertTicks(mc);

    assert.equal((done.bypass as { active: boolean }).active, true, show(done));
  }
}
