/**
 * `nkb`: the command-line view of every nkb socket on the host (Solaris
 * `netstat -k` and `dladm show-phys -G`, net_kernel_bypass(3LIB)).
 *
 * ```sh
 * deno run -A cli.ts stat -au        # bypass and kernel-path sockets, with their processes
 * deno run -A cli.ts stat -i 1 -c 5  # five reports, a second apart
 * deno run -A cli.ts phys -v         # interfaces, queues free and held, and by whom
 * deno task nkb stat --json
 * deno run -A cli.ts run app.ts      # app.ts unmodified, its UDP sockets through nkb
 * ```
 *
 * @module
 */

import { formatPhys, listPhys, parsePhysFields, type PhysField } from "./src/phys.ts";
import { formatStat, listSockets, statJson } from "./src/stat.ts";
import { RegistryUnavailableError } from "./src/registry_read.ts";
import { printable } from "./src/table.ts";

const SYNOPSIS = `usage: nkb stat [-a] [-u] [-v] [--json] [-i SECONDS [-c COUNT]]
       nkb phys [-v] [-o FIELD,...] [--json] [LINK ...]
       nkb run [--no-spin] [DENO RUN FLAGS] SCRIPT [ARGS]
       nkb --help
`;

const USAGE = `${SYNOPSIS}
nkb stat   the bypass sockets of every process on the host (netstat -k)
  -a         also the sockets nkb tracks on the kernel path, with the reason
  -u         add User, Pid and Command
  -v         Command shows the whole command line (implies -u)
  --json     one JSON object per report: { "sockets": [...], "warnings": [...] }
  -i SECONDS repeat every SECONDS (Ctrl-C stops); -c COUNT: at most COUNT reports

nkb phys   interfaces of this network namespace and the receive queues nkb holds
  -v         add HOLDERS (pids holding queues)
  -o FIELDS  columns, of: LINK, IFINDEX, RXQ, RG-AVAIL, RG-INUSE, HOLDERS, QUEUES,
             XSK, XDP, XDP-PROG, ZEROCOPY, MTU
  --json     { "links": [...], "warnings": [...] }
  LINK       only these interfaces (lo only when named)

nkb run    runs an unmodified program with its UDP sockets (Deno.listenDatagram, node:dgram
           udp4) on nkb:
           deno run --preload <nkb's preload> --allow-ffi [DENO RUN FLAGS] SCRIPT [ARGS],
           the _NET_KERNEL_BYPASS_* variables passed through; exits with its status.
  --no-spin  _NET_KERNEL_BYPASS_RECV_MODE=0: a waiting receive sleeps in poll(). The
             contract's default (1) spins a core while a socket waits, even when idle.

The registry is $NKB_REGISTRY_DIR, else /dev/shm/nkb (one directory per user in it).
Only processes alive now are listed; who they are comes from /proc.
`;

const MAX_INTERVAL_S = 86_400;

/** A command line that does not parse: usage to stderr, exit status 2. */
class UsageError extends Error {}

interface StatArgs {
  command: "stat";
  all: boolean;
  users: boolean;
  verbose: boolean;
  json: boolean;
  intervalS: number | null;
  count: number | null;
}

interface PhysArgs {
  command: "phys";
  verbose: boolean;
  json: boolean;
  fields: PhysField[] | null;
  links: string[];
}

interface RunArgs {
  command: "run";
  noSpin: boolean;
  /** The deno run flags, script and its arguments, as given. */
  rest: string[];
}

type Args = StatArgs | PhysArgs | RunArgs | { command: "help" };

/**
 * Runs `nkb` with `args` (without the program name) and returns the exit status:
 * 0 done, 1 a named interface does not exist or libnkb.so cannot be loaded, 2 a bad
 * command line.
 *
 * @throws {Error} only what no exit status covers: an unexpected failure (a bug).
 */
