/**
 * The read side of the host-wide socket registry (`nkb stat`, `nkb phys`); the tree,
 * the layout and the threat model are in ffi/registry.h and SECURITY.md. The reader is
 * driven by the kernel's process list, not by the directory: for each live process P it
 * reads P's effective uid, start time, pid (as
 * P's own pid namespace sees it) and pid namespace from /proc, then opens exactly
 * R/<uid>/<pidns>-<pid>-<start>.reg through the shim (no link followed, no open that
 * can block, owner and size checked on the descriptor) and parses it in C
 * (ffi/registry_parse.c), which checks the header's claims against the kernel's.
 * Junk in the directory cannot hide a process and a stale file is never shown; who a
 * process is (user, command, arguments) comes from /proc, never from its file.
 * Every socket a file claims is then checked against the kernel's facts about its
 * process (src/registry_verify.ts): what the kernel does not back is not listed.
 * Whatever is wrong becomes one warning naming it, never an exception.
 *
 * @module
 */

import { lib, type NkbLib } from "./ffi.ts";
import { Stat } from "./ffi.ts";
import { type BypassStats, statsFromWords } from "./types.ts";
import { MAX_VERIFIED_PROCESSES, verifySockets } from "./registry_verify.ts";

/**
 * The registry's binary layout, mirrored from ffi/registry.h and
 * ffi/registry_parse.h in one place (byte offsets, little-endian).
 * tests/registry_read.test.ts compiles the headers and compares every value.
 */
export const RegistryLayout = {
  /** NKB_REG_MAGIC: "NKBREG\0\1". */
  magic: [0x4e, 0x4b, 0x42, 0x52, 0x45, 0x47, 0x00, 0x01],
  version: 4,
  headerSize: 4096,
  slotSize: 512,
  /** NKB_REG_SLOTS (= NKB_MAX_SOCKS): a file never has more. */
  slots: 1024,
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
    pidnsIno: 56,
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
    sockIno: 96,
    netnsIno: 104,
    group: 112,
    groups: 116,
    recvQ: 120,
    stats: 128,
  },
  /** NKB_REG_F_* slot flags. */
  flags: { bypass: 1, connected: 2, affine: 4, bound: 8 },
  /** NKB_MAX_QUEUES (ffi/xsk.h): queues one engine, hence one socket, covers. */
  maxQueuesPerSocket: 8,
  /** NKB_REG_QUEUE_LIMIT (= NKB_FILTER_QUEUES): no socket holds a queue at or past this. */
  queueLimit: 64,
  /** nkb_reg_claims_t (ffi/registry_parse.h). */
  claims: {
    size: 64,
    uid: 0,
    pid: 8,
    pidnsIno: 16,
    startTicks: 24,
    netnsIno: 32,
    createdMs: 40,
    found: 48,
  },
  /** nkb_reg_record_t (ffi/registry_parse.h). */
  record: {
    size: 272,
    slot: 0,
    status: 4,
    problem: 8,
    flags: 12,
    createdMs: 16,
    localIp: 24,
    remoteIp: 28,
    localPort: 32,
    remotePort: 34,
    ifindex: 36,
    firstQueue: 40,
    queueCount: 44,
    recvMode: 48,
    seq: 52,
    ifname: 56,
    reason: 72,
    stats: 104,
    detail: 232,
    sockIno: 240,
    netnsIno: 248,
    group: 256,
    groups: 260,
    recvQ: 264,
  },
  /** NKB_REC_* record status. */
  recordStatus: { ok: 0, unstable: 1, bad: 2 },
  /** NKB_REC_P_* record problems. */
  recordProblem: { inUse: 1, ifname: 2, reason: 3, queues: 4 },
  /** NKB_REG_P_* whole-file parse errors. */
  parseError: {
    args: -1,
    magic: -2,
    truncated: -3,
    version: -4,
    headerSize: -5,
    slotSize: -6,
    slotCount: -7,
    tooLong: -8,
    pid: -9,
    uid: -10,
    start: -11,
    pidns: -12,
    replaced: -13,
    capacity: -14,
  },
  /** NKB_REG_E_* codes of nkb_reg_read_file (ffi/nkb.h). */
  readError: { notDir: -10100, squatted: -10101, notFile: -10102, owner: -10103, tooBig: -10104 },
} as const;

/** Largest file a reader accepts: a full header and every slot. */
export const REGISTRY_FILE_MAX_BYTES: number = RegistryLayout.headerSize +
  RegistryLayout.slots * RegistryLayout.slotSize;

