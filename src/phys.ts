/**
 * `nkb phys`: the interfaces of this network namespace and the receive queues nkb
 * processes hold on them, in the style of Solaris `dladm show-phys -G`
 * (net_kernel_bypass(3LIB)): RG-AVAIL queues free for a bypass socket, RG-INUSE held.
 *
 * @module
 */

import { errnoName } from "./errors.ts";
import { byteLengthOf, lib } from "./ffi.ts";
import { isNkbProgram, linkGet, progName } from "./netinfo.ts";
import { readRegistry, type RegisteredSocket, RegistryLayout } from "./registry_read.ts";
import { type Column, formatTable } from "./table.ts";

/** Who has an XDP program on the interface: nobody, nkb, something else, or cannot tell. */
export type XdpOwner = "none" | "nkb" | "other" | "unknown";

/** One interface and the queues nkb processes hold on it. */
export interface PhysInfo {
  /** The interface's name. */
  link: string;
  /** The interface's index. */
  ifindex: number;
  /** The interface's MTU. */
  mtu: number;
  /** Receive queues the device uses now (entries of /sys/class/net/<link>/queues/rx-*). */
  rxQueues: number;
  /** Receive queues free: neither held by an nkb process nor bound by any AF_XDP socket. */
  rgAvail: number;
  /** Distinct receive queues held by nkb processes or bound by any AF_XDP socket. */
  rgInUse: number;
  /** Pids holding queues, ascending. */
  holders: number[];
  /** The queues held, ascending. */
  queuesHeld: number[];
  /**
   * The receive queues the kernel says have an AF_XDP socket bound, by any program (nkb's
   * or not), ascending; null when the kernel cannot say (before Linux 6.8, or the interface
   * is down). A queue whose
   * socket closed moments ago stays here until the kernel has released it (tens of ms).
   * Kernels before 6.15 say none.
   */
  xskQueues: number[] | null;
  /** Whose XDP program is attached. */
  xdp: XdpOwner;
  /** 0 when no program is attached (or unknown). */
  xdpProgId: number;
  /** The attached program's name; null when none or unreadable. */
  xdpProgName: string | null;
  /** Whether the driver offers AF_XDP zero-copy. */
  zeroCopy: "yes" | "no" | "unknown";
  /**
   * Where the holdings come from: "filter", the interface's nkb filter, whose control block
   * names the process that bound each queue's XDP socket (read with CAP_SYS_ADMIN); else
   * "registry", what each live process of this network namespace says it holds.
   */
  source: "filter" | "registry";
}

/**
 * A queue's state in the filter's record (NKB_GROUP_*, ffi/nkb_net.h; compared by
 * tests/asks_native.test.ts): nobody, a live process, a process of another pid namespace
 * (cannot be checked from here), a process gone.
 */
export const GROUP_STATE = { free: 0, live: 1, otherNamespace: 2, gone: 3 } as const;

/** Options of {@linkcode listPhys}. */
export interface ListPhysOptions {
  /** The registry directory (default: `$NKB_REGISTRY_DIR`, else /dev/shm/nkb). */
  dir?: string;
  /** Only these interfaces (`lo` only when named); default: all but `lo`. */
  links?: string[];
  /**
   * Check claims against the kernel (default true). False counts every claim, as the
   * files say (for tests of the counting).
   */
  verify?: boolean;
}

/** Interfaces and what could not be read. */
export interface PhysList {
  /** By ifindex. */
  links: PhysInfo[];
  /** What could not be read. */
  warnings: string[];
}

/** The columns `nkb phys -o` can show. */
export type PhysField =
  | "LINK"
  | "IFINDEX"
  | "RXQ"
  | "RG-AVAIL"
  | "RG-INUSE"
  | "HOLDERS"
  | "QUEUES"
  | "XSK"
  | "XDP"
  | "XDP-PROG"
  | "ZEROCOPY"
  | "MTU";

/** Every field of `nkb phys -o`, in display order of the help. */
export const PHYS_FIELDS: readonly PhysField[] = [
  "LINK",
  "IFINDEX",
  "RXQ",
  "RG-AVAIL",
  "RG-INUSE",
  "HOLDERS",
  "QUEUES",
  "XSK",
  "XDP",
  "XDP-PROG",
  "ZEROCOPY",
  "MTU",
];

/** Options of {@linkcode formatPhys}. */
export interface FormatPhysOptions {
  /** The columns to show (`-o`, case-insensitive); default LINK RG-AVAIL RG-INUSE XDP ZEROCOPY MTU. */
  fields?: string[];
  /** Add HOLDERS to the default columns. */
  verbose?: boolean;
}