export async function main(args: string[]): Promise<number> {
  let parsed: Args;
  try {
    parsed = parseArgs(args);
  } catch (e) {
    if (!(e instanceof UsageError || e instanceof TypeError)) throw e;
    writeErr(`nkb: ${e.message}\n${SYNOPSIS}`);
    return 2;
  }
  if (parsed.command === "help") {
    writeOut(USAGE);
    return 0;
  }
  if (parsed.command === "run") return await runProgram(parsed);
  try {
    return parsed.command === "stat" ? await runStat(parsed) : runPhys(parsed);
  } catch (e) {
    if (!(e instanceof RegistryUnavailableError)) throw e;
    writeErr(`nkb: ${e.message}\n`);
    return 1;
  }
}

function parseArgs(args: string[]): Args {
  const [command, ...rest] = args;
  if (command === "--help" || command === "-h" || command === "help") return { command: "help" };
  if (command === "stat") return parseStatArgs(rest);
  if (command === "phys") return parsePhysArgs(rest);
  if (command === "run") {
    if (rest[0] === "--help" || rest[0] === "-h") return { command: "help" };
    const noSpin = rest[0] === "--no-spin";
    const program = noSpin ? rest.slice(1) : rest;
    if (program.length === 0) throw new UsageError("run: no script");
    return { command: "run", noSpin, rest: program };
  }
  throw new UsageError(command === undefined ? "no command" : `unknown command "${command}"`);
}

// Short flags combine as netstat's do (-au); -i and -c take the next argument.
function parseStatArgs(args: string[]): StatArgs {
  const out: StatArgs = {
    command: "stat",
    all: false,
    users: false,
    verbose: false,
    json: false,
    intervalS: null,
    count: null,
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--json") out.json = true;
    else if (arg === "-i") out.intervalS = positiveNumber("-i", args[++i], MAX_INTERVAL_S);
    else if (arg === "-c") out.count = positiveInteger("-c", args[++i]);
    else if (/^-[auv]+$/.test(arg)) {
      out.all ||= arg.includes("a");
      out.users ||= arg.includes("u");
      out.verbose ||= arg.includes("v");
    } else throw new UsageError(`stat: unknown argument "${arg}"`);
  }
  if (out.count !== null && out.intervalS === null) throw new UsageError("stat: -c needs -i");
  return out;
}

function parsePhysArgs(args: string[]): PhysArgs {
  const out: PhysArgs = { command: "phys", verbose: false, json: false, fields: null, links: [] };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--json") out.json = true;
    else if (arg === "-v") out.verbose = true;
    else if (arg === "-o") {
      const list = args[++i];
      if (list === undefined || list === "") throw new UsageError("phys: -o needs FIELD,...");
      out.fields = parsePhysFields(list.split(",")); // UnknownFieldError lists the valid ones
    } else if (arg.startsWith("-")) throw new UsageError(`phys: unknown option "${arg}"`);
    else out.links.push(arg);
  }
  return out;
}

function positiveNumber(flag: string, text: string | undefined, max: number): number {
  const n = Number(text);
  if (text === undefined || text.trim() === "" || !Number.isFinite(n) || n <= 0 || n > max) {
    throw new UsageError(`${flag} needs a number of seconds above 0, at most ${max}`);
  }
  return n;
}

function positiveInteger(flag: string, text: string | undefined): number {
  if (text === undefined || !/^[1-9][0-9]{0,8}$/.test(text)) {
    throw new UsageError(`${flag} needs a whole number above 0`);
  }
  return Number(text);
}

async function runStat(a: StatArgs): Promise<number> {
  const interrupt = a.intervalS === null ? null : new Interrupt();
  try {
    statReport(a);
    if (interrupt === null || a.intervalS === null) return 0;
    const reports = a.count ?? Infinity; // unbounded by request: Ctrl-C ends it
    for (let n = 1; n < reports; n++) {
      if (await interrupt.sleep(a.intervalS * 1000)) break;
      if (!a.json) writeOut("\n");
      statReport(a);
    }
    return 0;
  } finally {
    interrupt?.close();
  }
}

