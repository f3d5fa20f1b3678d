/**
 * Host names (issue 13 item 5), from the program's side: tests/fixtures/names.ts runs in
 * side a with a hosts file of its own (`ip netns exec` mounts /etc/netns/NS/hosts) and a
 * name server that never answers (an address of the /24 that no host has: ARP fails).
 * - A socket listening on a name binds its address and decides bypass for it; sends to a
 *   name reach the peer through the rings (every datagram counted by the peer).
 * - sendSync and SendBatch.add refuse names at once (a TypeError), take numeric forms.
 * - send() to a name whose lookup waits on the silent server returns its promise at once
 *   and the event loop keeps ticking while the lookup runs on Deno's FFI thread pool;
 *   the send then fails as Deno's does (same class), after the resolver's timeout.
 * The differential cases (Deno and nkb side by side) are in tests/differential.test.ts.
 */

import assert from "node:assert/strict";
import { createTestbed, netnsEtc } from "./helpers/testbed.ts";

const COUNT = 20;
const PEER_PORT = 9431;
// The resolver's wait: long enough that a lookup on the event loop could not go unseen.
const RESOLVER_TIMEOUT_S = 2;
// A blocked event loop would show the resolver's whole timeout (2000 ms); this bound only
// leaves room for a loaded 2-core machine.
const MAX_GAP_MS = 250;

Deno.test({
  name: "names: listen and send by name on the bypass path; sync sends refuse names; " +
    "send() never holds the event loop during a lookup",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using tb = await createTestbed();
    const silent = tb.a.ip.replace(/\.\d+$/, ".77");
    await using _etc = await netnsEtc(tb.a.ns, {
      hosts: `127.0.0.1 localhost\n${tb.a.ip} selfhost\n${tb.b.ip} peerhost\n`,
      "resolv.conf": `nameserver ${silent}\noptions timeout:${RESOLVER_TIMEOUT_S} attempts:1\n`,
    });
    const peer = tb.spawnDeno("b", "collect.ts", [
      `--host=${tb.b.ip}`,
      `--port=${PEER_PORT}`,
      "--timeMs=30000",
    ]);
    await peer.nextWith("ready", 15_000);
    const child = tb.spawnDeno("a", "names.ts", [`--peerPort=${PEER_PORT}`, `--count=${COUNT}`]);

    const sent = await child.nextWith("sent", 30_000);
    assert.equal((sent.addr as Deno.NetAddr).hostname, tb.a.ip);
    const bypass = sent.bypass as { active: boolean; reason: string | null };
    assert.equal(bypass.active, true, JSON.stringify(bypass));
    assert.equal(sent.opkts, COUNT + 1, JSON.stringify(sent));
    assert.equal(sent.kernelOpkts, 0, JSON.stringify(sent));
    const done = await peer.nextWith("done", 15_000);
    const want = [...Array.from({ length: COUNT }, (_, i) => String(i)), "FINAL"];
    assert.deepEqual(done.got, want);

    const sync = (await child.nextWith("sync", 10_000)).sync as Record<
      string,
      { cls: string; msg: string; ms: number }
    >;
    for (const k of ["sendSyncName", "batchName"]) {
      assert.equal(sync[k].cls, "TypeError", `${k}: ${JSON.stringify(sync[k])}`);
      assert.match(sync[k].msg, /"peerhost" is a host name.*send\(\)/, k);
      // Refused without a lookup: the silent server would have taken 2 s.
      assert.ok(sync[k].ms < MAX_GAP_MS, `${k}: ${JSON.stringify(sync[k])}`);
    }
    assert.equal(sync.sendSyncNumeric.cls, "ok", JSON.stringify(sync.sendSyncNumeric));
    assert.equal(sync.batchNumeric.cls, "ok", JSON.stringify(sync.batchNumeric));

    const slow = (await child.nextWith("slow", 30_000)).slow as Record<
      string,
      {
        cls: string;
        msg: string;
        syncMs: number;
        lookupMs: number;
        maxGapMs: number;
        ticks: number;
      }
    >;
    const nkb = slow.nkb;
    console.log(JSON.stringify(slow));
    // The lookup really waited on the server (else this test proves nothing): the
    // resolver's timeout, or at least until ARP for the server failed (about 1 s after a
    // lookup that came later, measured).
    assert.ok(nkb.lookupMs >= 800, JSON.stringify(nkb));
    // ...while the event loop ran: the promise came back at once and the timer kept ticking.
    assert.ok(nkb.syncMs < MAX_GAP_MS, JSON.stringify(nkb));
    assert.ok(nkb.maxGapMs < MAX_GAP_MS, JSON.stringify(nkb));
    assert.ok(nkb.ticks >= 100, JSON.stringify(nkb));
    // And it failed as Deno's send to the same name.
    assert.equal(nkb.cls, slow.deno.cls, JSON.stringify(slow));
    assert.match(nkb.msg, /failed to lookup address information/);
    assert.equal((await child.wait(15_000)).code, 0, child.stderr);
  },
});