/** A `-o` field that does not exist; `valid` lists those that do. */
export class UnknownFieldError extends TypeError {
  /** The field asked for. */
  readonly field: string;
  /** Every valid field. */
  readonly valid: readonly PhysField[];
  /** `field`: the unknown name. */
  constructor(field: string) {
    super(`unknown field "${field}"; valid fields: ${PHYS_FIELDS.join(", ")}`);
    this.name = "UnknownFieldError";
    this.field = field;
    this.valid = PHYS_FIELDS;
  }
}

const DEFAULT_FIELDS: PhysField[] = ["LINK", "RG-AVAIL", "RG-INUSE", "XDP", "ZEROCOPY", "MTU"];
const NUMERIC: ReadonlySet<PhysField> = new Set(["IFINDEX", "RXQ", "RG-AVAIL", "RG-INUSE", "MTU"]);
const XDP_ZEROCOPY_BIT = 1n << 3n; // NETDEV_XDP_ACT_XSK_ZEROCOPY
const SYS_NET = "/sys/class/net";
const MAX_LINKS = 4096;
const MAX_QUEUE_ENTRIES = 8192;
// IFNAMSIZ - 1 bytes, no "/" or whitespace, not "." or "..": also keeps a name given on
// the command line from leaving /sys/class/net.
const LINK_NAME = /^[^/\s:]{1,15}$/;

/**
 * The fields `fields` names (case-insensitive).
 *
 * @throws {UnknownFieldError} for a field that does not exist.
 */
export function parsePhysFields(fields: string[]): PhysField[] {
  return fields.map((f) => {
    const upper = f.trim().toUpperCase();
    const known = PHYS_FIELDS.find((p) => p === upper);
    if (known === undefined) throw new UnknownFieldError(f);
    return known;
  });
}

/**
 * The interfaces of this process's network namespace (from /sys/class/net and
 * rtnetlink) with the receive queues that live nkb processes hold on them: as the
 * interface's nkb filter records them when it can be read (CAP_SYS_ADMIN), else as the
 * registry's live processes of this namespace say. Never throws: problems are `warnings`.
 *
 * @param opts Optional (default: every link but `lo`, the default registry, verified).
 */
export function listPhys(opts: ListPhysOptions = {}): PhysList {
  const warnings: string[] = [];
  const names = opts.links === undefined
    ? allLinkNames(warnings)
    : namedLinks(opts.links, warnings);
  const holdings = queueHoldings(opts.dir, opts.verify ?? true, warnings);
  const xdp = xdpProbe(warnings);
  const links: PhysInfo[] = [];
  for (const name of names) {
    const sys = readSysLink(name, opts.links !== undefined, warnings);
    if (sys === null) continue;
    const facts = xdp(name, sys.ifindex);
    const fromFilter = facts.xdp === "nkb"
      ? filterHoldings(name, sys.ifindex, facts.xdpProgId, warnings)
      : null;
    const { queues, holders } = fromFilter ??
      registryHoldings(holdings.filter((s) => s.ifindex === sys.ifindex));
    const xsk = facts.xdp === "unknown" && facts.xdpProgId === 0
      ? null
      : xskQueues(name, sys.ifindex, sys.rxQueues, warnings);
    const inUse = new Set([...queues, ...xsk ?? []]);
    links.push({
      link: name,
      ifindex: sys.ifindex,
      mtu: sys.mtu,
      rxQueues: sys.rxQueues,
      rgAvail: Math.max(0, sys.rxQueues - inUse.size),
      rgInUse: inUse.size,
      holders: [...holders].sort((a, b) => a - b),
      queuesHeld: [...queues].sort((a, b) => a - b),
      xskQueues: xsk,
      ...facts,
      source: fromFilter === null ? "registry" : "filter",
    });
  }
  links.sort((a, b) => a.ifindex - b.ifindex);
  return { links, warnings };
}

/**
 * The `dladm show-phys -G` table of `links`: LINK RG-AVAIL RG-INUSE XDP ZEROCOPY MTU,
 * HOLDERS added with `verbose`, or the `fields` chosen.
 *
 * @param opts Optional (default: the six default columns).
 * @throws {UnknownFieldError} for a field that does not exist.
 */
export function formatPhys(links: PhysInfo[], opts: FormatPhysOptions = {}): string {
  const fields = opts.fields !== undefined
    ? parsePhysFields(opts.fields)
    : opts.verbose
    ? [...DEFAULT_FIELDS, "HOLDERS" as const]
    : DEFAULT_FIELDS;
  const columns: Column[] = fields.map((f) => ({
    header: f,
    align: NUMERIC.has(f) ? "right" : "left",
  }));
  const rows = links.map((l) => fields.map((f) => physCell(l, f)));
  return formatTable(columns, rows, { gap: 2, rule: false });
}

