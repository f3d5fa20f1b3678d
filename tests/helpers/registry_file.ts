/**
 * Builds synthetic registry files (ffi/registry.h) from the reader's own layout
 * constants, for the reader's and the tool's tests.
 *
 * @module
 */

import { Stat } from "../../src/ffi.ts";
import { processStartTicks, RegistryLayout as L } from "../../src/registry_read.ts";
import { type BypassStats, statsFromWords } from "../../src/types.ts";

/** A socket's counters, all zero: tests spread it and set the few they expect. */
export const ZERO_STATS: BypassStats = statsFromWords(() => 0);

/** The file's header: who wrote it (defaults: this process's own claims). */
export interface ProcessSpec {
  pid: number;
  startTicks: bigint;
  uid?: number;
  createdMs?: number;
  netnsIno?: bigint;
  pidnsIno?: bigint;
  /** Default L.slots (1024); the file holds this many slots. */
  slotCount?: number;
}

/** One slot. */
export interface SlotSpec {
  index: number;
  seq?: number;
  inUse?: number;
  createdMs?: number;
  local?: [string, number];
  remote?: [string, number];
  flags?: number;
  ifindex?: number;
  firstQueue?: number;
  queueCount?: number;
  recvMode?: number;
  ifname?: string;
  reason?: string;
  /** Inode of the kernel socket the slot names (default 0: none). */
  sockIno?: bigint;
  /** The socket's network namespace inode (default 0: none named, the process's is shown). */
  netnsIno?: bigint;
  /** A multicast group joined (default 0.0.0.0) and how many (default 0). */
  group?: string;
  groups?: number;
  /** Datagrams waiting (default 0). */
  recvQ?: number;
  stats?: Partial<Record<keyof typeof Stat, bigint>>;
}

const encoder = new TextEncoder();

/** This test process: pid, start time, effective uid and pid namespace, as the kernel says. */
export function liveProcess(): { pid: number; startTicks: bigint; uid: number; pidnsIno: bigint } {
  const startTicks = processStartTicks(Deno.pid);
  if (startTicks === null) throw new Error("no /proc/self/stat start time");
  const uid = Number(/^Uid:\s+\d+\s+(\d+)/m.exec(Deno.readTextFileSync("/proc/self/status"))![1]);
  return { pid: Deno.pid, startTicks, uid, pidnsIno: ownPidnsIno() };
}

/** This process's pid namespace inode, as the writer records it. */
export function ownPidnsIno(): bigint {
  const m = /\[([0-9]+)\]/.exec(Deno.readLinkSync("/proc/self/ns/pid"));
  if (m === null) throw new Error("no pidns inode");
  return BigInt(m[1]);
}

/** This process's network namespace inode, as the writer records it. */
export function ownNetnsIno(): bigint {
  const ino = Deno.statSync("/proc/self/ns/net").ino;
  if (ino === null) throw new Error("no netns inode");
  return BigInt(ino);
}

/** The name a process's file has: `<pidns>-<pid>-<start>.reg`. */
export function registryName(p: { pid: number; startTicks: bigint; pidnsIno?: bigint }): string {
  return `${p.pidnsIno ?? ownPidnsIno()}-${p.pid}-${p.startTicks}.reg`;
}

/**
 * Writes `bytes` as process p's file under dir/<uid>/ (created 0700 when missing, as
 * the writer does) and returns its path.
 */
export function plantFile(
  dir: string,
  p: { pid: number; startTicks: bigint; uid?: number; pidnsIno?: bigint },
  bytes: Uint8Array,
): string {
  const sub = `${dir}/${p.uid ?? 0}`;
  Deno.mkdirSync(sub, { recursive: true, mode: 0o700 });
  Deno.chmodSync(sub, 0o700);
  const path = `${sub}/${registryName(p)}`;
  Deno.writeFileSync(path, bytes, { mode: 0o600 });
  return path;
}

/** A whole registry file: header, then `slotCount` slots (unlisted ones free). */
export function registryFile(proc: ProcessSpec, slots: SlotSpec[] = []): Uint8Array {
  const slotCount = proc.slotCount ?? L.slots;
  const bytes = new Uint8Array(L.headerSize + slotCount * L.slotSize);
  const v = new DataView(bytes.buffer);
  const H = L.header;
  bytes.set(L.magic, H.magic);
  v.setUint32(H.version, L.version, true);
  v.setUint32(H.headerSize, L.headerSize, true);
  v.setUint32(H.slotSize, L.slotSize, true);
  v.setUint32(H.slotCount, slotCount, true);
  v.setUint32(H.pid, proc.pid, true);
  v.setUint32(H.uid, proc.uid ?? 0, true);
  v.setBigUint64(H.startTicks, proc.startTicks, true);
  v.setBigUint64(H.createdMs, BigInt(proc.createdMs ?? 1_700_000_000_000), true);
  v.setBigUint64(H.netnsIno, proc.netnsIno ?? 4026531840n, true);
  v.setBigUint64(H.pidnsIno, proc.pidnsIno ?? ownPidnsIno(), true);
  for (const s of slots) writeSlot(bytes, s);
  return bytes;
}

