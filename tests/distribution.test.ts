/**
 * nkb as users get it: the publish set (exactly the files `deno publish --dry-run` lists,
 * the prebuilt libraries among them) served over HTTP from a test namespace, imported by
 * URL from an empty directory with a fresh DENO_DIR, a copy of the deno binary and a PATH
 * with no Zig and no checkout. Bypass must be active and datagrams must cross the rings
 * (the namespace's kernel UDP counters stay put), for the main thread and a Worker, which
 * must share one copy of the library; the CLI must list the program's sockets. A library
 * with one byte changed is refused, and a missing --allow-ffi is named, without a crash.
 */

import assert from "node:assert/strict";
import {
  createTestbed,
  echoRounds,
  sendUdp,
  type Testbed,
  type TestbedProcess,
} from "./helpers/testbed.ts";
import { ROOT } from "./helpers/zig.ts";
import { PREBUILT } from "../src/prebuilt.ts";

const decoder = new TextDecoder();
const SERVER_PORT = 8000 + Math.floor(Math.random() * 1000);
const APP_PORT = 9470;
const WORKER_PORT = 9471;
const DATAGRAMS = 100;
const PLATFORM = `linux-${Deno.build.arch}`;

/** The files `deno publish --dry-run` lists, relative to the repository. */
async function publishSet(): Promise<string[]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["publish", "--dry-run", "--allow-dirty"],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = decoder.decode(out.stdout) + decoder.decode(out.stderr);
  assert.equal(out.code, 0, text);
  const prefix = `file://${ROOT.replace(/\/$/, "")}/`;
  const files = text.split("\n").map((l) => l.trim()).filter((l) => l.startsWith(prefix))
    .map((l) => l.slice(prefix.length).replace(/ \([^)]*\)$/, ""));
  for (const p of Object.keys(PREBUILT)) {
    assert.ok(files.includes(`native/${p}.ts`), `the publish set lacks native/${p}.ts: ${text}`);
  }
  return files;
}

async function copyTree(files: string[], to: string): Promise<void> {
  for (const f of files) {
    const dest = `${to}/${f}`;
    await Deno.mkdir(dest.slice(0, dest.lastIndexOf("/")), { recursive: true });
    await Deno.copyFile(`${ROOT}/${f}`, dest);
  }
}

/** Changes one byte of the library inside native/<platform>.ts, keeping it valid base64. */
async function tamper(dir: string): Promise<void> {
  const path = `${dir}/native/${PLATFORM}.ts`;
  const text = await Deno.readTextFile(path);
  const m = /"([A-Za-z0-9+/=]+)"/.exec(text);
  assert.ok(m, `${path}: no base64 literal`);
  const bytes = Uint8Array.fromBase64(m[1]);
  bytes[bytes.length >> 1] ^= 0x01;
  await Deno.writeTextFile(path, text.replace(m[1], bytes.toBase64()));
}

const APP = (base: string): string => `
import { LibraryLoadError, UdpBypass } from "${base}/mod.ts";
const [host, port, count, workerPort, holdOnError] = Deno.args;
const say = (m) => console.log(JSON.stringify(m));
// A receive, or null after ms (its timer cleared either way, so none keeps the app alive).
async function within(sock, ms) {
  let t;
  const timer = new Promise((r) => { t = setTimeout(() => r(null), ms); });
  try { return await Promise.race([sock.receive(), timer]); } finally { clearTimeout(t); }
}
let sock;
try {
  sock = UdpBypass.listenDatagram({ transport: "udp", hostname: host, port: Number(port) });
} catch (e) {
  say({ error: e.name, reason: e.reason, message: e.message, typed: e instanceof LibraryLoadError });
  // Held until the test has looked at the process's mappings (a line on stdin).
  if (holdOnError) await Deno.stdin.read(new Uint8Array(64));
  Deno.exit(3);
}
let worker = null;
let workerGot = null;
if (workerPort !== "0") {
  // A blob module, so that the app needs no --allow-read for its own Worker's file.
  const code = await (await import("./worker_source.ts")).default;
  worker = new Worker(URL.createObjectURL(new Blob([code], { type: "text/javascript" })), { type: "module" });
  const ready = new Promise((r) => { worker.onmessage = (ev) => r(ev.data); });
  worker.postMessage({ host, port: Number(workerPort), count: Number(count) });
  const m = await ready;
  say({ worker: m });
  workerGot = new Promise((r) => { worker.onmessage = (ev) => r(ev.data); });
}
say({ ready: true, bypass: sock.bypass });
let got = 0;
const deadline = Date.now() + 15000;
while (got < Number(count) && Date.now() < deadline) {
  if (await within(sock, deadline - Date.now()) === null) break;
  got++;
}
say({ received: got, stats: sock.stats(), worker: workerGot ? await workerGot : null });
// Held until the test sends "quit", so that the CLI can list it.
const end = Date.now() + 20000;
while (Date.now() < end) {
  const r = await within(sock, end - Date.now());
  if (r === null || new TextDecoder().decode(r[0]) === "quit") break;
}
sock.close();
worker?.terminate();
say({ done: true });
`;

