/**
 * Queues as ring groups across processes (issue 16): every nkb process on an interface
 * shares one XDP filter, and each binds XDP sockets on the queues it holds.
 *
 * - Three processes, each with a queue-affine bypass socket on its own queue of a 4-queue
 *   veth, fed by a queue-affine generator (the native ceiling, `mqtx`: one AF_XDP socket per
 *   queue of the peer; on veth a frame sent on queue q arrives on queue q): each receives
 *   exactly its queue's datagrams, through its ring (side A's kernel UDP counters do not
 *   move), and `nkb stat` and `nkb phys` show the three processes and their queues. A
 *   fourth fits on the last queue; a fifth (whole interface, or a held queue) falls back
 *   with `queue-busy`, and exits with it under `_NET_KERNEL_BYPASS_ERR_EXIT=1`.
 * - A group joined by two processes on two queues: each gets every datagram (the kernel
 *   copies a group held on more than one queue to every member; a redirect would not).
 * - SIGKILL of the process that attached the filter while the others receive: they get
 *   every datagram of their queues, on the bypass path. After all are killed no XDP
 *   program is on the interface and no flow map is left, and a new process bypasses
 *   within a second of its start.
 */

import assert from "node:assert/strict";
import { buildWithShim, ROOT } from "./helpers/zig.ts";
import { FIXTURES, Testbed, type TestbedProcess } from "./helpers/testbed.ts";

const PORT = 9000;
const GEN_PORT = 9100; // the generator's queue q sends from GEN_PORT + q
const QUEUES = 4;

type Msg = Record<string, unknown>;
type Bypass = { active: boolean; reason: string | null; queue: number | null };
type Stats = Record<string, number>;

// The generator sends its end markers after a pause, and one may leave through its kernel
// socket (its destination entry expired meanwhile), on whatever queue the peer's kernel
// picks: that one reaches a holder through the kernel. Data of the holder's own queue never
// does (`source`: its queue's generator port); another queue's, whose holder is gone, may.
// Returns the markers that came through the kernel.
function kernelOnlyMarkers(done: Msg, source: number, what: string): number {
  const bySource = done.kernelBySource as Record<string, number>;
  assert.equal(bySource[source], undefined, `the queue's own data through the kernel: ${what}`);
  const data = Object.values(bySource).reduce((a, n) => a + n, 0);
  const markers = done.kernelMarkers as number;
  assert.equal((done.stats as Stats).kernelIpkts, data + markers, what);
  return markers;
}

async function buildCeiling(bin: string): Promise<void> {
  const build = await buildWithShim("bench/native/ceiling.c", bin);
  assert.equal(build.code, 0, build.stderr);
}

function holder(tb: Testbed, queue: number | null, extra: string[] = [], env = {}): TestbedProcess {
  const q = queue === null ? [] : [`--queue=${queue}`];
  return tb.spawnDeno(
    "a",
    "rg_holder.ts",
    [`--host=${tb.a.ip}`, `--port=${PORT}`, ...q, ...extra],
    {
      env,
      name: `rg_holder(${queue ?? "whole"})`,
      stdin: true, // held open: the holder keeps its socket until the test ends it
    },
  );
}

async function ready(p: TestbedProcess): Promise<{ pid: number; bypass: Bypass }> {
  const m = await p.nextWith("ready", 20_000);
  return { pid: m.pid as number, bypass: m.bypass as Bypass };
}

function fourQueues(): Promise<Testbed> {
  return Testbed.create({
    thirdOctet: "next",
    numRxQueues: QUEUES,
    numTxQueues: QUEUES,
    scriptDir: FIXTURES,
  });
}

// Holders on queues 0..n-1, each on the bypass path on its queue.
async function holdQueues(
  tb: Testbed,
  n: number,
  extra: string[] = [],
): Promise<{ holders: TestbedProcess[]; pids: number[] }> {
  const holders: TestbedProcess[] = [];
  const pids: number[] = [];
  for (let q = 0; q < n; q++) {
    const p = holder(tb, q, ["--flows=1", ...extra]);
    holders.push(p);
    const r = await ready(p);
    assert.equal(r.bypass.active, true, `queue ${q}: ${JSON.stringify(r)} ${p.stderr}`);
    assert.equal(r.bypass.queue, q, JSON.stringify(r));
    pids.push(r.pid);
  }
  return { holders, pids };
}

async function generate(
  tb: Testbed,
  ceiling: string,
  queues: number,
  seconds: number,
): Promise<TestbedProcess> {
  const gen = tb.spawn("b", [
    ceiling,
    ...["mqtx", tb.b.ip, `${GEN_PORT}`, tb.a.ip, `${PORT}`, `${queues}`],
    ...["20000", "64", `${seconds}`, "150"],
  ], { name: "mqtx@b" });
  await gen.nextWith("ready", 20_000);
  return gen;
}

