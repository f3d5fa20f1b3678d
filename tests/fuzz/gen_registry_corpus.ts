/**
 * Writes the seed corpus of the registry fuzz target: tests/fuzz/corpus/registry/*.bin.
 *
 * Each seed is the target's two bytes (mode: bit 0 the second copy differs in the first
 * slot's seq, bit 1 the claims equal the header's, bit 2 the second copy's header differs,
 * bit 3 it is a byte shorter; capacity in records) and a registry file
 * built by `registryFile()` (tests/helpers/registry_file.ts, from the reader's own layout
 * constants) with 2 to 8 slots, so that seeds stay small: one per path through
 * `nkb_reg_parse` (each whole-file error, each record problem, an unstable slot, a full
 * output). Deterministic: running it again rewrites the same bytes. Usage:
 * `deno run --allow-read --allow-write tests/fuzz/gen_registry_corpus.ts`
 *
 * @module
 */

import { RegistryLayout as L } from "../../src/registry_read.ts";
import { putU32, registryFile, slotOffset } from "../helpers/registry_file.ts";

const OUT = new URL("./corpus/registry/", import.meta.url).pathname;

/** The header's claims of every seed (fixed: not this process's). */
const PROC = { pid: 4242, startTicks: 123456n, uid: 1000, pidnsIno: 4026531836n };

/** A socket on the bypass path, its strings and queues in range. */
const BYPASS = {
  index: 0,
  local: ["198.18.0.1", 9000] as [string, number],
  remote: ["198.18.0.2", 9001] as [string, number],
  flags: 1 | 2 | 8,
  ifindex: 2,
  firstQueue: 0,
  queueCount: 2,
  ifname: "veth0",
  netnsIno: 4026532001n,
  group: "239.1.2.3",
  groups: 1,
  recvQ: 8192,
  stats: { ipkts: 10n, opkts: 20n, rxDropped: 1n },
};

/** A socket on the kernel path with its reason. */
const KERNEL = { index: 1, local: ["0.0.0.0", 53] as [string, number], reason: "no-xdp" };

function file(slotCount: number, slots: Parameters<typeof registryFile>[1]): Uint8Array {
  return registryFile({ ...PROC, slotCount }, slots);
}

function seed(mode: number, cap: number, bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(2 + bytes.length);
  out[0] = mode;
  out[1] = cap;
  out.set(bytes, 2);
  return out;
}

// A copy of `bytes` with `fn` applied.
function edit(bytes: Uint8Array, fn: (b: Uint8Array) => void): Uint8Array {
  const b = bytes.slice();
  fn(b);
  return b;
}

const two = file(2, [BYPASS, KERNEL]);
// The header alone: what fails on a header field is never read further.
const header = two.slice(0, L.headerSize);
const H = L.header;
const S = L.slot;
const seeds: Record<string, Uint8Array> = {
  "one-socket": seed(2, 4, file(2, [BYPASS])),
  "one-socket-moving": seed(3, 4, file(2, [BYPASS])),
  "two-sockets": seed(2, 4, two),
  "free-slots": seed(2, 4, file(2, [])),
  "odd-seq": seed(2, 4, file(2, [{ ...BYPASS, seq: 3 }])),
  "in-use-2": seed(2, 4, file(2, [{ ...BYPASS, inUse: 2 }])),
  "ifname-no-nul": seed(
    2,
    4,
    edit(
      two,
      (b) => b.fill(0x61, slotOffset(0) + S.ifname, slotOffset(0) + S.ifname + L.ifnameSize),
    ),
  ),
  "reason-no-nul": seed(
    2,
    4,
    edit(
      two,
      (b) => b.fill(0x62, slotOffset(1) + S.reason, slotOffset(1) + S.reason + L.reasonSize),
    ),
  ),
  "queues-past-limit": seed(2, 4, file(2, [{ ...BYPASS, firstQueue: 60, queueCount: 8 }])),
  "queue-count-9": seed(2, 4, file(2, [{ ...BYPASS, queueCount: 9 }])),
  "capacity-1": seed(2, 1, two),
  "capacity-0": seed(2, 0, two),
  "eight-slots": seed(
    2,
    7,
    file(8, [0, 2, 3, 5, 7].map((index) => ({ ...BYPASS, index, seq: 2 * index }))),
  ),
  "claims-differ": seed(0, 4, two),
  // Claims of zero (mode 0): a header with pid 0 gets as far as the uid, and so on.
  "claims-uid": seed(0, 4, registryFile({ ...PROC, pid: 0, slotCount: 1 })),
  "claims-start": seed(0, 4, registryFile({ ...PROC, pid: 0, uid: 0, slotCount: 1 })),
  "claims-pidns": seed(
    0,
    4,
    registryFile({ ...PROC, pid: 0, uid: 0, startTicks: 0n, slotCount: 1 }),
  ),
  "replaced-header": seed(6, 4, two),
  "replaced-shorter": seed(10, 4, two),
  "first-queue-65": seed(2, 4, file(2, [{ ...BYPASS, firstQueue: 65, queueCount: 0 }])),
  "magic-prefix": seed(2, 4, two.slice(0, 4)),
  "truncated-slots": seed(2, 4, two.slice(0, L.headerSize + L.slotSize + 100)),
  "truncated-header": seed(2, 4, two.slice(0, 100)),
  "magic-only": seed(2, 4, two.slice(0, 8)),
  "foreign": seed(2, 4, new TextEncoder().encode("\x7fELF\x02\x01\x01\0 not a registry file")),
  "version-1": seed(2, 4, edit(header, (b) => putU32(b, H.version, 1))),
  "header-size-64": seed(2, 4, edit(header, (b) => putU32(b, H.headerSize, 64))),
  "slot-size-256": seed(2, 4, edit(header, (b) => putU32(b, H.slotSize, 256))),
  "slot-count-0": seed(2, 4, edit(header, (b) => putU32(b, H.slotCount, 0))),
  "slot-count-past-file": seed(2, 4, edit(two, (b) => putU32(b, H.slotCount, 3))),
  "slot-count-past-max": seed(2, 4, edit(header, (b) => putU32(b, H.slotCount, L.slots + 1))),
};

Deno.mkdirSync(OUT, { recursive: true });
for (const e of Deno.readDirSync(OUT)) {
  if (e.isFile && e.name.endsWith(".bin")) Deno.removeSync(`${OUT}${e.name}`);
}
for (const [name, bytes] of Object.entries(seeds)) Deno.writeFileSync(`${OUT}${name}.bin`, bytes);
console.log(`${Object.keys(seeds).length} seeds in ${OUT}`);
