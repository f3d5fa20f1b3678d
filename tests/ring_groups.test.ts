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
 * - A process alone with a whole-interface socket holds all 4 queues and receives a 4-queue
 *   generator through its rings. A second such process finds none free and asks: within
 *   2 s it bypasses on one queue, the first holds 3 (`nkb stat`, `nkb phys`), and the
 *   first received every datagram of a generator running through the hand-over, by
 *   sequence number (through its rings, or its kernel socket after the give-up).
 * - A newcomer that no holder can give a queue (each holds one) asks, stops after 3 s, stays
 *   `queue-busy`, and its ask is gone from the filter's control block; so is that of one
 *   that closes its socket while it asks; a holder of two queues that comes afterwards
 *   keeps both.
 */

import assert from "node:assert/strict";
import { buildWithShim, ROOT } from "./helpers/zig.ts";
import { FIXTURES, Testbed, type TestbedProcess } from "./helpers/testbed.ts";
import { NOBODY, setprivAs } from "./helpers/nobody.ts";

const PORT = 9000;
const GEN_PORT = 9100; // the generator's queue q sends from GEN_PORT + q
const QUEUES = 4;

type Msg = Record<string, unknown>;
type Bypass = {
  active: boolean;
  reason: string | null;
  queue: number | null;
  detail?: string | null;
};
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

