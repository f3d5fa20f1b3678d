/**
 * The registry reader against synthetic files: the layout matches ffi/registry.h
 * (compiled); a live process's file reads back exactly; dead processes' files are
 * skipped and removed; every kind of damaged, lying, foreign or unreadable file is
 * one warning naming it and never an exception; slots being written are re-read.
 */

import assert from "node:assert/strict";
import {
  type FileContext,
  readRegistry,
  readRegistryFile,
  REGISTRY_FILE_MAX_BYTES,
  RegistryLayout as L,
  type Snapshot,
  startTicksFromStat,
  UserNames,
} from "../src/registry_read.ts";
import {
  liveProcess,
  putU32,
  registryFile,
  slotOffset,
  type SlotSpec,
  writeSlot,
  ZERO_STATS,
} from "./helpers/registry_file.ts";
import { ROOT, zigCc } from "./helpers/zig.ts";

const F = L.flags;
const encoder = new TextEncoder();

async function withDir(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "nkb-registry-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function writeFile(dir: string, name: string, bytes: Uint8Array): string {
  const path = `${dir}/${name}`;
  Deno.writeFileSync(path, bytes);
  return path;
}

const BYPASS_SLOT: SlotSpec = {
  index: 0,
  seq: 6,
  createdMs: 1_700_000_001_000,
  local: ["198.18.0.1", 9000],
  flags: F.bypass | F.bound | F.affine,
  ifindex: 7,
  firstQueue: 2,
  queueCount: 1,
  recvMode: 1,
  ifname: "veth0",
  stats: {
    ipkts: 10n,
    ipktsSpin: 4n,
    opkts: 2n ** 40n,
    opktsSpin: 1n,
    sendSpinMax: 3n,
    rxDropped: 5n,
    rxInvalid: 6n,
    kernelIpkts: 7n,
    kernelOpkts: 8n,
    txFull: 9n,
    rxTruncated: 11n,
    engineDrops: 12n,
    rxForeign: 13n,
    icmpIgnored: 14n,
  },
};

const KERNEL_SLOT: SlotSpec = {
  index: 3,
  createdMs: 1_700_000_002_000,
  local: ["127.0.0.1", 5353],
  remote: ["127.0.0.2", 53],
  flags: F.bound | F.connected,
  recvMode: 0,
  reason: "loopback",
  stats: { kernelIpkts: 1n, kernelOpkts: 2n },
};

