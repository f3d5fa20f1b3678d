/**
 * The read side of the host-wide socket registry (`nkb stat`, `nkb phys`). Every
 * process using nkb publishes its sockets in `<dir>/<pid>.reg` (layout:
 * ffi/registry.h). Those files are written by other processes, possibly other users,
 * possibly a crashed or hostile one: nothing in them is trusted before it is checked
 * against the file's length and the layout's constants, and whatever is wrong with a
 * file becomes one warning naming it, never an exception.
 *
 * @module
 */

import { Stat } from "./ffi.ts";
import { type BypassStats, statsFromWords } from "./types.ts";

/**
 * The registry's binary layout, mirrored from ffi/registry.h in one place (byte
 * offsets, little-endian). tests/registry_read.test.ts compiles the header and
 * compares every offset and size with these.
 */
export const RegistryLayout = {
  /** NKB_REG_MAGIC: "NKBREG\0\1". */
  magic: [0x4e, 0x4b, 0x42, 0x52, 0x45, 0x47, 0x00, 0x01],
  version: 1,
  headerSize: 4096,
  slotSize: 512,
  /** NKB_REG_SLOTS (= NKB_MAX_SOCKS): a file never has more. */
  slots: 1024,
  cmdlineMax: 4016,
  commSize: 16,
  ifnameSize: 16,
  reasonSize: 32,
  statsCount: Stat.count,
  defaultDir: "/dev/shm/nkb",
  /** Offsets in nkb_reg_header_t. */
  header: {
    magic: 0,
    version: 8,
    headerSize: 12,
    slotSize: 16,
    slotCount: 20,
    pid: 24,
    uid: 28,
    startTicks: 32,
    createdMs: 40,
    netnsIno: 48,
    cmdlineLen: 56,
    comm: 64,
    cmdline: 80,
  },
  /** Offsets in nkb_reg_slot_t. */
  slot: {
    seq: 0,
    inUse: 4,
    createdMs: 8,
    localIp: 16,
    remoteIp: 20,
    localPort: 24,
    remotePort: 26,
    flags: 28,
    ifindex: 32,
    firstQueue: 36,
    queueCount: 40,
    recvMode: 44,
    ifname: 48,
    reason: 64,
    stats: 128,
  },
  /** NKB_REG_F_* slot flags. */
  flags: { bypass: 1, connected: 2, affine: 4, bound: 8 },
  /** NKB_MAX_QUEUES (ffi/xsk.h): queues one engine, hence one socket, covers. */
  maxQueuesPerSocket: 8,
  /** NKB_FILTER_QUEUES (ffi/sock.h): no socket holds a queue at or past this index. */
  queueLimit: 64,
} as const;

/** Largest file a reader accepts: a full header and every slot. */
export const REGISTRY_FILE_MAX_BYTES: number = RegistryLayout.headerSize +
  RegistryLayout.slots * RegistryLayout.slotSize;

// Bounds of the reader's loops (files per directory as the writer's sweep; reads per
// file: the first plus three seqlock re-reads).
const MAX_DIR_ENTRIES = 8192;
const SLOT_READS = 4;
const READ_CALLS_MAX = 1024;
const PID_MAX = 4194304; // PID_MAX_LIMIT on 64-bit Linux

/** An IPv4 address and port. */
export interface SocketAddress {
  /** Dotted quad; "0.0.0.0" is the wildcard. */
  address: string;
  /** Host order; 0 when none. */
  port: number;
}

/** "Unbound": no local address yet; "Connected": connect() named a peer; else "Idle". */
export type SocketState = "Idle" | "Connected" | "Unbound";

