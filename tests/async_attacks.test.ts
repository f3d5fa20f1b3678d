/**
 * Plain JavaScript against the async paths of UdpBypass (issue 13): pending receives whose
 * buffers change, re-entrant close(), 65537 pending receives, hostile addresses, lookups
 * and sends waiting for ring room raced with close() and Worker.terminate(). Each attack
 * runs in a child of its own (tests/fixtures/async_attack.ts) on a bypass socket; the
 * child must exit 0, end as asserted below, and leave no leak: its fds as before, no XDP
 * program on the interface, a fresh socket that works.
 */

import assert from "node:assert/strict";
import { createTestbed, FIXTURES, type Message, netnsEtc } from "./helpers/testbed.ts";

type Outcome = Record<string, unknown>;

const DATAGRAM = /^ok (700|1200)$/; // the ring sender's, or the kernel socket's

// What each attack must end in.
const EXPECT: Record<string, (o: Outcome) => boolean> = {
  "noop": (o) => o === null,
  // close() with the TX ring full and the link down: the drain stops at the first failed
  // doorbell (before: 1,000 of them 0.1 ms apart, about 205 ms on the event loop).
  "close-ring-full": (o) => (o.fullMs as number) < 150,
  // Detached: V8's TypeError after the datagram is taken (as Deno's); grown: the datagram;
  // shrunk to 100 bytes: cut to them; a view on a SharedArrayBuffer: the datagram (as
  // Deno's).
  "rx-buffers-change": (o) => {
    const r = o as unknown as string[];
    return r[0] === "TypeError: Cannot perform Construct on a detached ArrayBuffer" &&
      DATAGRAM.test(r[1]) &&
      r[2] === "ok 100" && DATAGRAM.test(r[3]);
  },
  // A Proxy: a TypeError (Deno's too); a subclass lying about byteLength and subarray:
  // the engine cuts its view (a subclass instance, whose own getter lies, as with Deno).
  "rx-odd-buffers": (o) =>
    /^TypeError/.test(String(o.proxied)) && o.lied === "ok 1048576" &&
    /^TypeError/.test(String(o.syncProxy)),
  // close() from a thenable's then (a later microtask): every receive settles.
  "rx-close-in-serve": (o) =>
    (o.all as string[]).every((x) => x !== "pending") && (o.calls as string[]).length > 0,
  // receive() from a then getter inside #serve, 40 times: each one settles (before: lost,
  // pending even after close()), and the socket keeps one wait.
  "rx-then-getter": (o) => o.calls === 40 && o.all === 41 && (o.extraThreads as number) <= 2,
  // 1000 over the bound: the 1000 oldest gave way (one more was pending when the bound
  // was met), all the others settle on close, memory bounded.
  "rx-many-pending": (o) => {
    const c = o.counts as Record<string, number>;
    const total = Object.values(c).reduce((a, b) => a + b, 0);
    return o.busy === 1001 && total === 65537 + 1000 && (o.growMb as number) < 512;
  },
  "rx-close-reentry": (o) => {
    const order = o.order as string[];
    return order.length === 3 && order.includes("first") &&
      order.every((x) => ["first", "ok", "Interrupted>BadResource"].includes(x)) &&
      (o.got as number) > 0 && o.after === "BadResource: Bad resource ID";
  },
  // A throwing getter's error; a payload detached by the getter: an empty datagram (as
  // Deno's); a socket closed by the getter: BadResource; by the hostname's toString: the
  // name's lookup fails first, as Deno's send looks its socket up last.
  "tx-hostile-addr": (o) =>
    o.thrower === "RangeError: getter" && o.detacher === "ok 0" && o.detacherSize === 0 &&
    o.closer === "BadResource: Socket has been closed" &&
    /^Error: failed to lookup address information/.test(String(o.stringified)),
  // Detached during the lookup: the datagram as given (Deno holds the memory); closed
  // during it: BadResource, nothing sent, not even by the socket that reused the handle.
  "tx-lookup-races": (o) =>
    o.detached === "ok 300" && o.detachedSize === 300 &&
    o.closed === "BadResource: Socket has been closed" && o.closedSize === -1,
  // close() ends a wait for ring room at once (before: at its next timer, up to 64 ms
  // later), and the socket that may reuse the handle sent nothing.
  "tx-room-close": (o) =>
    /^TxRingFullError/.test(String(o.full)) &&
    o.outcome === "BadResource: Socket has been closed" && (o.rejectMs as number) < 20 &&
    (o.closeMs as number) < 150 && o.s2Sent === 0,
  // Detached while waiting for room: the datagram as given (before: an empty one); the
  // address's getters read once (before: at every retry).
  "tx-room-detach": (o) => o.outcome === "ok 1000" && o.readsWaiting === 0 && o.readsAfter === 0,
  "worker-lookup-terminate": (o) => o.started === 8 && o.churned === true,
  // The process exits 0 with every kind of wait pending; the kernel detaches XDP.
  "exit-pending": (o) => (o.filled as number) > 0,
  // Terminated workers: no crash, and the process's own sockets still work. Their sockets
  // were never closed and stay open (with the XDP program) until the process exits: no
  // JavaScript runs at terminate() to close them (not fixed; leaks not checked).
  "worker-terminate": (o) => (o.results as string[]).every((r) => r === "warm/TxRingFullError"),
};

