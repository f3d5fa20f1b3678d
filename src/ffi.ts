/**
 * The shim's symbol table and its loading. Hot-path symbols take `pointer`s and
 * plain 32-bit integers so that V8 fast calls apply; `buffer` variants exist
 * for caller-owned Uint8Arrays.
 *
 * @module
 */

import { LibraryLoadError } from "./errors.ts";
import { loadLibrary } from "./load.ts";

const I32 = "i32" as const;
const U32 = "u32" as const;

/** Every symbol of libnkb.so that TypeScript calls. */
export const symbols = {
  nkb_abi_version: { parameters: [], result: I32 },
  nkb_pin: { parameters: [], result: I32 },
  nkb_now_ms: { parameters: [], result: "f64" },
  nkb_env_int: { parameters: ["buffer", U32, I32], result: I32 },
  nkb_sock_open: { parameters: [], result: I32 },
  nkb_sock_bind: { parameters: [I32, U32, U32], result: I32 },
  nkb_sock_connect: { parameters: [I32, U32, U32], result: I32 },
  nkb_sock_name: { parameters: [I32, "buffer", U32], result: I32 },
  nkb_sock_setopt: { parameters: [I32, U32, I32], result: I32 },
  nkb_sock_mcast: { parameters: [I32, U32, U32, U32], result: I32 },
  nkb_sock_shutdown: { parameters: [I32], result: I32 },
  nkb_sock_free: { parameters: [I32], result: I32 },
  nkb_sock_wake: { parameters: [I32], result: I32 },
  nkb_sock_attach: { parameters: [I32, U32, U32, U32, U32, U32, U32], result: I32 },
  nkb_sock_add_flow: { parameters: [I32, U32, U32], result: I32 },
  nkb_sock_del_flow: { parameters: [I32, U32, U32], result: I32 },
  nkb_sock_detach: { parameters: [I32], result: I32 },
  nkb_sock_info: { parameters: [I32, "buffer", U32], result: I32 },
  nkb_sock_stats: { parameters: [I32, "buffer", U32], result: I32 },
  nkb_sock_last_error: { parameters: [I32], result: I32 },
  nkb_sock_flush: { parameters: [I32], result: I32 },
  nkb_sock_link_ack: { parameters: [I32], result: I32 },
  nkb_dest_set: { parameters: [I32, U32, U32, U32, "buffer", U32, U32, U32], result: I32 },
  nkb_dest_clear: { parameters: [I32], result: I32 },
  nkb_send: { parameters: [I32, "buffer", U32, U32, U32], result: I32 },
  nkb_send_batch: { parameters: [I32, "buffer", U32, "buffer", U32, U32, U32], result: I32 },
  nkb_recv_batch: { parameters: [I32, "buffer", U32, "buffer", U32, U32], result: I32 },
  nkb_wait: { parameters: [I32, U32, U32], result: I32 },
  // (handles, handles_len, out, out_len, n, timeout_us, spin): src/shared_wait.ts
  nkb_wait_many_async: {
    name: "nkb_wait_many",
    parameters: ["buffer", U32, "buffer", U32, U32, U32, U32],
    result: I32,
    nonblocking: true,
  },
  // (name, name_len, flags, out, out_len): src/resolve.ts
  nkb_resolve: { parameters: ["buffer", U32, U32, "buffer", U32], result: I32 },
  nkb_resolve_async: {
    name: "nkb_resolve",
    parameters: ["buffer", U32, U32, "buffer", U32],
    result: I32,
    nonblocking: true,
  },
  nkb_link_get: { parameters: [U32, "buffer", U32], result: I32 },
  nkb_route_get: { parameters: [U32, "buffer", U32], result: I32 },
  nkb_addr_ifindex: { parameters: [U32], result: I32 },
  nkb_addr_first: { parameters: [U32, "buffer", U32], result: I32 },
  nkb_neigh_get: { parameters: [U32, U32, "buffer", U32], result: I32 },
  nkb_neigh_resolve: { parameters: [U32, U32], result: I32 },
  nkb_neigh_resolve_async: {
    name: "nkb_neigh_resolve",
    parameters: [U32, U32],
    result: I32,
    nonblocking: true,
  },
  nkb_sock_mac_sync: { parameters: [I32], result: I32 },
  nkb_caps: { parameters: ["buffer", U32], result: I32 },
  nkb_prog_name: { parameters: [U32, "buffer", U32], result: I32 },
  nkb_prog_is_ours: { parameters: [U32], result: I32 },
  // (ifindex, prog_id, out, out_len): per queue [state, pid] (GROUP_STATE, src/phys.ts)
  nkb_group_owners: { parameters: [U32, U32, "buffer", U32], result: I32 },
  nkb_policy: { parameters: ["buffer", U32], result: I32 },
  nkb_link_xdp_features: { parameters: [U32, "buffer", U32], result: I32 },
  nkb_queues_xsk_bound: { parameters: [U32, U32, U32], result: I32 },
  // (h, flags, recv_mode, reason_z, reason_len)
  nkb_reg_note: { parameters: [I32, U32, U32, "buffer", U32], result: I32 },
  nkb_reg_path: { parameters: ["buffer", U32], result: I32 },
  // (dir, dir_len, uid, name, name_len, out, out_len)
  nkb_reg_read_file: {
    parameters: ["buffer", U32, U32, "buffer", U32, "buffer", U32],
    result: I32,
  },
  // (dir, dir_len, uid, name, name_len)
  nkb_reg_unlink: { parameters: ["buffer", U32, U32, "buffer", U32], result: I32 },
  // (dir, dir_len, uid, out, out_len)
  nkb_reg_list_dir: { parameters: ["buffer", U32, U32, "buffer", U32], result: I32 },
  // (dir, dir_len, uid)
  nkb_reg_set_aside_user: { parameters: ["buffer", U32, U32], result: I32 },
  // (file, file_len, next, next_len, claims, claims_len, out, out_len)
  nkb_reg_parse_file: {
    parameters: ["buffer", U32, "buffer", U32, "buffer", U32, "buffer", U32],
    result: I32,
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** The ABI this TypeScript expects from the shim (NKB_ABI_VERSION in ffi/nkb.h). */
export const ABI_VERSION = 7;

/** Returned by send entries when a destination must be resolved first. */
export const E_NEED_ROUTE = -10000;
/** Returned by send entries when the bypass interface changed since the last look at it. */
export const E_LINK_CHANGE = -10001;

/** Words per datagram in the receive metadata array. */
export const RECV_META_WORDS = 8;
/** Words per datagram in the send metadata array. */
export const SEND_META_WORDS = 4;
/** Most datagrams one batch call moves. */
export const BATCH_MAX = 1024;

/** Socket options of nkb_sock_setopt. */
export const Opt = {
  busyWaitCnt: 1,
  ttl: 2,
  tos: 3,
  multicastTtl: 4,
  multicastLoop: 5,
  reuseAddress: 6,
  recvBuf: 7,
  sendBuf: 8,
  broadcast: 9,
  mtu: 10,
  reusePort: 12,
} as const;

/** Operations of nkb_sock_mcast. */
export const Mcast = { join: 1, leave: 2, setInterface: 3 } as const;

/** Destination kinds of nkb_dest_set. */
export const Dest = { bypass: 1, kernel: 2 } as const;

/** Words of nkb_sock_stats. */
export const Stat = {
  ipkts: 0,
  ipktsSpin: 1,
  opkts: 2,
  opktsSpin: 3,
  sendSpinMax: 4,
  rxDropped: 5,
  rxInvalid: 6,
  kernelIpkts: 7,
  kernelOpkts: 8,
  txFull: 9,
  rxTruncated: 10,
  engineDrops: 11,
  rxForeign: 12,
  icmpIgnored: 13,
  waitNs: 14,
  engineTxDrops: 15,
  count: 16,
} as const;

export { byteLengthOf } from "./byte_length.ts";

/** The loaded shim. */
export type NkbLib = Deno.DynamicLibrary<typeof symbols>["symbols"];

let loaded: NkbLib | null = null;
let failed: LibraryLoadError | null = null;

/**
 * Loads libnkb.so once (src/load.ts: `NKB_LIB`, else a local build beside the sources,
 * else the verified prebuilt library that came with the package) and checks its ABI.
 * A failure is kept (but a missing permission): every later call throws the same error.
 *
 * @throws {LibraryLoadError} saying what is wrong and what to do.
 */
export function lib(): NkbLib {
  if (loaded !== null) return loaded;
  if (failed !== null) throw failed;
  try {
    const found = loadLibrary(symbols, ABI_VERSION).symbols;
    // The copy this process keeps stays mapped until it exits (ffi/api.c, nkb_pin).
    found.nkb_pin();
    loaded = found;
    return loaded;
  } catch (e) {
    // A permission may still be granted (Deno.permissions.request): only that is retried.
    if (e instanceof LibraryLoadError && e.reason !== "permission") failed = e;
    throw e;
  }
}
