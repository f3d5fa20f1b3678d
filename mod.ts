/**
 * nkb: kernel-bypass UDP for Deno on Linux, through AF_XDP. A {@linkcode UdpBypass}
 * socket is a `Deno.DatagramConn` whose datagrams go through an AF_XDP socket's rings
 * when its interface allows it, and through the kernel otherwise, visibly:
 * `sock.bypass.reason` says why.
 *
 * ## The native library
 *
 * The data plane is `libnkb.so`, a C shim (the sources in `ffi/`, published with this
 * package) loaded with `Deno.dlopen` at the first socket or registry read. It is found at
 * `$NKB_LIB` when that is set, else at `zig-out/lib/libnkb.so` beside the sources (a local
 * checkout; from JSR, `NKB_LIB` is the way). Build it with `./nkbw build` in a checkout,
 * or `zig build -Doptimize=ReleaseFast` (Zig 0.17, `build.zig`) anywhere the sources are.
 * Its ABI version is checked on load; a missing or mismatched library is an `Error`
 * naming every path tried.
 *
 * ## Privileges
 *
 * The bypass path needs, in the process's effective set, CAP_NET_RAW (the AF_XDP socket),
 * CAP_NET_ADMIN (attaching the XDP filter), CAP_BPF or CAP_SYS_ADMIN (loading it), and
 * CAP_IPC_LOCK or a memlock limit that holds the UMEM. Root has them all. Without them
 * nothing fails: each socket works on the kernel path with `bypass.reason`
 * `"missing-privilege"` and `bypass.detail` naming what is missing (unless
 * `_NET_KERNEL_BYPASS_ERR_EXIT=1`, which exits instead). Only one process holds an
 * interface's XDP filter; Workers of that process share it.
 *
 * ## Deno permissions
 *
 * - Sockets and batches: `--allow-ffi`. The environment knobs
 *   (`_NET_KERNEL_BYPASS_*`) are read through the shim and need nothing more.
 *   `NKB_LIB` is read with `Deno.env`: `--allow-env=NKB_LIB` to use it (without it a
 *   denied read is ignored, but on a terminal Deno first asks).
 * - The registry readers ({@linkcode readRegistry}, {@linkcode listSockets},
 *   {@linkcode listPhys}, the `./cli` module's `nkb stat` and `nkb phys`) read `/proc`,
 *   which Deno allows only with `-A` (`--allow-all`); without it they return what they
 *   could read and say what they could not in `warnings`.
 * - `--unstable-net` is not needed by nkb: only by a program that also calls
 *   `Deno.listenDatagram` itself.
 *
 * @example
 * ```ts
 * import { UdpBypass } from "jsr:@nkb/udp";
 * const sock = UdpBypass.listenDatagram({ transport: "udp", hostname: "198.18.0.1", port: 9000 });
 * for await (const [data, from] of sock) await sock.send(data, from);
 * ```
 *
 * @module
 */

export { UdpBypass } from "./src/udp_bypass.ts";
export { RecvBatch, SendBatch } from "./src/batch.ts";
export type { BypassState, BypassStats, ListenOptions, ReceiveOptions } from "./src/types.ts";
export type { BypassOptions } from "./src/config.ts";
export type { FallbackReason } from "./src/decide.ts";
export { BypassSetupError, LibraryLoadError, NkbError, TxRingFullError } from "./src/errors.ts";
export type { LibraryLoadFailure } from "./src/errors.ts";
export { readRegistry, RegistryUnavailableError } from "./src/registry_read.ts";
export type {
  ReadRegistryOptions,
  RegisteredProcess,
  RegisteredSocket,
  RegistryScan,
  SocketAddress,
  SocketState,
} from "./src/registry_read.ts";
export { formatStat, listSockets, statJson } from "./src/stat.ts";
export type { FormatStatOptions, ListSocketsOptions, SocketList, StatReport } from "./src/stat.ts";
export { formatPhys, listPhys, PHYS_FIELDS, UnknownFieldError } from "./src/phys.ts";
export type {
  FormatPhysOptions,
  ListPhysOptions,
  PhysField,
  PhysInfo,
  PhysList,
  XdpOwner,
} from "./src/phys.ts";
