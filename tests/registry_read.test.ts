/**
 * The registry reader against synthetic files planted under a registry directory of
 * the test's own: the layouts match ffi/registry.h and ffi/registry_parse.h
 * (compiled); this live process's file reads back exactly, with who it is taken from
 * /proc; dead processes' files are skipped and removed; every kind of damaged, lying
 * or foreign file is one warning naming it and never an exception; slots being written
 * are re-read (the seqlock rule, through scripted reads).
 */

import assert from "node:assert/strict";
import {
  type KernelFacts,
  processStartTicks,
  readRegistry,
  readScripted,
  REGISTRY_FILE_MAX_BYTES,
  RegistryLayout as L,
  startTicksFromStat,
} from "../src/registry_read.ts";
import { lib } from "../src/ffi.ts";
import {
  liveProcess,
  plantFile,
  putU32,
  registryFile,
  slotOffset,
  type SlotSpec,
  writeSlot,
  ZERO_STATS,
} from "./helpers/registry_file.ts";
import { ROOT, zigCc } from "./helpers/zig.ts";

const F = L.flags;

async function withDir(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "nkb-registry-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
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
  sockIno: 2n ** 40n + 3n, // a u64 field: read whole
  netnsIno: 2n ** 33n + 5n, // the socket's own, shown instead of the process's
  group: "239.1.2.3",
  groups: 2,
  recvQ: 8191,
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
  sockIno: 5678n,
  stats: { kernelIpkts: 1n, kernelOpkts: 2n },
};

