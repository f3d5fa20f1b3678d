/**
 * An isolate's waiting sockets share one wait on Deno's FFI thread pool (src/shared_wait.ts,
 * nkb_wait_many). With one wait per socket, idle node:dgram sockets (each receives from
 * its bind on) took the pool: 40 of them in receive mode 0 made a 1 ms file read take 10 s,
 * and 8 of them in mode 1 spun both of this VM's cores. Under the pre-load, unmodified
 * programs: idle sockets leave file reads alone and spin one core at most; 32 echo
 * sockets in one program each echo every datagram, sent to them in turn.
 */

import assert from "node:assert/strict";
import { createTestbed, FIXTURES } from "./helpers/testbed.ts";
import { ROOT } from "./helpers/zig.ts";

const OPTS = { sanitizeResources: false, sanitizeOps: false };

function preloaded(mode: 0 | 1, script: string, args: string[]): string[] {
  return [
    "env",
    `_NET_KERNEL_BYPASS_RECV_MODE=${mode}`,
    Deno.execPath(),
    "run",
    "--no-lock",
    "--allow-net",
    "--allow-read",
    "--allow-env",
    "--allow-ffi",
    "--preload",
    `${ROOT}preload.ts`,
    `${FIXTURES}${script}`,
    ...args,
  ];
}

Deno.test({
  name: "shared wait: idle sockets leave Deno's thread pool to the program and spin one core",
  ...OPTS,
  fn: async () => {
    await using tb = await createTestbed();
    const cases: [0 | 1, number][] = [[0, 40], [0, 300], [1, 8]];
    for (const [mode, count] of cases) {
      const out = await tb.exec(
        "a",
        preloaded(mode, "idle_sockets.ts", [tb.a.ip, `${count}`]),
        60_000,
      );
      assert.equal(out.code, 0, out.stderr);
      const r = JSON.parse(out.stdout.trim());
      console.log(`mode ${mode}, ${count} idle sockets: ${JSON.stringify(r)}`);
      // One wait per socket: 10 s reads (mode 0, 40 sockets), 1.97 cores (mode 1, 8).
      assert.ok(r.readMs < 1000, `mode ${mode}, ${count} sockets: a file read took ${r.readMs} ms`);
      if (mode === 1) assert.ok(r.cpu < 1.5, `mode 1, ${count} sockets: ${r.cpu} cores`);
      else assert.ok(r.cpu < 0.2, `mode 0, ${count} sockets: ${r.cpu} cores`);
    }
  },
});

Deno.test({
  name: "shared wait: 32 echo sockets in one program each echo every datagram sent to them",
  ...OPTS,
  fn: async () => {
    const COUNT = 32;
    const ROUNDS = 20;
    const BASE = 9700;
    for (const mode of [0, 1] as const) {
      await using tb = await createTestbed();
      const proc = tb.spawn(
        "a",
        preloaded(mode, "multi_echo.ts", [tb.a.ip, `${BASE}`, `${COUNT}`, `${COUNT * ROUNDS}`]),
        { name: `multi_echo (mode ${mode})` },
      );
      await proc.next((m) => m.listening === true, 60_000, "listening");
      // Round-robin over the ports, one datagram in flight: every socket's wait is joined
      // and left again and again while the others keep theirs.
      const echoed = await tb.execOk("b", [
        "python3",
        "-c",
        `import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
got = 0
for r in range(${ROUNDS}):
    for p in range(${COUNT}):
        m = b"%d-%d" % (r, p)
        s.sendto(m, (${JSON.stringify(tb.a.ip)}, ${BASE} + p))
        try:
            d, a = s.recvfrom(2048)
            got += d == m and a[1] == ${BASE} + p
        except socket.timeout:
            pass
print(got)`,
      ], 120_000);
      await proc.next((m) => m.echoed !== undefined, 30_000, "echoed");
      assert.equal((await proc.wait(10_000)).code, 0, proc.stderr);
      console.log(`mode ${mode}: ${echoed.trim()} of ${COUNT * ROUNDS} echoed`);
      assert.equal(Number(echoed.trim()), COUNT * ROUNDS);
      assert.equal(proc.stderr.trim(), "", proc.stderr);
    }
  },
});