/** Writes slot `s.index` into a file built by {@linkcode registryFile}. */
export function writeSlot(bytes: Uint8Array, s: SlotSpec): void {
  const base = slotOffset(s.index);
  const v = new DataView(bytes.buffer, base, L.slotSize);
  const S = L.slot;
  v.setUint32(S.seq, s.seq ?? 2, true);
  v.setUint32(S.inUse, s.inUse ?? 1, true);
  v.setBigUint64(S.createdMs, BigInt(s.createdMs ?? 1_700_000_000_500), true);
  const [localIp, localPort] = s.local ?? ["0.0.0.0", 0];
  const [remoteIp, remotePort] = s.remote ?? ["0.0.0.0", 0];
  bytes.set(localIp.split(".").map(Number), base + S.localIp);
  bytes.set(remoteIp.split(".").map(Number), base + S.remoteIp);
  v.setUint16(S.localPort, localPort, true);
  v.setUint16(S.remotePort, remotePort, true);
  v.setUint32(S.flags, s.flags ?? 0, true);
  v.setUint32(S.ifindex, s.ifindex ?? 0, true);
  v.setUint32(S.firstQueue, s.firstQueue ?? 0, true);
  v.setUint32(S.queueCount, s.queueCount ?? 0, true);
  v.setUint32(S.recvMode, s.recvMode ?? 1, true);
  putString(bytes, base + S.ifname, L.ifnameSize, s.ifname ?? "");
  putString(bytes, base + S.reason, L.reasonSize, s.reason ?? "");
  v.setBigUint64(S.sockIno, s.sockIno ?? 0n, true);
  v.setBigUint64(S.netnsIno, s.netnsIno ?? 0n, true);
  bytes.set((s.group ?? "0.0.0.0").split(".").map(Number), base + S.group);
  v.setUint32(S.groups, s.groups ?? 0, true);
  v.setUint32(S.recvQ, s.recvQ ?? 0, true);
  for (const [name, value] of Object.entries(s.stats ?? {})) {
    v.setBigUint64(S.stats + 8 * Stat[name as keyof typeof Stat], value, true);
  }
}

/** Byte offset of slot `index` in a file. */
export function slotOffset(index: number): number {
  return L.headerSize + index * L.slotSize;
}

/** Overwrites a little-endian u32 (to corrupt a field). */
export function putU32(bytes: Uint8Array, off: number, value: number): void {
  new DataView(bytes.buffer, bytes.byteOffset).setUint32(off, value, true);
}

// A NUL-terminated string in a zeroed field (tests fill a field whole to drop the NUL).
function putString(bytes: Uint8Array, off: number, size: number, text: string): void {
  const b = encoder.encode(text);
  if (b.length >= size) throw new Error(`"${text}" does not fit ${size} bytes with its NUL`);
  bytes.fill(0, off, off + size);
  bytes.set(b, off);
}

/** Where live process `pid` (of any pid namespace) has its file under dir, per /proc. */
export function fileOfProcess(dir: string, pid: number): string {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const uid = /^Uid:\s+\d+\s+(\d+)/m.exec(status)![1];
  const startTicks = processStartTicks(pid);
  if (startTicks === null) throw new Error(`process ${pid} is gone`);
  const pidns = /\[([0-9]+)\]/.exec(Deno.readLinkSync(`/proc/${pid}/ns/pid`))![1];
  const nspid = /^NSpid:\s+(.*)$/m.exec(status)![1].trim().split(/\s+/).pop();
  return `${dir}/${uid}/${pidns}-${nspid}-${startTicks}.reg`;
}

/**
 * A kernel UDP socket of this process on 127.0.0.1 (an ephemeral port) and its inode
 * (from /proc/self/net/udp): a slot that names it is backed by the kernel.
 */
export function heldUdpSocket(): { conn: Deno.DatagramConn; port: number; ino: bigint } {
  const conn = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const port = (conn.addr as Deno.NetAddr).port;
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  const lines = Deno.readTextFileSync("/proc/self/net/udp").split("\n");
  const line = lines.find((l) => l.trim().split(/\s+/)[1] === `0100007F:${hex}`);
  if (line === undefined) {
    conn.close();
    throw new Error(`127.0.0.1:${port} is not in /proc/self/net/udp`);
  }
  return { conn, port, ino: BigInt(line.trim().split(/\s+/)[9]) };
}
