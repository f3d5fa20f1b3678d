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

/** Runs `zig cc` with `args`; returns its exit code and standard error. */
export async function zigCc(args: string[]): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command(`${root}.tools/zig/ziglang/zig`, { args: ["cc", ...args] })
    .output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}
