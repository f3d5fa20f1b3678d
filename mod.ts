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
export { ZeroCopyDatagram } from "./src/zero_copy.ts";
export type { BypassState, BypassStats, ListenOptions, ReceiveOptions } from "./src/types.ts";
export type { BypassOptions } from "./src/config.ts";
export type { FallbackReason } from "./src/decide.ts";
export { BypassSetupError, NkbError, TxRingFullError } from "./src/errors.ts";
