/**
 * Finding and loading libnkb.so: one mechanism for the library, the CLI and anything else
 * of this package that needs the shim. The order (README, "Use it from your project"):
 *
 * 1. `NKB_LIB`, when set: that file and no other.
 * 2. A local build beside the sources (`zig-out/lib/libnkb.so`, made by `./nkbw build`),
 *    when this package was imported from files and that file exists.
 * 3. The prebuilt library that came with the package (`native/<platform>.ts`), verified
 *    against the SHA-256 recorded in `src/prebuilt.ts`, then loaded from a sealed memory
 *    file: it never touches the disk, so no directory another user could write to is
 *    involved and nothing can change it between the check and `dlopen`.
 *
 * Only `--allow-ffi` is needed: `NKB_LIB` is read through libc, as the shim reads the
 * `_NET_KERNEL_BYPASS_*` knobs (native code has the process's rights whatever Deno's
 * permissions say, which is why `--allow-ffi` is all-or-nothing).
 *
 * @module
 */

import { LibraryLoadError } from "./errors.ts";
import { prebuiltBytes } from "./prebuilt.ts";
import { byteLengthOf } from "./byte_length.ts";

/** The soname every libnkb.so has: how a second loader finds the copy already loaded. */
const SONAME = "libnkb.so";

const MFD_CLOEXEC = 0x1;
const MFD_ALLOW_SEALING = 0x2;
const MFD_EXEC = 0x10; // Linux 6.3+: executable even where vm.memfd_noexec=1 asks for a flag
const F_ADD_SEALS = 1033;
const F_SEAL_ALL = 0x1 | 0x2 | 0x4 | 0x8; // SEAL, SHRINK, GROW, WRITE
const RTLD_NOW = 0x2;
const RTLD_NOLOAD = 0x4;
const EINVAL = 22;
const EINTR = 4;