Deno.test("registry layout: the reader's constants match ffi/registry.h and registry_parse.h", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nkb-layout-" });
  try {
    const fields = (type: string, layout: Record<string, number>): string =>
      Object.keys(layout).filter((k) => k !== "size").map((k) => {
        const c = k.replace(/[A-Z]/g, (m) => `_${m.toLowerCase()}`);
        return `  printf("${type}.${k} %zu\\n", offsetof(${type}, ${c}));`;
      }).join("\n");
    const codes = (prefix: string, group: string, table: Record<string, number>): string =>
      Object.keys(table).map((k) => {
        const c = k.replace(/[A-Z]/g, (m) => `_${m}`).toUpperCase();
        return `  printf("${group}.${k} %d\\n", (int)(${prefix}${c}));`;
      }).join("\n");
    const source = `#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include "registry.h"
#include "registry_parse.h"
#include "sock.h"
int main(void) {
${fields("nkb_reg_header_t", L.header)}
${fields("nkb_reg_slot_t", L.slot)}
${fields("nkb_reg_claims_t", L.claims)}
${fields("nkb_reg_record_t", L.record)}
${codes("NKB_REC_", "recordStatus", L.recordStatus)}
${codes("NKB_REC_P_", "recordProblem", L.recordProblem)}
${codes("NKB_REG_P_", "parseError", L.parseError)}
${codes("NKB_REG_E_", "readError", L.readError)}
  nkb_reg_slot_t s;
  printf("ifnameSize %zu\\nreasonSize %zu\\nstatsCount %zu\\n",
         sizeof s.ifname, sizeof s.reason, sizeof s.stats / 8);
  printf("claims.size %zu\\nrecord.size %zu\\n", sizeof(nkb_reg_claims_t),
         sizeof(nkb_reg_record_t));
  printf("version %u\\nheaderSize %u\\nslotSize %u\\nslots %u\\n",
         NKB_REG_VERSION, NKB_REG_HEADER_SIZE, NKB_REG_SLOT_SIZE, NKB_REG_SLOTS);
  printf("flags.bypass %u\\nflags.connected %u\\nflags.affine %u\\nflags.bound %u\\n",
         NKB_REG_F_BYPASS, NKB_REG_F_CONNECTED, NKB_REG_F_AFFINE, NKB_REG_F_BOUND);
  printf("maxQueuesPerSocket %u\\nqueueLimit %u\\n", NKB_MAX_QUEUES, NKB_REG_QUEUE_LIMIT);
  printf("filterQueues %u\\nfileMax %u\\n", NKB_FILTER_QUEUES, NKB_REG_FILE_SIZE);
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
    const table = (prefix: string, t: Record<string, number>): [string, string][] =>
      Object.entries(t).map(([k, v]) => [`${prefix}${k}`, String(v)]);
    const want = new Map<string, string>([
      ...table("nkb_reg_header_t.", L.header),
      ...table("nkb_reg_slot_t.", L.slot),
      ...table("nkb_reg_claims_t.", L.claims).filter(([k]) => !k.endsWith(".size")),
      ...table("nkb_reg_record_t.", L.record).filter(([k]) => !k.endsWith(".size")),
      ...table("recordStatus.", L.recordStatus),
      ...table("recordProblem.", L.recordProblem),
      ...table("parseError.", L.parseError),
      ...table("readError.", L.readError),
      ...table("flags.", L.flags),
      ["claims.size", String(L.claims.size)],
      ["record.size", String(L.record.size)],
      ...(["ifnameSize", "reasonSize", "statsCount", "version", "headerSize"] as const)
        .map((k) => [k, String(L[k])] as [string, string]),
      ...(["slotSize", "slots", "maxQueuesPerSocket", "queueLimit"] as const)
        .map((k) => [k, String(L[k])] as [string, string]),
      ["filterQueues", String(L.queueLimit)],
      ["fileMax", String(REGISTRY_FILE_MAX_BYTES)],
      ["defaultDir", L.defaultDir],
      ["magicMatches", "1"],
    ]);
    assert.deepEqual(got, want);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("registry: a live process's file reads back exactly; who it is comes from /proc", async () => {
  await withDir((dir) => {
    const me = liveProcess();
    const bytes = registryFile({
      ...me,
      createdMs: 1_700_000_000_123,
      netnsIno: 4026531999n,
    }, [BYPASS_SLOT, KERNEL_SLOT, { index: 1, inUse: 0, ifname: "junk", local: ["1.2.3.4", 1] }]);
    const path = plantFile(dir, me, bytes);
    const scan = readRegistry({ dir, verify: false });
    assert.deepEqual(scan.warnings, []);
    const comm = Deno.readTextFileSync(`/proc/${me.pid}/comm`).trim();
    const cmdline = Deno.readTextFileSync(`/proc/${me.pid}/cmdline`).split("\0").slice(0, -1);
    const netns = /\[([0-9]+)\]/.exec(Deno.readLinkSync("/proc/self/ns/net"))![1];
    const proc = {
      pid: me.pid,
      uid: me.uid,
      user: me.uid === 0 ? "root" : String(me.uid),
      command: comm,
      cmdline,
      netnsIno: netns,
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
        inode: String(2n ** 40n + 3n),
        netnsIno: String(2n ** 33n + 5n),
        recvQ: 8191,
        group: "239.1.2.3",
        groups: 2,
        verified: false,
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
        inode: "5678",
        recvQ: 0,
        group: null,
        groups: 0,
        verified: false,
        reason: "loopback",
        stats: { ...ZERO_STATS, kernelIpkts: 1, kernelOpkts: 2 },
      },
    ]);
  });
});

Deno.test("registry: unbound sockets show as Unbound", async () => {
  await withDir((dir) => {
    const me = liveProcess();
    plantFile(dir, me, registryFile({ ...me, slotCount: 2 }, [{ index: 1 }]));
    const scan = readRegistry({ dir, verify: false });
    assert.deepEqual(scan.warnings, []);
    assert.equal(scan.sockets.length, 1);
    assert.equal(scan.sockets[0].state, "Unbound");
    assert.deepEqual(scan.sockets[0].local, { address: "0.0.0.0", port: 0 });
  });
});

Deno.test("registry: files of processes that are gone are never shown, and removed", async () => {
  const child = new Deno.Command("true").spawn();
  await child.status; // its pid now names no process (pid reuse within the test: negligible)
  const me = liveProcess();
  await withDir((dir) => {
    const dead = plantFile(
      dir,
      { ...me, pid: child.pid, startTicks: 1n },
      registryFile({ ...me, pid: child.pid, startTicks: 1n }, [{ index: 0 }]),
    );
    const old = { ...me, startTicks: me.startTicks - 1n }; // our pid, an earlier process
    const reused = plantFile(dir, old, registryFile(old, [{ index: 0 }]));
    const other = { ...me, pidnsIno: 1234n }; // a pid namespace nobody lives in
    const gone = plantFile(dir, other, registryFile(other, [{ index: 0 }]));
    const kept = readRegistry({ dir, verify: false, cleanup: false });
    assert.deepEqual(kept, { dir, sockets: [], processes: [], warnings: [] });
    for (const f of [dead, reused, gone]) assert.ok(Deno.statSync(f).isFile, f);
    const swept = readRegistry({ dir, verify: false });
    assert.deepEqual(swept, { dir, sockets: [], processes: [], warnings: [] });
    assert.deepEqual([...Deno.readDirSync(`${dir}/${me.uid}`)], []);
  });
});

Deno.test("registry: a missing directory is an empty scan without warnings", () => {
  const dir = "/nonexistent/nkb-registry";
  assert.deepEqual(readRegistry({ dir, verify: false }), {
    dir,
    sockets: [],
    processes: [],
    warnings: [],
  });
});

type Me = ReturnType<typeof liveProcess>;

/** One damaged file per case: its warning must name the file and say what is wrong. */
interface BadFile {
  name: string;
  make: (me: Me) => Uint8Array;
  expect: RegExp;
  /** Sockets of the same file that must still be read (damage confined to a slot). */
  sockets?: number;
}

function corrupted(fn: (b: Uint8Array) => void): (me: Me) => Uint8Array {
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
    expect: /truncated: 5639 bytes/,
  },
  { name: "bad magic", make: corrupted((b) => (b[0] = 0x4d)), expect: /bad magic/ },
  {
    name: "bad version",
    make: corrupted((b) => putU32(b, L.header.version, 1)),
    expect: /version 1, this reader knows 4/,
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
    expect: /truncated: 9216 bytes/,
  },
  {
    name: "a pid that is not the process's",
    make: corrupted((b) => putU32(b, L.header.pid, 1)),
    expect: /claims pid 1, the kernel says \d+: forged/,
  },
  {
    name: "a uid that is not the process's",
    make: corrupted((b) => putU32(b, L.header.uid, 4242)),
    expect: /claims uid 4242, the process runs as uid \d+: forged/,
  },
  {
    name: "a start time that is not the process's",
    make: corrupted((b) => new DataView(b.buffer).setBigUint64(L.header.startTicks, 7n, true)),
    expect: /claims start time 7, the process started at \d+: forged/,
  },
  {
    name: "a pid namespace that is not the process's",
    make: corrupted((b) => new DataView(b.buffer).setBigUint64(L.header.pidnsIno, 99n, true)),
    expect: /claims pid namespace 99, the process is in \d+: forged/,
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
    expect: /slot 5: still being written after 4 reads/,
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
      const path = plantFile(dir, me, bad.make(me));
      const scan = readRegistry({ dir, verify: false });
      assert.equal(scan.warnings.length, 1, scan.warnings.join("\n"));
      assert.ok(scan.warnings[0].startsWith(`${path}: `), scan.warnings[0]);
      assert.match(scan.warnings[0], bad.expect);
      assert.equal(scan.sockets.length, bad.sockets ?? 0);
      assert.ok(Deno.statSync(path).isFile, "a damaged file of a live pid is not removed");
    });
  });
}

Deno.test("registry: a FIFO, a link or a directory in place of a live process's file", async () => {
  await withDir(async (dir) => {
    const me = liveProcess();
    const path = plantFile(dir, me, new Uint8Array(0));
    const plants: [string, () => Promise<void> | void][] = [
      ["fifo", async () => {
        const r = await new Deno.Command("mkfifo", { args: [path] }).output();
        assert.equal(r.code, 0);
      }],
      ["link to a good file", () => {
        const real = `${dir}/real`;
        Deno.writeFileSync(real, registryFile(me, [{ index: 0 }]));
        Deno.symlinkSync(real, path);
      }],
      ["link to /dev/zero", () => Deno.symlinkSync("/dev/zero", path)],
      ["directory", () => Deno.mkdirSync(path)],
    ];
    for (const [what, plant] of plants) {
      Deno.removeSync(path, { recursive: true });
      await plant();
      const scan = readRegistry({ dir, verify: false, cleanup: false });
      assert.deepEqual(scan.warnings, [`${path}: not a regular file, skipped`], what);
      assert.deepEqual(scan.sockets, [], what);
    }
  });
});

Deno.test("registry: a registry directory that is a file or a link is one warning", async () => {
  await withDir((dir) => {
    const me = liveProcess();
    plantFile(`${dir}/real`, me, registryFile(me, [{ index: 0 }]));
    Deno.symlinkSync(`${dir}/real`, `${dir}/link`);
    Deno.writeFileSync(`${dir}/file`, new Uint8Array(1));
    for (const d of [`${dir}/link`, `${dir}/file`]) {
      const scan = readRegistry({ dir: d, cleanup: false });
      assert.deepEqual(scan.warnings, [`${d}: not a directory (a link or a file): nothing read`]);
      assert.deepEqual(scan.sockets, []);
    }
  });
});

function facts(me: Me): KernelFacts {
  return {
    pid: me.pid,
    uid: me.uid,
    nspid: me.pid,
    startTicks: me.startTicks,
    pidnsIno: me.pidnsIno,
  };
}

Deno.test("registry: a slot whose seq changes between reads is taken from a stable pair", () => {
  const me = liveProcess();
  const torn = registryFile(me, [{ index: 2, seq: 9, local: ["10.0.0.1", 1] }]);
  const settled = registryFile(me, [{ index: 2, seq: 10, local: ["10.0.0.2", 2] }]);
  const r = readScripted(facts(me), [torn, settled, settled]);
  assert.deepEqual(r.warnings, []);
  assert.deepEqual(r.found?.sockets.map((s) => s.local), [{ address: "10.0.0.2", port: 2 }]);
  assert.equal(r.reads, 3);
});

Deno.test("registry: a slot that never settles is warned about after 4 reads", () => {
  const me = liveProcess();
  const reads = [2, 4, 6, 8, 10].map((seq) => registryFile(me, [{ index: 0, seq }, { index: 1 }]));
  const r = readScripted(facts(me), reads);
  assert.deepEqual(
    r.warnings,
    ["/x/0/f.reg: slot 0: still being written after 4 reads"]
      .map((w) => w.replace("/0/", `/${me.uid}/`)),
  );
  assert.deepEqual(r.found?.sockets.map((s) => s.slot), [1]);
  assert.equal(r.reads, 4);
});

Deno.test("registry: a file rewritten by another process between reads is skipped", () => {
  const me = liveProcess();
  const a = registryFile(me, [{ index: 0 }]);
  const b = registryFile({ ...me, createdMs: 5 }, [{ index: 0 }]);
  const r = readScripted(facts(me), [a, b]);
  assert.equal(r.found, null);
  assert.deepEqual(r.warnings, []);
});

Deno.test("registry parser: 20000 random mutations of a valid file never crash or pass a bad record", () => {
  const me = liveProcess();
  const valid = registryFile(me, [BYPASS_SLOT, KERNEL_SLOT, { index: 9, reason: "queue-busy" }]);
  const nkb = lib();
  const claims = new Uint8Array(L.claims.size);
  const cv = new DataView(claims.buffer);
  const out = new Uint8Array(L.slots * L.record.size);
  const ov = new DataView(out.buffer);
  const rng = mulberry32(0x5eed);
  let accepted = 0;
  for (let i = 0; i < 20000; i++) {
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
    cv.setBigUint64(L.claims.uid, BigInt(me.uid), true);
    cv.setBigUint64(L.claims.pid, BigInt(me.pid), true);
    cv.setBigUint64(L.claims.pidnsIno, me.pidnsIno, true);
    cv.setBigUint64(L.claims.startTicks, me.startTicks, true);
    const n = nkb.nkb_reg_parse_file(
      b,
      b.length,
      b,
      b.length,
      claims,
      claims.length,
      out,
      out.length,
    );
    assert.ok(n >= L.parseError.capacity && n <= L.slots, String(n));
    for (let r = 0; r < n; r++) {
      const base = r * L.record.size;
      if (ov.getUint32(base + L.record.status, true) !== L.recordStatus.ok) continue;
      accepted++;
      const first = ov.getUint32(base + L.record.firstQueue, true);
      const count = ov.getUint32(base + L.record.queueCount, true);
      assert.ok(count <= L.maxQueuesPerSocket && first + count <= L.queueLimit);
      for (const [off, size] of [[L.record.ifname, 16], [L.record.reason, 32]]) {
        assert.ok(out.subarray(base + off, base + off + size).includes(0), "NUL-terminated");
      }
    }
  }
  assert.ok(accepted > 1000, `only ${accepted} records accepted: the mutations are too harsh`);
});

Deno.test("registry parser: wrong-sized or misaligned arguments are an error, not a read", () => {
  const me = liveProcess();
  const nkb = lib();
  const file = registryFile(me, [{ index: 0 }]);
  const claims = new Uint8Array(L.claims.size);
  const out = new Uint8Array(L.slots * L.record.size);
  const P = L.parseError;
  // The whole file against the whole claims, into the whole output.
  const parse = (): number =>
    nkb.nkb_reg_parse_file(
      file,
      file.length,
      file,
      file.length,
      claims,
      claims.length,
      out,
      out.length,
    );
  assert.equal(
    nkb.nkb_reg_parse_file(file, file.length, file, file.length, claims, 63, out, out.length),
    P.args,
  );
  const odd = new Uint8Array(L.claims.size + 1).subarray(1);
  assert.equal(
    nkb.nkb_reg_parse_file(file, file.length, file, file.length, odd, odd.length, out, out.length),
    P.args,
  );
  // Claims left zero: the pid check fails before any slot is read.
  assert.equal(parse(), P.pid);
  const v = new DataView(claims.buffer);
  v.setBigUint64(L.claims.uid, BigInt(me.uid), true);
  v.setBigUint64(L.claims.pid, BigInt(me.pid), true);
  v.setBigUint64(L.claims.pidnsIno, me.pidnsIno, true);
  v.setBigUint64(L.claims.startTicks, me.startTicks, true);
  assert.equal(parse(), 1);
  assert.equal(
    nkb.nkb_reg_parse_file(file, file.length, file, file.length, claims, claims.length, out, 255),
    P.capacity,
  );
  assert.equal(
    nkb.nkb_reg_parse_file(file, file.length, file, 100, claims, claims.length, out, out.length),
    P.replaced,
  );
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

Deno.test("registry: start times in the host's ticks, read from a time namespace too", async () => {
  const mine = processStartTicks(Deno.pid);
  assert.ok(mine !== null && mine > 0n);
  // A reader whose boot clock runs 1000.005 s ahead sees every start time 100000 or 100001
  // ticks later in /proc (the kernel rounds the sum); taken back, it is this process's as
  // the host reads it, or one tick more (which the registry's lookups allow).
  const code = `import { processStartTicks } from "${ROOT}src/registry_read.ts";
const raw = Deno.readTextFileSync("/proc/${Deno.pid}/stat");
console.log(JSON.stringify({ raw: raw.slice(raw.lastIndexOf(")") + 2).split(" ")[19],
  host: String(processStartTicks(${Deno.pid})) }));`;
  const out = await new Deno.Command("python3", {
    args: [
      `${ROOT}tests/fixtures/timens_exec.py`,
      "1000",
      "5000000",
      Deno.execPath(),
      "eval",
      code,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const seen = JSON.parse(new TextDecoder().decode(out.stdout));
  const raw = BigInt(seen.raw);
  assert.ok(raw === mine + 100_000n || raw === mine + 100_001n, JSON.stringify(seen));
  assert.equal(BigInt(seen.host) - mine, raw - mine - 100_000n, JSON.stringify(seen));
});

Deno.test("registry: sockets come in slot order", async () => {
  await withDir((dir) => {
    const me = liveProcess();
    const bytes = registryFile(me, [{ index: 700 }, { index: 3 }, { index: 1023 }]);
    writeSlot(bytes, { index: 0, inUse: 0 });
    plantFile(dir, me, bytes);
    assert.deepEqual(readRegistry({ dir, verify: false }).sockets.map((s) => s.slot), [
      3,
      700,
      1023,
    ]);
  });
});
