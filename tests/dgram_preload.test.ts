/**
 * node:dgram under the pre-load, differentially (issue 15): tests/fixtures/dgram_cases.ts,
 * an unmodified node:dgram program, runs once plainly (Deno's node:dgram on Deno's
 * sockets) and once under `deno run --preload preload.ts` (its udp4 sockets nkb's), in
 * one namespace against a kernel echo server in the other. Every case's log (values,
 * error codes and classes, events and their order) must be equal, but for the deliberate
 * differences in DIFFERENT; the namespace's kernel UDP counters show that the pre-loaded
 * run's datagrams went through the rings.
 */

import assert from "node:assert/strict";
import { createTestbed, FIXTURES, pythonEcho } from "./helpers/testbed.ts";
import { ROOT } from "./helpers/zig.ts";

const ECHO_PORT = 7;
const ECHO = pythonEcho(ECHO_PORT);

/** Deliberate differences: the case's log plainly and pre-loaded, and why. */
const DIFFERENT: Record<string, { plain: string[]; preload: string[]; why: string }> = {
  "send on an unbound socket binds it first": {
    plain: [
      "send returned",
      "listening",
      "send callback 8",
      "message 696d706c69636974 Buffer=true size=8 family=IPv4 fromEcho=true keys=address,port,family,size",
      "address 0.0.0.0 port>0 true",
    ],
    preload: [
      "send returned",
      "listening",
      "send callback 8",
      "message 696d706c69636974 Buffer=true size=8 family=IPv4 fromEcho=true keys=address,port,family,size",
      "address HOST port>0 true",
    ],
    why: "Node binds a socket that sends before any bind to 0.0.0.0:0 itself (the kernel's " +
      "autobind of a sendto); the contract decides such a socket by its first destination, and " +
      "a socket bound to a wildcard address never bypasses: nkb binds it to the address the " +
      "route to that destination leaves from (dns2's and hot-shots' clients send this way)",
  },
};

type Results = Record<string, string[]>;

interface Run {
  results: Results;
  info: unknown;
  kernelIn: number;
  stderr: string;
}

async function runCases(preload: boolean): Promise<Run> {
  await using tb = await createTestbed();
  const echo = tb.spawn("b", ["python3", "-c", ECHO], { name: "echo@b" });
  await echo.next((m) => m.raw === "ready", 10_000);
  const before = await tb.udpCounters("a");
  const deno = [Deno.execPath(), "run", "--no-lock", "--allow-net", "--allow-read"];
  const child = tb.spawn("a", [
    ...deno,
    ...(preload ? ["--allow-ffi", "--preload", `${ROOT}preload.ts`] : []),
    `${FIXTURES}dgram_cases.ts`,
    `--host=${tb.a.ip}`,
    `--peer=${tb.b.ip}`,
    `--echo=${ECHO_PORT}`,
  ], { name: `dgram_cases.ts${preload ? " (pre-loaded)" : ""}` });
  const status = await child.wait(120_000);
  assert.equal(status.code, 0, child.stderr);
  const after = await tb.udpCounters("a");
  const done = child.messages.find((m) => "results" in m);
  assert.ok(done !== undefined, child.stderr);
  return {
    results: done.results as Results,
    info: done.info,
    kernelIn: after.InDatagrams - before.InDatagrams,
    stderr: child.stderr,
  };
}

Deno.test({
  name: "node:dgram: an unmodified program observes the same plainly and under the pre-load",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const plain = await runCases(false);
    const pre = await runCases(true);
    const bad: string[] = [];
    for (const [name, log] of Object.entries(plain.results)) {
      const other = pre.results[name];
      console.log(`${name}\n  plain   ${JSON.stringify(log)}\n  preload ${JSON.stringify(other)}`);
      const known = DIFFERENT[name];
      try {
        if (known !== undefined) {
          assert.deepEqual({ plain: log, preload: other }, {
            plain: known.plain,
            preload: known.preload,
          });
        } else assert.deepEqual(other, log);
      } catch {
        bad.push(name);
      }
    }
    assert.deepEqual(Object.keys(pre.results), Object.keys(plain.results));
    assert.deepEqual(bad, [], `cases that differ: ${bad.join("; ")}`);
    assert.equal(pre.stderr.trim(), "", pre.stderr);
    // Plainly every echo passes the kernel; pre-loaded only what nkb sends the kernel's way.
    console.log(`kernel InDatagrams: plain ${plain.kernelIn}, pre-loaded ${pre.kernelIn}`);
    console.log(
      `info: plain ${JSON.stringify(plain.info)}, pre-loaded ${JSON.stringify(pre.info)}`,
    );
    assert.ok(plain.kernelIn >= 60, `plain: ${plain.kernelIn}`);
    assert.ok(pre.kernelIn < plain.kernelIn / 10, `pre-loaded: ${pre.kernelIn}`);
  },
});

Deno.test({
  name: "node:dgram: a negative receive buffer size from a direct handle call stalls nothing",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using tb = await createTestbed();
    const echo = tb.spawn("b", ["python3", "-c", ECHO], { name: "echo@b" });
    await echo.next((m) => m.raw === "ready", 10_000);
    const child = tb.spawn("a", [
      Deno.execPath(),
      "run",
      "--no-lock",
      "--allow-net",
      "--allow-read",
      "--allow-ffi",
      "--preload",
      `${ROOT}preload.ts`,
      `${FIXTURES}dgram_hostile.ts`,
      `--host=${tb.a.ip}`,
      `--peer=${tb.b.ip}`,
      `--echo=${ECHO_PORT}`,
    ], { name: "dgram_hostile.ts (pre-loaded)" });
    // Before: the receive loop retried a failing receive on microtasks only; the process
    // never reached its one-second timer.
    const status = await child.wait(30_000);
    assert.equal(status.code, 0, child.stderr);
    const out = child.messages.find((m) => "messages" in m);
    assert.deepEqual(out, { messages: 3, errors: 0, ticked: true }, child.stderr);
  },
});
