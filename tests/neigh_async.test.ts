/**
 * What a remote sender can do with spoofed source addresses (issue 12, item 7):
 * replies to on-link addresses that never answer ARP. nkb never waits for a
 * neighbour: such a send goes through the kernel at once (the kernel queues it
 * behind ARP) and the next hop is looked at again later, backed off.
 *
 * (a) An echo server on the bypass path, sent datagrams by a steady client while
 *     spoofed datagrams from four non-answering on-link sources arrive, echoes
 *     every one of them (a count). Before: each echo to a spoofed source stalled
 *     the server ~200 ms, its receive ring overflowed, and the client lost some.
 * (b) A 1 ms interval timer in a process sending to sixteen unresolvable on-link
 *     addresses: its largest gap stays under 150 ms. Before: at least 200 ms, one
 *     neighbour wait of one send (3,221 ms measured: a round of 16 such sends). Why
 *     150 ms holds on a loaded 2-core VM: the sends themselves take 0.1 to 0.7 ms
 *     each (16 in 0.4 to 1.9 ms); what remains is scheduling. Measured with this
 *     fixture: largest gaps 8 to 11 ms at load average 5 (other test suites running),
 *     and 15 to 79 ms (20 runs) with four more CPU-bound spinners on the two cores.
 *     150 ms is twice the worst of those and still below a single old stall.
 */

import assert from "node:assert/strict";
import { createTestbed, type Testbed, type TestbedProcess } from "./helpers/testbed.ts";

const OPTS = { sanitizeResources: false, sanitizeOps: false };

/** `count` on-link addresses of side a's /24 that nobody holds. */
function nobody(ip: string, count: number, from = 100): string[] {
  const net = ip.split(".").slice(0, 3).join(".");
  return Array.from({ length: count }, (_, i) => `${net}.${from + i}`);
}

/**
 * Starts spoof.py on side b: `rounds` rounds, `gapMs` apart, of one datagram to a's port
 * 9000 from each of `sources` non-answering on-link addresses of a's /24.
 */
async function startSpoofer(
  tb: Testbed,
  sources: number,
  rounds: number,
  gapMs: number,
): Promise<TestbedProcess> {
  return tb.spawnPython("b", "spoof.py", [
    tb.b.ifname,
    await tb.mac("b"),
    await tb.mac("a"),
    tb.a.ip,
    "9000",
    nobody(tb.a.ip, sources).join(","),
    String(rounds),
    String(gapMs),
  ]);
}

Deno.test({
  name: "echo server, steady client, spoofed non-answering sources: every datagram echoed",
  ...OPTS,
  fn: async () => {
    const M = 20_000;
    await using tb = await createTestbed();
    const server = tb.spawnDeno("a", "echo_server.ts", [
      "--mode=bypass",
      "--api=sync",
      `--host=${tb.a.ip}`,
      "--port=9000",
      "--idleMs=1500",
    ]);
    const ready = await server.nextWith("ready", 15_000);
    assert.equal((ready.bypass as { active: boolean }).active, true, JSON.stringify(ready));
    // 4 sources x 20 rounds 250 ms apart: 16 spoofed datagrams a second for 5 s, while
    // the client sends for about 4 s.
    const spoofer = await startSpoofer(tb, 4, 20, 250);
    const client = `
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(${M}):
    s.sendto(b"c%d" % i, ("${tb.a.ip}", 9000))
    if i % 5 == 4: time.sleep(0.001)
`;
    await tb.execOk("b", ["python3", "-c", client], 60_000);
    const spoofed = (await spoofer.nextWith("done", 30_000)).sent as number;
    const done = await server.nextWith("done", 60_000);
    const show = `spoofed ${spoofed}, server ${JSON.stringify(done)}`;
    console.log(`spoofed sources: echoed ${done.echoed} of ${M} + ${spoofed}`);
    assert.equal(done.error, null, show);
    assert.equal(spoofed, 4 * 20, show);
    assert.equal(done.echoed, M + spoofed, show);
    const st = done.stats as Record<string, number>;
    assert.equal(st.ipkts + st.kernelIpkts, M + spoofed, show);
    assert.ok(st.ipkts >= M, `the client's datagrams came through the ring: ${show}`);
  },
});