async function nkbJson(tb: Testbed, args: string[]): Promise<Msg> {
  const deno = `${ROOT}.tools/deno/node_modules/.bin/deno`;
  const out = await tb.execOk("a", [deno, "run", "-A", `${ROOT}cli.ts`, ...args, "--json"], 30_000);
  return JSON.parse(out) as Msg;
}

// nkb_flows maps on the host (BPF_MAP_GET_NEXT_ID walk): python3 with ctypes, no bpftool.
async function flowMaps(tb: Testbed): Promise<number> {
  const code = `
import ctypes, os, struct
libc = ctypes.CDLL(None, use_errno=True)
def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    r = libc.syscall(321, cmd, buf, 128)
    return r, buf.raw
n, start = 0, 0
for _ in range(100000):
    r, raw = bpf(12, struct.pack("II", start, 0))  # BPF_MAP_GET_NEXT_ID
    if r < 0: break
    start = struct.unpack_from("II", raw)[1]
    fd, _ = bpf(14, struct.pack("I", start))  # BPF_MAP_GET_FD_BY_ID
    if fd < 0: continue
    info = ctypes.create_string_buffer(88)
    r, _ = bpf(15, struct.pack("IIQ", fd, 88, ctypes.addressof(info)))  # OBJ_GET_INFO_BY_FD
    os.close(fd)
    if r == 0 and info.raw[24:40].split(b"\\0")[0] == b"nkb_flows": n += 1
print(n)
`;
  return Number((await tb.execOk("a", ["python3", "-c", code], 30_000)).trim());
}

async function inDatagrams(tb: Testbed): Promise<number> {
  return (await tb.udpCounters("a")).InDatagrams;
}

Deno.test({
  name: "ring groups: three processes on their own queues; a fourth fits, a fifth falls back",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    assert.equal(Deno.uid(), 0, "this test needs root (network namespaces, AF_XDP)");
    const ceiling = await Deno.makeTempFile({ prefix: "nkb-rg-ceiling-" });
    try {
      await buildCeiling(ceiling);
      await using tb = await fourQueues();
      const { holders, pids } = await holdQueues(tb, 3);
      const phys = await nkbJson(tb, ["phys", tb.a.ifname]);
      const link = (phys.links as Msg[])[0];
      assert.equal(link.rgInUse, 3, JSON.stringify(phys));
      assert.equal(link.rgAvail, 1, JSON.stringify(phys));
      assert.deepEqual(link.holders, [...pids].sort((a, b) => a - b), JSON.stringify(phys));
      assert.deepEqual(link.queuesHeld, [0, 1, 2], JSON.stringify(phys));
      const stat = await nkbJson(tb, ["stat"]);
      const rows = (stat.sockets as Msg[]).filter((s) => pids.includes(s.pid as number));
      assert.deepEqual(
        rows.map((s) => [s.pid, s.firstQueue, s.queueCount]).sort((a, b) =>
          Number(a[1]) - Number(b[1])
        ),
        pids.map((pid, q) => [pid, q, 1]),
        JSON.stringify(stat),
      );

      const before = await inDatagrams(tb);
      let markersViaKernel = 0;
      const gen = await generate(tb, ceiling, 3, 1.5);
      const result = (await gen.nextWith("result", 30_000)).result as Msg;
      const perQueue = result.perQueue as number[];
      for (let q = 0; q < 3; q++) {
        const done = await holders[q].nextWith("done", 30_000);
        const stats = done.stats as Stats;
        const what = `queue ${q}: ${JSON.stringify(done)} generator ${JSON.stringify(result)}`;
        assert.ok(perQueue[q] > 1000, what);
        assert.equal(done.received, perQueue[q], what);
        assert.deepEqual(done.bySource, { [GEN_PORT + q]: perQueue[q] }, what);
        markersViaKernel += kernelOnlyMarkers(done, GEN_PORT + q, what);
        assert.deepEqual(done.kernelBySource, {}, what);
        assert.ok(stats.ipkts >= perQueue[q], what);
      }
      const kernel = (await inDatagrams(tb)) - before;
      assert.equal(kernel, markersViaKernel, `side A's kernel took ${kernel} datagrams`);

      const fourth = holder(tb, 3, ["--noRecv"]);
      holders.push(fourth);
      const r4 = await ready(fourth);
      assert.equal(r4.bypass.active, true, `${JSON.stringify(r4)} ${fourth.stderr}`);
      assert.equal(r4.bypass.queue, 3);
      for (const queue of [null, 0]) {
        const fifth = holder(tb, queue, ["--noRecv"]);
        holders.push(fifth);
        const r5 = await ready(fifth);
        assert.equal(r5.bypass.active, false, JSON.stringify(r5));
        assert.equal(r5.bypass.reason, "queue-busy", JSON.stringify(r5));
      }
      const strict = holder(tb, null, ["--noRecv"], { _NET_KERNEL_BYPASS_ERR_EXIT: "1" });
      const st = await strict.wait(20_000);
      assert.equal(st.code, 1, `exit ${st.code}: ${strict.stderr}`);
      assert.match(strict.stderr, /queue-busy/);
      for (const p of holders) p.kill();
    } finally {
      await Deno.remove(ceiling);
    }
  },
});