// Bounds of the reader's loops: processes in /proc, entries per registry directory,
// reads per file (the first plus three seqlock re-reads), bytes of a cmdline.
const MAX_PROCESSES = 65_536;
const MAX_DIR_ENTRIES = 8192;
// Sockets and warnings listed per uid (64 processes with every slot in use): any user may
// run thousands of processes whose files are valid and full, and a scan that kept them all
// ran out of V8's heap ("Fatal JavaScript out of memory"); slots kept mid-write are a
// warning each, which costs as much. Per uid, so that one user's flood hides no other's
// sockets.
const MAX_SOCKETS_PER_UID = 65_536;
const SLOT_READS = 4;
const CMDLINE_MAX_BYTES = 4096;
const ENOENT = 2;
const EACCES = 13;

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
  /** The process id, as the reader's pid namespace sees it. */
  pid: number;
  /** Effective uid of the process (/proc/<pid>/status; the file's owner). */
  uid: number;
  /** Name of `uid` in /etc/passwd, else the number as text. */
  user: string;
  /** /proc/<pid>/comm (at most 15 bytes). */
  command: string;
  /** The arguments (/proc/<pid>/cmdline), possibly truncated at 4096 bytes. */
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
 * identity (pid, uid, user, command, cmdline) and the slot's fields. `netnsIno` is the
 * socket's own network namespace (the process's when the slot names none); a verified
 * socket's is the process's, as /proc says.
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
  /** Inode of the socket's companion kernel UDP socket (decimal; "0": none named). */
  inode: string;
  /**
   * Datagrams waiting (netstat's Recv-Q, counted in datagrams): entries of the RX rings
   * the socket reads that no receive has taken yet (shared by the sockets of one engine)
   * plus the datagrams parked for it. Refreshed every 250 ms by the writer, receive or not.
   */
  recvQ: number;
  /**
   * A multicast group the socket joined (the oldest it still holds); null when none, or
   * when it holds only groups joined past the 32 the writer keeps (`groups` counts them).
   */
  group: string | null;
  /** How many groups the socket joined. */
  groups: number;
  /**
   * The kernel backs the claim: the process holds that socket at these addresses
   * (src/registry_verify.ts). False when the reader may not look (another user's
   * process, for a reader that is not root): such sockets hold no queue in `nkb phys`.
   */
  verified: boolean;
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
  /**
   * Remove the files of processes that are gone (default true). Only a reader in the
   * initial pid namespace (which sees every process) removes, and only what it may.
   * Run as root, it also sets aside a squatted R/<uid> (another user's directory, a link,
   * a file there): that user's next processes publish again.
   */
  cleanup?: boolean;
  /**
   * Check every claim against the kernel (default true; src/registry_verify.ts). False
   * lists what the files say, unchecked (`verified: false`): for tests of the parser.
   */
  verify?: boolean;
  /**
   * Most processes read from /proc (default and at most 65,536). When there are more,
   * the rest are not listed and nothing is removed: whether they live is not known.
   */
  maxProcesses?: number;
}

const decoder = new TextDecoder(); // UTF-8; invalid bytes become U+FFFD
const encoder = new TextEncoder();

/** The registry cannot be read at all: the shim (libnkb.so), which opens and parses, did not load. */
export class RegistryUnavailableError extends Error {
  /** `cause`: the loader's error. */
  constructor(cause: unknown) {
    super(`the registry reader needs libnkb.so: ${message(cause)}`, { cause });
    this.name = "RegistryUnavailableError";
  }
}

function loadShim(): NkbLib {
  try {
    return lib();
  } catch (e) {
    throw new RegistryUnavailableError(e);
  }
}

/**
 * Reads the registry: every live process that publishes a file and its sockets.
 * A missing directory is an empty scan. Problems with files and directories are lines
 * of `warnings`; the only exception is a shim that cannot be loaded (the reader's
 * opens and parsing are native).
 *
 * @param opts Optional (default: `$NKB_REGISTRY_DIR` or /dev/shm/nkb, verified, with cleanup).
 * @throws {RegistryUnavailableError} when libnkb.so cannot be loaded.
 */
