/**
 * nkb: kernel-bypass UDP for Deno on Linux, through AF_XDP. A {@linkcode UdpBypass}
 * socket is a `Deno.DatagramConn` whose datagrams go through an AF_XDP socket's rings
 * when its interface allows it, and through the kernel otherwise, visibly:
 * `sock.bypass.reason` says why.
 *
 * ## The native library
 *
 * The data plane is `libnkb.so`, a C shim (the sources in `ffi/`, published with this
 * package) loaded with `Deno.dlopen` at the first socket or registry read, from the first of:
 * `$NKB_LIB`; `zig-out/lib/libnkb.so` beside the sources (a checkout, `./nkbw build`); the
 * library prebuilt for Linux x86-64 and aarch64 (glibc 2.27 or newer) that comes with the
 * package, verified against its recorded SHA-256 before it is loaded. Its ABI version is
 * checked on load. A failure is a {@linkcode LibraryLoadError} whose `reason` and message
 * say what is wrong and what to do.
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
 * - Sockets and batches: `--allow-ffi`, nothing more. `NKB_LIB` and the environment knobs
 *   (`_NET_KERNEL_BYPASS_*`) are read through libc (native code has the process's rights
 *   whatever Deno's permissions say: that is what `--allow-ffi` grants).
 * - The registry readers ({@linkcode readRegistry}, {@linkcode listSockets},
 *   {@linkcode listPhys}, the `./cli` module's `nkb stat` and `nkb phys`) read `/proc`,
 *   which Deno allows only with `-A` (`--allow-all`); without it they return what they
 *   could read and say what they could not in `warnings`.
 * - `--unstable-net` is not needed by nkb: only by a program that also calls
 *   `Deno.listenDatagram` itself.
 *
 * ## Unmodified programs
 *
 * The `./preload` module (`deno run --preload jsr:@nkb/udp/preload`, or `nkb run` of the
 * `./cli` module) gives a program's `Deno.listenDatagram` UDP sockets, and its Workers', to
 * nkb without a change to the program.
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