function physCell(l: PhysInfo, field: PhysField): string {
  const list = (xs: number[]): string => xs.length === 0 ? "-" : xs.join(",");
  switch (field) {
    case "LINK":
      return l.link;
    case "IFINDEX":
      return String(l.ifindex);
    case "RXQ":
      return String(l.rxQueues);
    case "RG-AVAIL":
      return String(l.rgAvail);
    case "RG-INUSE":
      return String(l.rgInUse);
    case "HOLDERS":
      return list(l.holders);
    case "QUEUES":
      return list(l.queuesHeld);
    case "XSK":
      return l.xskQueues === null ? "?" : list(l.xskQueues);
    case "XDP":
      return l.xdp === "none" ? "-" : l.xdp === "other" ? `other:${l.xdpProgName ?? "?"}` : l.xdp;
    case "XDP-PROG":
      return l.xdpProgId === 0 ? "-" : `${l.xdpProgId}:${l.xdpProgName ?? "?"}`;
    case "ZEROCOPY":
      return l.zeroCopy;
    case "MTU":
      return String(l.mtu);
  }
}

function allLinkNames(warnings: string[]): string[] {
  const names: string[] = [];
  try {
    for (const e of Deno.readDirSync(SYS_NET)) {
      if (names.length >= MAX_LINKS) {
        warnings.push(`${SYS_NET}: more than ${MAX_LINKS} interfaces, the rest are not shown`);
        break;
      }
      if (e.name !== "lo" && LINK_NAME.test(e.name)) names.push(e.name);
    }
  } catch (e) {
    warnings.push(`${SYS_NET}: cannot list interfaces: ${message(e)}`);
  }
  return names;
}

function namedLinks(links: string[], warnings: string[]): string[] {
  const names: string[] = [];
  for (const name of links.slice(0, MAX_LINKS)) {
    if (!LINK_NAME.test(name) || name === "." || name === "..") {
      warnings.push(`"${name}": not an interface name`);
    } else if (!names.includes(name)) names.push(name);
  }
  return names;
}

interface SysLink {
  ifindex: number;
  mtu: number;
  rxQueues: number;
}

// ifindex, MTU and the receive queues in use, from sysfs; null (and a warning when the
// link was asked for by name) when it is not there.
function readSysLink(name: string, named: boolean, warnings: string[]): SysLink | null {
  const dir = `${SYS_NET}/${name}`;
  try {
    const ifindex = readSysNumber(`${dir}/ifindex`);
    const mtu = readSysNumber(`${dir}/mtu`);
    let rxQueues = 0;
    let seen = 0;
    for (const e of Deno.readDirSync(`${dir}/queues`)) {
      if (++seen > MAX_QUEUE_ENTRIES) break;
      if (/^rx-[0-9]+$/.test(e.name)) rxQueues++;
    }
    return { ifindex, mtu, rxQueues };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      if (named) warnings.push(`${name}: no such interface`);
    } else warnings.push(`${name}: cannot read ${dir}: ${message(e)}`);
    return null;
  }
}

function readSysNumber(path: string): number {
  const text = Deno.readTextFileSync(path).trim();
  if (!/^[0-9]{1,10}$/.test(text)) {
    throw new Error(`${path}: "${text.slice(0, 20)}" is not a number`);
  }
  return Number(text);
}

// Sockets of live processes in this network namespace that hold queues.
function queueHoldings(
  dir: string | undefined,
  verify: boolean,
  warnings: string[],
): RegisteredSocket[] {
  const scan = readRegistry({ dir, verify });
  warnings.push(...scan.warnings);
  let netns: string;
  try {
    const ino = Deno.statSync("/proc/self/ns/net").ino;
    if (ino === null) throw new Error("no inode");
    netns = String(ino);
  } catch (e) {
    warnings.push(
      `cannot tell this process's network namespace (${message(e)}): no queue holdings`,
    );
    return [];
  }
  // Unverified claims (a process the reader may not look at) hold nothing here.
  return scan.sockets.filter((s) =>
    (s.verified || !verify) && s.netnsIno === netns && s.queueCount > 0
  );
}

interface Holdings {
  queues: Set<number>;
  holders: Set<number>;
}

function registryHoldings(held: RegisteredSocket[]): Holdings {
  const queues = new Set<number>();
  for (const s of held) {
    for (let q = s.firstQueue; q < s.firstQueue + s.queueCount; q++) queues.add(q);
  }
  return { queues, holders: new Set(held.map((s) => s.pid)) };
}

const FILTER_QUEUES = RegistryLayout.queueLimit; // = NKB_FILTER_QUEUES, ffi/nkb_net.h
const EPERM = -1;

