/**
 * Edges of the pre-load and `nkb run` found by review (issue 15): an IPv6 listen, which nkb
 * (IPv4 only) refuses, is Deno's own under the pre-load as without it; `nkb run` exits
 * 128 + n for any signal that ends the program (not only the five common ones); and a
 * SIGTERM sent to `nkb run` alone reaches the program instead of leaving it running
 * without its parent. No traffic: the sockets are bound on loopback and closed.
 */

import assert from "node:assert/strict";
import { createTestbed } from "./helpers/testbed.ts";
import { ROOT } from "./helpers/zig.ts";

const OPTS = { sanitizeResources: false, sanitizeOps: false };
const PRELOAD = new URL("../preload.ts", import.meta.url).href;

async function withScript<T>(code: string, f: (path: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: `nkb-preload-edges-${Deno.pid}-` });
  try {
    const path = `${dir}/main.ts`;
    await Deno.writeTextFile(path, code);
    return await f(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function output(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), { args, stdin: "null" }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test({
  name: "preload: an IPv6 listen is Deno's own, as without the pre-load",
  ...OPTS,
  fn: async () => {
    const code = `for (const hostname of ["::1", "::"]) {
  const c = Deno.listenDatagram({ transport: "udp", hostname, port: 0 });
  const a = c.addr as Deno.NetAddr;
  console.log(hostname, c.constructor.name, a.hostname, a.port > 0);
  c.close();
}\n`;
    await withScript(code, async (path) => {
      const flags = ["--no-lock", "--allow-net", "--unstable-net"];
      const plain = await output(["run", ...flags, path]);
      const pre = await output(["run", "--preload", PRELOAD, "--allow-ffi", ...flags, path]);
      assert.equal(plain.code, 0, plain.stderr);
      assert.equal(plain.stdout, "::1 DatagramConn ::1 true\n:: DatagramConn :: true\n");
      assert.equal(pre.code, 0, pre.stderr);
      assert.equal(pre.stdout, plain.stdout);
      assert.equal(pre.stderr, "");
    });
  },
});

Deno.test({
  name: "nkb run: a program ended by SIGUSR1 or SIGALRM exits 128 + n",
  ...OPTS,
  fn: async () => {
    for (const [signal, n] of [["SIGUSR1", 10], ["SIGALRM", 14]] as const) {
      const code =
        `Deno.kill(Deno.pid, "${signal}");\nawait new Promise((r) => setTimeout(r, 5000));\n`;
      await withScript(code, async (path) => {
        const run = await output(["run", "-A", "--no-lock", `${ROOT}cli.ts`, "run", path]);
        assert.equal(run.code, 128 + n, `${signal}: ${run.stderr}`);
      });
    }
  },
});

Deno.test({
  name: "nkb run: a SIGTERM to nkb run ends the program too (143, nothing left running)",
  ...OPTS,
  fn: async () => {
    const code = `console.log("ready");\nawait new Promise((r) => setTimeout(r, 20_000));\n` +
      `console.log("not ended");\n`;
    await withScript(code, async (path) => {
      const nkb = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--no-lock", `${ROOT}cli.ts`, "run", path],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const reader = nkb.stdout.getReader();
      try {
        const first = await reader.read();
        assert.equal(new TextDecoder().decode(first.value), "ready\n");
        nkb.kill("SIGTERM");
        const start = Date.now();
        const status = await nkb.status;
        assert.equal(status.code, 143);
        // Its stdout closes only when the program (which holds it too) has ended.
        const rest = await reader.read();
        assert.equal(rest.done, true);
        assert.ok(Date.now() - start < 10_000, "the program ran on");
      } finally {
        reader.releaseLock();
        await nkb.stderr.cancel();
        try {
          nkb.kill("SIGKILL");
        } catch {
          // Ended.
        }
      }
    });
  },
});

Deno.test({
  name: "preload: with --allow-net scoped to the listen address, a send elsewhere is refused",
  ...OPTS,
  fn: async () => {
    const code = `const [ip, peer] = Deno.args;
const c = Deno.listenDatagram({ transport: "udp", hostname: ip, port: 9702 });
let send = "sent";
try {
  await c.send(new Uint8Array([1]), { transport: "udp", hostname: peer, port: 9703 });
} catch (e) {
  send = (e as Error).name;
}
c.close();
console.log(c.constructor.name, send);\n`;
    await withScript(code, async (path) => {
      await using tb = await createTestbed();
      const flags = ["--no-lock", `--allow-net=${tb.a.ip}:9702`, "--unstable-net"];
      const args = [path, tb.a.ip, tb.b.ip];
      const plain = await tb.exec("a", [Deno.execPath(), "run", ...flags, ...args]);
      const pre = await tb.exec("a", [
        Deno.execPath(),
        "run",
        "--preload",
        PRELOAD,
        "--allow-ffi",
        ...flags,
        ...args,
      ]);
      assert.equal(plain.stdout, "DatagramConn NotCapable\n", plain.stderr);
      // Before: "UdpBypass sent", past Deno's --allow-net.
      assert.equal(pre.stdout, plain.stdout, pre.stderr);
      assert.match(
        pre.stderr,
        /^nkb preload: UDP stays on Deno's own sockets: --allow-net is scoped/,
      );
      assert.equal(pre.stderr.trimEnd().split("\n").length, 1, pre.stderr);
    });
  },
});

Deno.test({
  name: "preload: on a terminal without --allow-ffi there is no prompt, one line, the program",
  ...OPTS,
  fn: async () => {
    await withScript(`console.log("ran");\n`, async (path) => {
      // script(1) gives the program a terminal, where Deno would prompt; "n" answers one.
      const deno = `${Deno.execPath()} run --no-lock --preload ${PRELOAD} --unstable-net ${path}`;
      const child = new Deno.Command("timeout", {
        args: ["30", "script", "-qec", deno, "/dev/null"],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode("n\n"));
      await w.close();
      const out = await child.output();
      const text = new TextDecoder().decode(out.stdout);
      assert.equal(out.code, 0, text);
      // Before: Deno's "Deno requests ffi access" prompt, then the same line after "n".
      assert.doesNotMatch(text, /requests ffi access/);
      assert.match(text, /nkb preload: UDP stays on Deno's own sockets: no --allow-ffi/);
      assert.match(text, /\nran\r?\n/);
    });
  },
});