export function readRegistry(opts: ReadRegistryOptions = {}): RegistryScan {
  const dir = opts.dir ?? registryDirFromEnv();
  const scan: RegistryScan = { dir, sockets: [], processes: [], warnings: [] };
  if (dir === "off") {
    scan.warnings.push("NKB_REGISTRY_DIR=off: the registry is turned off, no sockets are listed");
    return scan;
  }
  const reader = new Reader(loadShim(), dir, scan.warnings);
  const self = selfFacts();
  // Listed before /proc is read: a file listed here belongs to a process that had
  // started, so a process missing from /proc afterwards is gone (never a newcomer).
  const sweep = (opts.cleanup ?? true) && self.initialNs
    ? listTree(dir, scan.warnings, reader)
    : null;
  const live = new Set<string>();
  const budget = new UidBudget();
  const asked = opts.maxProcesses;
  const max = typeof asked === "number" && Number.isInteger(asked) && asked >= 1
    ? Math.min(asked, MAX_PROCESSES)
    : MAX_PROCESSES;
  const pids = listPids(scan.warnings, max);
  let verifiedProcesses = 0;
  let unsure = false; // a live process whose facts could not be read: its file may look dead
  for (const pid of pids.listed) {
    const k = kernelFacts(pid, self.pidnsIno);
    if (k === null) {
      unsure ||= procLives(pid);
      continue;
    }
    const name = `${k.pidnsIno}-${k.nspid}-${k.startTicks}.reg`;
    live.add(`${k.uid}/${name}`);
    // A process of another time namespace rounds the host's start time its own way
    // (ffi/host_clock.h): its file may name one tick more or less.
    const near = otherTimeNs(pid, self.timeNsIno)
      ? [k.startTicks - 1n, k.startTicks + 1n].map((t) => ({ ...k, startTicks: t }))
      : [];
    for (const n of near) live.add(`${k.uid}/${k.pidnsIno}-${k.nspid}-${n.startTicks}.reg`);
    if (!budget.allows(k.uid)) continue;
    const warned = scan.warnings.length;
    let found = reader.process(k, name);
    for (const n of near) {
      if (found !== null) break;
      found = reader.process(n, `${n.pidnsIno}-${n.nspid}-${n.startTicks}.reg`);
    }
    // Warnings count too: slots kept mid-write for good are a warning each.
    budget.spend(k.uid, (found?.sockets.length ?? 0) + scan.warnings.length - warned);
    if (found === null) continue;
    scan.processes.push(found.process);
    if (opts.verify === false) {
      scan.sockets.push(...found.sockets.map((s) => ({ ...s, verified: false })));
    } else scan.sockets.push(...checked(found, verifiedProcesses++, scan.warnings));
  }
  budget.warn(scan.warnings);
  // A process past the bound is not in `live`: removing "dead" files then would remove
  // live ones (anyone can start that many processes, and root's files would go).
  // So would a live process whose facts could not be read (out of fds, a short read).
  if (sweep !== null && pids.complete && !unsure) reader.removeDead(sweep, live);
  scan.processes.sort((a, b) => a.pid - b.pid);
  scan.sockets.sort((a, b) => a.pid - b.pid || a.slot - b.slot);
  return scan;
}

// A file's sockets as the kernel backs them (src/registry_verify.ts); past the bound on
// processes verified, listed unverified.
function checked(found: FileFound, nth: number, warnings: string[]): RegisteredSocket[] {
  if (found.sockets.length === 0) return found.sockets;
  if (nth >= MAX_VERIFIED_PROCESSES) {
    warnings.push(
      `pid ${found.process.pid}: past ${MAX_VERIFIED_PROCESSES} processes verified: ` +
        `its sockets are listed unverified, their queues not counted`,
    );
    return found.sockets.map((s) => ({ ...s, verified: false }));
  }
  const v = verifySockets(found.process.pid, found.sockets);
  if (v.warning !== null) warnings.push(v.warning);
  return v.sockets;
}

// Sockets and warnings listed per uid, and the processes of a uid past its budget left unread.
class UidBudget {
  readonly #listed = new Map<number, number>();
  readonly #unread = new Map<number, number>();

