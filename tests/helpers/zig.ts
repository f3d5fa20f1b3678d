/**
 * Compiling C with the project's pinned zig, for tests of native code.
 *
 * @module
 */

const root = new URL("../../", import.meta.url).pathname;

/** The repository root, ending in "/". */
export const ROOT: string = root;

/** Flags the shim is built with (build.zig), for programs compiled beside it. */
export const SHIM_FLAGS: string[] = [
  "-std=gnu11",
  "-O2",
  "-UNDEBUG",
  "-Wall",
  "-Wextra",
  "-Werror",
  "-fno-strict-aliasing",
];

/** Extra flags of the native checks: assertions on, undefined behaviour trapping, threads. */
export const CHECK_FLAGS: string[] = [
  "-UNDEBUG",
  "-fsanitize=undefined",
  "-fsanitize-trap=undefined",
  "-pthread",
];

/** Runs `zig cc` with `args`; returns its exit code and standard error. */
export async function zigCc(args: string[]): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command(`${root}.tools/zig/ziglang/zig`, { args: ["cc", ...args] })
    .output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

/** The C files build.zig compiles into the shim (its `c_sources`), as repository paths. */
export async function shimSources(): Promise<string[]> {
  const text = await Deno.readTextFile(`${root}build.zig`);
  const block = text.match(/const c_sources = \[_\]\[\]const u8\{([^}]*)\}/);
  if (block === null) throw new Error("build.zig lists no c_sources");
  return [...block[1].matchAll(/"(ffi\/[a-z_]+\.c)"/g)].map((m) => m[1]);
}

/**
 * Builds `main` (a repository path) with the shim's own sources into `bin`, as the shim is
 * built (SHIM_FLAGS); `extra` flags come first. Returns zig's exit code and stderr.
 */
export async function buildWithShim(
  main: string,
  bin: string,
  extra: string[] = [],
): Promise<{ code: number; stderr: string }> {
  const sources = (await shimSources()).map((f) => root + f);
  return await zigCc([
    ...SHIM_FLAGS,
    ...extra,
    "-I",
    `${root}ffi`,
    "-o",
    bin,
    root + main,
    ...sources,
    "-lpthread",
  ]);
}

/**
 * Builds `main` (a native check, a repository path) with the shim's sources, assertions on
 * and undefined behaviour trapping, and runs it: as nobody when the test is root, and with
 * `netns` in a user and network namespace of its own (its loopback up). Returns its exit
 * code and standard output (standard error appended when it failed). Bounded: 60 s.
 */
export async function runNativeCheck(
  main: string,
  opts: { netns?: boolean } = {},
): Promise<{ code: number; out: string }> {
  const bin = await Deno.makeTempFile({ prefix: "nkb-native-check-" });
  try {
    const build = await buildWithShim(main, bin, CHECK_FLAGS);
    if (build.code !== 0) return { code: build.code, out: build.stderr };
    await Deno.chmod(bin, 0o755);
    const inNs = opts.netns
      ? ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$0"', bin]
      : [bin];
    const argv = Deno.uid() === 0
      ? ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", ...inNs]
      : inNs;
    const run = await new Deno.Command(argv[0], {
      args: argv.slice(1),
      signal: AbortSignal.timeout(60_000),
    }).output();
    const out = new TextDecoder().decode(run.stdout);
    const err = run.code === 0 ? "" : new TextDecoder().decode(run.stderr);
    return { code: run.code, out: out + err };
  } finally {
    await Deno.remove(bin);
  }
}