/** A live process that publishes a registry file. */
export interface RegisteredProcess {
  /** The process id (also the file's name). */
  pid: number;
  /** Real uid of the process. */
  uid: number;
  /** Name of `uid` in /etc/passwd, else the number as text. */
  user: string;
  /** /proc/<pid>/comm when the file was created (at most 15 bytes). */
  command: string;
  /** The arguments (/proc/<pid>/cmdline), possibly truncated at 4016 bytes. */
  cmdline: string[];
  /** Inode of the process's network namespace (decimal; interfaces are per namespace). */
  netnsIno: string;
  /** When the file was created (Unix time, ms). */
  createdMs: number;
  /** Path of the registry file. */
  file: string;
}

/**
 * One socket of a live process, as its registry slot describes it: its process's
 * identity (pid, uid, user, command, cmdline, netnsIno) and the slot's fields.
 */
export interface RegisteredSocket extends Omit<RegisteredProcess, "createdMs" | "file"> {
  /** Index of the slot in the file (the shim's socket table index). */
  slot: number;
  /** When the socket was created (Unix time, ms). */
  createdMs: number;
  /** Local address; "0.0.0.0" and port 0 before bind. */
  local: SocketAddress;
  /** The connected peer; null when not connected. */
  remote: SocketAddress | null;
  /** Unbound, Idle (bound) or Connected. */
  state: SocketState;
  /** Sends and receives go through the rings. */
  bypass: boolean;
  /** A queue-affine socket (`{ queue }`). */
  affine: boolean;
  /** The bypass interface; null on the kernel path. */
  interface: string | null;
  /** 0 on the kernel path. */
  ifindex: number;
  /** Queues held: [firstQueue, firstQueue + queueCount). */
  firstQueue: number;
  /** 0 when no queue is held. */
  queueCount: number;
  /** The socket's `_NET_KERNEL_BYPASS_RECV_MODE`. */
  recvMode: number;
  /** Why the socket is on the kernel path (a fallback reason code); null when bypassing or undecided. */
  reason: string | null;
  /** The socket's live counters, as `sock.stats()` returns them. */
  stats: BypassStats;
}

/** What one look at the registry directory found. */
export interface RegistryScan {
  /** The directory read. */
  dir: string;
  /** Sockets of live processes, by pid then slot. */
  sockets: RegisteredSocket[];
  /** Live processes with a registry file, by pid (with or without sockets). */
  processes: RegisteredProcess[];
  /** One line per file or slot that could not be read, naming it and what is wrong. */
  warnings: string[];
}

/** Options of {@linkcode readRegistry}. */
export interface ReadRegistryOptions {
  /** Default: `$NKB_REGISTRY_DIR`, else /dev/shm/nkb. */
  dir?: string;
  /** Remove the files of processes that are gone (default true); files we may not remove stay. */
  cleanup?: boolean;
}

/** What is wrong with a file: becomes a warning naming it. */
class FileProblem extends Error {}

/** The file went away while being read: its process exited, which is no problem. */
class FileGone extends Error {}

const decoder = new TextDecoder(); // UTF-8; invalid bytes become U+FFFD

/**
 * Reads every registry file of `dir`: the processes that published them and their
 * sockets. Files of processes that are gone are skipped (and removed, unless
 * `cleanup` is false). A missing directory is an empty scan. Never throws: every
 * problem is a line of `warnings`.
 */
export function readRegistry(opts: ReadRegistryOptions = {}): RegistryScan {
  const dir = opts.dir ?? registryDirFromEnv();
  const scan: RegistryScan = { dir, sockets: [], processes: [], warnings: [] };
  if (dir === "off") {
    scan.warnings.push("NKB_REGISTRY_DIR=off: the registry is turned off, no sockets are listed");
    return scan;
  }
  const ctx: FileContext = {
    cleanup: opts.cleanup ?? true,
    users: new UserNames(),
    readSnapshot,
    startTicks: processStartTicks,
  };
  for (const entry of listRegistryFiles(dir, scan.warnings)) {
    const found = readRegistryFile(`${dir}/${entry.name}`, entry.pid, ctx);
    if (typeof found === "string") scan.warnings.push(found);
    else if (found !== null) {
      scan.processes.push(found.process);
      scan.sockets.push(...found.sockets);
      scan.warnings.push(...found.warnings);
    }
  }
  scan.sockets.sort((a, b) => a.pid - b.pid || a.slot - b.slot);
  return scan;
}