const WORKER = (base: string): string => `
import { UdpBypass } from "${base}/mod.ts";
self.onmessage = async (ev) => {
  const { host, port, count } = ev.data;
  const sock = UdpBypass.listenDatagram({ transport: "udp", hostname: host, port });
  self.postMessage({ bypass: sock.bypass });
  let got = 0;
  const deadline = Date.now() + 15000;
  while (got < count && Date.now() < deadline) {
    let t;
    const timer = new Promise((r) => { t = setTimeout(() => r(null), deadline - Date.now()); });
    const r = await Promise.race([sock.receive(), timer]);
    clearTimeout(t);
    if (r === null) break;
    got++;
  }
  self.postMessage({ received: got, ipkts: sock.stats().ipkts });
  // The socket stays open until the app terminates the Worker: the CLI lists it meanwhile.
};
`;

interface World {
  tb: Testbed;
  tmp: string;
  deno: string;
  base: string;
  server: TestbedProcess;
}

/** Runs `args` with the copied deno in namespace a, from `dir`, with nothing inherited. */
function userCommand(w: World, dir: string, denoDir: string, args: string[]): string[] {
  return [
    "env",
    "-i",
    "PATH=/usr/bin:/bin",
    `HOME=${w.tmp}/home`,
    `DENO_DIR=${denoDir}`,
    "DENO_NO_UPDATE_CHECK=1",
    "NO_COLOR=1",
    "env",
    "-C",
    dir,
    w.deno,
    ...args,
  ];
}

