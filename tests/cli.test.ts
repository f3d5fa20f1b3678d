/**
 * The `nkb` command as a user runs it (`deno run -A cli.ts ...`) against a synthetic
 * registry in a temporary directory: JSON and text output, warnings on stderr, exit
 * statuses for bad command lines, repeated reports and Ctrl-C.
 */

import assert from "node:assert/strict";
import { RegistryLayout as L } from "../src/registry_read.ts";
import { heldUdpSocket, liveProcess, plantFile, registryFile } from "./helpers/registry_file.ts";
import { ROOT } from "./helpers/zig.ts";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

const decoder = new TextDecoder();
const COMM = Deno.readTextFileSync("/proc/self/comm").trim();
const CMDLINE = Deno.readTextFileSync("/proc/self/cmdline").split("\0").slice(0, -1);
// The network namespace the planted sockets are shown in: the process's (their slots name none).
const NETNS = /\[([0-9]+)\]/.exec(Deno.readLinkSync("/proc/self/ns/net"))![1];

function junkWarning(dir: string): string {
  return `${dir}/${liveProcess().uid}: 1 entries that are not registry files, ignored`;
}

function nkbCommand(dir: string, args: string[]): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli.ts", ...args],
    cwd: ROOT,
    env: { NKB_REGISTRY_DIR: dir, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  });
}

async function nkb(dir: string, args: string[]): Promise<Run> {
  const out = await nkbCommand(dir, args).output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

// A registry with this test process's file (live) holding a bypass and a kernel-path
// socket, each naming a kernel socket this process holds (the reader checks), and one
// damaged file.
async function withRegistry(
  fn: (dir: string, pid: number, ports: [number, number]) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "nkb-cli-" });
  const held = [heldUdpSocket(), heldUdpSocket()];
  try {
    const me = liveProcess();
    const file = registryFile(me, [
      {
        index: 0,
        local: ["127.0.0.1", held[0].port],
        flags: L.flags.bypass | L.flags.bound,
        ifname: "veth0",
        ifindex: 5,
        queueCount: 1,
        stats: { opkts: 281790n },
        sockIno: held[0].ino,
      },
      {
        index: 1,
        local: ["127.0.0.1", held[1].port],
        flags: L.flags.bound,
        reason: "loopback",
        sockIno: held[1].ino,
      },
    ]);
    plantFile(dir, me, file);
    Deno.writeTextFileSync(`${dir}/${me.uid}/1.reg`, "not a registry file");
    await fn(dir, me.pid, [held[0].port, held[1].port]);
  } finally {
    for (const h of held) h.conn.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("nkb stat --json: the sockets and warnings as JSON, exit 0", async () => {
  await withRegistry(async (dir, pid) => {
    const run = await nkb(dir, ["stat", "--json"]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stderr, "");
    const report = JSON.parse(run.stdout);
    assert.deepEqual(report.sockets.map((s: { pid: number; slot: number }) => [s.pid, s.slot]), [[
      pid,
      0,
    ]]);
    const [s] = report.sockets;
    assert.equal(s.interface, "veth0");
    assert.equal(s.stats.opkts, 281790);
    // Who the process is comes from /proc, never from its file.
    assert.deepEqual(s.cmdline, CMDLINE);
    assert.equal(s.command, COMM);
    assert.deepEqual(report.warnings, [junkWarning(dir)]);
    const all = JSON.parse((await nkb(dir, ["stat", "-a", "--json"])).stdout);
    assert.deepEqual(all.sockets.map((x: { reason: string | null }) => x.reason), [
      null,
      "loopback",
    ]);
  });
});

Deno.test("nkb stat -au: the table on stdout, warnings on stderr", async () => {
  await withRegistry(async (dir, pid, ports) => {
    const run = await nkb(dir, ["stat", "-au"]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stderr, `nkb: warning: ${junkWarning(dir)}\n`);
    const lines = run.stdout.trimEnd().split("\n");
    assert.equal(lines[0], "UDP: IPv4");
    assert.match(
      lines[1],
      /^Local Address +Remote Address +State +If +Netns +Recv-Q +Ipkts +Opkts +Dpkts +Group +Reason +User +Pid +Command$/,
    );
    assert.match(lines[2], /^[- ]+$/);
    assert.match(
      lines[3],
      new RegExp(
        `^127\\.0\\.0\\.1:${
          ports[0]
        } +Idle +veth0 +${NETNS} +0 +0 281790 +0 - +- +root +${pid} ${COMM}$`,
      ),
    );
    assert.match(
      lines[4],
      new RegExp(
        `^127\\.0\\.0\\.1:${
          ports[1]
        } +Idle +- +${NETNS} +0 +0 +0 +0 - +loopback +root +${pid} ${COMM}$`,
      ),
    );
    assert.equal(lines.length, 5);
  });
});

Deno.test("nkb stat -i -c: COUNT reports, a blank line between them", async () => {
  await withRegistry(async (dir) => {
    const run = await nkb(dir, ["stat", "-i", "0.05", "-c", "3"]);
    assert.equal(run.code, 0, run.stderr);
    const reports = run.stdout.split("\n\n");
    assert.equal(reports.length, 3);
    for (const r of reports) assert.ok(r.startsWith("UDP: IPv4\n"), r);
    const json = await nkb(dir, ["stat", "--json", "-i", "0.05", "-c", "2"]);
    assert.equal(json.stdout.trimEnd().split("\n").map((l) => JSON.parse(l)).length, 2);
  });
});

Deno.test("nkb stat -i: Ctrl-C during the wait ends it cleanly (exit 0)", async () => {
  await withRegistry(async (dir) => {
    const child = nkbCommand(dir, ["stat", "-i", "30"]).spawn();
    const reader = child.stdout.getReader();
    let seen = "";
    for (let i = 0; i < 100 && !seen.includes("Dpkts"); i++) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += decoder.decode(value);
    }
    assert.match(seen, /Dpkts/);
    const started = performance.now();
    child.kill("SIGINT");
    reader.releaseLock();
    const [status] = await Promise.all([
      child.status,
      child.stdout.cancel(),
      child.stderr.cancel(),
    ]);
    assert.equal(status.code, 0);
    assert.ok(performance.now() - started < 10_000, "the 30 s wait was interrupted");
  });
});