  // A uid under budget reads one more file (at most one file's slots past the budget).
  allows(uid: number): boolean {
    if ((this.#listed.get(uid) ?? 0) < MAX_SOCKETS_PER_UID) return true;
    this.#unread.set(uid, (this.#unread.get(uid) ?? 0) + 1);
    return false;
  }

  spend(uid: number, sockets: number): void {
    this.#listed.set(uid, (this.#listed.get(uid) ?? 0) + sockets);
  }

  warn(warnings: string[]): void {
    for (const [uid, n] of this.#unread) {
      warnings.push(
        `uid ${uid}: ${
          this.#listed.get(uid)
        } sockets and warnings listed, the most a user's are; ` +
          `${n} more of its processes were not read`,
      );
    }
  }
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

/** What the kernel says of one process. */
export interface KernelFacts {
  /** Pid as the reader sees it. */
  pid: number;
  /** Effective uid. */
  uid: number;
  /** Pid in the process's own pid namespace (last field of NSpid). */
  nspid: number;
  /** /proc/<pid>/stat field 22. */
  startTicks: bigint;
  /** Inode of its pid namespace (the reader's own when it may not look). */
  pidnsIno: bigint;
}

interface SelfFacts {
  pidnsIno: bigint;
  /** Our time namespace's inode; null when unreadable. */
  timeNsIno: bigint | null;
  /** In the initial pid namespace, with its /proc: this reader sees every process. */
  initialNs: boolean;
}

// PROC_PID_INIT_INO (include/linux/proc_ns.h): the initial pid namespace's inode, fixed.
const INIT_PIDNS_INO = 0xeffffffcn;

// NSpid counts levels from the namespace /proc was mounted for, not from the host's: a
// reader in a child namespace with its own /proc sees one field too. So: the initial
// namespace's fixed inode, and a /proc that names us by our own pid.
function selfFacts(): SelfFacts {
  const pidnsIno = nsInode("/proc/self/ns/pid") ?? 0n;
  const timeNsIno = nsInode("/proc/self/ns/time");
  let procIsOurs = false;
  try {
    procIsOurs = Deno.readLinkSync("/proc/self") === String(Deno.pid);
  } catch {
    // no /proc: nobody's files are judged
  }
  return { pidnsIno, timeNsIno, initialNs: procIsOurs && pidnsIno === INIT_PIDNS_INO };
}

// Whether process pid lives in another time namespace than ours (unreadable: maybe).
function otherTimeNs(pid: number, ours: bigint | null): boolean {
  const theirs = nsInode(`/proc/${pid}/ns/time`);
  return theirs === null || ours === null || theirs !== ours;
}

// The numeric entries of /proc, bounded.
function listPids(warnings: string[], max: number): { listed: number[]; complete: boolean } {
  const listed: number[] = [];
  let complete = true;
  try {
    for (const e of Deno.readDirSync("/proc")) {
      if (!/^[1-9][0-9]{0,9}$/.test(e.name)) continue;
      if (listed.length === max) {
        warnings.push(
          `/proc: more than ${max} processes, the rest were not read (and no file was removed)`,
        );
        complete = false;
        break;
      }
      listed.push(Number(e.name));
    }
  } catch (e) {
    warnings.push(`/proc: cannot list processes: ${message(e)}`);
    complete = false;
  }
  return { listed: listed.sort((a, b) => a - b), complete };
}

/**
 * Uid, start time, namespace pid and pid namespace of `pid` from /proc; null when the
 * process is gone or its facts cannot be read. `comm` in /proc/<pid>/stat is the
 * process's own text: fields are counted after the last ")".
 */
export function kernelFacts(pid: number, ownPidns: bigint): KernelFacts | null {
  const status = readProc(`/proc/${pid}/status`);
  const stat = readProc(`/proc/${pid}/stat`);
  if (status === null || stat === null) return null;
  const uids = statusField(status, "Uid");
  const nspids = statusField(status, "NSpid") ?? [String(pid)];
  const shown = startTicksFromStat(stat);
  const startTicks = shown === null ? null : hostStartTicks(shown);
  if (uids === null || uids.length < 2 || startTicks === null) return null;
  const uid = uids[1];
  const nspid = nspids[nspids.length - 1];
  if (!/^[0-9]{1,10}$/.test(uid) || !/^[1-9][0-9]{0,9}$/.test(nspid)) return null;
  const pidnsIno = nsInode(`/proc/${pid}/ns/pid`) ?? ownPidns;
  return { pid, uid: Number(uid), nspid: Number(nspid), startTicks, pidnsIno };
}

// Whether /proc still has `pid` (after its facts could not be read): only NotFound says gone.
function procLives(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch (e) {
    return !(e instanceof Deno.errors.NotFound);
  }
}

function readProc(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return null; // gone, or not ours to read
  }
}

// The whitespace-separated values of a "Name:" line of /proc/<pid>/status.
function statusField(status: string, name: string): string[] | null {
  const line = status.split("\n").find((l) => l.startsWith(`${name}:`));
  if (line === undefined) return null;
  return line.slice(name.length + 1).trim().split(/\s+/);
}

// The inode in a "pid:[4026531836]" namespace link; null when unreadable.
function nsInode(path: string): bigint | null {
  try {
    const m = /^[a-z_]+:\[([0-9]{1,20})\]$/.exec(Deno.readLinkSync(path));
    return m === null ? null : BigInt(m[1]);
  } catch {
    return null;
  }
}

/** A file name in a per-user directory: `${uid}/${name}`. */
type TreeEntry = { uid: number; name: string };

// The registry file names of every R/<uid> (for removing dead processes' files), with
// one warning per directory for entries that are not ours. Bounded per directory. Each
// R/<uid> is listed through the descriptor its checks were made on (a link swapped in
// is not followed); a squatted one is set aside when we are root.
function listTree(dir: string, warnings: string[], reader: Reader): TreeEntry[] {
  const out: TreeEntry[] = [];
  const users = boundedNames(dir, warnings);
  let foreign = 0;
  for (const u of users) {
    if (!/^(0|[1-9][0-9]{0,9})$/.test(u) || Number(u) > 0xffff_ffff) {
      foreign++;
      continue;
    }
    const uid = Number(u);
    const names = reader.names(uid);
    if (names === RegistryLayout.readError.squatted) reader.repair(uid);
    if (typeof names === "number") continue; // gone, not ours to read: the read pass says
    let junk = 0;
    for (const name of names) {
      if (/^[0-9]{1,20}-[1-9][0-9]{0,9}-[0-9]{1,20}\.reg$/.test(name)) out.push({ uid, name });
      else junk++;
    }
    if (junk > 0) {
      warnings.push(`${dir}/${u}: ${junk} entries that are not registry files, ignored`);
    }
  }
  if (foreign > 0) {
    warnings.push(`${dir}: ${foreign} entries that are not per-user directories, ignored`);
  }
  return out;
}

function boundedNames(dir: string, warnings: string[]): string[] {
  const names: string[] = [];
  try {
    for (const e of Deno.readDirSync(dir)) {
      if (names.length === MAX_DIR_ENTRIES) {
        warnings.push(`${dir}: more than ${MAX_DIR_ENTRIES} entries, the rest were not read`);
        break;
      }
      names.push(e.name);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) warnings.push(`${dir}: cannot list: ${message(e)}`);
  }
  return names;
}

/** A live process's file: the process and its sockets. */
export interface FileFound {
  process: RegisteredProcess;
  sockets: RegisteredSocket[];
}

/** One read of a file: its bytes, or a code of nkb_reg_read_file. */
type ReadResult = Uint8Array | number;

// The reader's native side and buffers (allocated once per scan).
class Reader {
  readonly #nkb: NkbLib;
  readonly #dir: string;
  readonly #dirZ: Uint8Array;
  readonly #warnings: string[];
  readonly #bufs = [0, 1, 2].map(() => new Uint8Array(REGISTRY_FILE_MAX_BYTES + 1));
  readonly #claims = new Uint8Array(RegistryLayout.claims.size);
  readonly #out = new Uint8Array(RegistryLayout.slots * RegistryLayout.record.size);
  readonly #dirWarned = new Set<number>();
  readonly #users = new UserNames();
  #names: Uint8Array | null = null;

  constructor(nkb: NkbLib, dir: string, warnings: string[]) {
    this.#nkb = nkb;
    this.#dir = dir;
    this.#dirZ = encoder.encode(`${dir}\0`);
    this.#warnings = warnings;
  }

  /** The file of live process k (named `name`): null when it has none or it is unusable. */
  process(
    k: KernelFacts,
    name: string,
    readAt = (i: number): ReadResult => this.#read(k.uid, name, i % 3),
  ): FileFound | null {
    const path = `${this.#dir}/${k.uid}/${name}`;
    let cur = readAt(0);
    if (typeof cur === "number") return this.#readProblem(cur, k.uid, path);
    const records = new Map<number, DataView>();
    let pending: Set<number> | null = null;
    // The seqlock rule needs a later copy: read k is judged against read k + 1.
    for (let i = 1; i < SLOT_READS && (pending === null || pending.size > 0); i++) {
      const next = readAt(i);
      if (typeof next === "number") return null; // gone meanwhile: its process exited
      const n = this.#parse(cur, next, k);
      if (n === RegistryLayout.parseError.replaced) return null; // another file now
      if (n < 0) return this.#warn(`${path}: ${parseProblem(n, k, this.#claimsView())}`);
      pending = this.#collect(n, pending, records);
      cur = next;
    }
    for (const slot of pending ?? []) {
      this.#warnings.push(`${path}: slot ${slot}: still being written after ${SLOT_READS} reads`);
    }
    const c = this.#claimsView();
    const process = procInfo(k, path, this.#users, c);
    const sockets: RegisteredSocket[] = [];
    for (const [slot, r] of [...records].sort((a, b) => a[0] - b[0])) {
      const sock = socketOf(r, slot, process);
      if (typeof sock === "string") this.#warnings.push(`${path}: slot ${slot}: ${sock}, skipped`);
      else sockets.push(sock);
    }
    return { process, sockets };
  }

  // Takes the stable records of the last parse (only `pending` slots after the first)
  // into `records`; returns the slots still being written.
  #collect(n: number, pending: Set<number> | null, records: Map<number, DataView>): Set<number> {
    const R = RegistryLayout.record;
    const still = new Set<number>();
    for (let i = 0; i < n; i++) {
      const r = this.#record(i);
      const slot = r.getUint32(R.slot, true);
      if (pending !== null && !pending.has(slot)) continue;
      if (r.getUint32(R.status, true) === RegistryLayout.recordStatus.unstable) still.add(slot);
      else records.set(slot, new DataView(this.#out.slice(i * R.size, (i + 1) * R.size).buffer));
    }
    return still;
  }

  /**
   * The names in R/<uid>, listed through its checked descriptor (in C), at most
   * MAX_DIR_ENTRIES (a warning past them); or a code of nkb_reg_list_dir.
   */
  names(uid: number): string[] | number {
    // 255-byte names and their NULs, and the mark: allocated once, on the first listing.
    const buf = this.#names ??= new Uint8Array(MAX_DIR_ENTRIES * 256 + 1);
    const n = this.#nkb.nkb_reg_list_dir(this.#dirZ, this.#dirZ.length, uid, buf, buf.length);
    if (n < 0) return n;
    const names = n === 0 ? [] : decoder.decode(buf.subarray(0, n - 1)).split("\0");
    if (names.length > 0 && names[names.length - 1] === "") {
      names.pop(); // the mark of a listing cut short
      this.#warnings.push(
        `${this.#dir}/${uid}: more than ${MAX_DIR_ENTRIES} entries, the rest were not read`,
      );
    }
    return names;
  }

  /**
   * Root: sets a squatted R/<uid> aside (in C, inode-checked) so that uid's next process
   * publishes; one warning, which also takes the place of the read pass's "squatted" one.
   */
  repair(uid: number): void {
    const rc = this.#nkb.nkb_reg_set_aside_user(this.#dirZ, this.#dirZ.length, uid);
    if (rc !== 1) return; // not root (-EPERM): the read pass warns "squatted"
    this.#dirWarned.add(uid);
    this.#warnings.push(
      `${this.#dir}/${uid}: squatted (not a directory of uid ${uid}, or writable by others): ` +
        `set aside; uid ${uid}'s next processes publish, its running ones gave up and stay unlisted`,
    );
  }

  /** Removes files of R/<uid> that no live process owns (checked opens, in C). */
  removeDead(entries: TreeEntry[], live: Set<string>): void {
    for (const e of entries) {
      if (live.has(`${e.uid}/${e.name}`)) continue;
      const nameZ = encoder.encode(`${e.name}\0`);
      // Not ours to remove (another user's private directory), or gone: it stays.
      this.#nkb.nkb_reg_unlink(this.#dirZ, this.#dirZ.length, e.uid, nameZ, nameZ.length);
    }
  }

  #read(uid: number, name: string, buf: number): ReadResult {
    const nameZ = encoder.encode(`${name}\0`);
    const b = this.#bufs[buf];
    const n = this.#nkb.nkb_reg_read_file(
      this.#dirZ,
      this.#dirZ.length,
      uid,
      nameZ,
      nameZ.length,
      b,
      b.length,
    );
    return n < 0 ? n : b.subarray(0, n);
  }