Deno.test({
  name:
    "ring groups: SIGKILL of the filter's attacher; the others keep every datagram; all gone, nothing left",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    assert.equal(Deno.uid(), 0, "this test needs root (network namespaces, AF_XDP)");
    const ceiling = await Deno.makeTempFile({ prefix: "nkb-rg-ceiling-" });
    try {
      await buildCeiling(ceiling);
      await using tb = await fourQueues();
      const mapsBefore = await flowMaps(tb);
      const { holders } = await holdQueues(tb, 3);
      assert.ok(await tb.xdpAttached("a"), "the filter is on the interface");
      const gen = await generate(tb, ceiling, 3, 2);
      await new Promise((r) => setTimeout(r, 700));
      holders[0].kill("SIGKILL"); // the first: it attached the filter
      await holders[0].wait(10_000);
      const result = (await gen.nextWith("result", 30_000)).result as Msg;
      const perQueue = result.perQueue as number[];
      for (const q of [1, 2]) {
        const done = await holders[q].nextWith("done", 30_000);
        const stats = done.stats as Stats;
        const what = `queue ${q}: ${JSON.stringify(done)} generator ${JSON.stringify(result)}`;
        assert.ok(perQueue[q] > 1000, what);
        // Its own queue's, all through its ring; queue 0's after the kill come through
        // the kernel (its holder's key stays until the queue's next holder binds it: the
        // filter passes them, SO_REUSEPORT picks a holder), none lost either way.
        assert.equal((done.bySource as Record<string, number>)[GEN_PORT + q], perQueue[q], what);
        kernelOnlyMarkers(done, GEN_PORT + q, what);
        assert.ok(stats.ipkts >= perQueue[q], what);
        assert.equal(stats.rxDropped, 0, what);
      }
      for (const p of holders.slice(1)) p.kill("SIGKILL");
      await Promise.all(holders.slice(1).map((p) => p.wait(10_000)));
      let attached = true;
      for (let i = 0; i < 40 && attached; i++) {
        attached = await tb.xdpAttached("a");
        if (attached) await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(attached, false, await tb.linkText("a"));
      assert.ok((await flowMaps(tb)) <= mapsBefore, "an nkb_flows map outlived its users");
      const t0 = performance.now();
      const next = holder(tb, null, ["--noRecv"]);
      const r = await ready(next);
      const ms = performance.now() - t0;
      assert.equal(r.bypass.active, true, `${JSON.stringify(r)} ${next.stderr}`);
      console.log(`a new process bypassed ${ms.toFixed(0)} ms after its start`);
      assert.ok(ms < 1000, `a new process took ${ms.toFixed(0)} ms to bypass`);
      next.kill();
    } finally {
      await Deno.remove(ceiling);
    }
  },
});

Deno.test({
  name: "ring groups: a group joined on two queues reaches both members, every datagram",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    assert.equal(Deno.uid(), 0, "this test needs root (network namespaces, AF_XDP)");
    await using tb = await fourQueues();
    const group = "239.255.16.1";
    const count = 2000;
    const { holders: members } = await holdQueues(tb, 2, [`--group=${group}`]);
    // One source port: every datagram of the flow arrives on one queue of the two.
    const code = `
import socket, struct, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("${tb.b.ip}"))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
for i in range(${count}):
    s.sendto(struct.pack("<I", i), ("${group}", ${PORT}))
    if i % 32 == 31: time.sleep(0.002)
time.sleep(0.2)
for i in range(5):
    s.sendto(struct.pack("<I", 0xffffffff), ("${group}", ${PORT}))
`;
    await tb.execOk("b", ["python3", "-c", code], 60_000);
    for (let q = 0; q < 2; q++) {
      const done = await members[q].nextWith("done", 30_000);
      // A redirect would give each datagram to the one member whose queue it arrived on.
      assert.equal(done.received, count, `member on queue ${q}: ${JSON.stringify(done)}`);
    }
    for (const p of members) p.kill();
  },
});