function registryDirFromEnv(): string {
  try {
    const dir = Deno.env.get("NKB_REGISTRY_DIR");
    if (dir !== undefined && dir !== "") return dir;
  } catch {
    // Environment access denied: the writer's default is still where files are.
  }
  return RegistryLayout.defaultDir;
}

interface RegistryEntry {
  name: string;
  pid: number;
}

// The `<pid>.reg` names of dir, sorted by pid. Other names are not ours and are
// skipped; a `.reg` name that is not a pid is worth a warning.
function listRegistryFiles(dir: string, warnings: string[]): RegistryEntry[] {
  const entries: RegistryEntry[] = [];
  try {
    let seen = 0;
    for (const e of Deno.readDirSync(dir)) {
      if (++seen > MAX_DIR_ENTRIES) {
        warnings.push(`${dir}: more than ${MAX_DIR_ENTRIES} entries, the rest were not read`);
        break;
      }
      if (!e.name.endsWith(".reg")) continue;
      const pid = pidOfName(e.name);
      if (pid === null) warnings.push(`${dir}/${e.name}: not named <pid>.reg, skipped`);
      else entries.push({ name: e.name, pid });
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      warnings.push(`${dir}: cannot list the registry directory: ${message(e)}`);
    }
  }
  return entries.sort((a, b) => a.pid - b.pid);
}

function pidOfName(name: string): number | null {
  const m = /^([1-9][0-9]{0,6})\.reg$/.exec(name);
  if (m === null) return null;
  const pid = Number(m[1]);
  return pid <= PID_MAX ? pid : null;
}

/** One read of a file: its bytes and the inode they came from. */
export interface Snapshot {
  bytes: Uint8Array;
  ino: number | null;
}

/** What reading one file needs from the outside world (replaceable in tests). */
export interface FileContext {
  cleanup: boolean;
  users: UserNames;
  /** Reads the whole file (bounded); throws on failure. */
  readSnapshot: (path: string) => Snapshot;
  /** Start time of pid (/proc/<pid>/stat field 22); null when the process is gone. */
  startTicks: (pid: number) => bigint | null;
}

/** A live process's file: the process, its sockets, and warnings about its slots. */
export interface FileFound {
  process: RegisteredProcess;
  sockets: RegisteredSocket[];
  warnings: string[];
}

/**
 * Reads one registry file: its process and sockets; null when it belongs to a
 * process that is gone; a warning (string) when the file cannot be used.
 */
export function readRegistryFile(
  path: string,
  pidFromName: number,
  ctx: FileContext,
): FileFound | string | null {
  try {
    const first = ctx.readSnapshot(path);
    const header = parseHeader(first.bytes, pidFromName);
    const ticks = ctx.startTicks(header.pid);
    if (ticks !== header.startTicks) {
      if (ctx.cleanup) removeIfUnchanged(path, first.ino);
      return null;
    }
    const process = parseProcess(first.bytes, header, path, ctx.users);
    const warnings: string[] = [];
    const slots = stableSlots(path, first, header, ctx, warnings);
    const sockets: RegisteredSocket[] = [];
    for (const [index, bytes] of slots) {
      const sock = parseSlot(bytes, index, process);
      if (typeof sock === "string") warnings.push(`${path}: slot ${index}: ${sock}, skipped`);
      else if (sock !== null) sockets.push(sock);
    }
    return { process, sockets, warnings };
  } catch (e) {
    if (e instanceof FileGone) return null;
    return `${path}: ${e instanceof FileProblem ? e.message : `cannot read: ${message(e)}`}`;
  }
}