Deno.test("registry layout: the reader's constants match ffi/registry.h", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nkb-layout-" });
  try {
    const fields = (type: string, layout: Record<string, number>): string =>
      Object.keys(layout).map((k) => {
        const c = k.replace(/[A-Z]/g, (m) => `_${m.toLowerCase()}`);
        return `  printf("${type}.${k} %zu\\n", offsetof(${type}, ${c}));`;
      }).join("\n");
    const source = `#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include "registry.h"
#include "sock.h"
int main(void) {
${fields("nkb_reg_header_t", L.header)}
${fields("nkb_reg_slot_t", L.slot)}
  nkb_reg_header_t h; nkb_reg_slot_t s;
  printf("commSize %zu\\nifnameSize %zu\\nreasonSize %zu\\nstatsCount %zu\\n",
         sizeof h.comm, sizeof s.ifname, sizeof s.reason, sizeof s.stats / 8);
  printf("version %u\\nheaderSize %u\\nslotSize %u\\nslots %u\\ncmdlineMax %u\\n",
         NKB_REG_VERSION, NKB_REG_HEADER_SIZE, NKB_REG_SLOT_SIZE, NKB_REG_SLOTS,
         NKB_REG_CMDLINE_MAX);
  printf("flags.bypass %u\\nflags.connected %u\\nflags.affine %u\\nflags.bound %u\\n",
         NKB_REG_F_BYPASS, NKB_REG_F_CONNECTED, NKB_REG_F_AFFINE, NKB_REG_F_BOUND);
  printf("maxQueuesPerSocket %u\\nqueueLimit %u\\n", NKB_MAX_QUEUES, NKB_FILTER_QUEUES);
  printf("defaultDir %s\\n", NKB_REG_DEFAULT_DIR);
  printf("magicMatches %d\\n", memcmp(NKB_REG_MAGIC, "${
      L.magic.map((b) => `\\x${b.toString(16).padStart(2, "0")}`).join("")
    }", 8) == 0);
  return 0;
}
`;
    await Deno.writeTextFile(`${dir}/layout.c`, source);
    const build = await zigCc([
      "-std=gnu11",
      "-I",
      `${ROOT}ffi`,
      "-o",
      `${dir}/layout`,
      `${dir}/layout.c`,
    ]);
    assert.equal(build.code, 0, build.stderr);
    const run = await new Deno.Command(`${dir}/layout`).output();
    assert.equal(run.code, 0);
    const got = new Map(
      new TextDecoder().decode(run.stdout).trim().split("\n").map((l) =>
        l.split(" ", 2) as [string, string]
      ),
    );
    const want = new Map<string, string>([
      ...Object.entries(L.header).map(([k, v]) => [`nkb_reg_header_t.${k}`, String(v)] as const),
      ...Object.entries(L.slot).map(([k, v]) => [`nkb_reg_slot_t.${k}`, String(v)] as const),
      ...Object.entries(L.flags).map(([k, v]) => [`flags.${k}`, String(v)] as const),
      ...(["commSize", "ifnameSize", "reasonSize", "statsCount", "version", "headerSize"] as const)
        .map((k) => [k, String(L[k])] as const),
      ...(["slotSize", "slots", "cmdlineMax", "maxQueuesPerSocket", "queueLimit"] as const)
        .map((k) => [k, String(L[k])] as const),
      ["defaultDir", L.defaultDir],
      ["magicMatches", "1"],
    ]);
    assert.deepEqual(got, want);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("registry: a live process's file reads back exactly; free slots are skipped", async () => {
  await withDir((dir) => {
    const me = liveProcess();
    const cmdline = new Uint8Array([
      ...encoder.encode("deno\0run\0caf"),
      0xff,
      0,
      ...encoder.encode("x y\0"),
    ]);
    const bytes = registryFile({
      ...me,
      uid: 0,
      createdMs: 1_700_000_000_123,
      netnsIno: 4026531999n,
      comm: "echo-srv",
      cmdlineBytes: cmdline,
    }, [BYPASS_SLOT, KERNEL_SLOT, { index: 1, inUse: 0, ifname: "junk", local: ["1.2.3.4", 1] }]);
    const path = writeFile(dir, `${me.pid}.reg`, bytes);
    const scan = readRegistry({ dir });
    assert.deepEqual(scan.warnings, []);
    const proc = {
      pid: me.pid,
      uid: 0,
      user: "root",
      command: "echo-srv",
      cmdline: ["deno", "run", "caf\ufffd", "x y"],
      netnsIno: "4026531999",
    };
    assert.deepEqual(scan.processes, [{ ...proc, createdMs: 1_700_000_000_123, file: path }]);
    assert.deepEqual(scan.sockets, [
      {
        ...proc,
        slot: 0,
        createdMs: 1_700_000_001_000,
        local: { address: "198.18.0.1", port: 9000 },
        remote: null,
        state: "Idle",
        bypass: true,
        affine: true,
        interface: "veth0",
        ifindex: 7,
        firstQueue: 2,
        queueCount: 1,
        recvMode: 1,
        reason: null,
        stats: {
          ipkts: 10,
          ipktsSpin: 4,
          opkts: 2 ** 40,
          opktsSpin: 1,
          sendSpinMax: 3,
          rxDropped: 5,
          rxInvalid: 6,
          kernelIpkts: 7,
          kernelOpkts: 8,
          txFull: 9,
          rxTruncated: 11,
          interfaceDrops: 12,
          interfaceTxDrops: 0,
          rxForeign: 13,
          icmpIgnored: 14,
          dpkts: 5 + 6 + 12,
          waitNs: 0,
        },
      },
      {
        ...proc,
        slot: 3,
        createdMs: 1_700_000_002_000,
        local: { address: "127.0.0.1", port: 5353 },
        remote: { address: "127.0.0.2", port: 53 },
        state: "Connected",
        bypass: false,
        affine: false,
        interface: null,
        ifindex: 0,
        firstQueue: 0,
        queueCount: 0,
        recvMode: 0,
        reason: "loopback",
        stats: { ...ZERO_STATS, kernelIpkts: 1, kernelOpkts: 2 },
      },
    ]);
  });
});

Deno.test("registry: unknown uids show as numbers, unbound sockets as Unbound", async () => {
  await withDir((dir) => {
    const me = liveProcess();
    writeFile(
      dir,
      `${me.pid}.reg`,
      registryFile({ ...me, uid: 3999999999, slotCount: 2 }, [{ index: 1 }]),
    );
    const scan = readRegistry({ dir });
    assert.deepEqual(scan.warnings, []);
    assert.equal(scan.processes[0].user, "3999999999");
    assert.equal(scan.sockets.length, 1);
    assert.equal(scan.sockets[0].state, "Unbound");
    assert.deepEqual(scan.sockets[0].local, { address: "0.0.0.0", port: 0 });
  });
});

Deno.test("registry: files of processes that are gone are skipped and removed", async () => {
  const child = new Deno.Command("true").spawn();
  await child.status; // its pid now names no process (pid reuse within the test: negligible)
  const me = liveProcess();
  await withDir((dir) => {
    const dead = writeFile(
      dir,
      `${child.pid}.reg`,
      registryFile({ pid: child.pid, startTicks: 1n }, [{ index: 0 }]),
    );
    const reused = writeFile(
      dir,
      `${me.pid}.reg`,
      registryFile({ ...me, startTicks: me.startTicks + 1n }, [{ index: 0 }]),
    );
    const kept = readRegistry({ dir, cleanup: false });
    assert.deepEqual(kept, { dir, sockets: [], processes: [], warnings: [] });
    assert.ok(Deno.statSync(dead).isFile && Deno.statSync(reused).isFile);
    const swept = readRegistry({ dir });
    assert.deepEqual(swept, { dir, sockets: [], processes: [], warnings: [] });
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  });
});

Deno.test("registry: a missing directory is an empty scan without warnings", () => {
  const dir = "/nonexistent/nkb-registry";
  assert.deepEqual(readRegistry({ dir }), { dir, sockets: [], processes: [], warnings: [] });
});

/** One damaged file per case: its warning must name the file and say what is wrong. */
interface BadFile {
  name: string;
  make: (me: { pid: number; startTicks: bigint }) => Uint8Array;
  expect: RegExp;
  /** Sockets of the same file that must still be read (damage confined to a slot). */
  sockets?: number;
}

function corrupted(
  fn: (b: Uint8Array) => void,
): (me: { pid: number; startTicks: bigint }) => Uint8Array {
  return (me) => {
    const b = registryFile(me, [{ index: 0, flags: F.bypass }, { index: 5 }]);
    fn(b);
    return b;
  };
}

const BAD_FILES: BadFile[] = [
  {
    name: "header cut short",
    make: (me) => registryFile(me).slice(0, 100),
    expect: /truncated: 100 bytes/,
  },
  { name: "empty file", make: () => new Uint8Array(0), expect: /truncated: 0 bytes/ },
  {
    name: "slots cut short",
    make: (me) => registryFile(me).slice(0, L.headerSize + 3 * L.slotSize + 7),
    expect: /truncated: 5639 bytes, 1024 slots need 528384/,
  },
  { name: "bad magic", make: corrupted((b) => (b[0] = 0x4d)), expect: /bad magic/ },
  {
    name: "bad version",
    make: corrupted((b) => putU32(b, L.header.version, 2)),
    expect: /version 2/,
  },
  {
    name: "header_size lies",
    make: corrupted((b) => putU32(b, L.header.headerSize, 8192)),
    expect: /header_size 8192/,
  },
  {
    name: "slot_size lies",
    make: corrupted((b) => putU32(b, L.header.slotSize, 4096)),
    expect: /slot_size 4096/,
  },
  {
    name: "slot_count over the limit",
    make: corrupted((b) => putU32(b, L.header.slotCount, 0xffffffff)),
    expect: /slot_count 4294967295/,
  },
  {
    name: "slot_count zero",
    make: corrupted((b) => putU32(b, L.header.slotCount, 0)),
    expect: /slot_count 0/,
  },
  {
    name: "slot_count too big for the file",
    make: (me) => {
      const b = registryFile({ ...me, slotCount: 10 });
      putU32(b, L.header.slotCount, 11);
      return b;
    },
    expect: /truncated: 9216 bytes, 11 slots need 9728/,
  },
  {
    name: "pid differs from the name",
    make: corrupted((b) => putU32(b, L.header.pid, 1)),
    expect: /header pid 1 does not match/,
  },
  {
    name: "cmdline_len too long",
    make: corrupted((b) => putU32(b, L.header.cmdlineLen, L.cmdlineMax + 1)),
    expect: /cmdline_len 4017/,
  },
  {
    name: "comm without NUL",
    make: corrupted((b) => b.fill(0x41, L.header.comm, L.header.comm + L.commSize)),
    expect: /comm is not NUL-terminated/,
  },
  {
    name: "ifname without NUL",
    make: corrupted((b) =>
      b.fill(0x41, slotOffset(0) + L.slot.ifname, slotOffset(0) + L.slot.ifname + 16)
    ),
    expect: /slot 0: ifname is not NUL-terminated, skipped/,
    sockets: 1,
  },
  {
    name: "reason without NUL",
    make: corrupted((b) =>
      b.fill(0x41, slotOffset(5) + L.slot.reason, slotOffset(5) + L.slot.reason + 32)
    ),
    expect: /slot 5: reason is not NUL-terminated, skipped/,
    sockets: 1,
  },
  {
    name: "odd seq",
    make: corrupted((b) => putU32(b, slotOffset(5) + L.slot.seq, 7)),
    expect: /slot 5: still being written after 4 reads \(seq 7\)/,
    sockets: 1,
  },
  {
    name: "queues out of range",
    make: corrupted((b) => {
      putU32(b, slotOffset(0) + L.slot.firstQueue, 0xfffffff0);
      putU32(b, slotOffset(0) + L.slot.queueCount, 0x20);
    }),
    expect: /slot 0: queues \[4294967280, \+32\) out of range/,
    sockets: 1,
  },
  {
    name: "in_use neither 0 nor 1",
    make: corrupted((b) => putU32(b, slotOffset(5) + L.slot.inUse, 9)),
    expect: /slot 5: in_use 9/,
    sockets: 1,
  },
  {
    name: "random bytes",
    make: () => crypto.getRandomValues(new Uint8Array(L.headerSize + 4 * L.slotSize)),
    expect: /bad magic/,
  },
  {
    name: "larger than any registry file",
    make: (me) => {
      const b = new Uint8Array(REGISTRY_FILE_MAX_BYTES + 1);
      b.set(registryFile(me));
      return b;
    },
    expect: /528385 bytes, more than a registry file has/,
  },
];

for (const bad of BAD_FILES) {
  Deno.test(`registry: ${bad.name} is one warning, never a throw`, async () => {
    await withDir((dir) => {
      const me = liveProcess();
      const path = writeFile(dir, `${me.pid}.reg`, bad.make(me));
      const scan = readRegistry({ dir });
      assert.equal(scan.warnings.length, 1, scan.warnings.join("\n"));
      assert.ok(scan.warnings[0].startsWith(`${path}: `), scan.warnings[0]);
      assert.match(scan.warnings[0], bad.expect);
      assert.equal(scan.sockets.length, bad.sockets ?? 0);
      assert.ok(Deno.statSync(path).isFile, "a damaged file of a live pid is not removed");
    });
  });
}

Deno.test("registry: entries that are not regular files or not named <pid>.reg", async () => {
  await withDir((dir) => {
    Deno.mkdirSync(`${dir}/123.reg`); // unreadable as a file (chmod 000 would not stop root)
    Deno.symlinkSync("/dev/zero", `${dir}/124.reg`); // must not be read forever
    Deno.writeTextFileSync(`${dir}/notes.reg`, "x");
    Deno.writeTextFileSync(`${dir}/0.reg`, "x");
    Deno.writeTextFileSync(`${dir}/99999999.reg`, "x");
    Deno.writeTextFileSync(`${dir}/README`, "not ours, not a warning");
    const scan = readRegistry({ dir });
    assert.deepEqual(scan.warnings.sort(), [
      `${dir}/0.reg: not named <pid>.reg, skipped`,
      `${dir}/123.reg: not a regular file`,
      `${dir}/124.reg: not a regular file`,
      `${dir}/99999999.reg: not named <pid>.reg, skipped`,
      `${dir}/notes.reg: not named <pid>.reg, skipped`,
    ]);
    assert.deepEqual(scan.sockets, []);
  });
});

Deno.test("registry: a directory that is a file is one warning", async () => {
  await withDir((dir) => {
    const path = writeFile(dir, "file", new Uint8Array(1));
    const scan = readRegistry({ dir: path });
    assert.equal(scan.warnings.length, 1);
    assert.match(scan.warnings[0], /cannot list the registry directory/);
  });
});

// A reader over in-memory snapshots: `reads[k]` is what the k-th read returns.
function scripted(reads: Uint8Array[]): FileContext & { count: () => number } {
  let k = 0;
  const startTicks = liveProcess().startTicks;
  return {
    cleanup: false,
    users: new UserNames(),
    readSnapshot: (): Snapshot => ({ bytes: reads[Math.min(k++, reads.length - 1)], ino: 1 }),
    startTicks: () => startTicks,
    count: () => k,
  };
}

Deno.test("registry: a slot whose seq changes between reads is taken from a stable pair", () => {
  const me = liveProcess();
  const torn = registryFile(me, [{ index: 2, seq: 9, local: ["10.0.0.1", 1] }]);
  const settled = registryFile(me, [{ index: 2, seq: 10, local: ["10.0.0.2", 2] }]);
  const ctx = scripted([torn, settled, settled]);
  const found = readRegistryFile("/x/1.reg", me.pid, ctx);
  assert.ok(found !== null && typeof found !== "string", String(found));
  assert.deepEqual(found.warnings, []);
  assert.deepEqual(found.sockets.map((s) => s.local), [{ address: "10.0.0.2", port: 2 }]);
  assert.equal(ctx.count(), 3);
});

Deno.test("registry: a slot that never settles is warned about after 4 reads", () => {
  const me = liveProcess();
  const reads = [2, 4, 6, 8, 10].map((seq) => registryFile(me, [{ index: 0, seq }, { index: 1 }]));
  const ctx = scripted(reads);
  const found = readRegistryFile("/x/1.reg", me.pid, ctx);
  assert.ok(found !== null && typeof found !== "string", String(found));
  assert.deepEqual(found.warnings, ["/x/1.reg: slot 0: still being written after 4 reads (seq 8)"]);
  assert.deepEqual(found.sockets.map((s) => s.slot), [1]);
  assert.equal(ctx.count(), 4);
});

Deno.test("registry: a file rewritten by another process between reads is skipped", () => {
  const me = liveProcess();
  const a = registryFile(me, [{ index: 0 }]);
  const b = registryFile({ ...me, createdMs: 5 }, [{ index: 0 }]);
  assert.equal(readRegistryFile("/x/1.reg", me.pid, scripted([a, b])), null);
});

Deno.test("registry: 3000 random mutations of a valid file never throw", () => {
  const me = liveProcess();
  const valid = registryFile(me, [BYPASS_SLOT, KERNEL_SLOT, { index: 9, reason: "queue-busy" }]);
  const rng = mulberry32(0x5eed);
  for (let i = 0; i < 3000; i++) {
    const b = valid.slice(0, rng() < 0.1 ? Math.floor(rng() * valid.length) : valid.length);
    const flips = 1 + Math.floor(rng() * 8);
    for (let f = 0; f < flips && b.length > 0; f++) {
      // Mostly the header and the used slots, where the checks are.
      const hot = rng() < 0.8;
      const at = hot
        ? [0, slotOffset(0), slotOffset(3), slotOffset(9)][Math.floor(rng() * 4)] +
          Math.floor(rng() * 160)
        : Math.floor(rng() * b.length);
      if (at < b.length) b[at] = Math.floor(rng() * 256);
    }
    const found = readRegistryFile(`/x/${me.pid}.reg`, me.pid, scripted([b]));
    if (found !== null && typeof found !== "string") {
      for (const s of found.sockets) {
        assert.ok(
          s.queueCount <= L.maxQueuesPerSocket && s.firstQueue + s.queueCount <= L.queueLimit,
        );
      }
    }
  }
});

function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test("registry: start time is field 22 counted after the last ')'", () => {
  const rest = Array.from({ length: 50 }, (_, i) => String(i + 3)).join(" ");
  assert.equal(startTicksFromStat(`42 (a) (b c) ${rest}\n`), 22n);
  assert.equal(startTicksFromStat(`42 (x) 1 2 3`), null);
  assert.equal(startTicksFromStat("garbage"), null);
  const self = Deno.readTextFileSync("/proc/self/stat");
  assert.equal(
    startTicksFromStat(self),
    BigInt(self.slice(self.lastIndexOf(")") + 2).split(" ")[19]),
  );
});

Deno.test("registry: sockets come in slot order", async () => {
  await withDir((dir) => {
    const me = liveProcess();
    const bytes = registryFile(me, [{ index: 700 }, { index: 3 }, { index: 1023 }]);
    writeSlot(bytes, { index: 0, inUse: 0 });
    writeFile(dir, `${me.pid}.reg`, bytes);
    assert.deepEqual(readRegistry({ dir }).sockets.map((s) => s.slot), [3, 700, 1023]);
  });
});
