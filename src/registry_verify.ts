/**
 * The registry reader's second opinion: a process's file is its own word, so every
 * socket it claims is checked against what the kernel says of that process (issue 12).
 * - The slot names its companion kernel UDP socket by inode: the process must hold it
 *   (/proc/P/fd/* reads "socket:[ino]"; links are read, never followed), and the
 *   kernel's table of P's network namespace (/proc/P/net/udp) must give that socket the
 *   claimed local address and port (and peer, when connected), and the slot's network
 *   namespace must be P's (/proc/P/ns/net: the namespace of that table). Else the socket
 *   is not listed.
 * - A claim of the bypass path, an interface or queues needs a process that could hold
 *   an AF_XDP socket: CAP_NET_RAW in its effective set, in the reader's user namespace.
 *   Else the socket is listed on the kernel path, holding nothing.
 * - A reader that may not look at P's descriptors (another user's process, for a
 *   reader that is not root) lists P's sockets as `verified: false`; `nkb phys` counts
 *   no queue of theirs.
 * Each process that fails gets one warning naming its pid and what did not match.
 *
 * @module
 */

import type { RegisteredSocket, SocketAddress } from "./registry_read.ts";

// Bounds: descriptors read per process, bytes (hence lines: 128 bytes each) of a
// /proc/P/net/udp, processes verified per scan.
const MAX_FDS = 65_536;
const MAX_UDP_BYTES = 16 << 20;
const MAX_UDP_LINES = MAX_UDP_BYTES / 128;
const CHUNK_BYTES = 64 << 10;
/** Processes with sockets that one scan verifies; the rest are listed unverified. */
export const MAX_VERIFIED_PROCESSES = 4096;
const CAP_NET_RAW = 13n;
// Failed slots a warning names (a full file fails 1,024 times: one short line still).
const MAX_NAMED = 3;

/** What the kernel says of one UDP socket: its addresses in P's namespace. */
interface KernelUdp {
  local: SocketAddress;
  remote: SocketAddress;
}

/** The outcome for one process's sockets. */
export interface Verdict {
  /** The sockets to list (failed ones removed, unbacked bypass claims demoted). */
  sockets: RegisteredSocket[];
  /** At most one line, naming the pid and what did not match. */
  warning: string | null;
}

/**
 * Checks the sockets of live process `pid` (as the reader sees it) against the kernel.
 * Never throws.
 */
export function verifySockets(pid: number, sockets: RegisteredSocket[]): Verdict {
  if (sockets.length === 0) return { sockets, warning: null };
  const held = heldSocketInodes(pid);
  if (typeof held === "string") {
    const unverified = sockets.map((s) => ({ ...s, verified: false }));
    return {
      sockets: unverified,
      warning: `pid ${pid}: ${sockets.length} sockets not verified (${held}): ` +
        `listed as unverified, their queues not counted`,
    };
  }
  const wanted = new Set(sockets.map((s) => s.inode).filter((i) => held.has(i)));
  const table = udpTable(pid, wanted);
  const netns = netnsOf(pid);
  const capable = hasNetRaw(pid);
  const failed: string[] = [];
  let demoted = 0;
  const out: RegisteredSocket[] = [];
  for (const s of sockets) {
    const wrong = mismatch(s, held, table) ??
      (netns !== null && s.netnsIno !== netns
        ? `claims network namespace ${s.netnsIno}, the process is in ${netns}`
        : null);
    if (wrong !== null) {
      failed.push(`slot ${s.slot}: ${wrong}`);
      continue;
    }
    const claimsPath = s.bypass || s.interface !== null || s.ifindex !== 0 || s.queueCount > 0;
    if (claimsPath && !capable) {
      demoted++;
      out.push({
        ...s,
        bypass: false,
        interface: null,
        ifindex: 0,
        firstQueue: 0,
        queueCount: 0,
        reason: "unverified-bypass",
      });
    } else out.push(s);
  }
  const parts: string[] = [];
  if (failed.length > 0) {
    parts.push(
      `${failed.length} sockets not backed by the kernel, not listed (` +
        `${failed.slice(0, MAX_NAMED).join("; ")}${failed.length > MAX_NAMED ? "; ..." : ""})`,
    );
  }
  if (demoted > 0) {
    parts.push(
      `${demoted} bypass or queue claims without CAP_NET_RAW (in this user namespace), ` +
        `listed on the kernel path`,
    );
  }
  return { sockets: out, warning: parts.length === 0 ? null : `pid ${pid}: ${parts.join("; ")}` };
}

// What is wrong with one claim, or null.
function mismatch(
  s: RegisteredSocket,
  held: Set<string>,
  table: Map<string, KernelUdp> | string,
): string | null {
  if (s.inode === "0") return "names no kernel socket";
  if (!held.has(s.inode)) return `socket ${s.inode} is not among its descriptors`;
  if (s.state === "Unbound") return null; // the kernel lists a UDP socket once bound
  if (typeof table === "string") return table;
  const k = table.get(s.inode);
  if (k === undefined) return `socket ${s.inode} is not in its /proc/net/udp`;
  if (!sameAddress(k.local, s.local)) {
    return `claims ${show(s.local)}, the kernel says ${show(k.local)}`;
  }
  const remote = s.remote ?? { address: "0.0.0.0", port: 0 };
  if (!sameAddress(k.remote, remote)) {
    return `claims peer ${show(remote)}, the kernel says ${show(k.remote)}`;
  }
  return null;
}