Deno.test("nkb phys: lo by name, --json, -o; a missing link exits 1", async () => {
  await withRegistry(async (dir) => {
    const json = await nkb(dir, ["phys", "--json", "lo"]);
    assert.equal(json.code, 0, json.stderr);
    const list = JSON.parse(json.stdout);
    assert.deepEqual(list.links.map((l: { link: string }) => l.link), ["lo"]);
    const text = await nkb(dir, ["phys", "-o", "link,ifindex,rg-inuse", "lo"]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^LINK +IFINDEX +RG-INUSE\nlo +1 +0\n$/);
    const missing = await nkb(dir, ["phys", "nkb-no-such0"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /nkb: warning: nkb-no-such0: no such interface/);
  });
});

Deno.test("nkb: bad command lines print usage to stderr and exit 2; --help exits 0", async () => {
  const bad = [
    [],
    ["frob"],
    ["stat", "-x"],
    ["stat", "-c", "2"],
    ["stat", "-i"],
    ["stat", "-i", "0"],
    ["stat", "-i", "abc"],
    ["stat", "-i", "1", "-c", "1.5"],
    ["stat", "extra"],
    ["phys", "-o"],
    ["phys", "-o", "LINK,RG-INUSE-UMAC"],
    ["phys", "--bogus"],
  ];
  for (const args of bad) {
    const run = await nkb("/nonexistent", args);
    assert.equal(run.code, 2, `${args.join(" ")}: ${run.stderr}`);
    assert.equal(run.stdout, "");
    assert.match(run.stderr, /^nkb: .+\nusage: nkb stat/, args.join(" "));
  }
  const unknown = await nkb("/nonexistent", ["phys", "-o", "LINK,RG-INUSE-UMAC"]);
  assert.match(unknown.stderr, /unknown field "RG-INUSE-UMAC"; valid fields: LINK, IFINDEX/);
  const help = await nkb("/nonexistent", ["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^usage: nkb stat/);
  assert.match(help.stdout, /RG-AVAIL/);
});