async function withWorld(fn: (w: World) => Promise<void>): Promise<void> {
  const files = await publishSet();
  await using tb = await createTestbed();
  const tmp = await Deno.makeTempDir({ prefix: "nkb-dist-" });
  try {
    await copyTree(files, `${tmp}/pkg`);
    await copyTree(files, `${tmp}/tampered`);
    await tamper(`${tmp}/tampered`);
    await Deno.mkdir(`${tmp}/bin`);
    await Deno.mkdir(`${tmp}/home`);
    const deno = `${tmp}/bin/deno`;
    await Deno.copyFile(Deno.execPath(), deno);
    await Deno.chmod(deno, 0o755);
    const a = tb.side("a");
    const server = tb.spawn("a", [
      deno,
      "run",
      `--allow-read=${tmp}`,
      `--allow-net=${a.ip}:${SERVER_PORT}`,
      "--no-lock",
      `${ROOT}/tests/fixtures/serve_dir.ts`,
      tmp,
      a.ip,
      `${SERVER_PORT}`,
    ], { name: "server" });
    await server.next((m) => m.listening === true, 10_000, "the server listening");
    await fn({ tb, tmp, deno, base: `http://${a.ip}:${SERVER_PORT}`, server });
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

async function emptyDir(w: World, name: string, base: string): Promise<string> {
  const dir = `${w.tmp}/run-${name}`;
  await Deno.mkdir(dir);
  await Deno.writeTextFile(`${dir}/app.ts`, APP(base));
  await Deno.writeTextFile(
    `${dir}/worker_source.ts`,
    `export default ${JSON.stringify(WORKER(base))};\n`,
  );
  return dir;
}

function importFlag(w: World): string {
  return `--allow-import=${new URL(w.base).host}`;
}

Deno.test("from the registry: bypass from an empty directory, Workers share the library, the CLI lists it", async () => {
  await withWorld(async (w) => {
    const a = w.tb.side("a");
    const dir = await emptyDir(w, "app", `${w.base}/pkg`);
    const before = await w.tb.udpCounters("a");
    const app = w.tb.spawn(
      "a",
      userCommand(w, dir, `${w.tmp}/deno-app`, [
        "run",
        "--allow-ffi",
        importFlag(w),
        "app.ts",
        a.ip,
        `${APP_PORT}`,
        `${DATAGRAMS}`,
        `${WORKER_PORT}`,
      ]),
      { name: "app" },
    );
    const ready = await app.next((m) => m.ready === true, 60_000, "the app ready");
    const worker = app.messages.find((m) => m.worker !== undefined)!;
    assert.deepEqual((ready.bypass as { active: boolean }).active, true, JSON.stringify(ready));
    assert.equal((worker.worker as { bypass: { active: boolean } }).bypass.active, true);

    // One kernel sender in namespace b, paced (receivers that spin take both cores).
    await w.tb.execOk("b", [
      "python3",
      "-c",
      `import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(${DATAGRAMS}):
    s.sendto(b"m%d" % i, ("${a.ip}", ${APP_PORT}))
    s.sendto(b"w%d" % i, ("${a.ip}", ${WORKER_PORT}))
    time.sleep(0.002)`,
    ], 30_000);
    const done = await app.next((m) => m.received !== undefined, 30_000, "the counts");
    assert.equal(done.received, DATAGRAMS, JSON.stringify(done));
    assert.equal((done.stats as { ipkts: number }).ipkts, DATAGRAMS);
    const wr = done.worker as { received: number; ipkts: number };
    assert.equal(wr.received, DATAGRAMS, JSON.stringify(done));
    assert.equal(wr.ipkts, DATAGRAMS);
    const after = await w.tb.udpCounters("a");
    // The kernel's UDP stack of namespace a saw (almost) none of the 2 x DATAGRAMS.
    assert.ok(
      after.InDatagrams - before.InDatagrams < DATAGRAMS / 10,
      `kernel InDatagrams moved by ${after.InDatagrams - before.InDatagrams}`,
    );

    // One copy of the library in the process: every nkb mapping is of one memory file.
    const maps = await Deno.readTextFile(`/proc/${app.pid}/maps`);
    const nkb = maps.split("\n").filter((l) => l.includes("memfd:nkb-"));
    assert.ok(nkb.length > 0, "no memfd:nkb- mapping");
    const inodes = new Set(nkb.map((l) => l.split(/\s+/)[4]));
    assert.equal(inodes.size, 1, nkb.join("\n"));

    // Everything came from the package's own URL (Deno fetches every platform's module,
    // as it caches the whole graph; only this platform's is evaluated).
    const fetched = w.server.messages.map((m) => m.path as string).filter(Boolean);
    assert.ok(fetched.includes(`/pkg/native/${PLATFORM}.ts`), fetched.join(" "));
    assert.ok(fetched.every((p) => p.startsWith("/pkg/")), fetched.join(" "));

    // The CLI, from another empty directory and another fresh DENO_DIR.
    const cliDir = `${w.tmp}/cli`;
    await Deno.mkdir(cliDir);
    const stat = await w.tb.exec(
      "a",
      userCommand(w, cliDir, `${w.tmp}/deno-cli`, [
        "run",
        "-A",
        `${w.base}/pkg/cli.ts`,
        "stat",
        "--json",
      ]),
      60_000,
    );
    assert.equal(stat.code, 0, stat.stderr);
    const listed = JSON.parse(stat.stdout).sockets as {
      pid: number;
      bypass: boolean;
      local: { port: number };
    }[];
    const mine = listed.filter((s) => s.pid === app.pid);
    assert.deepEqual(mine.map((s) => [s.local.port, s.bypass]).sort(), [
      [APP_PORT, true],
      [WORKER_PORT, true],
    ]);
    const phys = await w.tb.exec(
      "a",
      userCommand(w, cliDir, `${w.tmp}/deno-cli`, ["run", "-A", `${w.base}/pkg/cli.ts`, "phys"]),
      30_000,
    );
    assert.equal(phys.code, 0, phys.stderr);
    assert.ok(phys.stdout.includes(a.ifname), phys.stdout);

    await sendUdp(w.tb, "b", "quit", a.ip, APP_PORT);
    await app.next((m) => m.done === true, 10_000, "the app done");
    assert.equal((await app.wait(10_000)).code, 0, app.stderr);
  });
});

Deno.test("from the registry: a changed library is refused, a missing --allow-ffi is named", async () => {
  await withWorld(async (w) => {
    const a = w.tb.side("a");
    const cases = [
      {
        name: "tampered",
        base: `${w.base}/tampered`,
        flags: ["--allow-ffi"],
        reason: "hash-mismatch",
        text: /refused the prebuilt libnkb\.so .* its SHA-256 is [0-9a-f]{64}/,
      },
      {
        name: "no-ffi",
        base: `${w.base}/pkg`,
        flags: [],
        reason: "permission",
        text: /needs --allow-ffi/,
      },
    ];
    for (const c of cases) {
      const dir = await emptyDir(w, c.name, c.base);
      const app = w.tb.spawn(
        "a",
        userCommand(w, dir, `${w.tmp}/deno-${c.name}`, [
          "run",
          ...c.flags,
          importFlag(w),
          "app.ts",
          a.ip,
          `${APP_PORT}`,
          "1",
          "0",
          "hold",
        ]),
        { name: c.name, stdin: true },
      );
      const m = await app.next((m) => m.error !== undefined, 60_000, `${c.name}: the error`);
      assert.equal(m.error, "LibraryLoadError", c.name);
      assert.equal(m.typed, true, c.name);
      assert.equal(m.reason, c.reason, `${c.name}: ${m.message}`);
      assert.match(m.message as string, c.text, c.name);
      // Refused before dlopen: nothing of nkb is mapped.
      const maps = await Deno.readTextFile(`/proc/${app.pid}/maps`);
      assert.ok(!/memfd:nkb|libnkb/.test(maps), `${c.name}: a library was mapped`);
      await app.send({ go: true });
      // Exit 3 is the app's own, after it caught the error: no crash, no signal.
      assert.equal((await app.wait(10_000)).code, 3, `${c.name}: ${app.stderr}`);
    }
  });
});

Deno.test("from the registry: --preload <url>/preload.ts takes over an unmodified program", async () => {
  await withWorld(async (w) => {
    const a = w.tb.side("a");
    const dir = `${w.tmp}/run-preload`;
    await Deno.mkdir(dir);
    // An unmodified program: Deno's API only.
    await Deno.copyFile(`${ROOT}tests/fixtures/plain_echo.ts`, `${dir}/echo.ts`);
    const app = w.tb.spawn(
      "a",
      userCommand(w, dir, `${w.tmp}/deno-preload`, [
        "run",
        "--preload",
        `${w.base}/pkg/preload.ts`,
        "--allow-ffi",
        "--allow-net",
        "--unstable-net",
        importFlag(w),
        "echo.ts",
        a.ip,
        `${APP_PORT}`,
        `${DATAGRAMS}`,
      ]),
      { name: "echo (pre-loaded from the registry)" },
    );
    await app.next((m) => m.listening === true, 60_000, "the echo listening");
    const before = await w.tb.udpCounters("a");
    const echoed = await echoRounds(w.tb, "b", a.ip, APP_PORT, DATAGRAMS);
    const after = await w.tb.udpCounters("a");
    assert.equal(echoed, DATAGRAMS);
    await app.next((m) => m.echoed === DATAGRAMS, 10_000, "the echo done");
    assert.equal((await app.wait(10_000)).code, 0, app.stderr);
    // The rings carried them: the namespace's kernel UDP stack saw (almost) none.
    const kernelIn = after.InDatagrams - before.InDatagrams;
    assert.ok(kernelIn < DATAGRAMS / 10, `kernel InDatagrams moved by ${kernelIn}`);
    assert.ok(!/nkb preload/.test(app.stderr), app.stderr);
  });
});
