/**
 * Unmodified programs under the pre-load (issue 15, first part): an async echo server and
 * the same echo in a Worker, each run plainly (`deno run`) and under `nkb run`, against a
 * kernel UDP client in the other namespace. Both ways echo every datagram; the namespace's
 * kernel UDP counters show which path carried them, and `nkb stat` lists the program's
 * socket. When the library cannot load, the program runs as without the pre-load after
 * one line on stderr (and exits under _NET_KERNEL_BYPASS_ERR_EXIT=1); a program without
 * --allow-net gets Deno's own error either way.
 */

import assert from "node:assert/strict";
import { createTestbed, echoRounds, programCommand, statLists } from "./helpers/testbed.ts";

const OPTS = { sanitizeResources: false, sanitizeOps: false };
const COUNT = 200;
const PORT = 9600;
// The program's own permissions (--allow-read: its Worker's module file).
const DENO_FLAGS = ["--no-lock", "--allow-net", "--allow-read", "--unstable-net"];

function command(preload: boolean, script: string, args: string[]): string[] {
  return programCommand(preload, DENO_FLAGS, script, args);
}

interface Outcome {
  echoed: number;
  kernelIn: number;
  stderr: string;
  listed: boolean;
}

async function runEcho(
  preload: boolean,
  script: string,
  env: Record<string, string> = {},
): Promise<Outcome> {
  await using tb = await createTestbed();
  const port = PORT + (script === "plain_workers.ts" ? 1 : 0);
  const proc = tb.spawn("a", command(preload, script, [tb.a.ip, `${port}`, `${COUNT}`]), {
    env,
    name: `${script}${preload ? " (nkb run)" : ""}`,
  });
  await proc.next((m) => m.listening === true, 30_000, "listening");
  // nkb stat, while the program holds its socket.
  const listed = await statLists(tb, "a", port, script);
  const before = await tb.udpCounters("a");
  const echoed = await echoRounds(tb, "b", tb.a.ip, port, COUNT);
  const after = await tb.udpCounters("a");
  await proc.next((m) => m.echoed !== undefined, 30_000, "echoed");
  assert.equal((await proc.wait(10_000)).code, 0, proc.stderr);
  return {
    echoed,
    kernelIn: after.InDatagrams - before.InDatagrams,
    stderr: proc.stderr,
    listed,
  };
}

for (const script of ["plain_echo.ts", "plain_workers.ts"]) {
  Deno.test({
    name: `unmodified ${script}: every datagram echoed plainly and under nkb run, which bypasses`,
    ...OPTS,
    fn: async () => {
      const plain = await runEcho(false, script);
      assert.equal(plain.echoed, COUNT, JSON.stringify(plain));
      assert.ok(plain.kernelIn >= COUNT, `plain: kernel InDatagrams ${plain.kernelIn}`);
      assert.equal(plain.listed, false);

      const nkb = await runEcho(true, script);
      assert.equal(nkb.echoed, COUNT, JSON.stringify(nkb));
      assert.ok(nkb.kernelIn < COUNT / 10, `nkb run: kernel InDatagrams ${nkb.kernelIn}`);
      assert.equal(nkb.listed, true, "nkb stat lists the program's socket");
      assert.equal(nkb.stderr.trim(), "", nkb.stderr);
    },
  });
}

Deno.test({
  name: "pre-load: no library means Deno's own sockets and one line on stderr; ERR_EXIT=1 exits",
  ...OPTS,
  fn: async () => {
    const r = await runEcho(true, "plain_echo.ts", { NKB_LIB: "/nonexistent/libnkb.so" });
    assert.equal(r.echoed, COUNT);
    assert.ok(r.kernelIn >= COUNT, `kernel InDatagrams ${r.kernelIn}`);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.match(
      lines[0],
      /^nkb preload: UDP stays on Deno's own sockets: nkb: cannot load NKB_LIB/,
    );

    await using tb = await createTestbed();
    const out = await tb.exec("a", [
      "env",
      "NKB_LIB=/nonexistent/libnkb.so",
      "_NET_KERNEL_BYPASS_ERR_EXIT=1",
      ...command(true, "plain_echo.ts", [tb.a.ip, `${PORT}`, "1"]),
    ]);
    assert.equal(out.code, 1, out.stdout + out.stderr);
    assert.match(out.stderr, /nkb preload: .*exiting: _NET_KERNEL_BYPASS_ERR_EXIT=1/);
    assert.equal(out.stdout.trim(), "", "the program did not start");
  },
});

Deno.test({
  name: "pre-load: without --allow-net the program gets Deno's own error, as without it",
  ...OPTS,
  fn: async () => {
    await using tb = await createTestbed();
    const results: string[] = [];
    for (const preload of [false, true]) {
      const cmd = command(preload, "plain_echo.ts", [tb.a.ip, `${PORT}`, "1"])
        .filter((a) => a !== "--allow-net");
      const out = await tb.exec("a", cmd);
      assert.equal(out.code, 3, out.stdout + out.stderr);
      results.push(JSON.parse(out.stdout.trim()).error);
    }
    assert.deepEqual(results, ["NotCapable", "NotCapable"]);
  },
});