// Cases whose leak check cannot pass (see the case).
const LEAKY = new Set<string>([]);

Deno.test({
  name: "async attacks: pending receives, lookups and room waits never crash, hang or leak",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using tb = await createTestbed();
    // Names of its own, and a name server of the test's (tests/fixtures/slow_dns.py) that
    // resolves names starting with "slow" to side B's address in 500 ms, others to none.
    await using _etc = await netnsEtc(tb.a.ns, {
      hosts: `${tb.a.ip} nkb-self\n`,
      "resolv.conf": "nameserver 127.0.0.1\noptions timeout:2 attempts:1\n",
    });
    const dns = tb.spawn("a", ["python3", `${FIXTURES}slow_dns.py`, `--ip=${tb.b.ip}`], {
      name: "slow dns",
    });
    const port = 9500;
    // The ring's traffic: a python sender on side B, 4 datagrams every 5 ms, bounded.
    const code = `
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + 300
while time.time() < end:
    for i in range(4): s.sendto(bytes([i]) * 700, ("${tb.a.ip}", ${port}))
    time.sleep(0.005)
`;
    const sender = tb.spawn("b", ["python3", "-c", code], { name: "ring sender" });
    const failures: string[] = [];
    const only = Deno.env.get("NKB_ATTACK");
    for (const [name, ok] of Object.entries(EXPECT)) {
      if (only && only !== name) continue;
      const child = tb.spawnDeno("a", "async_attack.ts", [
        `--host=${tb.a.ip}`,
        `--peer=${tb.b.ip}`,
        `--port=${port}`,
        `--ifname=${tb.a.ifname}`,
        `--case=${name}`,
      ], { name });
      const status = await child.wait(60_000);
      const msg: Message | undefined = child.messages.find((m) => m.case === name);
      const line = `${name}: exit ${status.code} signal ${status.signal} ` +
        `${JSON.stringify({ outcome: msg?.outcome, bypass: msg?.bypass, leaks: msg?.leaks })}`;
      console.log(line);
      const leaks = msg?.leaks as Outcome | undefined;
      const clean = msg?.leaks === "exit"
        ? !await tb.xdpAttached("a")
        : leaks?.fresh === true && (LEAKY.has(name) || (leaks?.fds === 0 && leaks?.xdp === false));
      if (
        status.code !== 0 || msg === undefined || msg.bypass !== true || !clean ||
        !ok(msg.outcome as Outcome)
      ) {
        failures.push(`${line}\n${child.stderr.slice(-2000)}`);
      }
    }
    sender.kill();
    dns.kill();
    assert.deepEqual(failures, []);
  },
});