// Runs fn with the native generator built into a temporary file, removed afterwards.
async function withCeiling(fn: (ceiling: string) => Promise<void>): Promise<void> {
  const ceiling = await Deno.makeTempFile({ prefix: "nkb-rg-ceiling-" });
  try {
    await buildCeiling(ceiling);
    await fn(ceiling);
  } finally {
    await Deno.remove(ceiling);
  }
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

// `nkb phys IFNAME --json` run by nobody (setpriv) in side a, with a Deno cache of its own.
async function physAsNobody(tb: Testbed): Promise<Msg> {
  const home = await Deno.makeTempDir({ prefix: "nkb-phys-nobody-" });
  try {
    Deno.chownSync(home, NOBODY, NOBODY);
    const deno = `${ROOT}.tools/deno/node_modules/.bin/deno`;
    const out = await tb.execOk("a", [
      "env",
      `DENO_DIR=${home}`,
      `HOME=${home}`,
      ...setprivAs(NOBODY),
      deno,
      "run",
      "-A",
      `${ROOT}cli.ts`,
      "phys",
      tb.a.ifname,
      "--json",
    ], 60_000);
    return JSON.parse(out) as Msg;
  } finally {
    await Deno.remove(home, { recursive: true });
  }
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

// The interface's queue requests: the ask records (nkb_ctl_t.asks, ffi/nkb_net.h: 16 of
// {pid, pidns, start_ticks u64, until_ms, given_ms} after the 8 bytes of MAC) whose pid is set,
// read from the attached filter's nkb_ctl map. A record of a process gone or that stopped
// renewing stays set until the next asker reuses it: the tests end asks by closing or by the
// shim's own end, which clears the pid.
async function ctlAsks(tb: Testbed): Promise<number> {
  const text = await tb.linkText("a");
  const id = /prog\/xdp id (\d+)/.exec(text);
  assert.ok(id !== null, `no XDP program on the interface: ${text}`);
  const code = `
import ctypes, os, struct
libc = ctypes.CDLL(None, use_errno=True)
def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    return libc.syscall(321, cmd, buf, 128)
prog = bpf(13, struct.pack("I", ${id[1]}))  # BPF_PROG_GET_FD_BY_ID
assert prog >= 0, "prog fd"
ids = (ctypes.c_uint32 * 16)()
info = ctypes.create_string_buffer(struct.pack("52xIQ", 16, ctypes.addressof(ids)), 80)
attr = struct.pack("IIQ", prog, 80, ctypes.addressof(info))
assert bpf(15, attr) == 0, "prog info"  # BPF_OBJ_GET_INFO_BY_FD
n = struct.unpack_from("I", info.raw, 52)[0]
found = None
for mid in list(ids)[:n]:
    fd = bpf(14, struct.pack("I", mid))  # BPF_MAP_GET_FD_BY_ID
    if fd < 0: continue
    minfo = ctypes.create_string_buffer(88)
    bpf(15, struct.pack("IIQ", fd, 88, ctypes.addressof(minfo)))
    if minfo.raw[24:40].split(b"\\0")[0] == b"nkb_ctl":
        key = ctypes.c_uint32(0)
        val = ctypes.create_string_buffer(4096)
        r = bpf(1, struct.pack("IIQQQ", fd, 0, ctypes.addressof(key), ctypes.addressof(val), 0))
        assert r == 0, "lookup"
        found = sum(1 for i in range(16) if struct.unpack_from("I", val.raw, 8 + 24 * i)[0] != 0)
    os.close(fd)
print(found)
`;
  const out = (await tb.execOk("a", ["python3", "-c", code], 30_000)).trim();
  assert.match(out, /^\d+$/, `nkb_ctl: ${out}`);
  return Number(out);
}

// Whether BPF program `id` is still loaded (BPF_PROG_GET_FD_BY_ID succeeds).
async function progLoaded(tb: Testbed, id: number): Promise<boolean> {
  const code = `
import ctypes, os, struct
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(struct.pack("I", ${id}), 128)
fd = libc.syscall(321, 13, buf, 128)  # BPF_PROG_GET_FD_BY_ID
if fd >= 0: os.close(fd)
print(1 if fd >= 0 else 0)
`;
  return (await tb.execOk("a", ["python3", "-c", code], 30_000)).trim() === "1";
}

type Row = { pid: number; firstQueue: number; queueCount: number };

async function statRows(tb: Testbed, pids: number[]): Promise<Row[]> {
  const stat = await nkbJson(tb, ["stat"]);
  return (stat.sockets as Row[]).filter((s) => pids.includes(s.pid))
    .map((s) => ({ pid: s.pid, firstQueue: s.firstQueue, queueCount: s.queueCount }))
    .sort((a, b) => a.firstQueue - b.firstQueue);
}

async function inDatagrams(tb: Testbed): Promise<number> {
  return (await tb.udpCounters("a")).InDatagrams;
}

// A test of this file: processes, namespaces and AF_XDP need root (fails, never skips).
function rootTest(name: string, fn: () => Promise<void>): void {
  Deno.test({
    name,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      assert.equal(Deno.uid(), 0, "this test needs root (network namespaces, AF_XDP)");
      await fn();
    },
  });
}

// A whole-interface holder in a pid namespace of its own (a container's process): its
// records name a namespace the others cannot look into.
function pidnsHolder(tb: Testbed): TestbedProcess {
  const deno = [Deno.execPath(), "run", "-A", "--unstable-net", "--no-lock"];
  return tb.spawn("a", [
    ...["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"],
    ...[...deno, `${FIXTURES}/rg_holder.ts`, `--host=${tb.a.ip}`, `--port=${PORT}`, "--noRecv"],
  ], { name: "rg_holder(pidns)", stdin: true });
}

// rg_holder.ts (whole interface, not receiving) in a time namespace whose monotonic and boot
// clocks run `offsetS` seconds and 5 ms ahead of the host's: half a clock tick, which the
// kernel rounds into /proc start times per process, as for a process CRIU restored.
function timensHolder(tb: Testbed, offsetS: number, extra: string[]): TestbedProcess {
  const deno = [Deno.execPath(), "run", "-A", "--unstable-net", "--no-lock"];
  return tb.spawn("a", [
    ...["python3", `${FIXTURES}/timens_exec.py`, String(offsetS), "5000000"],
    ...[...deno, `${FIXTURES}/rg_holder.ts`, `--host=${tb.a.ip}`, `--port=${PORT}`, ...extra],
  ], { name: `rg_holder(timens ${offsetS} s)`, stdin: true });
}

// A test on a fresh 4-queue testbed; the processes it pushes on procs are killed at its end.
function queuesTest(
  name: string,
  fn: (tb: Testbed, procs: TestbedProcess[]) => Promise<void>,
): void {
  rootTest(name, async () => {
    await using tb = await fourQueues();
    const procs: TestbedProcess[] = [];
    try {
      await fn(tb, procs);
    } finally {
      for (const p of procs) p.kill();
    }
  });
}

// A whole-interface holder that does not receive, alone on the interface: every queue.
async function wholeHolder(
  tb: Testbed,
  procs: TestbedProcess[],
): Promise<{ first: TestbedProcess; r0: { pid: number; bypass: Bypass } }> {
  const first = holder(tb, null, ["--noRecv"]);
  procs.push(first);
  const r0 = await ready(first);
  assert.equal(r0.bypass.active, true, `${JSON.stringify(r0)} ${first.stderr}`);
  return { first, r0 };
}

rootTest(
  "ring groups: three processes on their own queues; a fourth fits, a fifth falls back",
  async () => {
    await withCeiling(async (ceiling) => {
      await using tb = await fourQueues();
      const { holders, pids } = await holdQueues(tb, 3);
      const phys = await nkbJson(tb, ["phys", tb.a.ifname]);
      const link = (phys.links as Msg[])[0];
      assert.equal(link.source, "filter", JSON.stringify(phys));
      assert.equal(link.rgInUse, 3, JSON.stringify(phys));
      assert.equal(link.rgAvail, 1, JSON.stringify(phys));
      assert.deepEqual(link.holders, [...pids].sort((a, b) => a - b), JSON.stringify(phys));
      assert.deepEqual(link.queuesHeld, [0, 1, 2], JSON.stringify(phys));
      assert.deepEqual(link.xskQueues, [0, 1, 2], JSON.stringify(phys));
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

      // Without a registry file: nkb phys sees it all the same, in the filter's records.
      const fourth = holder(tb, 3, ["--noRecv"], { NKB_REGISTRY_DIR: "off" });
      holders.push(fourth);
      const r4 = await ready(fourth);
      assert.equal(r4.bypass.active, true, `${JSON.stringify(r4)} ${fourth.stderr}`);
      assert.equal(r4.bypass.queue, 3);
      const phys4 = await nkbJson(tb, ["phys", tb.a.ifname]);
      const link4 = (phys4.links as Msg[])[0];
      assert.equal(link4.source, "filter", JSON.stringify(phys4));
      assert.equal(link4.rgAvail, 0, JSON.stringify(phys4));
      assert.deepEqual(link4.queuesHeld, [0, 1, 2, 3], JSON.stringify(phys4));
      assert.deepEqual(link4.xskQueues, [0, 1, 2, 3], JSON.stringify(phys4));
      // Another user reads neither the filter's records (CAP_SYS_ADMIN) nor root's registry
      // files: the kernel's word (an XSK bound on each queue) still counts all four in use.
      const asOther = await physAsNobody(tb);
      const linkN = (asOther.links as Msg[])[0];
      assert.equal(linkN.source, "registry", JSON.stringify(asOther));
      assert.deepEqual(linkN.queuesHeld, [], JSON.stringify(asOther));
      assert.deepEqual(linkN.xskQueues, [0, 1, 2, 3], JSON.stringify(asOther));
      assert.equal(linkN.rgInUse, 4, JSON.stringify(asOther));
      assert.equal(linkN.rgAvail, 0, JSON.stringify(asOther));
      assert.deepEqual(
        link4.holders,
        [...pids, r4.pid].sort((a, b) => a - b),
        JSON.stringify(phys4),
      );
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
    });
  },
);

rootTest(
  "ring groups: SIGKILL of the filter's attacher; the others keep every datagram; all gone, nothing left",
  async () => {
    await withCeiling(async (ceiling) => {
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
    });
  },
);

rootTest(
  "ring groups: a group joined on two queues reaches both members, every datagram",
  async () => {
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
);

queuesTest(
  "ring groups: a wildcard socket decided by its group join asks too, and its group flow goes in with the queue",
  async (tb, procs) => {
    await wholeHolder(tb, procs);
    const group = "239.255.16.2";
    const sources = 32;
    const member = holder(tb, null, [`--group=${group}`, `--flows=${sources}`]);
    procs.push(member);
    const rm = await ready(member);
    assert.equal(rm.bypass.reason, "queue-busy", JSON.stringify(rm));
    let rows: Row[] = [];
    for (let i = 0; i < 50; i++) {
      rows = await statRows(tb, [rm.pid]);
      if (rows[0]?.queueCount === 1) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(rows, [{ pid: rm.pid, firstQueue: QUEUES - 1, queueCount: 1 }]);
    // Many source ports: some flows hash onto the member's queue (its ring), the others
    // onto the holder's (the kernel, to the member's companion socket).
    const perSource = 50;
    const code = `
import socket, struct, time
socks = []
for k in range(${sources}):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("${tb.b.ip}"))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    socks.append(s)
for i in range(${perSource}):
    for s in socks:
      s.sendto(struct.pack("<I", i), ("${group}", ${PORT}))
    time.sleep(0.002)
time.sleep(0.2)
for r in range(5):
    for s in socks:
      s.sendto(struct.pack("<I", 0xffffffff), ("${group}", ${PORT}))
`;
    await tb.execOk("b", ["python3", "-c", code], 60_000);
    const done = await member.nextWith("done", 30_000);
    const what = JSON.stringify(done);
    assert.equal(done.received, sources * perSource, what);
    const stats = done.stats as Stats;
    const viaKernel = Object.values(done.kernelBySource as Record<string, number>)
      .reduce((a, n) => a + n, 0);
    assert.ok(viaKernel < sources * perSource, `none through the ring: ${what}`);
    assert.ok(viaKernel > 0, `none through the kernel: ${what}`);
    assert.equal(stats.rxDropped, 0, what);
  },
);

rootTest(
  "ring groups: alone, a process takes every queue; it gives one up to a newcomer that asks, losing no datagram, and takes it back when the newcomer leaves",
  async () => {
    await withCeiling(async (ceiling) => {
      await using tb = await fourQueues();
      const procs: TestbedProcess[] = [];
      try {
        const first = holder(tb, null, [`--flows=${QUEUES}`, "--rounds=3", "--maxMs=40000"]);
        procs.push(first);
        const r1 = await ready(first);
        assert.equal(r1.bypass.active, true, `${JSON.stringify(r1)} ${first.stderr}`);
        const phys = await nkbJson(tb, ["phys", tb.a.ifname]);
        const link = (phys.links as Msg[])[0];
        assert.equal(link.rgInUse, QUEUES, JSON.stringify(phys));
        assert.equal(link.rgAvail, 0, JSON.stringify(phys));
        assert.deepEqual(link.holders, [r1.pid], JSON.stringify(phys));

        // Alone: every queue's datagrams through its rings.
        const before = await inDatagrams(tb);
        const gen = await generate(tb, ceiling, QUEUES, 1);
        const result = (await gen.nextWith("result", 30_000)).result as Msg;
        await gen.wait(10_000); // its sockets' ports are the next generator's
        const done = await first.nextWith("done", 30_000);
        let markers = 0;
        for (let q = 0; q < QUEUES; q++) {
          const n = (result.perQueue as number[])[q];
          const what = `queue ${q}: ${JSON.stringify(done)} generator ${JSON.stringify(result)}`;
          assert.ok(n > 1000, what);
          assert.equal((done.bySource as Record<string, number>)[GEN_PORT + q], n, what);
          assert.equal((done.distinctBySource as Record<string, number>)[GEN_PORT + q], n, what);
          markers = kernelOnlyMarkers(done, GEN_PORT + q, what);
        }
        assert.deepEqual(done.kernelBySource, {}, JSON.stringify(done));
        assert.equal((await inDatagrams(tb)) - before, markers, "side A's kernel took data");

        // A newcomer while a generator runs through the first: it asks, gets a queue given up.
        const gen2 = await generate(tb, ceiling, QUEUES, 4);
        await new Promise((r) => setTimeout(r, 300));
        const second = holder(tb, null, [`--port=${PORT + 1}`, "--noRecv", "--watchMs=5000"]);
        procs.push(second);
        const r2 = await ready(second);
        const st2 = r2.bypass as Bypass & { detail: string };
        assert.equal(st2.active, false, JSON.stringify(r2));
        assert.equal(st2.reason, "queue-busy", JSON.stringify(r2));
        assert.match(st2.detail, /waits for a ring group/);
        const moved = await second.nextWith("moved", 10_000);
        assert.equal((moved.bypass as Bypass).active, true, JSON.stringify(moved));
        assert.ok((moved.ms as number) < 2000, `bypassed ${moved.ms} ms after its start`);
        console.log(`the newcomer bypassed ${(moved.ms as number).toFixed(0)} ms after ready`);
        const rows = await statRows(tb, [r1.pid, r2.pid]);
        assert.deepEqual(rows, [
          { pid: r1.pid, firstQueue: 0, queueCount: QUEUES - 1 },
          { pid: r2.pid, firstQueue: QUEUES - 1, queueCount: 1 },
        ]);
        const phys2 = await nkbJson(tb, ["phys", tb.a.ifname]);
        const link2 = (phys2.links as Msg[])[0];
        assert.equal(link2.rgInUse, QUEUES, JSON.stringify(phys2));
        assert.deepEqual(link2.holders, [r1.pid, r2.pid].sort((a, b) => a - b));

        const result2 = (await gen2.nextWith("result", 30_000)).result as Msg;
        const done2 = await first.nextWith("done", 40_000);
        const what2 = `${JSON.stringify(done2)} generator ${JSON.stringify(result2)}`;
        for (let q = 0; q < QUEUES; q++) {
          const n = (result2.perQueue as number[])[q];
          assert.ok(n > 5000, what2);
          // Every datagram, once: through the rings, or the kernel socket after the give-up.
          assert.equal((done2.bySource as Record<string, number>)[GEN_PORT + q], n, what2);
          assert.equal((done2.distinctBySource as Record<string, number>)[GEN_PORT + q], n, what2);
        }
        const viaKernel = done2.kernelBySource as Record<string, number>;
        // The given-up queue's datagrams came through the kernel after the hand-over; the
        // other queues' never did.
        assert.ok((viaKernel[GEN_PORT + QUEUES - 1] ?? 0) > 1000, what2);
        for (let q = 0; q < QUEUES - 1; q++) {
          assert.equal(viaKernel[GEN_PORT + q], undefined, what2);
        }
        assert.equal((done2.stats as Stats).rxDropped, 0, what2);

        // The newcomer leaves: its queue, free a second with nobody asking, comes back.
        await second.send({ bye: true });
        assert.equal((await second.wait(10_000)).code, 0, second.stderr);
        let back: Row[] = [];
        const left = performance.now();
        for (let i = 0; i < 40; i++) {
          back = await statRows(tb, [r1.pid]);
          if (back[0]?.queueCount === QUEUES) break;
          await new Promise((r) => setTimeout(r, 200));
        }
        assert.deepEqual(back, [{ pid: r1.pid, firstQueue: 0, queueCount: QUEUES }]);
        console.log(
          `the queue came back ${(performance.now() - left).toFixed(0)} ms after it left`,
        );
        const result3 = await generate(tb, ceiling, QUEUES, 1).then((g) =>
          g.nextWith("result", 30_000)
        );
        const done3 = await first.nextWith("done", 40_000);
        const what3 = `${JSON.stringify(done3)} generator ${JSON.stringify(result3)}`;
        for (let q = 0; q < QUEUES; q++) {
          const n = ((result3.result as Msg).perQueue as number[])[q];
          assert.ok(n > 1000, what3);
          assert.equal((done3.bySource as Record<string, number>)[GEN_PORT + q], n, what3);
          assert.equal((done3.distinctBySource as Record<string, number>)[GEN_PORT + q], n, what3);
        }
        // Every queue's data through its ring again, the one taken back too.
        assert.deepEqual(done3.kernelBySource, {}, what3);
        assert.equal((done3.stats as Stats).rxDropped, 0, what3);
      } finally {
        for (const p of procs) p.kill();
      }
    });
  },
);

queuesTest(
  "ring groups: a newcomer no holder can give a queue stops asking after 3 s, on the kernel path",
  async (tb, procs) => {
    const holders: TestbedProcess[] = [];
    for (let q = 0; q < QUEUES; q++) {
      const p = holder(tb, q, ["--noRecv"]);
      holders.push(p);
      procs.push(p);
      const r = await ready(p);
      assert.equal(r.bypass.active, true, `queue ${q}: ${JSON.stringify(r)} ${p.stderr}`);
    }
    assert.equal(await ctlAsks(tb), 0);
    const late = holder(tb, null, [`--port=${PORT + 1}`, "--noRecv", "--watchMs=4500"]);
    procs.push(late);
    const r = await ready(late);
    const st = r.bypass as Bypass & { detail: string };
    assert.equal(st.reason, "queue-busy", JSON.stringify(r));
    assert.match(st.detail, /waits for a ring group/);
    assert.equal(await ctlAsks(tb), 1, "its ask is pending");
    const watched = await late.nextWith("watched", 15_000);
    const end = watched.bypass as Bypass & { detail: string };
    assert.equal(end.active, false, JSON.stringify(watched));
    assert.equal(end.reason, "queue-busy", JSON.stringify(watched));
    assert.match(end.detail, /no holder gave one up within 3 s/);
    assert.equal(await ctlAsks(tb), 0, "its ask no longer counts");

    // One that closes its socket while it asks: the ask leaves with it.
    const quitter = holder(tb, null, [`--port=${PORT + 3}`, "--noRecv"]);
    procs.push(quitter);
    const rq = await ready(quitter);
    assert.equal(rq.bypass.reason, "queue-busy", JSON.stringify(rq));
    assert.equal(await ctlAsks(tb), 1, "the quitter's ask is pending");
    await quitter.send({ bye: true });
    const qs = await quitter.wait(10_000);
    assert.equal(qs.code, 0, quitter.stderr);
    assert.equal(await ctlAsks(tb), 0, "the quitter's ask left with its socket");

    // Two queues free: a whole-interface process takes both and keeps them (no ask is left).
    for (const p of holders.slice(2)) p.kill();
    await Promise.all(holders.slice(2).map((p) => p.wait(10_000)));
    const next = holder(tb, null, [`--port=${PORT + 2}`, "--noRecv"]);
    procs.push(next);
    const rn = await ready(next);
    assert.equal(rn.bypass.active, true, `${JSON.stringify(rn)} ${next.stderr}`);
    await new Promise((r) => setTimeout(r, 800)); // three refresher periods
    assert.deepEqual(await statRows(tb, [rn.pid]), [{
      pid: rn.pid,
      firstQueue: 2,
      queueCount: 2,
    }]);
  },
);

queuesTest(
  "ring groups: two newcomers, one with three sockets: one ask each, one queue each",
  async (tb, procs) => {
    const { r0 } = await wholeHolder(tb, procs);
    // Both at once: three sockets of one process ask as one; neither newcomer takes the
    // queue given up for the other.
    const many = holder(tb, null, [
      `--port=${PORT + 10}`,
      "--noRecv",
      "--quietMs=4000",
      "--extra=2",
    ]);
    const one = holder(tb, null, [`--port=${PORT + 20}`, "--noRecv", "--quietMs=4000"]);
    procs.push(many, one);
    const [rm, r1] = await Promise.all([ready(many), ready(one)]);
    for (const r of [rm, r1]) assert.equal(r.bypass.reason, "queue-busy", JSON.stringify(r));
    const [wm, w1] = await Promise.all([
      many.nextWith("watched", 15_000),
      one.nextWith("watched", 15_000),
    ]);
    for (const b of [wm.bypass, ...(wm.extras as Bypass[]), w1.bypass] as Bypass[]) {
      assert.equal(b.active, true, `${JSON.stringify(wm)} ${JSON.stringify(w1)}`);
    }
    const rows = await statRows(tb, [r0.pid, rm.pid, r1.pid]);
    const queues = (pid: number) => rows.filter((x) => x.pid === pid).map((x) => x.queueCount);
    assert.deepEqual(queues(r0.pid), [2], JSON.stringify(rows));
    assert.deepEqual(queues(rm.pid), [1, 1, 1], JSON.stringify(rows));
    assert.deepEqual(queues(r1.pid), [1], JSON.stringify(rows));
    assert.equal(new Set(rows.map((x) => x.firstQueue)).size, 3, JSON.stringify(rows));
    assert.equal(await ctlAsks(tb), 0, "no ask is left");
  },
);

rootTest(
  "ring groups: a holder in another pid namespace gives a queue up; the asker's retries never block its event loop",
  async () => {
    await using tb = await fourQueues();
    // Its records name a pid namespace the asker cannot look into: the bind decides.
    const elsewhere = pidnsHolder(tb);
    try {
      const r0 = await ready(elsewhere);
      assert.equal(r0.bypass.active, true, `${JSON.stringify(r0)} ${elsewhere.stderr}`);
      const asker = holder(tb, null, ["--noRecv", "--quietMs=3000"]);
      try {
        const r1 = await ready(asker);
        assert.equal(r1.bypass.reason, "queue-busy", JSON.stringify(r1));
        const watched = await asker.nextWith("watched", 20_000);
        const what = `${JSON.stringify(watched)} ${asker.stderr}`;
        assert.equal((watched.bypass as Bypass).active, true, what);
        // A retry binds once: a queue the kernel still holds is tried again at the next
        // retry, not for 400 ms on the event loop (each retry did before).
        assert.ok((watched.maxGapMs as number) < 200, what);
        console.log(
          `the asker's longest event-loop gap: ${(watched.maxGapMs as number).toFixed(1)} ms`,
        );
        const rows = await statRows(tb, [r1.pid]);
        assert.deepEqual(rows, [{ pid: r1.pid, firstQueue: QUEUES - 1, queueCount: 1 }]);
      } finally {
        asker.kill();
      }
    } finally {
      elsewhere.kill();
    }
  },
);

// Records carry deadlines in the host's monotonic milliseconds and start times in its boot
// clock's ticks: a process in a time namespace (CRIU restores, some containers) reads its own
// offsets and translates. Before, neither side was served (the ask lapsed after 3 s).
for (const [side, offsetS] of [["asker", 100_000], ["holder", 100_000]] as const) {
  queuesTest(
    `ring groups: ${
      side === "asker" ? "an" : "a"
    } ${side} whose clocks are ${offsetS}.005 s ahead (a time namespace) is served`,
    async (tb, procs) => {
      const first = side === "holder"
        ? timensHolder(tb, offsetS, ["--noRecv"])
        : holder(tb, null, ["--noRecv"]);
      procs.push(first);
      const r0 = await ready(first);
      assert.equal(r0.bypass.active, true, `${JSON.stringify(r0)} ${first.stderr}`);
      const asker = side === "asker"
        ? timensHolder(tb, offsetS, [`--port=${PORT + 1}`, "--noRecv", "--watchMs=6000"])
        : holder(tb, null, [`--port=${PORT + 1}`, "--noRecv", "--watchMs=6000"]);
      procs.push(asker);
      const r1 = await ready(asker);
      assert.equal(r1.bypass.reason, "queue-busy", JSON.stringify(r1));
      const watched = await asker.nextWith("watched", 20_000);
      const what = `${JSON.stringify(watched)} ${asker.stderr}`;
      assert.equal((watched.bypass as Bypass).active, true, what);
      // nkb stat (on the host's clocks) sees both, the one in the time namespace included.
      const rows = await statRows(tb, [r0.pid, r1.pid]);
      assert.deepEqual(rows, [
        { pid: r0.pid, firstQueue: 0, queueCount: QUEUES - 1 },
        { pid: r1.pid, firstQueue: QUEUES - 1, queueCount: 1 },
      ]);
    },
  );
}

// Found by a review: a queue that stays bound (its holder's record is of another pid
// namespace, which this process cannot check) looked like one being released, retried for 5 s.
queuesTest(
  "ring groups: a queue-affine socket whose queue a process of another pid namespace holds gives up within about a second",
  async (tb, procs) => {
    const elsewhere = pidnsHolder(tb);
    procs.push(elsewhere);
    const r0 = await ready(elsewhere);
    assert.equal(r0.bypass.active, true, `${JSON.stringify(r0)} ${elsewhere.stderr}`);
    const affine = holder(tb, 0, [`--port=${PORT + 1}`, "--noRecv", "--watchMs=2500"]);
    procs.push(affine);
    const r1 = await ready(affine);
    assert.match(r1.bypass.detail ?? "", /still being released/, JSON.stringify(r1));
    const watched = await affine.nextWith("watched", 20_000);
    const what = `${JSON.stringify(watched)} ${affine.stderr}`;
    const bypass = watched.bypass as Bypass;
    assert.equal(bypass.active, false, what);
    assert.equal(bypass.reason, "queue-busy", what);
    assert.match(bypass.detail ?? "", /stayed bound 1000 ms/, what);
  },
);

// Found by a review: a background retry (an address back) bound once, was refused by the
// other namespace's holder, and never asked.
queuesTest(
  "ring groups: a socket whose address comes back asks a holder in another pid namespace",
  async (tb, procs) => {
    // A second address of side a's subnet: the asker's, removed and added back.
    const ip2 = tb.a.ip.replace(/\.\d+$/, ".77");
    const addr = (op: "add" | "del") =>
      tb.execOk("a", ["ip", "addr", op, `${ip2}/24`, "dev", tb.a.ifname]);
    await addr("add");
    const asker = holder(tb, null, [`--host=${ip2}`, "--noRecv", "--watchMs=25000"]);
    procs.push(asker);
    const r0 = await ready(asker);
    assert.equal(r0.bypass.active, true, JSON.stringify(r0));
    await addr("del");
    const gone = await asker.nextWith("moved", 5_000);
    assert.equal((gone.bypass as Bypass).reason, "address-removed", JSON.stringify(gone));
    await new Promise((r) => setTimeout(r, 200)); // its engine's queues: free within 25 ms
    const elsewhere = pidnsHolder(tb);
    procs.push(elsewhere);
    const r1 = await ready(elsewhere);
    assert.equal(r1.bypass.active, true, `${JSON.stringify(r1)} ${elsewhere.stderr}`);
    await addr("add");
    const back = await asker.nextWith("moved", 8_000);
    assert.equal((back.bypass as Bypass).active, true, `${JSON.stringify(back)} ${asker.stderr}`);
  },
);

// Found by a review: an ask that ended in another error held the filter until close.
queuesTest(
  "ring groups: an ask that ends in an attach error lets go of the interface's filter",
  async (tb, procs) => {
    const { first } = await wholeHolder(tb, procs);
    const id = Number(/prog\/xdp id (\d+)/.exec(await tb.linkText("a"))?.[1]);
    assert.ok(id > 0, "the filter's program id");
    const asker = holder(tb, null, [`--port=${PORT + 10}`, "--noRecv", "--quietMs=4000"]);
    procs.push(asker);
    const r1 = await ready(asker);
    assert.equal(r1.bypass.reason, "queue-busy", JSON.stringify(r1));
    // The interface goes (a container's veth removed), then its holder: the asker's next
    // retry finds every queue free on a device that is gone, and its attach fails.
    await tb.execOk("a", ["ip", "link", "del", tb.a.ifname]);
    first.kill();
    await first.wait(10_000);
    const w = await asker.nextWith("watched", 20_000);
    assert.equal((w.bypass as Bypass).active, false, JSON.stringify(w));
    assert.notEqual((w.bypass as Bypass).reason, "queue-busy", JSON.stringify(w));
    // The asker, on the kernel path for good, holds nothing of the filter.
    assert.equal(await progLoaded(tb, id), false, "the asker still holds the filter");
  },
);

rootTest(
  "ring groups: a holder asleep in poll() gives a queue up; the asker, left alone, gets it",
  async () => {
    await using tb = await fourQueues();
    // Its wait sleeps in poll() on every queue's socket, which a close alone would not free.
    const sleeper = holder(tb, null, ["--idle"]);
    const r0 = await ready(sleeper);
    assert.equal(r0.bypass.active, true, `${JSON.stringify(r0)} ${sleeper.stderr}`);
    // The newcomer's program calls nothing of its socket: its retries are the binding's own.
    const newcomer = holder(tb, null, ["--noRecv", "--quietMs=3000"]);
    const r1 = await ready(newcomer);
    assert.equal(r1.bypass.active, false, JSON.stringify(r1));
    assert.equal(r1.bypass.reason, "queue-busy", JSON.stringify(r1));
    const watched = await newcomer.nextWith("watched", 20_000);
    const b = watched.bypass as Bypass;
    assert.equal(b.active, true, `${JSON.stringify(watched)} ${newcomer.stderr}`);
    const phys = await nkbJson(tb, ["phys", tb.a.ifname]);
    const link = (phys.links as Msg[])[0];
    assert.equal(link.rgInUse, QUEUES, JSON.stringify(phys));
    assert.deepEqual(
      link.holders,
      [r0.pid, r1.pid].sort((a, b) => a - b),
      JSON.stringify(phys),
    );
    for (const p of [sleeper, newcomer]) p.kill();
  },
);
