/**
 * `nkb stat`: the bypass sockets of every process on the host, in the style of
 * Solaris `netstat -akP udp` (net_kernel_bypass(3LIB)).
 *
 * @module
 */

import { readRegistry, type RegisteredSocket, type SocketAddress } from "./registry_read.ts";
import { type Column, formatTable } from "./table.ts";

/** Options of {@linkcode listSockets}. */
export interface ListSocketsOptions {
  /** Also the sockets nkb tracks on the kernel path (default: bypass sockets only). */
  all?: boolean;
  /** The registry directory (default: `$NKB_REGISTRY_DIR`, else /dev/shm/nkb). */
  dir?: string;
  /** Check claims against the kernel (default true; false lists the files' word, unchecked). */
  verify?: boolean;
}

/** Sockets of live processes and what could not be read. */
export interface SocketList {
  /** By pid, then slot. */
  sockets: RegisteredSocket[];
  /** One line per unreadable file or slot. */
  warnings: string[];
}

/** Options of {@linkcode formatStat}. */
export interface FormatStatOptions {
  /** Add the User, Pid and Command (comm) columns. */
  users?: boolean;
  /** Command shows the whole command line (implies `users`). */
  verbose?: boolean;
  /** Add the Reason column: why a socket is on the kernel path ("-" when bypassing). */
  all?: boolean;
}

/** The machine-readable form of `nkb stat` (`--json`). */
export interface StatReport {
  /** Every field of every socket listed. */
  sockets: RegisteredSocket[];
  /** What could not be read. */
  warnings: string[];
}

/**
 * The sockets of every live process on the host that publishes to the registry:
 * bypass sockets, and with `all` the sockets nkb tracks on the kernel path too.
 *
 * @param opts Optional (default: bypass sockets, the default registry, verified).
 * @throws {RegistryUnavailableError} when libnkb.so cannot be loaded.
 */
export function listSockets(opts: ListSocketsOptions = {}): SocketList {
  const scan = readRegistry({ dir: opts.dir, verify: opts.verify });
  const sockets = scan.sockets.filter((s) => opts.all === true || s.bypass);
  sockets.sort(bySocket);
  return { sockets, warnings: scan.warnings };
}

/**
 * The `netstat -akP udp` table of `sockets`: Local Address, Remote Address, State,
 * If, Netns (the socket's network namespace inode: sockets of two namespaces may share
 * an address), Recv-Q (datagrams waiting), Ipkts, Opkts, Dpkts (datagrams in and out
 * over both paths, drops on the way in), Group (a multicast group joined, "+N" more),
 * then Reason with `all`, then User, Pid, Command with `users` or `verbose`.
 *
 * @param opts Optional (default: the ten columns).
 */
export function formatStat(sockets: RegisteredSocket[], opts: FormatStatOptions = {}): string {
  const users = opts.users === true || opts.verbose === true;
  const columns: Column[] = [
    { header: "Local Address", align: "left" },
    { header: "Remote Address", align: "left" },
    { header: "State", align: "left" },
    { header: "If", align: "left" },
    { header: "Netns", align: "right" },
    { header: "Recv-Q", align: "right" },
    { header: "Ipkts", align: "right" },
    { header: "Opkts", align: "right" },
    { header: "Dpkts", align: "right" },
    { header: "Group", align: "left" },
  ];
  if (opts.all) columns.push({ header: "Reason", align: "left" });
  if (users) {
    columns.push({ header: "User", align: "left" });
    columns.push({ header: "Pid", align: "right" });
    columns.push({ header: "Command", align: "left" });
  }
  const rows = [...sockets].sort(bySocket).map((s) => {
    const row = [
      localText(s.local),
      s.remote === null ? "" : addressText(s.remote),
      s.state,
      s.interface ?? "-",
      s.netnsIno,
      String(s.recvQ),
      String(s.stats.ipkts + s.stats.kernelIpkts),
      String(s.stats.opkts + s.stats.kernelOpkts),
      String(s.stats.dpkts),
      groupText(s),
    ];
    if (opts.all) row.push(s.bypass ? "-" : s.reason ?? "undecided");
    if (users) row.push(s.user, String(s.pid), commandText(s, opts.verbose === true));
    return row;
  });
  return `UDP: IPv4\n${formatTable(columns, rows, { gap: 1, rule: true })}`;
}

/** The `--json` form of a {@linkcode listSockets} result (plain data, no bigints). */
export function statJson(list: SocketList): StatReport {
  return {
    sockets: list.sockets.map((s) => structuredClone(s)),
    warnings: [...list.warnings],
  };
}

function bySocket(a: RegisteredSocket, b: RegisteredSocket): number {
  return a.pid - b.pid || a.slot - b.slot;
}

// The wildcard address is "*"; an unbound socket has no port either.
function localText(a: SocketAddress): string {
  if (a.address === "0.0.0.0" && a.port === 0) return "*:*";
  return addressText(a);
}

function addressText(a: SocketAddress): string {
  return `${a.address === "0.0.0.0" ? "*" : a.address}:${a.port}`;
}

function groupText(s: RegisteredSocket): string {
  // A socket may hold groups the writer could not name (joined past the 32 it keeps): "?".
  const first = s.group ?? (s.groups > 0 ? "?" : "-");
  return s.groups > 1 ? `${first}+${s.groups - 1}` : first;
}

function commandText(s: RegisteredSocket, verbose: boolean): string {
  if (verbose && s.cmdline.length > 0) return s.cmdline.join(" ");
  return s.command;
}