  #parse(cur: Uint8Array, next: Uint8Array, k: KernelFacts): number {
    const C = RegistryLayout.claims;
    this.#claims.fill(0);
    const v = this.#claimsView();
    v.setBigUint64(C.uid, BigInt(k.uid), true);
    v.setBigUint64(C.pid, BigInt(k.nspid), true);
    v.setBigUint64(C.pidnsIno, k.pidnsIno, true);
    v.setBigUint64(C.startTicks, k.startTicks, true);
    return this.#nkb.nkb_reg_parse_file(
      cur,
      cur.length,
      next,
      next.length,
      this.#claims,
      this.#claims.length,
      this.#out,
      this.#out.length,
    );
  }

  #claimsView(): DataView {
    return new DataView(this.#claims.buffer);
  }

  #record(i: number): DataView {
    const size = RegistryLayout.record.size;
    return new DataView(this.#out.buffer, i * size, size);
  }

  #readProblem(code: number, uid: number, path: string): null {
    const E = RegistryLayout.readError;
    if (code === -ENOENT) return null; // no registry for this process
    if (code === E.notDir || code === E.squatted) {
      if (this.#dirWarned.has(code === E.notDir ? -1 : uid)) return null;
      this.#dirWarned.add(code === E.notDir ? -1 : uid);
      return this.#warn(
        code === E.notDir
          ? `${this.#dir}: not a directory (a link or a file): nothing read`
          : `${this.#dir}/${uid}: squatted (not a directory of uid ${uid}, or writable by others): its files are not read`,
      );
    }
    if (code === -EACCES) {
      // Another user's private part (0700, files 0600): one line per user, not per process.
      if (this.#dirWarned.has(-2 - uid)) return null;
      this.#dirWarned.add(-2 - uid);
      return this.#warn(
        `${this.#dir}/${uid}: permission denied: the sockets of uid ${uid}'s processes are not listed`,
      );
    }
    if (code === E.notFile) return this.#warn(`${path}: not a regular file, skipped`);
    if (code === E.owner) return this.#warn(`${path}: not owned by uid ${uid}, skipped`);
    if (code === E.tooBig) {
      return this.#warn(
        `${path}: more than a registry file's ${REGISTRY_FILE_MAX_BYTES} bytes, skipped`,
      );
    }
    return this.#warn(`${path}: cannot read (errno ${-code})`);
  }

  #warn(line: string): null {
    this.#warnings.push(line);
    return null;
  }
}

