/**
 * The prebuilt libraries the package carries, read as ELF files and run. `./nkbw dist
 * --check` builds both (and fails when src/prebuilt.ts records other hashes); then, for
 * each of linux-x86_64 and linux-aarch64, readelf must show a little-endian ELF64 shared
 * object for that machine, soname libnkb.so (src/load.ts finds a loaded copy by it), no
 * RPATH or RUNPATH, exactly the symbols src/ffi.ts binds exported as default-visibility
 * global functions, and nothing needed from glibc newer than PREBUILT_GLIBC. A small C
 * driver (tests/native/prebuilt_driver.c), compiled for the same target and glibc, then
 * dlopen()s each library and calls entries that need no privilege or network: natively for
 * x86_64, under qemu-user for aarch64 (so CI on x86_64 runs the arm64 code too).
 */

import assert from "node:assert/strict";
import { ABI_VERSION, symbols } from "../src/ffi.ts";
import { PREBUILT, PREBUILT_GLIBC } from "../src/prebuilt.ts";
import { ROOT, SHIM_FLAGS, zigCc } from "./helpers/zig.ts";

interface Target {
  arch: string;
  machine: string;
  /** How to run a program built for the target: a prefix to its command line. */
  runner: string[];
}

const TARGETS: Target[] = [
  { arch: "x86_64", machine: "Advanced Micro Devices X86-64", runner: [] },
  {
    arch: "aarch64",
    machine: "AArch64",
    // -L: the arm64 dynamic loader and libc (Debian's libc6-arm64-cross).
    runner: ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"],
  },
];

// glibc before 2.34 keeps the thread and dl functions in their own libraries: a library
// built against 2.27 needs them by name (on 2.34 and later they are stubs).
const ALLOWED_NEEDED = ["libc.so.6", "libdl.so.2", "libpthread.so.0"];
const BUILD_MS = 300_000; // a cold zig cache (both targets' libc) takes about 3 minutes
const TOOL_MS = 30_000;

const decoder = new TextDecoder();

function libPath(arch: string): string {
  return `${ROOT}zig-out/dist/linux-${arch}/lib/libnkb.so`;
}

async function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string>; ms?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(cmd, {
    args,
    cwd: opts.cwd,
    env: opts.env,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(opts.ms ?? TOOL_MS),
  }).output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

// One build for all the tests of this file, started by the first that needs it.
let building: Promise<void> | undefined;
function built(): Promise<void> {
  building ??= (async () => {
    const out = await run(`${ROOT}nkbw`, ["dist", "--check"], { cwd: ROOT, ms: BUILD_MS });
    assert.equal(out.code, 0, `./nkbw dist --check:\n${out.stderr}`);
  })();
  return building;
}

async function readelf(arch: string, args: string[]): Promise<string> {
  const out = await run("readelf", [...args, "-W", libPath(arch)]);
  assert.equal(out.code, 0, `readelf ${args.join(" ")}: ${out.stderr}`);
  assert.equal(out.stderr, "", `readelf ${args.join(" ")} warned`);
  return out.stdout;
}

function headerField(text: string, field: string): string {
  const line = text.split("\n").find((l) => l.trim().startsWith(`${field}:`));
  assert.ok(line !== undefined, `no ${field} in readelf -h`);
  return line.slice(line.indexOf(":") + 1).trim();
}

/** `[tag, value]` of each entry of the dynamic section (readelf -d). */
function dynamicEntries(text: string): [string, string][] {
  const rows: [string, string][] = [];
  for (const line of text.split("\n")) {
    const m = /^\s*0x[0-9a-f]+\s+\((\w+)\)\s+(.*)$/.exec(line);
    if (m !== null) rows.push([m[1], m[2].trim()]);
  }
  return rows;
}

interface DynSym {
  type: string;
  bind: string;
  vis: string;
  ndx: string;
  name: string;
}

/** The entries of .dynsym (readelf --dyn-syms), the null entry left out. */
function dynSyms(text: string): DynSym[] {
  const rows: DynSym[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8 || !/^\d+:$/.test(f[0]) || f[0] === "0:") continue;
    rows.push({ type: f[3], bind: f[4], vis: f[5], ndx: f[6], name: f[7] });
  }
  return rows;
}

/** "2.2.5" → [2, 2, 5]; compared part by part, a missing part as 0. */
function versionParts(v: string): number[] {
  assert.match(v, /^\d+(\.\d+){1,2}$/, `glibc version ${v}`);
  return v.split(".").map(Number);
}

function versionAtMost(v: string, max: string): boolean {
  const a = versionParts(v);
  const b = versionParts(max);
  for (let i = 0; i < 3; i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d < 0;
  }
  return true;
}

/** The names src/ffi.ts binds: each entry's `name`, else its key. */
function boundNames(): string[] {
  const names = Object.entries(symbols).map(([k, v]) => ("name" in v ? v.name : k) as string);
  return [...new Set(names)].sort();
}