function sameAddress(a: SocketAddress, b: SocketAddress): boolean {
  return a.address === b.address && a.port === b.port;
}

function show(a: SocketAddress): string {
  return `${a.address}:${a.port}`;
}

// The inodes of the sockets process pid holds (decimal), or why they cannot be read.
function heldSocketInodes(pid: number): Set<string> | string {
  const held = new Set<string>();
  const dir = `/proc/${pid}/fd`;
  let n = 0;
  try {
    for (const e of Deno.readDirSync(dir)) {
      if (n++ === MAX_FDS) return `more than ${MAX_FDS} descriptors`;
      if (!/^[0-9]{1,10}$/.test(e.name)) continue;
      let target: string;
      try {
        target = Deno.readLinkSync(`${dir}/${e.name}`); // the link's text: nothing followed
      } catch {
        continue; // closed meanwhile
      }
      const m = /^socket:\[([0-9]{1,20})\]$/.exec(target);
      if (m !== null) held.add(m[1]);
    }
  } catch (e) {
    if (e instanceof Deno.errors.PermissionDenied) return `${dir}: permission denied`;
    return `${dir}: ${e instanceof Error ? e.message : String(e)}`;
  }
  return held;
}

// The UDP sockets of pid's network namespace whose inode is wanted, by inode; or why
// the table cannot be read. Lines: "sl local rem st tx:rx tr:when retr uid timeout inode".
function udpTable(pid: number, wanted: Set<string>): Map<string, KernelUdp> | string {
  const path = `/proc/${pid}/net/udp`;
  const text = readBounded(path);
  if (text === null) return `${path}: cannot be read`;
  const lines = text.split("\n", MAX_UDP_LINES + 1);
  const out = new Map<string, KernelUdp>();
  for (let i = 1; i < lines.length && i <= MAX_UDP_LINES; i++) {
    const f = lines[i].trim().split(/\s+/);
    if (f.length < 10 || !wanted.has(f[9])) continue;
    const local = hexAddress(f[1]);
    const remote = hexAddress(f[2]);
    if (local !== null && remote !== null) out.set(f[9], { local, remote });
  }
  return out;
}

// "0100007F:2328": the address as the kernel prints a __be32 on a little-endian host
// (the bytes reversed), the port in host order.
function hexAddress(field: string): SocketAddress | null {
  const m = /^([0-9A-F]{8}):([0-9A-F]{4})$/.exec(field);
  if (m === null) return null;
  const v = parseInt(m[1], 16);
  const address = [v & 255, (v >>> 8) & 255, (v >>> 16) & 255, v >>> 24].join(".");
  return { address, port: parseInt(m[2], 16) };
}

// At most MAX_UDP_BYTES of a /proc file (which never blocks), read in chunks; or null.
function readBounded(path: string): string | null {
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path, { read: true });
  } catch {
    return null;
  }
  try {
    const chunks: Uint8Array[] = [];
    let length = 0;
    for (let i = 0; i < MAX_UDP_BYTES / CHUNK_BYTES && length < MAX_UDP_BYTES; i++) {
      const chunk = new Uint8Array(CHUNK_BYTES);
      const n = file.readSync(chunk);
      if (n === null || n === 0) break;
      chunks.push(chunk.subarray(0, n));
      length += n;
    }
    const all = new Uint8Array(length);
    let at = 0;
    for (const c of chunks) all.set(c, at), at += c.length;
    return new TextDecoder().decode(all);
  } catch {
    return null;
  } finally {
    file.close();
  }
}

// The inode of pid's network namespace (decimal), or null when it cannot be read.
function netnsOf(pid: number): string | null {
  try {
    const m = /^net:\[([0-9]{1,20})\]$/.exec(Deno.readLinkSync(`/proc/${pid}/ns/net`));
    return m === null ? null : m[1];
  } catch {
    return null;
  }
}

// CAP_NET_RAW in the effective set ("CapEff:" of /proc/P/status), in the reader's user
// namespace: AF_XDP needs it. Anyone may enter a user namespace of his own (unshare -U)
// and see a full CapEff there, which lets him bind no AF_XDP socket to our interfaces.
function hasNetRaw(pid: number): boolean {
  try {
    const ours = Deno.readLinkSync("/proc/self/ns/user");
    if (Deno.readLinkSync(`/proc/${pid}/ns/user`) !== ours) return false;
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const m = /^CapEff:\s*([0-9a-f]{1,16})$/m.exec(status);
    return m !== null && ((BigInt(`0x${m[1]}`) >> CAP_NET_RAW) & 1n) === 1n;
  } catch {
    return false;
  }
}