// Reads a file whole, but never more than a registry file can be, and only a regular
// file (a symlink or FIFO planted in the shared directory must not hang or redirect us).
function readSnapshot(path: string): Snapshot {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new FileGone();
    throw e;
  }
  if (!info.isFile) throw new FileProblem("not a regular file");
  if (info.size > REGISTRY_FILE_MAX_BYTES) {
    throw new FileProblem(`${info.size} bytes, more than a registry file has`);
  }
  const file = Deno.openSync(path, { read: true });
  try {
    const opened = file.statSync();
    if (!opened.isFile || opened.ino !== info.ino) throw new FileGone(); // replaced meanwhile
    const buf = new Uint8Array(REGISTRY_FILE_MAX_BYTES + 1);
    let length = 0;
    for (let i = 0; i < READ_CALLS_MAX && length < buf.length; i++) {
      const n = file.readSync(buf.subarray(length));
      if (n === null || n === 0) break;
      length += n;
    }
    if (length > REGISTRY_FILE_MAX_BYTES) throw new FileProblem("grew past a registry file's size");
    return { bytes: buf.subarray(0, length), ino: opened.ino };
  } finally {
    file.close();
  }
}

// Removes a dead process's file, unless the path now names another file (a new
// process that got the same pid replaced it since we read it).
function removeIfUnchanged(path: string, ino: number | null): void {
  try {
    if (ino !== null && Deno.lstatSync(path).ino !== ino) return;
    Deno.removeSync(path);
  } catch {
    // Not ours to remove (EPERM/EACCES in the sticky directory), already gone, or no
    // write permission: the file stays and is skipped again next time.
  }
}

interface Header {
  pid: number;
  uid: number;
  startTicks: bigint;
  createdMs: number;
  netnsIno: bigint;
  cmdlineLen: number;
  slotCount: number;
}

// Checks everything the rest of the reader relies on before it reads anything else.
function parseHeader(b: Uint8Array, pidFromName: number): Header {
  const L = RegistryLayout;
  const H = L.header;
  // The magic first: a short foreign file is foreign rather than truncated.
  for (let i = 0; i < L.magic.length && i < b.length; i++) {
    if (b[H.magic + i] !== L.magic[i]) {
      throw new FileProblem("not an nkb registry file (bad magic)");
    }
  }
  if (b.length < L.headerSize) {
    throw new FileProblem(`truncated: ${b.length} bytes, the header alone is ${L.headerSize}`);
  }
  const v = new DataView(b.buffer, b.byteOffset, b.length);
  const u32 = (off: number): number => v.getUint32(off, true);
  const expect = (name: string, got: number, want: number): void => {
    if (got !== want) throw new FileProblem(`${name} ${got}, this reader knows ${want}`);
  };
  expect("version", u32(H.version), L.version);
  expect("header_size", u32(H.headerSize), L.headerSize);
  expect("slot_size", u32(H.slotSize), L.slotSize);
  const slotCount = u32(H.slotCount);
  if (slotCount < 1 || slotCount > L.slots) {
    throw new FileProblem(`slot_count ${slotCount}, expected 1 to ${L.slots}`);
  }
  const needed = L.headerSize + slotCount * L.slotSize;
  if (b.length < needed) {
    throw new FileProblem(`truncated: ${b.length} bytes, ${slotCount} slots need ${needed}`);
  }
  const pid = u32(H.pid);
  if (pid !== pidFromName) throw new FileProblem(`header pid ${pid} does not match the file name`);
  return {
    pid,
    uid: u32(H.uid),
    startTicks: v.getBigUint64(H.startTicks, true),
    createdMs: Number(v.getBigUint64(H.createdMs, true)),
    netnsIno: v.getBigUint64(H.netnsIno, true),
    cmdlineLen: u32(H.cmdlineLen),
    slotCount,
  };
}