/**
 * Reads one process's file from scripted reads (`reads[i]` is what the i-th read
 * returns; the last repeats): the process and its sockets, or null, and the warnings.
 * For tests of the seqlock rule and the parser's verdicts.
 *
 * @throws {Error} when libnkb.so cannot be loaded.
 */
export function readScripted(
  k: KernelFacts,
  reads: Uint8Array[],
): { found: FileFound | null; warnings: string[]; reads: number } {
  const warnings: string[] = [];
  let count = 0;
  const reader = new Reader(lib(), "/x", warnings);
  const found = reader.process(k, "f.reg", (i) => {
    count++;
    return reads[Math.min(i, reads.length - 1)];
  });
  return { found, warnings, reads: count };
}

// The warning text of a nkb_reg_parse error.
function parseProblem(code: number, k: KernelFacts, c: DataView): string {
  const P = RegistryLayout.parseError;
  const found = c.getBigUint64(RegistryLayout.claims.found, true);
  switch (code) {
    case P.magic:
      return "not an nkb registry file (bad magic)";
    case P.truncated:
      return `truncated: ${found} bytes`;
    case P.version:
      return `version ${found}, this reader knows ${RegistryLayout.version}`;
    case P.headerSize:
      return `header_size ${found}, this reader knows ${RegistryLayout.headerSize}`;
    case P.slotSize:
      return `slot_size ${found}, this reader knows ${RegistryLayout.slotSize}`;
    case P.slotCount:
      return `slot_count ${found}, expected 1 to ${RegistryLayout.slots}`;
    case P.tooLong:
      return `${found} bytes, more than a registry file has`;
    case P.pid:
      return `claims pid ${found}, the kernel says ${k.nspid}: forged, skipped`;
    case P.uid:
      return `claims uid ${found}, the process runs as uid ${k.uid}: forged, skipped`;
    case P.start:
      return `claims start time ${found}, the process started at ${k.startTicks}: forged, skipped`;
    case P.pidns:
      return `claims pid namespace ${found}, the process is in ${k.pidnsIno}: forged, skipped`;
    default:
      return `cannot parse (code ${code})`;
  }
}