function hex(digest: ArrayBuffer): string {
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

for (const t of TARGETS) {
  const platform = `linux-${t.arch}`;

  Deno.test(`prebuilt ${platform}: ELF64 little-endian shared object, soname libnkb.so, no RPATH`, async () => {
    await built();
    const h = await readelf(t.arch, ["-h"]);
    assert.equal(headerField(h, "Class"), "ELF64");
    assert.equal(headerField(h, "Data"), "2's complement, little endian");
    assert.match(headerField(h, "Type"), /^DYN \(/);
    assert.equal(headerField(h, "Machine"), t.machine);

    const dyn = dynamicEntries(await readelf(t.arch, ["-d"]));
    assert.ok(dyn.length >= 10, `dynamic section: ${JSON.stringify(dyn)}`);
    const sonames = dyn.filter(([tag]) => tag === "SONAME").map(([, v]) => v);
    assert.deepEqual(sonames, ["Library soname: [libnkb.so]"]);
    // A search path baked in would make the loader look in the build machine's directories.
    assert.deepEqual(dyn.filter(([tag]) => tag === "RPATH" || tag === "RUNPATH"), []);
    const needed = dyn.filter(([tag]) => tag === "NEEDED")
      .map(([, v]) => /^Shared library: \[(.+)\]$/.exec(v)?.[1] ?? v).sort();
    assert.ok(needed.includes("libc.so.6"), needed.join());
    assert.deepEqual(needed.filter((n) => !ALLOWED_NEEDED.includes(n)), []);
  });

  Deno.test(`prebuilt ${platform}: exports exactly the symbols src/ffi.ts binds`, async () => {
    await built();
    const syms = dynSyms(await readelf(t.arch, ["--dyn-syms"]));
    const defined = syms.filter((s) => s.ndx !== "UND");
    const bound = boundNames();
    assert.ok(bound.length >= 35, bound.join());
    for (const name of bound) {
      const s = defined.find((d) => d.name === name);
      assert.ok(s !== undefined, `${name} not exported`);
      assert.deepEqual([s.type, s.bind, s.vis], ["FUNC", "GLOBAL", "DEFAULT"], name);
    }
    // Nothing else is exported: no internal helper, nkb_ or not, leaks into the ABI.
    assert.deepEqual(defined.map((d) => d.name).sort(), bound);
  });

  Deno.test(`prebuilt ${platform}: needs nothing newer than glibc ${PREBUILT_GLIBC}`, async () => {
    await built();
    const text = await readelf(t.arch, ["-V"]);
    const needs = text.slice(text.indexOf("Version needs section"));
    assert.ok(needs.length < text.length, "no version needs section");
    const files = [...needs.matchAll(/File: (\S+)/g)].map((m) => m[1]).sort();
    assert.ok(files.includes("libc.so.6"), files.join());
    assert.deepEqual(files.filter((f) => !ALLOWED_NEEDED.includes(f)), []);
    const versions = [...needs.matchAll(/Name: (\S+)/g)].map((m) => m[1]);
    assert.ok(versions.length >= files.length, versions.join());
    for (const v of versions) {
      assert.match(v, /^GLIBC_\d/, `version ${v}`);
      assert.ok(
        versionAtMost(v.slice("GLIBC_".length), PREBUILT_GLIBC),
        `${v} > ${PREBUILT_GLIBC}`,
      );
    }
    // Every import is versioned: an unversioned one would bind to whatever the host's
    // libc has under that name, and the check above would not see it.
    const undef = dynSyms(await readelf(t.arch, ["--dyn-syms"])).filter((s) => s.ndx === "UND");
    assert.ok(undef.length >= 20, `${undef.length} imports`);
    assert.deepEqual(undef.filter((s) => !/@GLIBC_\d/.test(s.name)).map((s) => s.name), []);
  });

  Deno.test(`prebuilt ${platform}: src/prebuilt.ts and native/${platform}.ts hold this build`, async () => {
    await built();
    const bytes = await Deno.readFile(libPath(t.arch));
    const recorded = PREBUILT[platform];
    assert.ok(recorded !== undefined, `no ${platform} in PREBUILT`);
    assert.equal(bytes.byteLength, recorded.size);
    assert.equal(hex(await crypto.subtle.digest("SHA-256", bytes)), recorded.sha256);
    // Imported after the build: ./nkbw dist --check rewrites the module.
    const mod = await import(`../native/${platform}.ts`);
    assert.equal(typeof mod.libnkb, "string");
    assert.deepEqual(Uint8Array.fromBase64(mod.libnkb), bytes);
  });

  Deno.test(`prebuilt ${platform}: dlopen()ed by a program built for ${t.arch}, its entries answer`, async () => {
    await built();
    const dir = await Deno.makeTempDir({ prefix: `nkb-prebuilt-${t.arch}-` });
    try {
      const driver = `${dir}/driver`;
      const cc = await zigCc([
        "-target",
        `${t.arch}-linux-gnu.${PREBUILT_GLIBC}`,
        ...SHIM_FLAGS,
        "-o",
        driver,
        `${ROOT}tests/native/prebuilt_driver.c`,
        "-ldl",
      ]);
      assert.equal(cc.code, 0, cc.stderr);
      // The driver is really the target's (else "under qemu" would prove nothing).
      const head = await run("readelf", ["-h", driver]);
      assert.equal(headerField(head.stdout, "Machine"), t.machine);

      const envName = `NKB_PREBUILT_${Deno.pid}`;
      const envValue = 1000 + Math.floor(Math.random() * 1_000_000);
      const [cmd, ...pre] = [...t.runner, driver];
      const out = await run(cmd, [...pre, libPath(t.arch), envName], {
        env: { [envName]: String(envValue) },
      });
      assert.equal(out.code, 0, `driver exited ${out.code}: ${out.stderr}`);
      const r = JSON.parse(out.stdout.trim());
      const quad = { rc: 1, head: [0, 1], addrs: ["198.18.0.1"] };
      assert.deepEqual(r, {
        abi: ABI_VERSION,
        clock_ok: 1, // nkb_now_ms() between two CLOCK_MONOTONIC reads of the driver's
        env_set: envValue,
        env_unset: -7, // the fallback given
        caps_rc: 0,
        euid: Deno.uid(),
        my_euid: Deno.uid(),
        quad,
        short: quad, // "198.18.1", inet_aton's form of the same address
        name: { rc: -20000 - 2 }, // NKB_EGAI_BASE + EAI_NONAME: numeric only, no lookup
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
