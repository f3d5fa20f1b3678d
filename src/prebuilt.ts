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
 * `--unstable-raw-imports` in Deno 2.9. See README, "The native library".
 *
 * @module
 */

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
    sha256: "53be8fce3d3f9c68eaaee8f63331c877f3a1e08a003a834f7065582ce02879b9",
    size: 92784,
  },
  "linux-aarch64": {
    sha256: "8492ded10dfed0445bbb12bd4984e741ee1f9794fe9e016472e4464e9bd2d246",
    size: 91072,
  },
};
// END PREBUILT

// Literal specifiers, so that Deno sees them when it caches the package (deno install,
// deno cache, deno compile) and the lockfile covers them; only this platform's is evaluated.
const MODULES: Readonly<Record<string, () => Promise<{ libnkb?: unknown }>>> = {
  "linux-x86_64": () => import("../native/linux-x86_64.ts"),
  "linux-aarch64": () => import("../native/linux-aarch64.ts"),
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

function hex(digest: ArrayBuffer): string {
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Checks `bytes` against the record for `platformName`: the bytes, or why they are refused.
 */
export async function verifyPrebuilt(
  platformName: string,
  bytes: Uint8Array,
): Promise<PrebuiltBytes> {
  const want = PREBUILT[platformName];
  if (want === undefined) return unsupported(platformName);
  const got = hex(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  if (got !== want.sha256 || bytes.byteLength !== want.size) {
    return {
      ok: false,
      platform: platformName,
      reason: "hash-mismatch",
      message: `refused the prebuilt libnkb.so for ${platformName}: its SHA-256 is ${got} ` +
        `(${bytes.byteLength} bytes), this version of nkb records ${want.sha256} ` +
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
 * Fetches the prebuilt library for this platform from where this module came from (a
 * module import: no permission needed) and verifies it. Never throws.
 */
export async function fetchPrebuilt(): Promise<PrebuiltBytes> {
  const name = platform();
  if (PREBUILT[name] === undefined || MODULES[name] === undefined) return unsupported(name);
  const url = new URL(`../native/${name}.ts`, import.meta.url).href;
  let encoded: unknown;
  try {
    encoded = (await MODULES[name]()).libnkb;
  } catch (e) {
    return {
      ok: false,
      platform: name,
      reason: "missing",
      message: `the prebuilt libnkb.so for ${name} did not come with this copy of nkb ` +
        `(${url}: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}). In a ` +
        `checkout, build it with ./nkbw build (or ./nkbw dist).`,
    };
  }
  if (typeof encoded !== "string") {
    return {
      ok: false,
      platform: name,
      reason: "missing",
      message: `${url} holds no library (no string export "libnkb")`,
    };
  }
  let bytes: Uint8Array;
  try {
    bytes = Uint8Array.fromBase64(encoded);
  } catch {
    bytes = new Uint8Array(0); // not base64: refused below as a hash mismatch
  }
  return await verifyPrebuilt(name, bytes);
}