function parseProcess(
  b: Uint8Array,
  h: Header,
  path: string,
  users: UserNames,
): RegisteredProcess {
  const L = RegistryLayout;
  const command = cString(b, L.header.comm, L.commSize);
  if (command === null) throw new FileProblem("comm is not NUL-terminated");
  if (h.cmdlineLen > L.cmdlineMax) {
    throw new FileProblem(
      `cmdline_len ${h.cmdlineLen}, more than the ${L.cmdlineMax} bytes it has`,
    );
  }
  const raw = decoder.decode(b.subarray(L.header.cmdline, L.header.cmdline + h.cmdlineLen));
  const cmdline = raw.split("\0");
  if (cmdline.length > 0 && cmdline[cmdline.length - 1] === "") cmdline.pop(); // the last NUL
  return {
    pid: h.pid,
    uid: h.uid,
    user: users.name(h.uid),
    command,
    cmdline,
    netnsIno: h.netnsIno.toString(),
    createdMs: h.createdMs,
    file: path,
  };
}

// The slots in use, each copied from a consistent moment: a slot is taken from read k
// when its seq was even in read k and unchanged in read k + 1 (within one read, a
// slot's seq is copied before the rest of it, and read k + 1 comes after: the seqlock
// rule). Slots still being written after SLOT_READS reads are warned about.
function stableSlots(
  path: string,
  first: Snapshot,
  h: Header,
  ctx: FileContext,
  warnings: string[],
): Map<number, Uint8Array> {
  const L = RegistryLayout;
  const stable = new Map<number, Uint8Array>();
  let pending: number[] = [];
  for (let i = 0; i < h.slotCount; i++) {
    const seq = u32At(first.bytes, slotOffset(i) + L.slot.seq);
    const inUse = u32At(first.bytes, slotOffset(i) + L.slot.inUse);
    if (seq % 2 === 1 || inUse !== 0) pending.push(i);
  }
  let current = first.bytes;
  for (let read = 1; read < SLOT_READS && pending.length > 0; read++) {
    const next = ctx.readSnapshot(path).bytes;
    if (!sameIdentity(current, next, h)) throw new FileGone(); // another process's file now
    const still: number[] = [];
    for (const i of pending) {
      const at = slotOffset(i) + L.slot.seq;
      const seq = u32At(current, at);
      if (seq % 2 === 0 && seq === u32At(next, at)) {
        stable.set(i, current.slice(slotOffset(i), slotOffset(i) + L.slotSize));
      } else still.push(i);
    }
    pending = still;
    current = next;
  }
  for (const i of pending) {
    const seq = u32At(current, slotOffset(i) + L.slot.seq);
    warnings.push(`${path}: slot ${i}: still being written after ${SLOT_READS} reads (seq ${seq})`);
  }
  return stable;
}

function sameIdentity(a: Uint8Array, b: Uint8Array, h: Header): boolean {
  const end = RegistryLayout.headerSize + h.slotCount * RegistryLayout.slotSize;
  if (b.length < end) return false;
  for (let i = 0; i < RegistryLayout.header.comm; i++) if (a[i] !== b[i]) return false;
  return true;
}

function slotOffset(index: number): number {
  return RegistryLayout.headerSize + index * RegistryLayout.slotSize;
}

function u32At(b: Uint8Array, off: number): number {
  return (b[off] | b[off + 1] << 8 | b[off + 2] << 16 | b[off + 3] << 24) >>> 0;
}

