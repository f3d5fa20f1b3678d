/**
 * nkb: kernel-bypass UDP for Deno on Linux, through AF_XDP.
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
export { BypassSetupError, NkbError, TxRingFullError } from "./src/errors.ts";
export { readRegistry } from "./src/registry_read.ts";
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