function statReport(a: StatArgs): void {
  const list = listSockets({ all: a.all });
  if (a.json) writeOut(`${JSON.stringify(statJson(list))}\n`);
  else {
    warn(list.warnings);
    writeOut(formatStat(list.sockets, { all: a.all, users: a.users, verbose: a.verbose }));
  }
}

function runPhys(a: PhysArgs): number {
  const list = listPhys({ links: a.links.length > 0 ? a.links : undefined });
  if (a.json) writeOut(`${JSON.stringify(list)}\n`);
  else {
    warn(list.warnings);
    writeOut(formatPhys(list.links, { fields: a.fields ?? undefined, verbose: a.verbose }));
  }
  const missing = a.links.filter((name) => !list.links.some((l) => l.link === name));
  return missing.length > 0 ? 1 : 0;
}

// Ctrl-C during `-i` ends the reports: the current one finishes, the next never starts.
class Interrupt {
  interrupted = false;
  #wake: (() => void) | null = null;
  #onSignal = (): void => {
    this.interrupted = true;
    this.#wake?.();
  };

  constructor() {
    Deno.addSignalListener("SIGINT", this.#onSignal);
  }

  /** Waits `ms`; true when interrupted (before or during the wait). */
  async sleep(ms: number): Promise<boolean> {
    if (this.interrupted) return true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await new Promise<void>((resolve) => {
      this.#wake = resolve;
      timer = setTimeout(resolve, ms);
    });
    clearTimeout(timer);
    this.#wake = null;
    return this.interrupted;
  }

  close(): void {
    Deno.removeSignalListener("SIGINT", this.#onSignal);
  }
}

function warn(warnings: string[]): void {
  for (const w of warnings) writeErr(`nkb: warning: ${printable(w)}\n`);
}

const encoder = new TextEncoder();

// Linux's numbers, for the shell's 128 + n: every signal that can end a process.

// `nkb run`: the program under deno run with the pre-load, stdio and environment its own.
async function runProgram(args: RunArgs): Promise<number> {
  const env: Record<string, string> = {};
  if (args.noSpin) env._NET_KERNEL_BYPASS_RECV_MODE = "0";
  const preload = new URL("./preload.ts", import.meta.url).href;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--preload", preload, "--allow-ffi", ...args.rest],
    env,
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  // The terminal's Ctrl-C reaches both; nkb run waits for the program's own ending.
  const ignore = (): void => {};
  // A SIGTERM is sent to one process (kill, a supervisor, docker stop): passed on, so the
  // program ends as it would unwrapped instead of running on without its parent.
  const forward = (): void => {
    try {
      child.kill("SIGTERM");
    } catch {
      // Already ended: its status follows.
    }
  };
  Deno.addSignalListener("SIGINT", ignore);
  Deno.addSignalListener("SIGTERM", forward);
  try {
    // Deno gives a program killed by a signal the shell's status: 128 + its number.
    return (await child.status).code;
  } finally {
    Deno.removeSignalListener("SIGINT", ignore);
    Deno.removeSignalListener("SIGTERM", forward);
  }
}

function writeOut(text: string): void {
  writeAll(Deno.stdout, text);
}

function writeErr(text: string): void {
  writeAll(Deno.stderr, text);
}

// A reader that went away (`nkb stat | head`) ends the program quietly, as it would a C tool.
function writeAll(to: typeof Deno.stdout | typeof Deno.stderr, text: string): void {
  const bytes = encoder.encode(text);
  try {
    let off = 0;
    for (let i = 0; i < 1_000_000 && off < bytes.length; i++) {
      off += to.writeSync(bytes.subarray(off));
    }
  } catch (e) {
    if (e instanceof Deno.errors.BrokenPipe) Deno.exit(0);
    throw e;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