// The queues the interface's nkb filter records as held by processes alive (or of another
// pid namespace, which the reader cannot check: the kernel's bind decides for them), and
// the pids of those of this namespace; null when the filter cannot be read (without
// CAP_SYS_ADMIN: silently, the registry then answers).
function filterHoldings(
  name: string,
  ifindex: number,
  progId: number,
  warnings: string[],
): Holdings | null {
  const out = new Uint32Array(2 * FILTER_QUEUES);
  const n = lib().nkb_group_owners(ifindex, progId, out, byteLengthOf(out));
  if (n < 0) {
    if (n !== EPERM) {
      warnings.push(`${name}: the filter's queue records cannot be read: ${errnoName(n)}`);
    }
    return null;
  }
  const held: Holdings = { queues: new Set(), holders: new Set() };
  for (let q = 0; q < Math.min(n, FILTER_QUEUES); q++) {
    const state = out[2 * q];
    if (state === GROUP_STATE.live || state === GROUP_STATE.otherNamespace) held.queues.add(q);
    if (state === GROUP_STATE.live) held.holders.add(out[2 * q + 1]);
  }
  return held;
}

// The shim's query takes at most NKB_MAX_QUEUES (ffi/xsk.h) queues per call, and answers a
// bitmask of them.
const XSK_QUERY_QUEUES = 8;
const EOPNOTSUPP = -95;
const ENOENT = -2;

// The receive queues the kernel says have an AF_XDP socket bound (nkb_queues_xsk_bound);
// null when it cannot say. Bounded by the queues sysfs shows (MAX_QUEUE_ENTRIES).
function xskQueues(
  name: string,
  ifindex: number,
  rxQueues: number,
  warnings: string[],
): number[] | null {
  const bound: number[] = [];
  for (let first = 0; first < rxQueues; first += XSK_QUERY_QUEUES) {
    const count = Math.min(XSK_QUERY_QUEUES, rxQueues - first);
    const mask = lib().nkb_queues_xsk_bound(ifindex, first, count);
    if (mask < 0) {
      // A kernel without queue-get says nothing, nor about an interface that is down;
      // anything else is worth a line.
      if (mask !== EOPNOTSUPP && mask !== ENOENT) {
        warnings.push(`${name}: the kernel's AF_XDP queues cannot be read: ${errnoName(mask)}`);
      }
      return null;
    }
    for (let i = 0; i < count; i++) if ((mask >> i) & 1) bound.push(first + i);
  }
  return bound;
}

type XdpFacts = Pick<PhysInfo, "xdp" | "xdpProgId" | "xdpProgName" | "zeroCopy">;

// XDP program and zero-copy support of a link, through the shim; everything "unknown"
// (with one warning) when the shim cannot be loaded.
function xdpProbe(warnings: string[]): (name: string, ifindex: number) => XdpFacts {
  const unknown: XdpFacts = {
    xdp: "unknown",
    xdpProgId: 0,
    xdpProgName: null,
    zeroCopy: "unknown",
  };
  try {
    lib();
  } catch (e) {
    warnings.push(`XDP and zero-copy unknown: ${message(e)}`);
    return () => ({ ...unknown });
  }
  return (name, ifindex) => {
    const link = linkGet(ifindex);
    if (typeof link === "number") return { ...unknown, zeroCopy: zeroCopy(ifindex) };
    if (link.name !== name) {
      warnings.push(
        `${name}: ifindex ${ifindex} is "${link.name}" here: ${SYS_NET} shows another network namespace (remount /sys)`,
      );
      return { ...unknown };
    }
    return { ...xdpOwner(link.xdpProgId), zeroCopy: zeroCopy(ifindex) };
  };
}

function xdpOwner(progId: number): Omit<XdpFacts, "zeroCopy"> {
  if (progId === 0) return { xdp: "none", xdpProgId: 0, xdpProgName: null };
  const name = progName(progId);
  // Without CAP_SYS_ADMIN/CAP_BPF a program's name cannot be read: it could be ours.
  if (typeof name === "number") return { xdp: "unknown", xdpProgId: progId, xdpProgName: null };
  return { xdp: isNkbProgram(name) ? "nkb" : "other", xdpProgId: progId, xdpProgName: name };
}

function zeroCopy(ifindex: number): PhysInfo["zeroCopy"] {
  const out = new BigUint64Array(1);
  const rc = lib().nkb_link_xdp_features(ifindex, out, byteLengthOf(out));
  if (rc < 0) return "unknown";
  return (out[0] & XDP_ZEROCOPY_BIT) !== 0n ? "yes" : "no";
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
