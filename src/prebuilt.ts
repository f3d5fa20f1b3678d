/**
 * The native libraries this package carries, and their verification. `./nkbw dist`
 * cross-builds libnkb.so for each platform below, wraps it in `native/<platform>.ts` (a
 * module exporting it as base64) and records its SHA-256 here; only bytes whose hash
 * equals the recorded one are ever given to the loader.
 *
 * Why a module and not a file beside it: Deno fetches a module from wherever the package
 * came from, caches it per version (`DENO_DIR`), checks it against the lockfile, and
 * needs no permission to do so. A raw file would need `--allow-net` (or `--allow-read`)
 * to fetch and a place to cache it; a `with { type: "bytes" }` import would need
 * `--unstable-raw-imports` in Deno 2.9. See README, "Use it from your project".
 *
 * Why static imports of every platform's module (about 120 KB each, all fetched, each a
 * single string): the first socket loads the library inside a synchronous call, so the
 * bytes must be at hand, and a top-level await for a dynamic import would make every
 * importer's module evaluation asynchronous, which loses the messages a Worker is sent
 * before its `onmessage` is set (measured: 7 of 12 runs of a Worker importing nkb hung).
 *
 * @module
 */

import { libnkb as aarch64 } from "../native/linux-aarch64.ts";
import { libnkb as x86_64 } from "../native/linux-x86_64.ts";
import { byteLengthOf } from "./byte_length.ts";
import { sha256Hex } from "./sha256.ts";

/** One prebuilt library: what `./nkbw dist` recorded of it. */
export interface Prebuilt {
  /** SHA-256 of the library's bytes, lowercase hex. */
  readonly sha256: string;
  /** Its size in bytes. */
  readonly size: number;
}

/** The oldest glibc the prebuilt libraries run on (the oldest Deno itself needs). */
export const PREBUILT_GLIBC = "2.27";

// Written by `./nkbw dist` (tools/dist.ts): do not edit by hand. `./nkbw test` rebuilds
// the libraries and fails when these differ from the build.
// BEGIN PREBUILT
/** The platforms with a prebuilt library, by `linux-<Deno.build.arch>`. */
export const PREBUILT: Readonly<Record<string, Prebuilt>> = {
  "linux-x86_64": {
    sha256: "f708ac05831f586f8d308a8a631a94a82398664bf0b0a1277a0c98b2c3c4049e",
    size: 127640,
  },
  "linux-aarch64": {
    sha256: "4ce318c334f952852bd9b792284845640ba7f7c3143c8fcdf0a28511608d3b7b",
    size: 125560,
  },
};
// END PREBUILT

const MODULES: Readonly<Record<string, string>> = {
  "linux-x86_64": x86_64,
  "linux-aarch64": aarch64,
};

/** Bytes of a prebuilt library whose hash was checked, or why there are none. */
export type PrebuiltBytes =
  | { readonly ok: true; readonly platform: string; readonly bytes: Uint8Array }
  | {
    readonly ok: false;
    readonly platform: string;
    readonly reason: "unsupported-platform" | "missing" | "hash-mismatch";
    readonly message: string;
  };

/** `linux-<arch>` of this process, the key of {@linkcode PREBUILT}. */
export function platform(): string {
  return `${Deno.build.os}-${Deno.build.arch}`;
}

/**
 * Checks `bytes` against the record for `platformName`: the bytes, or why they are refused.
 */
export function verifyPrebuilt(platformName: string, bytes: Uint8Array): PrebuiltBytes {
  const want = PREBUILT[platformName];
  if (want === undefined) return unsupported(platformName);
  const size = byteLengthOf(bytes);
  const got = sha256Hex(bytes);
  if (got !== want.sha256 || size !== want.size) {
    return {
      ok: false,
      platform: platformName,
      reason: "hash-mismatch",
      message: `refused the prebuilt libnkb.so for ${platformName}: its SHA-256 is ${got} ` +
        `(${size} bytes), this version of nkb records ${want.sha256} ` +
        `(${want.size} bytes). The copy that came with the package was altered; it was not ` +
        `loaded. Clear Deno's cache of this package (deno clean, or reload with --reload) ` +
        `and report it if it persists.`,
    };
  }
  return { ok: true, platform: platformName, bytes };
}

function unsupported(platformName: string): PrebuiltBytes {
  return {
    ok: false,
    platform: platformName,
    reason: "unsupported-platform",
    message: `no prebuilt libnkb.so for ${platformName}: this package carries ` +
      `${Object.keys(PREBUILT).join(" and ")}. Build it from the package's ffi/ sources ` +
      `(zig build -Doptimize=ReleaseFast, Zig 0.17) and set NKB_LIB to the result.`,
  };
}

/**
 * The prebuilt library for `platformName` (default: this process's), decoded and
 * verified. Never throws.
 */
export function prebuiltBytes(platformName: string = platform()): PrebuiltBytes {
  const encoded = MODULES[platformName];
  if (PREBUILT[platformName] === undefined || encoded === undefined) {
    return unsupported(platformName);
  }
  if (encoded === "") {
    return {
      ok: false,
      platform: platformName,
      reason: "missing",
      message: `this copy of nkb carries no prebuilt libnkb.so (native/${platformName}.ts ` +
        `is empty: a checkout where ./nkbw dist has not run). Build it with ./nkbw build, ` +
        `or set NKB_LIB.`,
    };
  }
  let bytes: Uint8Array;
  try {
    bytes = Uint8Array.fromBase64(encoded);
  } catch {
    bytes = new Uint8Array(0); // not base64: refused as a hash mismatch
  }
  return verifyPrebuilt(platformName, bytes);
}
