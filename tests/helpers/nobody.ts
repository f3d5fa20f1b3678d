/**
 * What the registry tests share to act as root and as nobody (another local user,
 * through setpriv): the hold.ts command, spawned processes read as JSON lines, shell
 * scripts run as nobody, and temporary directories removed at the end.
 *
 * @module
 */

import { TestbedProcess } from "../../examples/testbed.ts";
import { FIXTURES } from "./testbed.ts";
import { ROOT } from "./zig.ts";

/** nobody's uid and gid. */
export const NOBODY = 65534;

/**
 * Other users run this checkout's Deno and fixtures, so every directory above them must let
 * others through. A fresh clone under `mktemp -d` (0700) does not: nobody could not even start
 * Deno. Grants o+x (traverse, not list) where it is missing, and takes it back when the test
 * process ends. Directories are walked from the root down, a bounded number of levels.
 */
function letOthersThrough(paths: string[]): void {
  const granted = new Map<string, number>();
  for (const path of paths) {
    const parts = path.split("/").filter((p) => p !== "");
    for (let i = 1; i <= parts.length && i <= 64; i++) {
      const dir = "/" + parts.slice(0, i).join("/");
      if (granted.has(dir)) continue;
      const info = Deno.statSync(dir);
      if (!info.isDirectory || info.mode === null || (info.mode & 0o001) !== 0) continue;
      Deno.chmodSync(dir, (info.mode & 0o7777) | 0o001);
      granted.set(dir, info.mode & 0o7777);
    }
  }
  if (granted.size === 0) return;
  globalThis.addEventListener("unload", () => {
    for (const [dir, mode] of granted) {
      try {
        Deno.chmodSync(dir, mode);
      } catch {
        // Gone already (a temporary checkout removed meanwhile): nothing to give back.
      }
    }
  });
}

letOthersThrough([ROOT, Deno.execPath()]);

/** The Deno that runs the tests, for the child processes. */
export const DENO: string = Deno.execPath();

/** The command prefix that runs a program as `uid` (gid the same, no groups). */
export function setprivAs(uid: number): string[] {
  return ["setpriv", `--reuid=${uid}`, `--regid=${uid}`, "--clear-groups"];
}

/** A process of ours (cwd the repository), its stdout read as JSON lines, every wait bounded. */
export function spawn(name: string, cmd: string[], env: Record<string, string>): TestbedProcess {
  const proc = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    cwd: ROOT,
    env: { NO_COLOR: "1", ...env },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return new TestbedProcess(name, proc, { stdin: true });
}

/**
 * The command of hold.ts: one socket on 127.0.0.1:port (the kernel path; 0: any port),
 * kept until a line on stdin or `waitMs`.
 */
export function holdCommand(port: number, waitMs: number): string[] {
  return [
    DENO,
    "run",
    "-A",
    "--no-lock",
    "--unstable-net",
    `${FIXTURES}hold.ts`,
    "--host=127.0.0.1",
    `--port=${port}`,
    "--then=close",
    `--waitMs=${waitMs}`,
  ];
}

/** The command of registry_scan.ts: `scans` reads of the registry `dir`, then a summary line. */
export function scanCommand(dir: string, scans: number, ...extra: string[]): string[] {
  return [
    DENO,
    "run",
    "-A",
    "--no-lock",
    `${FIXTURES}registry_scan.ts`,
    `--dir=${dir}`,
    `--scans=${scans}`,
    ...extra,
  ];
}

/**
 * Runs a bash script as nobody (uid and gid 65534, no groups), killed after `timeoutMs`;
 * returns its stdout, throws on a non-zero exit.
 */
export async function asNobody(script: string, timeoutMs = 30_000): Promise<string> {
  const cmd = new Deno.Command("setpriv", {
    args: [
      ...setprivAs(NOBODY).slice(1),
      "timeout",
      String(Math.ceil(timeoutMs / 1000)),
      "bash",
      "-c",
      script,
    ],
    stdout: "piped",
    stderr: "piped",
  });
  const out = await cmd.output();
  const text = new TextDecoder().decode(out.stdout);
  if (out.code !== 0) {
    throw new Error(
      `as nobody: exit ${out.code}: ${script}: ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return text;
}

/** Kills `child` (if still there) and waits for it; `piped`: its stdout is cancelled too. */
export async function stopped(child: Deno.ChildProcess, piped = false): Promise<void> {
  try {
    child.kill("SIGKILL");
  } catch {
    // already gone
  }
  if (piped) await child.stdout.cancel().catch(() => {});
  await child.status;
}

/**
 * Runs `fn` with a new temporary directory named `nkb-<name>-<pid>-…`, of `mode` (0755:
 * nobody may traverse it; 01777: nobody may also create in it, as in /dev/shm), and
 * removes it at the end, even on failure.
 */
export async function withTempDir(
  name: string,
  mode: number,
  fn: (dir: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: `nkb-${name}-${Deno.pid}-` });
  Deno.chmodSync(dir, mode);
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