// One slot (its own copy, slotSize bytes): the socket, null for a free slot, or what
// is wrong with it.
function parseSlot(
  b: Uint8Array,
  index: number,
  p: RegisteredProcess,
): RegisteredSocket | string | null {
  const L = RegistryLayout;
  const S = L.slot;
  const v = new DataView(b.buffer, b.byteOffset, b.length);
  const u32 = (off: number): number => v.getUint32(off, true);
  const inUse = u32(S.inUse);
  if (inUse === 0) return null;
  if (inUse !== 1) return `in_use ${inUse}`;
  const ifname = cString(b, S.ifname, L.ifnameSize);
  if (ifname === null) return "ifname is not NUL-terminated";
  const reason = cString(b, S.reason, L.reasonSize);
  if (reason === null) return "reason is not NUL-terminated";
  const firstQueue = u32(S.firstQueue);
  const queueCount = u32(S.queueCount);
  if (queueCount > L.maxQueuesPerSocket || firstQueue + queueCount > L.queueLimit) {
    return `queues [${firstQueue}, +${queueCount}) out of range`;
  }
  const flags = u32(S.flags);
  const F = L.flags;
  const connected = (flags & F.connected) !== 0;
  return {
    pid: p.pid,
    uid: p.uid,
    user: p.user,
    command: p.command,
    cmdline: p.cmdline,
    netnsIno: p.netnsIno,
    slot: index,
    createdMs: Number(v.getBigUint64(S.createdMs, true)),
    local: { address: ipv4(b, S.localIp), port: v.getUint16(S.localPort, true) },
    remote: connected
      ? { address: ipv4(b, S.remoteIp), port: v.getUint16(S.remotePort, true) }
      : null,
    state: connected ? "Connected" : (flags & F.bound) !== 0 ? "Idle" : "Unbound",
    bypass: (flags & F.bypass) !== 0,
    affine: (flags & F.affine) !== 0,
    interface: ifname === "" ? null : ifname,
    ifindex: u32(S.ifindex),
    firstQueue,
    queueCount,
    recvMode: u32(S.recvMode),
    reason: reason === "" ? null : reason,
    stats: slotStats(v, S.stats),
  };
}

function slotStats(v: DataView, base: number): BypassStats {
  return statsFromWords((i) => Number(v.getBigUint64(base + 8 * i, true)));
}

// The string of a fixed field, which must end with a NUL inside it; null if it does not.
function cString(b: Uint8Array, off: number, size: number): string | null {
  const field = b.subarray(off, off + size);
  const end = field.indexOf(0);
  return end < 0 ? null : decoder.decode(field.subarray(0, end));
}

function ipv4(b: Uint8Array, off: number): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

/**
 * The start time of process `pid` (/proc/<pid>/stat field 22, clock ticks after
 * boot): with the pid, it names one process for good. Null when the process is gone.
 */
export function processStartTicks(pid: number): bigint | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new FileProblem(`cannot tell whether process ${pid} lives: ${message(e)}`);
  }
  return startTicksFromStat(text);
}

/** Field 22 of a /proc/<pid>/stat line; fields are counted after the last ")" (comm may hold spaces and parentheses). */
export function startTicksFromStat(text: string): bigint | null {
  const close = text.lastIndexOf(")");
  if (close < 0) return null;
  const fields = text.slice(close + 1).trim().split(" ");
  const field22 = fields[22 - 3]; // fields[0] is field 3 (state)
  return field22 !== undefined && /^[0-9]{1,20}$/.test(field22) ? BigInt(field22) : null;
}

const PASSWD_MAX_BYTES = 4 << 20;
const PASSWD_MAX_LINES = 100_000;

/** uid to user name from /etc/passwd, read once per scan; the number as text when unknown. */
export class UserNames {
  #byUid: Map<number, string> | null = null;

  /** The name of `uid`, or `uid` as text. */
  name(uid: number): string {
    if (this.#byUid === null) this.#byUid = readPasswd();
    return this.#byUid.get(uid) ?? String(uid);
  }
}

function readPasswd(): Map<number, string> {
  const byUid = new Map<number, string>();
  try {
    if (Deno.statSync("/etc/passwd").size > PASSWD_MAX_BYTES) return byUid;
    const lines = Deno.readTextFileSync("/etc/passwd").split("\n", PASSWD_MAX_LINES);
    for (const line of lines) {
      const [name, , uid] = line.split(":", 3);
      if (name && uid && /^[0-9]{1,10}$/.test(uid) && !byUid.has(Number(uid))) {
        byUid.set(Number(uid), name);
      }
    }
  } catch {
    // No /etc/passwd or no permission to read it: numbers it is.
  }
  return byUid;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