// Who process k is: from /proc, never from its file.
function procInfo(k: KernelFacts, path: string, users: UserNames, c: DataView): RegisteredProcess {
  const comm = readProc(`/proc/${k.pid}/comm`) ?? "";
  const netns = nsInode(`/proc/${k.pid}/ns/net`) ??
    c.getBigUint64(RegistryLayout.claims.netnsIno, true);
  return {
    pid: k.pid,
    uid: k.uid,
    user: users.name(k.uid),
    command: comm.endsWith("\n") ? comm.slice(0, -1) : comm,
    cmdline: readCmdline(k.pid),
    netnsIno: netns.toString(),
    createdMs: Number(c.getBigUint64(RegistryLayout.claims.createdMs, true)),
    file: path,
  };
}

function readCmdline(pid: number): string[] {
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(`/proc/${pid}/cmdline`, { read: true });
  } catch {
    return [];
  }
  try {
    const buf = new Uint8Array(CMDLINE_MAX_BYTES);
    let length = 0;
    for (let i = 0; i < 64 && length < buf.length; i++) {
      const n = file.readSync(buf.subarray(length));
      if (n === null || n === 0) break;
      length += n;
    }
    const args = decoder.decode(buf.subarray(0, length)).split("\0");
    if (args.length > 0 && args[args.length - 1] === "") args.pop(); // the last NUL
    return args;
  } catch {
    return [];
  } finally {
    file.close();
  }
}

