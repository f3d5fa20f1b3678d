/**
 * node:dgram under the pre-load keeps a send's payload as it was at the call (Deno's
 * handle copies it): a program that reuses one Buffer for every send of a connected socket
 * (tests/fixtures/dgram_reuse.ts) gets each datagram with the counter it wrote before that
 * send, also for the sends that wait for room. A slow qdisc (tbf, 2 mbit/s, a long queue)
 * on the namespace's link fills the socket's send buffer, so about half the sends wait.
 * Before the fix, those (101 of 200) went out with the buffer's content after the loop.
 */

import assert from "node:assert/strict";
import { createTestbed, pythonEcho } from "./helpers/testbed.ts";
import { ROOT } from "./helpers/zig.ts";

const ECHO_PORT = 7;
const COUNT = 200;
const ECHO = pythonEcho(ECHO_PORT);

interface Outcome {
  received: number;
  distinct: number;
  after: number;
  callbacks: number;
  errors: number;
}

async function run(preload: boolean, extra: string[] = []): Promise<Record<string, unknown>> {
  await using tb = await createTestbed();
  // Queued datagrams hold the socket's send buffer: it fills, and sends wait for room.
  await tb.execOk("a", [
    "tc",
    "qdisc",
    "add",
    "dev",
    tb.a.ifname,
    "root",
    "tbf",
    "rate",
    "2mbit",
    "burst",
    "3000",
    "limit",
    "2000000",
  ]);
  const echo = tb.spawn("b", ["python3", "-c", ECHO], { name: "echo@b" });
  await echo.next((m) => m.raw === "ready", 10_000);
  const child = tb.spawn("a", [
    Deno.execPath(),
    "run",
    "--no-lock",
    "--allow-net",
    "--allow-read",
    ...(preload ? ["--allow-ffi", "--preload", `${ROOT}preload.ts`] : []),
    `${ROOT}tests/fixtures/dgram_reuse.ts`,
    `--peer=${tb.b.ip}`,
    `--echo=${ECHO_PORT}`,
    `--count=${COUNT}`,
    ...extra,
  ], { name: `dgram_reuse.ts${preload ? " (pre-loaded)" : ""}` });
  const status = await child.wait(60_000);
  assert.equal(status.code, 0, child.stderr);
  const out = child.messages.find((m) => "received" in m || "codes" in m);
  assert.ok(out !== undefined, child.stderr);
  return out;
}

Deno.test({
  name: "node:dgram: a reused Buffer's sends that wait for room carry what they had at the call",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    for (const preload of [false, true]) {
      const o = await run(preload) as unknown as Outcome;
      console.log(`${preload ? "pre-loaded" : "plain"}: ${JSON.stringify(o)}`);
      assert.deepEqual(o, {
        received: COUNT,
        distinct: COUNT,
        after: 0,
        callbacks: COUNT,
        errors: 0,
      });
    }
  },
});

Deno.test({
  name: "node:dgram: sends still waiting for room when the socket closes fail as Deno's (UNKNOWN)",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    for (const preload of [false, true]) {
      const o = await run(preload, ["--close-ms=100"]);
      console.log(`${preload ? "pre-loaded" : "plain"}: ${JSON.stringify(o)}`);
      // Some went out before the close, the rest were cancelled by it (Deno: Interrupted).
      assert.deepEqual(o, { codes: ["UNKNOWN", "ok"], callbacks: COUNT });
    }
  },
});
