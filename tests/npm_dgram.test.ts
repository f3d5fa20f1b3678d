/**
 * Unmodified node:dgram programs under the pre-load (issue 15): a program written against
 * node:dgram directly (tests/fixtures/dgram_echo.ts, and the same in a Worker) and two
 * npm packages that use it, unmodified: dns2 (a DNS server and client: one socket per
 * query) and hot-shots (a StatsD client that unrefs its socket before the first send
 * binds it). Each runs plainly
 * and under `nkb run --no-spin` in one namespace against kernel peers in the other; both
 * ways do the same work, and the namespace's kernel UDP counters show which path carried
 * it. The packages come from the npm registry at the versions pinned in the fixtures,
 * checked against tests/fixtures/npm.lock, fetched before any program runs (the test
 * namespaces have no route out).
 */

import assert from "node:assert/strict";
import {
  createTestbed,
  echoRounds,
  FIXTURES,
  programCommand,
  statLists,
} from "./helpers/testbed.ts";

const OPTS = { sanitizeResources: false, sanitizeOps: false };
const LOCK = `${FIXTURES}npm.lock`;
const DENO_FLAGS = ["--lock=" + LOCK, "--frozen", "--allow-net", "--allow-read", "--allow-env"];
const NPM_FIXTURES = ["npm_dns_server.ts", "npm_dns_client.ts", "npm_statsd.ts"];

function command(preload: boolean, script: string, args: string[]): string[] {
  return programCommand(preload, DENO_FLAGS, script, args);
}

let cached = false;

/** The pinned packages in Deno's cache, checked against the lock file. */
async function cachePackages(): Promise<void> {
  if (cached) return;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["cache", "--lock=" + LOCK, "--frozen", ...NPM_FIXTURES.map((f) => `${FIXTURES}${f}`)],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(180_000),
  }).output();
  assert.equal(out.code, 0, `deno cache: ${new TextDecoder().decode(out.stderr)}`);
  cached = true;
}

for (const script of ["dgram_echo.ts", "dgram_workers.ts"]) {
  Deno.test({
    name: `unmodified node:dgram ${script}: every datagram echoed plainly and under nkb run`,
    ...OPTS,
    fn: async () => {
      const COUNT = 200;
      const PORT = 9610;
      for (const preload of [false, true]) {
        await using tb = await createTestbed();
        const proc = tb.spawn(
          "a",
          command(preload, script, [tb.a.ip, `${PORT}`, `${COUNT}`]),
          {
            name: `${script}${preload ? " (nkb run)" : ""}`,
          },
        );
        await proc.next((m) => m.listening === true, 30_000, "listening");
        const listed = await statLists(tb, "a", PORT, script);
        const before = await tb.udpCounters("a");
        const echoed = await echoRounds(tb, "b", tb.a.ip, PORT, COUNT);
        const after = await tb.udpCounters("a");
        await proc.next((m) => m.echoed !== undefined, 30_000, "echoed");
        assert.equal((await proc.wait(10_000)).code, 0, proc.stderr);
        const kernelIn = after.InDatagrams - before.InDatagrams;
        console.log(
          `${preload ? "nkb run" : "plain"}: echoed ${echoed}, kernel InDatagrams ${kernelIn}`,
        );
        assert.equal(echoed, COUNT);
        assert.equal(proc.stderr.trim(), "", proc.stderr);
        assert.equal(listed, preload, "nkb stat lists the program's socket under nkb run only");
        if (preload) assert.ok(kernelIn < COUNT / 10, `kernel InDatagrams ${kernelIn}`);
        else assert.ok(kernelIn >= COUNT, `kernel InDatagrams ${kernelIn}`);
      }
    },
  });
}