// One parsed record: the socket, or what is wrong with it.
function socketOf(r: DataView, slot: number, p: RegisteredProcess): RegisteredSocket | string {
  const R = RegistryLayout.record;
  const u32 = (off: number): number => r.getUint32(off, true);
  if (u32(R.status) !== RegistryLayout.recordStatus.ok) {
    const P = RegistryLayout.recordProblem;
    const detail = r.getBigUint64(R.detail, true);
    switch (u32(R.problem)) {
      case P.inUse:
        return `in_use ${detail}`;
      case P.ifname:
        return "ifname is not NUL-terminated";
      case P.reason:
        return "reason is not NUL-terminated";
      default:
        return `queues [${u32(R.firstQueue)}, +${detail}) out of range`;
    }
  }
  const flags = u32(R.flags);
  const F = RegistryLayout.flags;
  const connected = (flags & F.connected) !== 0;
  const ifname = cString(r, R.ifname, RegistryLayout.ifnameSize);
  const reason = cString(r, R.reason, RegistryLayout.reasonSize);
  const netns = r.getBigUint64(R.netnsIno, true);
  const groups = u32(R.groups);
  return {
    pid: p.pid,
    uid: p.uid,
    user: p.user,
    command: p.command,
    cmdline: p.cmdline,
    netnsIno: netns === 0n ? p.netnsIno : netns.toString(),
    slot,
    createdMs: Number(r.getBigUint64(R.createdMs, true)),
    local: { address: ipv4(r, R.localIp), port: r.getUint16(R.localPort, true) },
    remote: connected
      ? { address: ipv4(r, R.remoteIp), port: r.getUint16(R.remotePort, true) }
      : null,
    state: connected ? "Connected" : (flags & F.bound) !== 0 ? "Idle" : "Unbound",
    bypass: (flags & F.bypass) !== 0,
    affine: (flags & F.affine) !== 0,
    interface: ifname === "" ? null : ifname,
    ifindex: u32(R.ifindex),
    firstQueue: u32(R.firstQueue),
    queueCount: u32(R.queueCount),
    recvMode: u32(R.recvMode),
    reason: reason === "" ? null : reason,
    stats: statsFromWords((i) => Number(r.getBigUint64(R.stats + 8 * i, true))),
    inode: r.getBigUint64(R.sockIno, true).toString(),
    recvQ: u32(R.recvQ),
    // 0.0.0.0 is never a group: the writer names none it still holds.
    group: groups === 0 || u32(R.group) === 0 ? null : ipv4(r, R.group),
    groups,
    verified: true,
  };
}

// A string field the parser checked (NUL-terminated, zero-filled after).
function cString(r: DataView, off: number, size: number): string {
  const field = new Uint8Array(r.buffer, r.byteOffset + off, size);
  const end = field.indexOf(0);
  return decoder.decode(field.subarray(0, end < 0 ? size : end));
}

function ipv4(r: DataView, off: number): string {
  return `${r.getUint8(off)}.${r.getUint8(off + 1)}.${r.getUint8(off + 2)}.${r.getUint8(off + 3)}`;
}

/**
 * The start time of process `pid` (/proc/<pid>/stat field 22, clock ticks after
 * boot): with the pid, it names one process for good. Null when the process is gone.
 */
export function processStartTicks(pid: number): bigint | null {
  const text = readProc(`/proc/${pid}/stat`);
  const shown = text === null ? null : startTicksFromStat(text);
  return shown === null ? null : hostStartTicks(shown);
}

// USER_HZ, the unit of /proc start times: 100 on every architecture Deno runs on.
const USER_HZ = 100n;
const TICK_NS = 1_000_000_000n / USER_HZ;
// What a negative offset makes of a start before the namespace's zero point: (2^64 + ns) in
// ticks, as the kernel's unsigned arithmetic has it (ffi/host_clock.c does the same).
const WRAP_TICKS = ((1n << 64n) - 1n) / TICK_NS;
let ownBootOffsetTicks: bigint | null = null;

// This process's boottime offset in ticks (/proc/self/timens_offsets), 0 without one; read
// once, unless the read failed for another reason than the file's absence.
function bootOffsetTicks(): bigint {
  if (ownBootOffsetTicks !== null) return ownBootOffsetTicks;
  // The file shows the namespace of our children: after an unshare without a fork, not ours.
  const own = nsInode("/proc/self/ns/time");
  if (own !== null && own !== nsInode("/proc/self/ns/time_for_children")) {
    return ownBootOffsetTicks = 0n;
  }
  let text: string;
  try {
    text = Deno.readTextFileSync("/proc/self/timens_offsets");
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) ownBootOffsetTicks = 0n; // no time namespaces
    return 0n;
  }
  const m = /^boottime\s+(-?[0-9]{1,10})\s+([0-9]{1,9})\s*$/m.exec(text);
  return ownBootOffsetTicks = m === null
    ? 0n
    : (BigInt(m[1]) * 1_000_000_000n + BigInt(m[2])) / TICK_NS;
}

/**
 * A start time as /proc shows it to this process, in the host's ticks: in a time namespace
 * the kernel adds the reader's boottime offset, and the shim writes host times
 * (ffi/host_clock.h). Exact for an offset of whole ticks; otherwise one tick more or not,
 * depending on the process (as in the shim): see {@linkcode readRegistry}'s name lookup.
 */
export function hostStartTicks(shown: bigint): bigint {
  const offset = bootOffsetTicks();
  const unwrapped = offset < 0n && shown > WRAP_TICKS / 2n ? shown - WRAP_TICKS : shown;
  const host = unwrapped - offset;
  return host <= 0n ? 1n : host;
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