Deno.test({
  name: "sends to 16 unresolvable on-link addresses: a 1 ms timer's largest gap < 150 ms",
  ...OPTS,
  fn: async () => {
    await using tb = await createTestbed();
    const targets = nobody(tb.a.ip, 16);
    const tx = tb.spawnDeno("a", "unresolved_tx.ts", [
      `--host=${tb.a.ip}`,
      `--to=${targets.join(",")}`,
      "--port=9000",
      "--rounds=5",
    ]);
    const done = await tx.nextWith("done", 60_000);
    const show = JSON.stringify(done);
    console.log(`unresolved sends: ${done.sent} sent, largest timer gap ${done.maxGapMs} ms`);
    assert.equal(done.sent, 16 * 5, show);
    assert.equal((done.bypass as { active: boolean }).active, true, show);
    const st = done.stats as Record<string, number>;
    // Nobody answered: nothing went through the ring, everything through the kernel.
    assert.equal(st.opkts, 0, show);
    assert.equal(st.kernelOpkts, 16 * 5, show);
    assert.ok((done.ticks as number) > 5, `the timer ran: ${show}`);
    assert.ok((done.maxGapMs as number) < 150, `the event loop stalled: ${show}`);
    // The neighbour requests really went out: the kernel has an entry for each.
    const neigh = await tb.neigh("a");
    for (const t of targets) assert.ok(neigh.includes(t), `no neighbour entry for ${t}: ${neigh}`);
  },
});

Deno.test({
  name: "replies queued behind ARP fill the kernel socket's send buffer: send waits, as Deno's",
  ...OPTS,
  fn: async () => {
    // 400 spoofed datagrams in about 0.6 s: their replies, held by the kernel behind ARP
    // requests nobody answers until it gives up on them (~3 s), fill the companion
    // socket's send buffer (the default 208 KiB). A send then found no room: it rejected
    // with WouldBlock and the echo loop died; Deno's send waits for room, and so does
    // nkb's now (bounded: 5 s).
    await using tb = await createTestbed();
    const server = tb.spawnDeno("a", "room_echo.ts", [`--host=${tb.a.ip}`, "--port=9000"]);
    await server.nextWith("ready", 15_000);
    const spoofer = await startSpoofer(tb, 8, 50, 10);
    const spoofed = (await spoofer.nextWith("done", 30_000)).sent as number;
    const done = await server.nextWith("done", 120_000);
    const show = `spoofed ${spoofed}, server ${JSON.stringify(done)}`;
    console.log(
      `send buffer full: echoed ${done.echoed} of ${spoofed}, longest send ${
        Math.round(done.maxSendMs as number)
      } ms, longest synchronous part ${Math.round(done.maxSyncMs as number)} ms`,
    );
    assert.equal(spoofed, 8 * 50, show);
    assert.equal(done.error, null, show);
    assert.equal(done.echoed, spoofed, show);
    const st = done.stats as Record<string, number>;
    assert.equal(st.kernelOpkts, spoofed, show);
    // Some send did wait for room (else this test shows nothing).
    assert.ok((done.maxSendMs as number) > 100, show);
    // And no send held the event loop meanwhile: the kernel socket's sendto blocked for its
    // 1 s SO_SNDTIMEO before it was made MSG_DONTWAIT (1,025 ms measured). The bound is the
    // timer test's: far below one blocked send, robust on a loaded 2-core VM.
    assert.ok((done.maxSyncMs as number) < 150, show);
    assert.equal((await server.wait(10_000)).code, 0, server.stderr);
  },
});