const libcSymbols = {
  getenv: { parameters: ["buffer"], result: "pointer" },
  access: { parameters: ["buffer", "i32"], result: "i32" },
  memfd_create: { parameters: ["buffer", "u32"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  dlopen: { parameters: ["buffer", "i32"], result: "pointer" },
  dlclose: { parameters: ["pointer"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

type Libc = Deno.DynamicLibrary<typeof libcSymbols>["symbols"];

const abiProbe = {
  nkb_abi_version: { parameters: [], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/**
 * `s` as UTF-8 and a terminating NUL, in an array this function made: what goes to libc is
 * terminated whatever a patched TextEncoder (or anything else of the page's) would return.
 * A lone surrogate becomes U+FFFD, as TextEncoder does.
 */
function cString(s: string): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(s.length * 3 + 1); // 3 bytes per UTF-16 unit at most
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i) | 0;
    if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length) {
      const lo = s.charCodeAt(i + 1) | 0;
      if (lo >= 0xdc00 && lo < 0xe000) {
        c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
        i++;
      }
    }
    if (c >= 0xd800 && c < 0xe000) c = 0xfffd;
    if (c < 0x80) {
      out[n++] = c;
    } else if (c < 0x800) {
      out[n++] = 0xc0 | (c >> 6);
      out[n++] = 0x80 | (c & 0x3f);
    } else if (c < 0x10000) {
      out[n++] = 0xe0 | (c >> 12);
      out[n++] = 0x80 | ((c >> 6) & 0x3f);
      out[n++] = 0x80 | (c & 0x3f);
    } else {
      out[n++] = 0xf0 | (c >> 18);
      out[n++] = 0x80 | ((c >> 12) & 0x3f);
      out[n++] = 0x80 | ((c >> 6) & 0x3f);
      out[n++] = 0x80 | (c & 0x3f);
    }
  }
  // The terminator: were a patched charCodeAt to make more than 3 bytes of one unit, the
  // writes past the end are dropped and the subarray below ends at this byte.
  out[out.length - 1] = 0;
  return out.subarray(0, n + 1);
}

function errno(libc: Libc): number {
  const p = libc.__errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
}

function isPermissionError(e: unknown): boolean {
  return e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied;
}

function firstLine(e: unknown): string {
  // Deno says "Could not open library: " twice before dlopen's own text.
  return (e instanceof Error ? e.message : String(e)).split("\n")[0]
    .replace(/^(Could not open library: )+/, "");
}

// ELF e_machine values of the CPUs Deno runs on.
const MACHINES: Record<number, string> = { 62: "x86_64", 183: "aarch64" };
const O_RDONLY_NONBLOCK_CLOEXEC = 0o4000 | 0o2000000;

/**
 * Why glibc would not map `path` although it exists, when its ELF header tells: glibc
 * reports a library for another CPU as "No such file or directory". "" when it cannot tell.
 */
function foreignElf(libc: Libc, path: string): string {
  const fd = libc.open(cString(path), O_RDONLY_NONBLOCK_CLOEXEC);
  if (fd < 0) return "";
  const header = new Uint8Array(20);
  const n = Number(libc.read(fd, header, 20n));
  libc.close(fd);
  if (n < 20) return "";
  const magic = header[0] === 0x7f && header[1] === 0x45 && header[2] === 0x4c &&
    header[3] === 0x46;
  if (!magic) return "it is not an ELF file";
  const machine = header[18] | (header[19] << 8); // e_machine, little-endian on both CPUs
  const theirs = MACHINES[machine] ?? `ELF machine ${machine}`;
  return theirs === Deno.build.arch
    ? ""
    : `it is built for ${theirs}, this CPU is ${Deno.build.arch}`;
}

function permissionError(e: unknown): LibraryLoadError {
  return new LibraryLoadError(
    "permission",
    `loading libnkb.so needs --allow-ffi (Deno said: ${firstLine(e)}). Run with ` +
      `--allow-ffi; nkb needs no other permission for its sockets.`,
  );
}

/** A permission granted without scope: no list of hosts or paths, no --deny-*. */
export function fullyGranted(status: Deno.PermissionStatus): boolean {
  return status.state === "granted" && !status.partial;
}

/**
 * Refuses to go on unless FFI is granted for every library. With a path list
 * (`--allow-ffi=<paths>`) or any `--deny-ffi`, Deno resolves a bare name given to
 * `Deno.dlopen` against the current directory, so "libc.so.6" and the soname "libnkb.so"
 * would load whatever file of that name the directory holds, constructors and all.
 */
function requireFullFfi(): void {
  let status: Deno.PermissionStatus;
  try {
    status = Deno.permissions.querySync({ name: "ffi" });
    // A prompt asks for all of FFI, not for one name (which would grant a partial scope).
    if (status.state === "prompt") status = Deno.permissions.requestSync({ name: "ffi" });
  } catch (e) {
    throw permissionError(e);
  }
  if (fullyGranted(status)) return;
  throw new LibraryLoadError(
    "permission",
    `loading libnkb.so needs --allow-ffi for all libraries (FFI is ` +
      `${
        status.state === "granted" ? "granted only in part" : "not granted for all"
      }). A path list ` +
      `(--allow-ffi=<paths>) or a --deny-ffi is not enough: Deno then looks up libc.so.6 ` +
      `and libnkb.so in the current directory. Run with --allow-ffi; nkb needs no other ` +
      `permission for its sockets.`,
  );
}

function openLibc(): Libc {
  requireFullFfi();
  try {
    return Deno.dlopen("libc.so.6", libcSymbols).symbols;
  } catch (e) {
    if (isPermissionError(e)) throw permissionError(e);
    throw new LibraryLoadError(
      "dlopen",
      `cannot load libc.so.6 (${firstLine(e)}): nkb runs on Linux with glibc 2.27 or newer`,
    );
  }
}

function getenv(libc: Libc, name: string): string | null {
  const p = libc.getenv(cString(name));
  return p === null ? null : Deno.UnsafePointerView.getCString(p);
}

/** Opens `path` (a file, or a soname already loaded) if it is an nkb of ABI `abi`. */
function openChecked<S extends Deno.ForeignLibraryInterface>(
  libc: Libc,
  path: string,
  what: string,
  symbols: S,
  abi: number,
): Deno.DynamicLibrary<S> {
  let probe: Deno.DynamicLibrary<typeof abiProbe>;
  try {
    probe = Deno.dlopen(path, abiProbe);
  } catch (e) {
    if (isPermissionError(e)) throw permissionError(e);
    const foreign = foreignElf(libc, path);
    if (foreign !== "") {
      throw new LibraryLoadError(
        foreign.startsWith("it is built for") ? "unsupported-platform" : "dlopen",
        `cannot load ${what} (${path}): ${foreign}`,
      );
    }
    if (/undefined symbol: nkb_abi_version/.test(firstLine(e))) {
      throw new LibraryLoadError(
        "abi-mismatch",
        `${what} (${path}) is not libnkb.so: it has no nkb_abi_version`,
      );
    }
    throw new LibraryLoadError("dlopen", `cannot load ${what} (${path}): ${firstLine(e)}`);
  }
  try {
    const found = probe.symbols.nkb_abi_version();
    if (found !== abi) {
      throw new LibraryLoadError(
        "abi-mismatch",
        `${what} (${path}) has ABI ${found}, this version of nkb needs ${abi}: ` +
          remedy(what),
      );
    }
    try {
      return Deno.dlopen(path, symbols);
    } catch (e) {
      throw new LibraryLoadError(
        "abi-mismatch",
        `${what} (${path}) says ABI ${abi} but lacks symbols this version needs ` +
          `(${firstLine(e)}): ${remedy(what)}`,
      );
    }
  } finally {
    probe.close(); // the library stays loaded: the handle returned above holds it
  }
}

/** What to do about a library of another ABI, by where it came from. */
function remedy(what: string): string {
  if (what === "NKB_LIB") {
    return `rebuild it from this version's sources, or unset NKB_LIB to use the library ` +
      `that came with the package`;
  }
  if (what === LOCAL) {
    return `rebuild it (./nkbw build), or remove it to use the library that came with the ` +
      `package`;
  }
  // The prebuilt library is checked by hash: a mismatch is another copy loaded first.
  return `another libnkb.so was already loaded in this process (NKB_LIB, a local build or ` +
    `another version of nkb in a Worker), and every isolate uses that one`;
}

const LOCAL = "the local build";

function localBuild(libc: Libc): string | null {
  const url = new URL("../zig-out/lib/libnkb.so", import.meta.url);
  if (url.protocol !== "file:") return null;
  const path = decodeURIComponent(url.pathname);
  return libc.access(cString(path), 0) === 0 ? path : null;
}

/** Writes `bytes` into a sealed memory file: its descriptor. */
function sealedMemoryFile(libc: Libc, name: string, bytes: Uint8Array<ArrayBuffer>): number {
  const cname = cString(name);
  let fd = libc.memfd_create(cname, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC);
  if (fd < 0 && errno(libc) === EINVAL) {
    fd = libc.memfd_create(cname, MFD_CLOEXEC | MFD_ALLOW_SEALING); // before Linux 6.3
  }
  if (fd < 0) {
    throw new LibraryLoadError(
      "dlopen",
      `cannot create a memory file for the prebuilt library (memfd_create: errno ` +
        `${errno(libc)}; a host with vm.memfd_noexec=2 forbids executable ones): build ` +
        `libnkb.so from the package's ffi/ sources and set NKB_LIB to it`,
    );
  }
  const length = byteLengthOf(bytes); // the engine's: a patched getter cannot overstate it
  let done = 0;
  // Each write moves at least one byte or fails; EINTR is retried a bounded number of times.
  for (let tries = 0; done < length && tries < 1024; tries++) {
    const n = Number(libc.write(fd, bytes.subarray(done), BigInt(length - done)));
    if (n > 0) done += n;
    else if (n < 0 && errno(libc) !== EINTR) break;
  }
  if (done !== length || libc.fcntl(fd, F_ADD_SEALS, F_SEAL_ALL) !== 0) {
    const err = errno(libc);
    libc.close(fd);
    throw new LibraryLoadError(
      "dlopen",
      `cannot write the prebuilt library into a sealed memory file (errno ${err})`,
    );
  }
  return fd;
}

function openPrebuilt<S extends Deno.ForeignLibraryInterface>(
  libc: Libc,
  symbols: S,
  abi: number,
): Deno.DynamicLibrary<S> {
  const prebuilt = prebuiltBytes();
  if (!prebuilt.ok) throw new LibraryLoadError(prebuilt.reason, prebuilt.message);
  const what = `the prebuilt libnkb.so for ${prebuilt.platform}`;
  // Another isolate (a Worker) may have loaded it already: its copy holds the process's
  // sockets and engines, so it is the one to use. RTLD_NOLOAD never maps a file.
  if (loaded(libc, SONAME)) return openChecked(libc, SONAME, what, symbols, abi);
  // The descriptor stays open for the life of the process: the library's name in the
  // link map is /proc/self/fd/<fd>, which must not come to mean another file.
  const fd = sealedMemoryFile(
    libc,
    `nkb-${prebuilt.platform}`,
    prebuilt.bytes as Uint8Array<ArrayBuffer>,
  );
  const path = `/proc/self/fd/${fd}`;
  let mine: Deno.DynamicLibrary<typeof abiProbe>;
  try {
    mine = openChecked(libc, path, what, abiProbe, abi);
  } catch (e) {
    libc.close(fd); // not mapped: the name means nothing yet
    throw e;
  }
  try {
    // By soname: the first copy in the link map. Two isolates loading at once both get
    // the one that won; the other copy (never pinned: ffi/api.c, nkb_pin) is unloaded by
    // the close below.
    return openChecked(libc, SONAME, what, symbols, abi);
  } finally {
    mine.close();
    // A copy that lost is gone from the link map: nothing names its descriptor any more.
    if (!loaded(libc, path)) libc.close(fd);
  }
}

/** Whether the link map holds `name` (a path or a soname); maps nothing. */
function loaded(libc: Libc, name: string): boolean {
  const handle = libc.dlopen(cString(name), RTLD_NOW | RTLD_NOLOAD);
  if (handle === null) return false;
  libc.dlclose(handle); // RTLD_NOLOAD still counts a reference
  return true;
}

/**
 * Loads libnkb.so in the documented order and checks its ABI version.
 *
 * @throws {LibraryLoadError} saying what is wrong and what to do.
 */
export function loadLibrary<S extends Deno.ForeignLibraryInterface>(
  symbols: S,
  abi: number,
): Deno.DynamicLibrary<S> {
  const libc = openLibc();
  const fromEnv = getenv(libc, "NKB_LIB");
  if (fromEnv !== null && fromEnv !== "") {
    return openChecked(libc, fromEnv, "NKB_LIB", symbols, abi);
  }
  const local = localBuild(libc);
  if (local !== null) return openChecked(libc, local, LOCAL, symbols, abi);
  return openPrebuilt(libc, symbols, abi);
}

/**
 * The environment variable `name`, read through libc when FFI is fully granted (as the
 * shim reads the knobs), else through `Deno.env` when that is granted without asking;
 * null when unset or unreadable. For decisions made when the library did not load.
 */
export function envValue(name: string): string | null {
  try {
    if (fullyGranted(Deno.permissions.querySync({ name: "ffi" }))) {
      return getenv(Deno.dlopen("libc.so.6", libcSymbols).symbols, name);
    }
  } catch {
    // libc would not load: try Deno's own view below.
  }
  try {
    if (Deno.permissions.querySync({ name: "env", variable: name }).state === "granted") {
      return Deno.env.get(name) ?? null;
    }
  } catch {
    // Not readable.
  }
  return null;
}