Deno.test({
  name: "npm dns2: its UDP server and its client, each plainly and under nkb run",
  ...OPTS,
  fn: async () => {
    await cachePackages();
    const COUNT = 100;
    const PORT = 5353;
    for (const side of ["server", "client"] as const) {
      for (const preload of [false, true]) {
        await using tb = await createTestbed();
        // The program under test runs in side a; its peer, plainly, in side b.
        const [serverSide, serverIp] = side === "server"
          ? ["a", tb.a.ip] as const
          : ["b", tb.b.ip] as const;
        const serverCmd = command(preload && side === "server", "npm_dns_server.ts", [
          serverIp,
          `${PORT}`,
          `${COUNT}`,
        ]);
        const server = tb.spawn(serverSide, serverCmd, {
          name: `dns2 server${preload && side === "server" ? " (nkb run)" : ""}`,
        });
        await server.next((m) => m.listening === true, 60_000, "listening");
        const before = await tb.udpCounters("a");
        const clientSide = side === "server" ? "b" : "a";
        const client = await tb.exec(
          clientSide,
          command(preload && side === "client", "npm_dns_client.ts", [
            serverIp,
            `${PORT}`,
            `${COUNT}`,
          ]),
          120_000,
        );
        const after = await tb.udpCounters("a");
        assert.equal(client.code, 0, client.stderr);
        const got = JSON.parse(client.stdout.trim().split("\n").at(-1)!);
        await server.next((m) => m.answered !== undefined, 30_000, "answered");
        assert.equal((await server.wait(10_000)).code, 0, server.stderr);
        const kernelIn = after.InDatagrams - before.InDatagrams;
        const label = `${side}${preload ? " under nkb run" : " plainly"}`;
        console.log(`dns2 ${label}: ${JSON.stringify(got)}, side a kernel InDatagrams ${kernelIn}`);
        assert.deepEqual(got, { resolved: COUNT, right: COUNT }, label);
        const stderr = side === "server" ? server.stderr : client.stderr;
        assert.equal(stderr.trim(), "", stderr);
        if (preload) assert.ok(kernelIn < COUNT / 10, `${label}: kernel InDatagrams ${kernelIn}`);
        else assert.ok(kernelIn >= COUNT, `${label}: kernel InDatagrams ${kernelIn}`);
      }
    }
  },
});

const STATSD_SINK = `import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(float(sys.argv[3]))
print('ready', flush=True)
got = 0
try:
    while True:
        d, _ = s.recvfrom(2048)
        got += d == b'nkb.test.count:1|c'
except socket.timeout:
    pass
print(got, flush=True)`;

Deno.test({
  name: "npm hot-shots: a StatsD client's metrics arrive plainly and under nkb run, which bypasses",
  ...OPTS,
  fn: async () => {
    await cachePackages();
    const COUNT = 300;
    const PORT = 8125;
    for (const preload of [false, true]) {
      await using tb = await createTestbed();
      const sink = tb.spawn("b", ["python3", "-c", STATSD_SINK, tb.b.ip, `${PORT}`, "3"], {
        name: "statsd sink",
      });
      await sink.next((m) => m.raw === "ready", 10_000);
      const before = await tb.udpCounters("a");
      // The program ends by itself (its socket is unref'd): exec's timeout would fail it.
      const out = await tb.exec(
        "a",
        command(preload, "npm_statsd.ts", [tb.b.ip, `${PORT}`, `${COUNT}`]),
        60_000,
      );
      const after = await tb.udpCounters("a");
      assert.equal(out.code, 0, out.stderr);
      assert.equal(out.stderr.trim(), "", out.stderr);
      assert.deepEqual(JSON.parse(out.stdout.trim()), { sent: COUNT, errors: 0 });
      assert.equal((await sink.wait(20_000)).code, 0, sink.stderr);
      const received = Number(sink.messages.at(-1)?.raw);
      const kernelOut = after.OutDatagrams - before.OutDatagrams;
      const label = preload ? "nkb run" : "plainly";
      console.log(
        `hot-shots ${label}: received ${received}, side a kernel OutDatagrams ${kernelOut}`,
      );
      assert.equal(received, COUNT, label);
      if (preload) assert.ok(kernelOut < COUNT / 10, `${label}: kernel OutDatagrams ${kernelOut}`);
      else assert.ok(kernelOut >= COUNT, `${label}: kernel OutDatagrams ${kernelOut}`);
    }
  },
});
