/**
 * Observability (issue 5): `nkb stat` lists every process's bypass sockets with
 * their counters, users, pids and commands from the host-wide registry; a killed
 * process's sockets disappear; `nkb phys` reports the receive queues bypass
 * sockets hold on 1- and 4-queue veths; a corrupted registry file is a warning.
 * Each test uses a registry directory of its own (NKB_REGISTRY_DIR).
 */

import assert from "node:assert/strict";
import { createTestbed, FIXTURES, Testbed, type TestbedProcess } from "./helpers/testbed.ts";
import type { Side } from "../examples/testbed.ts";
import { fileOfProcess, liveProcess, plantFile } from "./helpers/registry_file.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;
const TIMEOUT_MS = 30_000;

interface Sock {
  pid: number;
  user: string;
  command: string;
  cmdline: string[];
  local: { address: string; port: number };
  remote: { address: string; port: number } | null;
  state: string;
  bypass: boolean;
  interface: string | null;
  firstQueue: number;
  queueCount: number;
  reason: string | null;
  stats: Record<string, number>;
  verified: boolean;
}

interface Phys {
  link: string;
  rxQueues: number;
  rgAvail: number;
  rgInUse: number;
  holders: number[];
  queuesHeld: number[];
  xdp: string;
  zeroCopy: string;
  mtu: number;
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `nkb ARGS` in side `s`'s namespace against registry directory `dir`. */
function nkb(tb: Testbed, s: Side, dir: string, args: string[]): Promise<Run> {
  const env = ["env", `NKB_REGISTRY_DIR=${dir}`, "NO_COLOR=1"];
  return tb.exec(s, [...env, Deno.execPath(), "run", "-A", "--no-lock", CLI, ...args], TIMEOUT_MS);
}

async function nkbJson<T>(tb: Testbed, s: Side, dir: string, args: string[]): Promise<T> {
  const r = await nkb(tb, s, dir, [...args, "--json"]);
  assert.equal(r.code, 0, `nkb ${args.join(" ")}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

function agent(tb: Testbed, dir: string, args: string[]): TestbedProcess {
  return tb.spawnDeno("a", "obs_agent.ts", args, {
    env: { NKB_REGISTRY_DIR: dir },
    stdin: true,
  });
}

async function withRegistry(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "nkb-registry-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

// Sends `count` datagrams to each host and port, paced, with python3 from side B.
async function feed(tb: Testbed, plan: [string, number, number][]): Promise<void> {
  const code = `
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for host, port, count in ${JSON.stringify(plan)}:
    for i in range(count):
        s.sendto(b"obs%d" % i, (host, port))
        if i % 32 == 31: time.sleep(0.001)
`;
  await tb.execOk("b", ["python3", "-c", code], TIMEOUT_MS);
}

/**
 * A second veth pair between the testbed's namespaces (198.19.X.1 - .2): one nkb
 * process holds an interface's filter, so two bypassing processes need two links.
 * The namespaces' removal takes it with them.
 */
async function secondLink(tb: Testbed): Promise<{ ifname: string; ipA: string; ipB: string }> {
  const octet = tb.a.ip.split(".")[2];
  const [ipA, ipB] = [`198.19.${octet}.1`, `198.19.${octet}.2`];
  const [ifA, ifB] = [`x${tb.a.ifname.slice(1)}`, `x${tb.b.ifname.slice(1)}`];
  await tb.execOk("a", ["ip", "link", "add", ifA, "type", "veth", "peer", "name", ifB]);
  await tb.execOk("a", ["ip", "link", "set", ifB, "netns", tb.b.ns]);
  for (const [s, ifname, ip] of [["a", ifA, ipA], ["b", ifB, ipB]] as const) {
    await tb.execOk(s, ["ip", "addr", "add", `${ip}/24`, "dev", ifname]);
    await tb.execOk(s, ["ip", "link", "set", ifname, "up"]);
  }
  return { ifname: ifA, ipA, ipB };
}

Deno.test({
  name: "nkb stat: two processes' bypass sockets with counts, users, pids, commands; -a; SIGKILL",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withRegistry(async (dir) => {
      await using tb = await createTestbed();
      const link2 = await secondLink(tb);
      const one = agent(tb, dir, [
        `--host=${tb.a.ip}`,
        "--bypass=9100",
        "--send=200",
        `--to=${tb.b.ip}:9300`,
        "--expect=300",
        "--then=wait",
      ]);
      const two = agent(tb, dir, [
        `--host=${link2.ipA}`,
        "--bypass=9200",
        "--kernel=9201",
        "--expect=150",
        "--expectKernel=40",
      ]);
      const ready = await Promise.all([one, two].map((p) => p.nextWith("ready", TIMEOUT_MS)));
      for (const r of ready) {
        for (const b of r.bypass as { active: boolean }[]) assert.ok(b.active, JSON.stringify(r));
      }
      await feed(tb, [[tb.a.ip, 9100, 300], [link2.ipA, 9200, 150], [link2.ipA, 9201, 40]]);
      const counted = await Promise.all([one, two].map((p) => p.nextWith("counted", TIMEOUT_MS)));
      assert.deepEqual(counted.map((c) => c.got), [[300], [150]], JSON.stringify(counted));
      assert.equal(counted[1].gotKernel, 40);

      const stat = await nkbJson<{ sockets: Sock[]; warnings: string[] }>(tb, "a", dir, ["stat"]);
      assert.deepEqual(stat.warnings, []);
      const rows = stat.sockets.map((s) => [s.pid, s.local.port, s.stats.ipkts, s.stats.opkts]);
      assert.deepEqual(rows.sort(), [[one.pid, 9100, 300, 200], [two.pid, 9200, 150, 0]].sort());
      for (const s of stat.sockets) {
        const [ip, ifname] = s.pid === one.pid ? [tb.a.ip, tb.a.ifname] : [link2.ipA, link2.ifname];
        assert.equal(s.bypass, true);
        assert.equal(s.verified, true); // the kernel backs it: socket held, CAP_NET_RAW
        assert.equal(s.user, "root");
        assert.equal(s.command, "deno");
        assert.ok(s.cmdline.some((a) => a.endsWith("obs_agent.ts")), s.cmdline.join(" "));
        assert.equal(s.local.address, ip);
        assert.equal(s.interface, ifname);
        assert.equal(s.state, "Idle");
        assert.equal(s.stats.dpkts, 0);
      }

      const all = await nkbJson<{ sockets: Sock[] }>(tb, "a", dir, ["stat", "-a"]);
      const kernel = all.sockets.filter((s) => !s.bypass);
      assert.equal(kernel.length, 1, JSON.stringify(all.sockets));
      assert.equal(kernel[0].pid, two.pid);
      assert.equal(kernel[0].local.port, 9201);
      assert.equal(kernel[0].reason, "forced-kernel");
      assert.equal(kernel[0].verified, true);
      assert.equal(kernel[0].stats.kernelIpkts, 40);

      const text = await nkb(tb, "a", dir, ["stat", "-u"]);
      assert.equal(text.code, 0, text.stderr);
      const lines = text.stdout.split("\n");
      const head = lines.find((l) => l.startsWith("Local Address"));
      assert.ok(head, text.stdout);
      for (const col of ["Remote Address", "State", "If", "Ipkts", "Opkts", "Dpkts", "User"]) {
        assert.ok(head.includes(col), head);
      }
      const mine = lines.find((l) => l.startsWith(`${tb.a.ip}:9100`));
      assert.ok(mine, text.stdout);
      assert.match(mine, new RegExp(`\\b300\\s+200\\s+0\\s+-\\s+root\\s+${one.pid}\\s+deno\\b`));
      const verbose = await nkb(tb, "a", dir, ["stat", "-u", "-v"]);
      assert.match(verbose.stdout, /obs_agent\.ts --host=/);

      const oneFile = fileOfProcess(dir, one.pid);
      assert.ok(existsSync(oneFile), oneFile);
      one.kill("SIGKILL");
      await one.wait(TIMEOUT_MS);
      const after = await nkbJson<{ sockets: Sock[] }>(tb, "a", dir, ["stat"]);
      assert.deepEqual(after.sockets.map((s) => s.pid), [two.pid]);
      assert.ok(!existsSync(oneFile), "the dead process's file was removed");
      await two.send({ go: true }).catch(() => {});
      await two.dispose();
    }),
});

function existsSync(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

async function phys(tb: Testbed, dir: string): Promise<Phys> {
  const r = await nkbJson<{ links: Phys[] }>(tb, "a", dir, ["phys", tb.a.ifname]);
  assert.equal(r.links.length, 1, JSON.stringify(r));
  return r.links[0];
}

// Waits (bounded) until the agent closed its sockets and its XDP link went with them.
async function closed(p: TestbedProcess): Promise<void> {
  await p.send({ go: true });
  await p.nextWith("closed", TIMEOUT_MS);
  await p.wait(TIMEOUT_MS); // its own exit, not dispose()'s kill: the registry file goes then
  await p.dispose();
}

Deno.test({
  name: "nkb phys: RG-AVAIL / RG-INUSE on a 1-queue and a 4-queue veth, while held and after",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withRegistry(async (dir) => {
      for (const queues of [1, 4]) {
        await using tb = await Testbed.create({
          thirdOctet: "next",
          numRxQueues: queues,
          numTxQueues: queues,
          scriptDir: FIXTURES,
        });
        const idle = await phys(tb, dir);
        assert.deepEqual(
          [idle.rxQueues, idle.rgAvail, idle.rgInUse, idle.holders, idle.xdp, idle.zeroCopy],
          [queues, queues, 0, [], "none", "no"],
          JSON.stringify(idle),
        );
        const all = agent(tb, dir, [`--host=${tb.a.ip}`, "--bypass=9400"]);
        await all.nextWith("counted", TIMEOUT_MS);
        const held = await phys(tb, dir);
        assert.deepEqual(
          [held.rgAvail, held.rgInUse, held.holders, held.xdp],
          [0, queues, [all.pid], "nkb"],
          JSON.stringify(held),
        );
        await closed(all);
        const back = await phys(tb, dir);
        assert.deepEqual([back.rgAvail, back.rgInUse, back.holders], [queues, 0, []]);
        if (queues === 1) continue;
        // Queue-affine sockets (one per Worker, say) hold one queue each.
        const aff = agent(tb, dir, [`--host=${tb.a.ip}`, "--bypass=9500,9500", "--queue=2,0"]);
        await aff.nextWith("counted", TIMEOUT_MS);
        const split = await phys(tb, dir);
        assert.deepEqual(
          [split.rgAvail, split.rgInUse, split.queuesHeld, split.holders],
          [2, 2, [0, 2], [aff.pid]],
          JSON.stringify(split),
        );
        const v = await nkb(tb, "a", dir, ["phys", "-v", tb.a.ifname]);
        assert.equal(v.code, 0, v.stderr);
        assert.match(v.stdout, /^LINK\s+RG-AVAIL\s+RG-INUSE/m);
        assert.match(v.stdout, new RegExp(`\\b${aff.pid}\\b`));
        await closed(aff);
        const free = await phys(tb, dir);
        assert.deepEqual([free.rgAvail, free.rgInUse], [queues, 0]);
      }
    }),
});

Deno.test({
  name: "registry: 0600 by default, NKB_REGISTRY_MODE widens it; corrupt files are warnings",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withRegistry(async (dir) => {
      await using tb = await createTestbed();
      const p = agent(tb, dir, [`--host=${tb.a.ip}`, "--bypass=9600"]);
      await p.nextWith("counted", TIMEOUT_MS);
      const file = fileOfProcess(dir, p.pid);
      assert.equal(Deno.statSync(file).mode! & 0o777, 0o600);
      assert.equal(Deno.statSync(`${dir}/0`).mode! & 0o777, 0o700);
      // A truncated copy under this live process's name, and garbage beside it.
      const bytes = Deno.readFileSync(file);
      const mine = plantFile(dir, liveProcess(), bytes.subarray(0, 5000));
      Deno.writeFileSync(`${dir}/0/12345678.reg`, crypto.getRandomValues(new Uint8Array(9000)));
      const r = await nkb(tb, "a", dir, ["stat", "--json"]);
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout) as { sockets: Sock[]; warnings: string[] };
      assert.deepEqual(out.sockets.map((s) => s.pid), [p.pid]);
      assert.deepEqual(
        out.warnings.sort(),
        [
          `${dir}/0: 1 entries that are not registry files, ignored`,
          `${mine}: truncated: 5000 bytes`,
        ].sort(),
      );
      const text = await nkb(tb, "a", dir, ["stat"]);
      assert.equal(text.code, 0, text.stderr);
      assert.match(text.stderr, /nkb: warning: .*\/0: 1 entries that are not registry files/);
      await closed(p);

      const wide = tb.spawnDeno("a", "obs_agent.ts", [`--host=${tb.a.ip}`, "--bypass=9601"], {
        env: { NKB_REGISTRY_DIR: dir, NKB_REGISTRY_MODE: "0644" },
        stdin: true,
      });
      await wide.nextWith("counted", TIMEOUT_MS);
      const wideFile = fileOfProcess(dir, wide.pid);
      assert.equal(Deno.statSync(wideFile).mode! & 0o777, 0o644);
      assert.equal(Deno.statSync(`${dir}/0`).mode! & 0o777, 0o755, "others may now look in");
      await closed(wide);
      assert.ok(!existsSync(wideFile), "a closed process removes its file");
    }),
});

interface StatSock extends Sock {
  netnsIno: string;
  recvQ: number;
  group: string | null;
  groups: number;
}

/** `nkb stat --json -i 0.1` in side a: every report with when it arrived (this clock). */
function statWatch(tb: Testbed, dir: string, reports: number): {
  proc: TestbedProcess;
  seen: { atMs: number; sockets: StatSock[] }[];
} {
  const seen: { atMs: number; sockets: StatSock[] }[] = [];
  const env = ["env", `NKB_REGISTRY_DIR=${dir}`];
  const cmd = [...env, Deno.execPath(), "run", "-A", "--no-lock", CLI, "stat", "--json"];
  const proc = tb.spawn("a", [...cmd, "-i", "0.1", "-c", String(reports)], {
    onStdout: (line) => {
      const r = JSON.parse(line) as { sockets: StatSock[] };
      seen.push({ atMs: Date.now(), sockets: r.sockets });
    },
  });
  return { proc, seen };
}

// Datagrams the sending veth dropped (its peer's queue full): they never reach the rings.
// (The receiving veth's rx_dropped counts the ring drops too: not a separate loss.)
async function linkDrops(tb: Testbed): Promise<number> {
  const path = `/sys/class/net/${tb.b.ifname}/statistics/tx_dropped`;
  return Number(await tb.execOk("b", ["cat", path]));
}

Deno.test({
  name: "nkb stat shows ring drops of an idle application within one second (busy in JS), Recv-Q",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withRegistry(async (dir) => {
      await using tb = await createTestbed();
      const port = 9400;
      // Never receives; busy in JavaScript while the flood and the reports run.
      const app = agent(tb, dir, [`--host=${tb.a.ip}`, `--bypass=${port}`, "--busyMs=6000"]);
      const ready = await app.nextWith("ready", TIMEOUT_MS);
      assert.deepEqual((ready.bypass as { active: boolean }[]).map((b) => b.active), [true]);
      await app.nextWith("busy", TIMEOUT_MS);
      const watch = statWatch(tb, dir, 60);
      const dropsBefore = await linkDrops(tb);
      const sent = 20_000; // more than the ring's 8,192 frames
      await feed(tb, [[tb.a.ip, port, sent]]);
      const floodEndMs = Date.now();
      const lost = (await linkDrops(tb)) - dropsBefore;
      // Bounded: the reports go on every 100 ms; one second after the flood is what counts.
      for (let i = 0; i < 40 && Date.now() < floodEndMs + 1000; i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      const inTime = watch.seen.filter((r) => r.atMs <= floodEndMs + 1000);
      assert.ok(inTime.length > 0, "no report within one second of the flood's end");
      const last = inTime[inTime.length - 1].sockets.filter((s) => s.local.port === port);
      assert.equal(last.length, 1, JSON.stringify(last));
      const done = await app.nextWith("busyDone", TIMEOUT_MS);
      assert.ok(
        (done.endMs as number) > floodEndMs + 1000,
        `the application was busy in JavaScript throughout (ended ${
          (done.endMs as number) - floodEndMs
        } ms after the flood)`,
      );
      // What the kernel counted (its XDP_STATISTICS, read by stats() now, without a receive).
      const kernel = (done.stats as Record<string, number>[])[0];
      const s = last[0];
      const trail = inTime.map((r) => {
        const x = r.sockets.find((y) => y.local.port === port);
        return `${r.atMs - floodEndMs}:${x?.stats.dpkts}/${x?.recvQ}`;
      });
      console.log(
        `sent ${sent}, sender drops ${lost}; reports (ms after the flood: Dpkts/Recv-Q) ` +
          `${trail.join(" ")}; kernel ${kernel.dpkts}`,
      );
      assert.ok(s.stats.dpkts > 0);
      assert.equal(s.stats.dpkts, kernel.dpkts);
      assert.equal(s.stats.interfaceDrops, kernel.interfaceDrops);
      assert.equal(s.stats.ipkts, 0, "the application never received");
      assert.ok(s.recvQ > 0, "datagrams wait in the ring while the application is idle");
      assert.equal(s.recvQ + s.stats.dpkts + lost, sent, "every datagram waits or is counted");
      // The refresher runs while the process has an engine, and stops with the last one.
      assert.ok((done.threads as string[]).includes("nkb-refresh"), String(done.threads));
      await app.send({ go: true });
      const closed = await app.nextWith("closed", TIMEOUT_MS);
      assert.ok(!(closed.threads as string[]).includes("nkb-refresh"), String(closed.threads));
      await watch.proc.dispose();
      await app.dispose();
    }),
});

Deno.test({
  name: "nkb stat: Netns tells two namespaces' sockets at one address apart; Group shows a join",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withRegistry(async (dir) => {
      await using tb = await createTestbed();
      // One address in both namespaces, on each side's veth end.
      const shared = `198.18.${tb.a.ip.split(".")[2]}.99`;
      for (const s of ["a", "b"] as const) {
        await tb.execOk(s, ["ip", "addr", "add", `${shared}/32`, "dev", tb.side(s).ifname]);
      }
      const [group, second] = ["239.77.0.1", "239.77.0.2"];
      const inA = agent(tb, dir, [
        `--host=${shared}`,
        "--bypass=9500",
        `--join=${group},${second}`,
      ]);
      const inB = tb.spawnDeno("b", "obs_agent.ts", [`--host=${shared}`, "--bypass=9500"], {
        env: { NKB_REGISTRY_DIR: dir },
        stdin: true,
      });
      for (const p of [inA, inB]) {
        const ready = await p.nextWith("ready", TIMEOUT_MS);
        assert.deepEqual((ready.bypass as { active: boolean }[]).map((b) => b.active), [true]);
        await p.nextWith("counted", TIMEOUT_MS);
      }
      const nsIno = (s: Side) => String(Deno.statSync(`/run/netns/${tb.side(s).ns}`).ino);
      const stat = await nkbJson<{ sockets: StatSock[]; warnings: string[] }>(tb, "a", dir, [
        "stat",
      ]);
      assert.deepEqual(stat.warnings, []);
      const rows = stat.sockets.map((
        s,
      ) => [
        s.pid,
        `${s.local.address}:${s.local.port}`,
        s.netnsIno,
        s.group,
        s.groups,
        s.verified,
      ]);
      assert.deepEqual(
        rows.sort(),
        [
          [inA.pid, `${shared}:9500`, nsIno("a"), group, 2, true],
          [inB.pid, `${shared}:9500`, nsIno("b"), null, 0, true],
        ].sort(),
      );
      assert.notEqual(nsIno("a"), nsIno("b"));
      const text = await nkb(tb, "a", dir, ["stat"]);
      assert.equal(text.code, 0, text.stderr);
      const lines = text.stdout.split("\n").filter((l) => l.startsWith(`${shared}:9500 `));
      assert.equal(lines.length, 2, text.stdout);
      const mine = lines.find((l) => l.includes(` ${nsIno("a")} `));
      const theirs = lines.find((l) => l.includes(` ${nsIno("b")} `));
      assert.ok(mine !== undefined && theirs !== undefined, text.stdout);
      assert.match(mine, new RegExp(`\\s${group.replaceAll(".", "\\.")}\\+1$`));
      assert.match(theirs, /\s-$/);

      // Group follows the memberships: the oldest still held, "+N" for the others.
      const groupOf = async () => {
        const r = await nkbJson<{ sockets: StatSock[] }>(tb, "a", dir, ["stat"]);
        const s = r.sockets.find((x) => x.pid === inA.pid);
        return [s?.group, s?.groups];
      };
      for (const [leave, want] of [[group, [second, 1]], [second, [null, 0]]] as const) {
        await inA.send({ leave });
        assert.equal((await inA.nextWith("left", TIMEOUT_MS)).left, leave);
        assert.deepEqual(await groupOf(), want);
      }
      for (const p of [inA, inB]) await closed(p);
    }),
});
