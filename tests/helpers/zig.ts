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
