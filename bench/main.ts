/**
 * The nkb benchmark: the kernel path (Deno.listenDatagram) against nkb's
 * copying calls (sendSync/receiveSync), nkb's batch calls (sendBatch/receiveBatch) and the native ceiling
 * (bench/native/ceiling.c: the same shim driven from C, without Deno), over the veth
 * of a {@linkcode Testbed}.
 *
 * `deno task bench [--json PATH] [--duration-ms N] [--rtt-count N] [--repeat N]
 *  [--rtt-repeat N] [--mq-repeat N] [--sizes 64,1024] [--tests rx,send,rtt,idle,mq,preload,churn]
 *  [--paths kernel,copy,copy0,batch,batch0,native]
 *  [--idle-ms N] [--mq-rate N] [--mq-work-us N] [--churn-rate N] [--busy-us N]`
 *
 * Each figure is the median of `--repeat` runs (default 5, of `--duration-ms` 1000;
 * round trips: of `--rtt-repeat`, default 5, each percentile's median; multi-queue: of
 * `--mq-repeat`, default 3); within a repetition each test runs on every path in turn
 * (RUN_ORDER, reversed every other repetition); each ratio is the median of the
 * repetitions' ratios (runs seconds apart), or of the medians when a run failed.
 *
 * Every figure comes from child processes in the testbed's namespaces
 * (bench/workers/, and the native program), traffic flows from side B to side A:
 * - rx capacity: the native sender (the shim driven from C, batches of 256 in a tight
 *   loop: the fastest generator there is; an nkb sendBatch sender when the native
 *   program could not be built) into a Deno.listenDatagram receiver, an nkb receiveSync
 *   receiver (recvMode 1; and recvMode 0: row "copy0"), an nkb receiveBatch receiver (RecvBatch of 256, recvMode 1; and
 *   recvMode 0: row "batch0") or the native receiver. "Delivered" is what arrived of
 *   what was offered, loss counted by sequence number until the end markers that follow
 *   a drain pause. On veth the receiving side's XDP work runs on the generator's core, so
 *   no generator here outruns an nkb receiver: delivered is then the generator's rate.
 *   "Capacity per core" is what the receiver's core can take whatever the generator: the
 *   busy-polling receivers (recvMode 1: copy, batch, native) never wait; they are
 *   busy elsewhere for `--busy-us` (a spin), then drain the backlog the ring gathered
 *   until a receive finds it empty, and again (bench/workers/sink.ts `--busy-us`): the
 *   datagrams they drained per second of draining is a saturated rate (the ring was
 *   never empty meanwhile), after a warm-up of busy polling 300 ms from the first
 *   datagram (V8 optimizes the receive path; the native receiver does the same).
 *   Receivers that sleep when idle (the kernel path, recvMode 0) report datagrams per
 *   second of their process's CPU time (threads' schedstat run time), which includes
 *   their wake-ups.
 * - send rate: a Deno.listenDatagram sender (await each send), an nkb sendSync sender,
 *   an nkb sendBatch sender or the native sender, counted by the native XDP counter
 *   (`ceiling xdpcount`: a generic-mode XDP program on side A's veth that counts the
 *   datagrams in a per-CPU map and drops them; the nkb batch receiver when the native
 *   program could not be built). On veth the receiving side's work runs on the sending
 *   core, so a receiver that redirected into an XDP socket (a copy into its UMEM per
 *   datagram) charged every sender the same fixed cost and compressed the ratios between
 *   them. After each such run no XDP program may remain on side A's veth.
 * - round trip: a busy-polling python3 kernel-socket client against a Deno.listenDatagram
 *   echo, an nkb receiveSync + sendSync echo (recvMode 1, and recvMode 0: row "copy0"),
 *   an nkb receiveBatch + SendBatch.reply + sendBatch echo (row "batch") or the native
 *   echo (nkb_recv_batch of 1 + nkb_send, busy-polling).
 * Two-party runs pin side A's process to CPU 0 and side B's to CPU 1 (taskset).
 * - idle CPU: the CPU time (/proc/<pid>/stat utime + stime) of a receiver that waits in
 *   an async receive() with no traffic for `--idle-ms`: Deno.listenDatagram against
 *   UdpBypass in recvMode 0 (and 1).
 * - multi-queue receive (`mq`), on a testbed of its own with a 2-queue veth: the native
 *   multi-queue generator (one queue-affine socket per queue, paced to `--mq-rate`
 *   datagrams/s in all) into one Worker whose socket covers both queues, then into two
 *   Workers with a queue-affine socket each (bench/workers/mq_sink.ts); every receiver
 *   does `--mq-work-us` of work per datagram. The figure is the delivered rate, and the
 *   second Worker's gain. On veth the generator's core also runs the receiving side's XDP
 *   work, so generator and receivers share this VM's two cores: the work per datagram is
 *   what leaves room to see a second receiver's core at all.
 * - unmodified programs (`preload`, issue 15; at the first of `--sizes` only): programs that
 *   import nothing of nkb (bench/workers/plain_echo.ts: Deno.listenDatagram, `await
 *   receive()` + `await send()`; dgram_echo.ts: node:dgram `'message'` + `send`;
 *   plain_sink.ts: a `for await` receiver), each run plainly (`deno run`) and under the
 *   pre-load as `nkb run` starts it (`deno run --preload preload.ts --allow-ffi`, receive
 *   mode 1), back to back within a repetition (which goes first alternates): round trips
 *   against the same client as above, and the same generator into the receiver (its
 *   capacity per core: datagrams per second of its process's CPU time, spinning included).
 *   Flat out the generator outruns both receivers, so the receiver under the pre-load is
 *   also offered twice the plain one's capacity of that repetition, paced (`ceiling mqtx`
 *   on one queue), and must lose nothing. Side A's kernel UDP counters say which path
 *   carried each run. The ratios (preload / plain) are printed next to issue 15's bar.
 *
 * @module
 */

import { run, Testbed, type TestbedProcess } from "../examples/testbed.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const WORKERS = `${ROOT}bench/workers/`;
const LIB = `${ROOT}zig-out/lib/libnkb.so`;
const NATIVE_SRC = `${ROOT}bench/native/ceiling.c`;
const NATIVE_BIN = `${ROOT}.tools/bench/ceiling`;
const ZIG = `${ROOT}.tools/zig/ziglang/zig`;
// As build.zig's flags (minus -Werror and -fvisibility, which only matter for the library).
const NATIVE_CFLAGS = [
  "-std=gnu11",
  "-O2",
  "-UNDEBUG",
  "-fno-strict-aliasing",
  "-Wall",
  "-Wextra",
];
const BUILD_TIMEOUT_MS = 300_000;
const NATIVE_BUILD_TIMEOUT_MS = 120_000;
const READY_TIMEOUT_MS = 20_000;
const RESULT_SLACK_MS = 20_000;
const EXIT_TIMEOUT_MS = 10_000;
// The whole run, from the start: past BUDGET_MS the remaining runs are skipped; past
// WATCHDOG_MS the benchmark gives up (and removes its testbed).
// The preload test adds 70-100 s to a full run (2026-12-07, on a slow VM: 71 s of 312 s).
const BUDGET_MS = 420_000;
const WATCHDOG_MS = 460_000;
const BASE_PORT = 9000;
const SETUP_TRIES = 3;
const RTT_TIMEOUT_MS = 100;
const IDLE_SETTLE_MS = 500;
const KEPT_UP_LOSS_PCT = 0.5;
const T_START = performance.now();

/** The benchmark's knobs. */
interface Config {
  sizes: number[];
  durationMs: number;
  drainMs: number;
  count: number;
  rttCount: number;
  rttWarmup: number;
  rttMaxS: number;
  repeat: number;
  rttRepeat: number;
  mqRepeat: number;
  idleMs: number;
  tests: string[];
  paths: Path[];
  mqRate: number;
  mqWorkUs: number;
  churnRate: number;
  busyUs: number;
  jsonPath: string | null;
}

/**
 * A measured path: kernel = Deno.listenDatagram; copy = nkb sendSync/receiveSync
 * (recvMode 1); copy0 = the same in recvMode 0 (receive and round trip only); batch = nkb
 * sendBatch/receiveBatch; batch0 = receiveBatch in recvMode 0 (receive capacity only);
 * native = bench/native/ceiling.c.
 */
type Path = "kernel" | "copy" | "copy0" | "batch" | "batch0" | "native";
/** A datagram mover in a flow (copy0 and batch0 only receive). */
type Mover = Path;
/** A datagram sender in a flow. */
type Sender = Exclude<Mover, "copy0" | "batch0">;
/** A datagram receiver in a flow: a mover, or the native XDP counter (send rate only). */
type Receiver = Mover | "xdpcount";

/**
 * An unmodified program (issue 15): it imports nothing of nkb, only Deno's or node's API
 * (bench/workers/plain_echo.ts, dgram_echo.ts, plain_sink.ts).
 */
type Program = "deno-echo" | "dgram-echo" | "for-await";
/** How an unmodified program is started: `deno run`, or `deno run --preload preload.ts`. */
type Launch = "plain" | "preload";
/** A program and how it was started: a row of the `preload` test. */
type Unmodified = `${Program} ${Launch}`;

const PROGRAMS: Record<Program, { script: string; test: "rtt" | "rx"; label: string }> = {
  "deno-echo": {
    script: "plain_echo.ts",
    test: "rtt",
    label: "Deno.listenDatagram await receive() + await send() echo",
  },
  "dgram-echo": {
    script: "dgram_echo.ts",
    test: "rtt",
    label: "node:dgram 'message' + send() echo",
  },
  "for-await": {
    script: "plain_sink.ts",
    test: "rx",
    label: "Deno.listenDatagram for await receiver",
  },
};
const ALL_PROGRAMS = Object.keys(PROGRAMS) as Program[];
// The program's own permissions, the same both ways.
const PROGRAM_FLAGS = ["--no-lock", "--allow-net", "--unstable-net"];
// What `nkb run` adds (cli.ts runProgram), and its default receive mode set explicitly, so
// that a _NET_KERNEL_BYPASS_RECV_MODE in the bench's environment does not change the rows.
const PRELOAD_FLAGS = ["--preload", `${ROOT}preload.ts`, "--allow-ffi"];
const PRELOAD_ENV = { _NET_KERNEL_BYPASS_RECV_MODE: "1" };
// Issue 15's bar for the pre-load against the same program without it.
const PRELOAD_BAR = { p50: 0.5, p99: 0.3, capacity: 2 };
// A run whose side-A kernel UDP InDatagrams rose by at most this share of its datagrams
// was carried by nkb (the plain runs count every datagram there).
const BYPASS_KERNEL_SHARE = 0.1;
// The pause before the end markers for an unmodified receiver: a plain `for await` receiver
// (an array of 64 KiB per datagram, and the garbage) fell so far behind in one full run of
// five that the markers met its full socket buffer 150 ms after the data.
const PROGRAM_DRAIN_MS = 500;
// The native paced generator's lowest rate (ceiling mqtx).
const PACED_MIN_PPS = 1000;

const ALL_TESTS = ["rx", "send", "rtt", "idle", "mq", "preload", "churn"];
// The tests that run on the paths (measure()).
const PATH_TESTS_ALL = ["rx", "send", "rtt"];
const ALL_PATHS: Path[] = ["kernel", "copy", "copy0", "batch", "batch0", "native"];
const LABEL: Record<Path, string> = {
  kernel: "kernel",
  copy: "nkb copying",
  copy0: "nkb copying recvMode 0",
  batch: "nkb batch",
  batch0: "nkb batch recvMode 0",
  native: "native ceiling",
};
const RECEIVER_LABEL: Record<Receiver, string> = {
  ...LABEL,
  native: "the native receiver (ceiling rx)",
  xdpcount: "the native XDP counter (ceiling xdpcount: a generic-mode XDP program on side A's " +
    "veth counts and drops, so the sending core, which on veth runs the receiving side's work, " +
    "pays no redirect and no copy into a UMEM)",
};
const SHORT: Record<Path, string> = {
  kernel: "kernel",
  copy: "nkb copying",
  copy0: "nkb copying m0",
  batch: "nkb batch",
  batch0: "nkb batch m0",
  native: "native",
};
// The order the paths run in within a repetition: each nkb path as near as a line allows to
// the two it is compared with (batch between kernel and native, copying next to kernel).
const RUN_ORDER: Path[] = ["copy0", "copy", "kernel", "batch", "native", "batch0"];
// What each path measures.
const PATH_TESTS: Record<Path, string[]> = {
  kernel: ["rx", "send", "rtt"],
  copy: ["rx", "send", "rtt"],
  copy0: ["rx", "rtt"],
  batch0: ["rx"],
  batch: ["rx", "send", "rtt"],
  native: ["rx", "send", "rtt"],
};

/** One sender -> receiver run. */
interface FlowResult {
  sender: Sender;
  receiver: Receiver | Unmodified;
  size: number;
  sent: number;
  received: number;
  lossPct: number;
  sendMpps: number;
  rxMpps: number;
  senderMs: number;
  receiverSpanMs: number;
  /** The receiver's work from its first datagram to the end marker, % of the time. */
  rxCpuPct: number | null;
  /**
   * Datagrams per second of the receiver's work, in Mpps (see perCore): the capacity of
   * one core. Null for the XDP counter.
   */
  rxPerCoreMpps: number | null;
  txFull: number;
  /** The generator's pace in datagrams/s (the native mqtx generator on one queue); null: flat out. */
  pacedPps: number | null;
  receiverResult: Record<string, unknown>;
  senderResult: Record<string, unknown>;
  udpA: Record<string, number>;
}

/** One round-trip run. */
interface RttResult {
  server: Path | Unmodified;
  size: number;
  client: string;
  measured: number;
  lost: number;
  p50: number;
  p99: number;
  p999: number;
  min: number;
  max: number;
  mean: number;
  echoed: number;
  serverResult: Record<string, unknown>;
  /** Side A's kernel UDP counters that moved during the run (/proc/net/snmp). */
  udpA: Record<string, number>;
}

/** One multi-queue run: the generator into `workers` receiving Workers. */
interface MqResult {
  workers: number;
  size: number;
  offeredPps: number;
  workUs: number;
  workIters: number;
  sent: number;
  received: number;
  lossPct: number;
  deliveredMpps: number;
  /** Each Worker's datagrams. */
  perWorker: number[];
  /** Datagrams the receiving sockets counted as dropped (rings full). */
  drops: number;
  generatorResult: Record<string, unknown>;
  receiverResult: Record<string, unknown>;
}

/** CPU use of one idle receiver. */
interface IdleResult {
  what: string;
  pid: number;
  ticks: number;
  seconds: number;
  cpuPct: number;
  /** The same from the threads' /proc/<pid>/task/<tid>/schedstat run times (ns resolution). */
  schedPct: number;
}

/** The figures of one path at one payload size: medians of the runs (null: every run failed). */
interface Row {
  rx: FlowResult | null;
  /** The run of median capacity per core. */
  rxCap: FlowResult | null;
  send: FlowResult | null;
  rtt: RttResult | null;
  rxRuns: FlowResult[];
  sendRuns: FlowResult[];
  rttRuns: RttResult[];
  /**
   * The `preload` test's for-await receiver under the pre-load, offered PRELOAD_BAR.capacity
   * times the plain receiver's capacity of the same repetition (paced): it must lose nothing.
   */
  pacedRuns?: FlowResult[];
}

/** What the native program's build did. */
interface NativeBuild {
  path: string | null;
  built: boolean;
  command: string[];
  error: string | null;
}

const errors: string[] = [];
let portSeq = 0;

function parseConfig(argv: string[]): Config {
  const args = argv[0] === "--" ? argv.slice(1) : argv; // `deno task bench -- ...` passes "--"
  const cfg: Config = {
    sizes: [64, 1024],
    durationMs: 1000,
    drainMs: 150,
    count: 50_000_000,
    rttCount: 20_000,
    rttWarmup: 2_000,
    rttMaxS: 15,
    repeat: 5,
    rttRepeat: 5,
    mqRepeat: 3,
    idleMs: 2000,
    tests: [...ALL_TESTS],
    paths: [...ALL_PATHS],
    mqRate: 80_000,
    mqWorkUs: 20,
    churnRate: 20_000,
    busyUs: 2000,
    jsonPath: null,
  };
  for (let i = 0; i < args.length; i += 2) {
    const [key, value] = [args[i], args[i + 1]];
    if (value === undefined) throw new Error(`${key} needs a value`);
    const n = Number(value);
    if (key === "--json") cfg.jsonPath = value;
    else if (key === "--duration-ms" && n >= 100 && n <= 20_000) cfg.durationMs = n;
    else if (key === "--rtt-count" && n >= 100 && n <= 1_000_000) cfg.rttCount = n;
    else if (key === "--repeat" && Number.isInteger(n) && n >= 1 && n <= 9) cfg.repeat = n;
    else if (key === "--rtt-repeat" && Number.isInteger(n) && n >= 1 && n <= 9) {
      cfg.rttRepeat = n;
    } else if (key === "--mq-repeat" && Number.isInteger(n) && n >= 1 && n <= 9) {
      cfg.mqRepeat = n;
    } else if (key === "--idle-ms" && n >= 200 && n <= 20_000) cfg.idleMs = n;
    else if (key === "--mq-rate" && Number.isInteger(n) && n >= 1000 && n <= 5e6) cfg.mqRate = n;
    else if (key === "--churn-rate" && Number.isInteger(n) && n >= 1000 && n <= 1e6) {
      cfg.churnRate = n;
    } else if (key === "--mq-work-us" && Number.isInteger(n) && n >= 0 && n <= 1000) {
      cfg.mqWorkUs = n;
    } else if (key === "--busy-us" && Number.isInteger(n) && n >= 0 && n <= 5000) {
      cfg.busyUs = n;
    } else if (key === "--tests") cfg.tests = value.split(",");
    else if (key === "--paths") cfg.paths = value.split(",") as Path[];
    else if (key === "--sizes") cfg.sizes = value.split(",").map(Number);
    else throw new Error(`bad argument ${key} ${value}`);
  }
  if (!cfg.tests.every((t) => ALL_TESTS.includes(t))) {
    throw new Error(`--tests: a comma-separated subset of ${ALL_TESTS.join(",")}`);
  }
  if (!cfg.paths.every((p) => ALL_PATHS.includes(p))) {
    throw new Error(`--paths: a comma-separated subset of ${ALL_PATHS.join(",")}`);
  }
  if (!cfg.sizes.every((s) => Number.isInteger(s) && s >= 8 && s <= 1472)) {
    throw new Error("--sizes: payload sizes must be integers 8..1472");
  }
  return cfg;
}

function mtimeMs(path: string): number {
  try {
    return Deno.statSync(path).mtime?.getTime() ?? 0;
  } catch {
    return -1;
  }
}

function ffiFiles(): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(`${ROOT}ffi`)) {
    if (e.isFile && /\.[ch]$/.test(e.name)) out.push(`${ROOT}ffi/${e.name}`);
  }
  return out.sort();
}

/** Builds the shim with ./nkbw build when it is missing or older than a source. */
async function ensureBuilt(): Promise<void> {
  const newest = Math.max(0, ...ffiFiles().map(mtimeMs));
  const lib = mtimeMs(LIB);
  if (lib >= 0 && lib >= newest) return;
  console.error(`bench: ${lib < 0 ? "no" : "stale"} ${LIB}: running ./nkbw build`);
  const r = await run([`${ROOT}nkbw`, "build"], BUILD_TIMEOUT_MS);
  if (r.code !== 0) throw new Error(`./nkbw build failed (${r.code}):\n${r.stderr}${r.stdout}`);
}

/**
 * Compiles bench/native/ceiling.c with every ffi/*.c into .tools/bench/ceiling
 * (zig cc) when it is missing or older than a source. A failure is recorded: the
 * benchmark then runs without the native rows.
 */
async function ensureNative(): Promise<NativeBuild> {
  const sources = ffiFiles();
  const cSources = sources.filter((s) => s.endsWith(".c"));
  const cc = mtimeMs(ZIG) >= 0 ? [ZIG, "cc"] : [`${ROOT}nkbw`, "zig", "cc"];
  const command = [
    ...cc,
    ...NATIVE_CFLAGS,
    "-I",
    `${ROOT}ffi`,
    "-o",
    NATIVE_BIN,
    NATIVE_SRC,
    ...cSources,
    "-lpthread",
  ];
  const newest = Math.max(0, mtimeMs(NATIVE_SRC), ...sources.map(mtimeMs));
  const bin = mtimeMs(NATIVE_BIN);
  if (bin >= 0 && bin >= newest) return { path: NATIVE_BIN, built: false, command, error: null };
  console.error(`bench: compiling ${NATIVE_BIN}`);
  Deno.mkdirSync(`${ROOT}.tools/bench`, { recursive: true });
  const r = await run(command, NATIVE_BUILD_TIMEOUT_MS);
  if (r.code === 0) {
    if (r.stderr.trim() !== "") console.error(r.stderr.trim());
    return { path: NATIVE_BIN, built: true, command, error: null };
  }
  const error = `native ceiling: zig cc failed (${r.code}): ${(r.stderr + r.stdout).trim()}`;
  errors.push(error.slice(0, 2000));
  console.error(`bench: ${error}`);
  return { path: null, built: false, command, error };
}

function num(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isFinite(v)) throw new Error(`${what}: not a number: ${v}`);
  return v;
}

function rec(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== "object" || v === null) throw new Error(`${what}: not an object`);
  return v as Record<string, unknown>;
}

/** The testbed, the configuration and the native program: what every run needs. */
interface Bench {
  tb: Testbed;
  cfg: Config;
  native: string | null;
}

/**
 * Pins every thread of a two-party run's process to one CPU: side A's to CPU 0, side
 * B's to CPU 1, so that the two busy loops never share a core (where the scheduler
 * puts them otherwise moved round-trip medians between runs well beyond the effect
 * measured). Not on a single-CPU machine.
 */
async function pinToSide(pid: number, side: "a" | "b"): Promise<void> {
  if (navigator.hardwareConcurrency < 2) return;
  const r = await run(["taskset", "-a", "-p", "-c", side === "a" ? "0" : "1", `${pid}`]);
  if (r.code !== 0) errors.push(`taskset ${pid}: ${r.stderr.trim()}`);
}

// Spawns a worker and waits for its "ready"; a bypass worker must be on the bypass path.
// A worker that fails to set up (e.g. the previous one's XDP program not yet gone) is
// started again, at most SETUP_TRIES times.
async function startWorker(
  name: string,
  bypass: boolean,
  spawn: () => TestbedProcess,
  pinned = true,
): Promise<TestbedProcess> {
  for (let attempt = 1; attempt <= SETUP_TRIES; attempt++) {
    const child = spawn();
    let why: string;
    try {
      const ready = await child.nextWith("ready", READY_TIMEOUT_MS);
      const state = ready.bypass as { active?: boolean; reason?: string; detail?: string } | null;
      if (pinned) await pinToSide(child.pid, name.endsWith("@a") ? "a" : "b");
      if (!bypass || state?.active === true) return child;
      why = `${name}: not on the bypass path: ${state?.reason} (${state?.detail})`;
    } catch (e) {
      why = e instanceof Error ? e.message : String(e);
    }
    await child.dispose();
    if (attempt === SETUP_TRIES) throw new Error(why);
    console.error(`bench: ${why.slice(0, 500)}; retrying`);
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error("unreachable");
}

function nativeBin(b: Bench): string {
  if (b.native === null) throw new Error("the native program was not built");
  return b.native;
}

function denoArgs(kind: Mover): string[] {
  if (kind === "kernel") return ["--impl", "kernel"];
  if (kind === "copy0") return ["--impl", "nkb", "--mode", "copy", "--recv-mode", "0"];
  if (kind === "batch0") return ["--impl", "nkb", "--mode", "batch", "--recv-mode", "0"];
  return ["--impl", "nkb", "--mode", kind === "native" ? "copy" : kind];
}

// The receivers that busy-poll (recvMode 1): in the receive-capacity test they drain
// (`--busy-us`, see bench/workers/sink.ts) instead of waiting.
const DRAINERS: readonly Receiver[] = ["copy", "batch", "native"];

function isUnmodified(kind: string): kind is Unmodified {
  return / (plain|preload)$/.test(kind);
}

/**
 * Starts an unmodified program in side A's namespace: `deno run` with its own permissions,
 * or the same under the pre-load as `nkb run` starts it (`deno run --preload preload.ts
 * --allow-ffi ...`, receive mode 1), deno itself rather than `nkb run`'s child, so that
 * the pinning reaches the program's threads. It prints no bypass state: which path carried
 * its traffic shows in side A's kernel UDP counters.
 */
function startProgram(b: Bench, u: Unmodified, args: string[]): Promise<TestbedProcess> {
  const [program, launch] = u.split(" ") as [Program, Launch];
  const name = `${PROGRAMS[program].script}${launch === "preload" ? " (preload)" : ""}@a`;
  const preload = launch === "preload" ? PRELOAD_FLAGS : [];
  const cmd = [
    Deno.execPath(),
    "run",
    ...preload,
    ...PROGRAM_FLAGS,
    `${WORKERS}${PROGRAMS[program].script}`,
    ...args,
  ];
  const env = launch === "preload" ? PRELOAD_ENV : undefined;
  return startWorker(name, false, () => b.tb.spawn("a", cmd, { name, env }));
}

function startSink(
  b: Bench,
  kind: Receiver | Unmodified,
  port: number,
  maxMs: number,
  busyUs: number,
): Promise<TestbedProcess> {
  const { tb } = b;
  if (isUnmodified(kind)) return startProgram(b, kind, [tb.a.ip, `${port}`, `${maxMs}`]);
  const name = `sink[${kind}]@a`;
  const seconds = `${maxMs / 1000}`;
  const busy = busyUs > 0 && DRAINERS.includes(kind) ? [`${busyUs}`] : [];
  return startWorker(name, kind !== "kernel", () => {
    if (kind === "xdpcount") {
      const args = ["xdpcount", tb.a.ifname, `${port}`, seconds, "generic"];
      return tb.spawn("a", [nativeBin(b), ...args], { name });
    }
    if (kind === "native") {
      const args = ["rx", tb.a.ip, `${port}`, "4000000000", seconds, ...busy];
      return tb.spawn("a", [nativeBin(b), ...args], { name });
    }
    return tb.spawnDeno("a", `${WORKERS}sink.ts`, [
      ...denoArgs(kind),
      ...["--host", tb.a.ip, "--port", `${port}`, "--max-ms", `${maxMs}`],
      ...(busy.length > 0 ? ["--busy-us", ...busy] : []),
    ], { name });
  });
}

const XDP_GONE_TRIES = 10;
const XDP_GONE_GAP_MS = 20;

// The XDP counter's link dies with its process: nothing may stay attached to side A's veth.
async function checkXdpGone(b: Bench): Promise<void> {
  for (let i = 0; i < XDP_GONE_TRIES; i++) {
    if (!await b.tb.xdpAttached("a")) return;
    await new Promise((r) => setTimeout(r, XDP_GONE_GAP_MS));
  }
  errors.push(`xdpcount: an XDP program is still attached to ${b.tb.a.ifname} after its exit`);
}

function startBlast(
  b: Bench,
  kind: Sender,
  port: number,
  size: number,
  drainMs: number,
): Promise<TestbedProcess> {
  const { tb, cfg } = b;
  const name = `blast[${kind}]@b`;
  return startWorker(name, kind !== "kernel", () =>
    kind === "native"
      ? tb.spawn("b", [
        nativeBin(b),
        ...["tx", tb.b.ip, `${port + 1}`, tb.a.ip, `${port}`, `${cfg.count}`, `${size}`],
        ...[`${cfg.durationMs / 1000}`, `${drainMs}`],
      ], { name })
      : tb.spawnDeno("b", `${WORKERS}blast.ts`, [
        ...denoArgs(kind),
        ...["--src", tb.b.ip, "--sport", `${port + 1}`, "--dst", tb.a.ip, "--port", `${port}`],
        ...["--size", `${size}`, "--duration-ms", `${cfg.durationMs}`, "--count", `${cfg.count}`],
        ...["--drain-ms", `${drainMs}`],
      ], { name }));
}

// The native generator paced to `pps` (mqtx on one queue: batches of 32, sleeping between).
function startPaced(
  b: Bench,
  port: number,
  size: number,
  pps: number,
  drainMs: number,
): Promise<TestbedProcess> {
  const { tb, cfg } = b;
  const name = `mqtx[${Math.round(pps)}/s]@b`;
  return startWorker(name, true, () =>
    tb.spawn("b", [
      nativeBin(b),
      ...["mqtx", tb.b.ip, `${port + 1}`, tb.a.ip, `${port}`, "1", `${Math.round(pps)}`],
      ...[`${size}`, `${cfg.durationMs / 1000}`, `${drainMs}`],
    ], { name }));
}

function deltas(
  after: Record<string, number>,
  before: Record<string, number>,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of Object.keys(after)) if (after[k] !== before[k]) out[k] = after[k] - before[k];
  return out;
}

async function flow(
  b: Bench,
  sender: Sender,
  receiver: Receiver | Unmodified,
  size: number,
  busyUs = 0,
  pacePps: number | null = null,
): Promise<FlowResult> {
  const { tb, cfg } = b;
  const port = BASE_PORT + 2 * portSeq++;
  const udpBefore = await tb.udpCounters("a");
  const maxMs = cfg.durationMs + RESULT_SLACK_MS;
  const sink = await startSink(b, receiver, port, maxMs, busyUs);
  let blast: TestbedProcess | null = null;
  try {
    // An unmodified receiver may still be behind by a socket buffer when the data ends.
    const drainMs = isUnmodified(receiver) ? Math.max(cfg.drainMs, PROGRAM_DRAIN_MS) : cfg.drainMs;
    blast = pacePps === null
      ? await startBlast(b, sender, port, size, drainMs)
      : await startPaced(b, port, size, pacePps, drainMs);
    const sr = rec((await blast.nextWith("result", maxMs)).result, "sender result");
    const rr = rec((await sink.nextWith("result", maxMs)).result, "receiver result");
    await Promise.all([blast.wait(EXIT_TIMEOUT_MS), sink.wait(EXIT_TIMEOUT_MS)]);
    if (receiver === "xdpcount") await checkXdpGone(b);
    const udpA = deltas(await tb.udpCounters("a"), udpBefore);
    if (rr.ended !== true) {
      errors.push(`${sender}->${receiver} ${size} B: receiver saw no end marker`);
    }
    const sent = num(sr.sent, "sent");
    const received = num(rr.received, "received");
    const senderMs = num(sr.elapsedMs, "elapsedMs");
    const receiverSpanMs = num(rr.spanMs, "spanMs");
    return {
      sender,
      receiver,
      size,
      sent,
      received,
      lossPct: sent > 0 ? 100 * (sent - received) / sent : 0,
      sendMpps: sent / senderMs / 1000,
      rxMpps: receiverSpanMs > 0 ? received / receiverSpanMs / 1000 : 0,
      senderMs,
      receiverSpanMs,
      ...perCore(receiver, received, rr),
      txFull: num(sr.txFull, "txFull"),
      pacedPps: pacePps,
      receiverResult: rr,
      senderResult: sr,
      udpA,
    };
  } finally {
    await Promise.all([sink.dispose(), blast?.dispose()]);
  }
}

// What one core of the receiver can take, datagrams per second: for receivers that drained
// (`--busy-us`) what they drained per second of draining (saturated: the ring was never
// empty meanwhile; the median over the datagrams of their drain's rate), with the share of
// the window they spent
// draining; for receivers that
// sleep when idle (the kernel path, recvMode 0) datagrams per second of their process's CPU
// time, with that time's share of the window.
function perCore(
  receiver: Receiver | Unmodified,
  received: number,
  rr: Record<string, unknown>,
): { rxCpuPct: number | null; rxPerCoreMpps: number | null } {
  const windowMs = typeof rr.windowMs === "number" ? rr.windowMs : 0;
  if (windowMs <= 0 || receiver === "xdpcount") return { rxCpuPct: null, rxPerCoreMpps: null };
  if (typeof rr.drainMs === "number" && typeof rr.drainP50Mpps === "number" && rr.drainMs > 0) {
    return { rxCpuPct: 100 * rr.drainMs / windowMs, rxPerCoreMpps: rr.drainP50Mpps };
  }
  const busyMs = typeof rr.cpuMs === "number" ? rr.cpuMs : 0;
  if (busyMs <= 0) return { rxCpuPct: null, rxPerCoreMpps: null };
  return { rxCpuPct: 100 * busyMs / windowMs, rxPerCoreMpps: received / busyMs / 1000 };
}

async function rtt(b: Bench, server: Path | Unmodified, size: number): Promise<RttResult> {
  const { tb, cfg } = b;
  const port = BASE_PORT + 2 * portSeq++;
  const maxMs = cfg.rttMaxS * 1000 + RESULT_SLACK_MS;
  const udpBefore = await tb.udpCounters("a");
  const echo = isUnmodified(server)
    ? await startProgram(b, server, [tb.a.ip, `${port}`, `${maxMs}`])
    : await startEcho(b, server, port, maxMs);
  let client: TestbedProcess | null = null;
  try {
    client = tb.spawn("b", [
      "python3",
      `${WORKERS}rtt_client.py`,
      ...[tb.b.ip, tb.a.ip, `${port}`, `${size}`, `${cfg.rttCount}`, `${cfg.rttWarmup}`],
      ...[`${cfg.rttMaxS}`, `${RTT_TIMEOUT_MS}`],
    ], { name: `rtt_client.py@b` });
    await pinToSide(client.pid, "b");
    const cr = rec((await client.nextWith("result", maxMs)).result, "client result");
    const er = rec((await echo.nextWith("result", EXIT_TIMEOUT_MS)).result, "echo result");
    await Promise.all([client.wait(EXIT_TIMEOUT_MS), echo.wait(EXIT_TIMEOUT_MS)]);
    return {
      server,
      size,
      client: "python3 kernel socket, non-blocking recv busy-poll",
      measured: num(cr.measured, "measured"),
      lost: num(cr.lost, "lost"),
      p50: num(cr.p50, "p50"),
      p99: num(cr.p99, "p99"),
      p999: num(cr.p999, "p999"),
      min: num(cr.min, "min"),
      max: num(cr.max, "max"),
      mean: num(cr.mean, "mean"),
      echoed: num(er.echoed, "echoed"),
      serverResult: er,
      udpA: deltas(await tb.udpCounters("a"), udpBefore),
    };
  } finally {
    await Promise.all([echo.dispose(), client?.dispose()]);
  }
}

function startEcho(b: Bench, server: Path, port: number, maxMs: number): Promise<TestbedProcess> {
  const { tb } = b;
  const name = `echo[${server}]@a`;
  return startWorker(name, server !== "kernel", () => {
    if (server === "native") {
      return tb.spawn("a", [nativeBin(b), "echo", tb.a.ip, `${port}`, `${maxMs / 1000}`], { name });
    }
    const impl = server === "kernel"
      ? ["--impl", "kernel"]
      : ["--impl", "nkb", "--mode", server === "batch" ? "batch" : "copy"];
    const mode = server === "copy0" ? ["--recv-mode", "0"] : ["--recv-mode", "1"];
    return tb.spawnDeno("a", `${WORKERS}echo.ts`, [
      ...impl,
      ...mode,
      ...["--host", tb.a.ip, "--port", `${port}`, "--max-ms", `${maxMs}`],
    ], { name });
  });
}

/** utime + stime of a process (all its threads), in clock ticks. */
function cpuTicks(pid: number): number {
  const text = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" "); // from field 3 (state)
  return Number(fields[11]) + Number(fields[12]); // fields 14 and 15
}

interface IdleKind {
  what: string;
  args: string[];
  bypass: boolean;
}

// Only one nkb process at a time may hold the interface: the kernel receiver and the
// recvMode 0 receiver wait together, then the recvMode 1 receiver alone.
const IDLE_PHASES: IdleKind[][] = [
  [
    { what: "Deno.listenDatagram receive()", args: ["--impl", "kernel"], bypass: false },
    { what: "nkb receive() recvMode 0", args: ["--impl", "nkb", "--recv-mode", "0"], bypass: true },
  ],
  [{ what: "nkb receive() recvMode 1", args: ["--impl", "nkb", "--recv-mode", "1"], bypass: true }],
];

/** Run time of a process's current threads (/proc/<pid>/task/<tid>/schedstat), in ns. */
function runNs(pid: number): number {
  let ns = 0;
  for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/schedstat`).split(" ")[0]);
    } catch {
      // the thread ended
    }
  }
  return ns;
}

async function idle(b: Bench): Promise<IdleResult[]> {
  const tck = Number((await run(["getconf", "CLK_TCK"])).stdout.trim()) || 100;
  const out: IdleResult[] = [];
  for (const phase of IDLE_PHASES) out.push(...await idlePhase(b, phase, tck));
  return out;
}

async function idlePhase(b: Bench, kinds: IdleKind[], tck: number): Promise<IdleResult[]> {
  const { tb, cfg } = b;
  const maxMs = IDLE_SETTLE_MS + cfg.idleMs + RESULT_SLACK_MS;
  const workers: TestbedProcess[] = [];
  try {
    for (const k of kinds) {
      const port = BASE_PORT + 2 * portSeq++;
      const name = `idle[${k.what}]@a`;
      workers.push(
        await startWorker(name, k.bypass, () =>
          tb.spawnDeno("a", `${WORKERS}idle.ts`, [
            ...k.args,
            ...["--host", tb.a.ip, "--port", `${port}`, "--max-ms", `${maxMs}`],
          ], { name })),
      );
    }
    await new Promise((r) => setTimeout(r, IDLE_SETTLE_MS));
    const t0 = performance.now();
    const before = workers.map((w) => [cpuTicks(w.pid), runNs(w.pid)]);
    await new Promise((r) => setTimeout(r, cfg.idleMs));
    const after = workers.map((w) => [cpuTicks(w.pid), runNs(w.pid)]);
    const seconds = (performance.now() - t0) / 1000;
    return workers.map((w, i) => {
      const ticks = after[i][0] - before[i][0];
      const cpuPct = 100 * ticks / tck / seconds;
      const schedPct = 100 * (after[i][1] - before[i][1]) / 1e9 / seconds;
      return { what: kinds[i].what, pid: w.pid, ticks, seconds, cpuPct, schedPct };
    });
  } finally {
    await Promise.all(workers.map((w) => w.dispose()));
  }
}

const MQ_QUEUES = 2;
const MQ_SIZE = 64;
const MQ_WORKERS = [1, MQ_QUEUES];

async function mqFlow(b: Bench, tb: Testbed, workers: number): Promise<MqResult> {
  const { cfg } = b;
  const port = BASE_PORT + 2 * portSeq++;
  const maxMs = cfg.durationMs + RESULT_SLACK_MS;
  const name = `mq_sink[${workers}]@a`;
  const sink = await startWorker(name, true, () =>
    tb.spawnDeno("a", `${WORKERS}mq_sink.ts`, [
      ...["--host", tb.a.ip, "--port", `${port}`, "--max-ms", `${maxMs}`],
      ...["--workers", `${workers}`, "--flows", `${MQ_QUEUES}`, "--work-us", `${cfg.mqWorkUs}`],
    ], { name }), false); // the Workers and the generator share both cores as they need
  let gen: TestbedProcess | null = null;
  try {
    const gname = `mqtx@b`;
    gen = await startWorker(gname, true, () =>
      tb.spawn("b", [
        nativeBin(b),
        ...["mqtx", tb.b.ip, `${port + 1}`, tb.a.ip, `${port}`, `${MQ_QUEUES}`],
        ...[`${cfg.mqRate}`, `${MQ_SIZE}`, `${cfg.durationMs / 1000}`, `${cfg.drainMs}`],
      ], { name: gname }), false);
    const gr = rec((await gen.nextWith("result", maxMs)).result, "generator result");
    const rr = rec((await sink.nextWith("result", maxMs)).result, "receiver result");
    await Promise.all([gen.wait(EXIT_TIMEOUT_MS), sink.wait(EXIT_TIMEOUT_MS)]);
    if (rr.ended !== true) errors.push(`mq ${workers} Worker(s): receiver saw no end marker`);
    const each = (rr.workers as Record<string, unknown>[]).map((w) => rec(w, "worker result"));
    const sent = num(gr.sent, "sent");
    const received = num(rr.received, "received");
    const spanMs = num(rr.spanMs, "spanMs");
    const statsOf = (w: Record<string, unknown>): Record<string, number> =>
      rec(w.stats, "stats") as Record<string, number>;
    const drops = num(gr.txDrops, "txDrops") +
      each.reduce((a, w) => a + statsOf(w).interfaceDrops + statsOf(w).rxDropped, 0);
    // Every datagram lost must be a counted drop: anything else would be silent loss.
    if (sent - received > drops) {
      errors.push(`mq ${workers} Worker(s): ${sent - received - drops} datagrams lost uncounted`);
    }
    return {
      workers,
      size: MQ_SIZE,
      offeredPps: cfg.mqRate,
      workUs: cfg.mqWorkUs,
      workIters: num(rr.workIters, "workIters"),
      sent,
      received,
      lossPct: sent > 0 ? 100 * (sent - received) / sent : 0,
      deliveredMpps: spanMs > 0 ? received / spanMs / 1000 : 0,
      perWorker: each.map((w) => num(w.received, "received")),
      drops,
      generatorResult: gr,
      receiverResult: rr,
    };
  } finally {
    await Promise.all([sink.dispose(), gen?.dispose()]);
  }
}

/** One and then MQ_QUEUES Workers, `repeat` times, on a testbed with a 2-queue veth. */
async function multiQueue(b: Bench): Promise<Map<number, MqResult[]>> {
  const runs = new Map<number, MqResult[]>(MQ_WORKERS.map((w) => [w, []]));
  if (b.native === null) {
    errors.push("mq: not measured (the native generator was not built)");
    return runs;
  }
  const tb = await Testbed.create({
    thirdOctet: "next",
    numRxQueues: MQ_QUEUES,
    numTxQueues: MQ_QUEUES,
  });
  try {
    for (let i = 1; i <= b.cfg.mqRepeat; i++) {
      for (const w of MQ_WORKERS) {
        const r = await attempt(
          `multi-queue ${w} Worker(s), run ${i}/${b.cfg.mqRepeat}`,
          () => mqFlow(b, tb, w),
        );
        if (r !== null) runs.get(w)!.push(r);
      }
    }
  } finally {
    await tb.close();
  }
  return runs;
}

function mqTable(runs: Map<number, MqResult[]>, cfg: Config): string {
  const head = ["receivers", "delivered Mpps (loss %)", "per Worker Mpps", "counted drops"];
  const lines: string[][] = [head];
  const med = new Map<number, MqResult | null>();
  for (const [w, rs] of runs) med.set(w, median(rs, (r) => r.deliveredMpps));
  for (const [w, r] of med) {
    const label = w === 1
      ? "1 Worker, one socket on both queues"
      : `${w} Workers, a queue-affine socket each`;
    if (r === null) {
      lines.push([label, "failed", "", ""]);
      continue;
    }
    const share = (n: number): string => f(r.deliveredMpps * n / Math.max(1, r.received), 3);
    lines.push([
      label,
      `${f(r.deliveredMpps, 3)} (${f(r.lossPct, 2)} %)`,
      r.perWorker.map(share).join(" / "),
      `${r.drops}`,
    ]);
  }
  const one = med.get(1);
  const many = med.get(MQ_QUEUES);
  lines.push([
    `${MQ_QUEUES} Workers / 1 Worker`,
    ratio(many?.deliveredMpps, one?.deliveredMpps),
    "",
    "",
  ]);
  const widths = head.map((_, i) => Math.max(...lines.map((l) => l[i].length)));
  const fmt = (l: string[]): string => l.map((c, i) => c.padEnd(widths[i])).join(" | ").trimEnd();
  const rule = widths.map((w) => "-".repeat(w)).join("-|-");
  const iters = one?.workIters ?? many?.workIters;
  return [
    `multi-queue receive: ${MQ_QUEUES}-queue veth, ${MQ_SIZE} B, native generator paced to ` +
    `${f(cfg.mqRate / 1e6, 3)} Mpps over both queues, nkb receiveBatch (256) in recvMode 1 ` +
    `with ${cfg.mqWorkUs} us of work per datagram (${iters ?? "?"} xorshift rounds); ` +
    `median of ${cfg.mqRepeat} runs of ${cfg.durationMs} ms. Loss is the generator's count ` +
    `minus the Workers'; counted drops are the sockets' interfaceDrops + rxDropped and the ` +
    `generator's interfaceTxDrops.\n`,
    fmt(lines[0]),
    rule,
    ...lines.slice(1).map(fmt),
  ].join("\n");
}

/** One run of the churn test: the receiving Worker's gaps, and the churning Worker's cycles. */
interface ChurnResult {
  churn: boolean;
  sent: number;
  received: number;
  maxGapMs: number;
  p999GapMs: number;
  p99GapMs: number;
  p50GapMs: number;
  cycles: number;
  bypassed: number;
  longestCycleMs: number;
  raw: Record<string, unknown>;
}

async function churnFlow(b: Bench, tb: Testbed, withChurn: boolean): Promise<ChurnResult> {
  const { cfg } = b;
  const port = BASE_PORT + 2 * portSeq++;
  const churnPort = BASE_PORT + 2 * portSeq++;
  const maxMs = cfg.durationMs + RESULT_SLACK_MS;
  const name = `churn_sink[${withChurn ? 1 : 0}]@a`;
  const sink = await startWorker(name, true, () =>
    tb.spawnDeno("a", `${WORKERS}churn_sink.ts`, [
      ...["--host", tb.a.ip, "--port", `${port}`, "--churn-port", `${churnPort}`],
      ...["--max-ms", `${maxMs}`, "--churn", withChurn ? "1" : "0"],
    ], { name }), false);
  let gen: TestbedProcess | null = null;
  try {
    gen = await startWorker("churntx@b", true, () =>
      tb.spawn("b", [
        nativeBin(b),
        ...["mqtx", tb.b.ip, `${port + 1}`, tb.a.ip, `${port}`, "1"],
        ...[`${cfg.churnRate}`, `${MQ_SIZE}`, `${cfg.durationMs / 1000}`, `${cfg.drainMs}`],
      ], { name: "churntx@b" }), false);
    const gr = rec((await gen.nextWith("result", maxMs)).result, "generator result");
    const rr = rec((await sink.nextWith("result", maxMs)).result, "receiver result");
    await Promise.all([gen.wait(EXIT_TIMEOUT_MS), sink.wait(EXIT_TIMEOUT_MS)]);
    const rx = rec(rr.rx, "rx result");
    const ch = rr.churn === null ? null : rec(rr.churn, "churn result");
    if (rx.ended !== true) errors.push(`churn ${withChurn}: the receiver saw no end marker`);
    if (ch !== null && num(ch.bypassed, "bypassed") < num(ch.cycles, "cycles")) {
      errors.push(`churn: ${JSON.stringify(ch.reasons)} of the churning sockets fell back`);
    }
    return {
      churn: withChurn,
      sent: num(gr.sent, "sent"),
      received: num(rx.received, "received"),
      maxGapMs: num(rx.maxGapMs, "maxGapMs"),
      p999GapMs: num(rx.p999GapMs, "p999GapMs"),
      p99GapMs: num(rx.p99GapMs, "p99GapMs"),
      p50GapMs: num(rx.p50GapMs, "p50GapMs"),
      cycles: ch === null ? 0 : num(ch.cycles, "cycles"),
      bypassed: ch === null ? 0 : num(ch.bypassed, "bypassed"),
      longestCycleMs: ch === null ? 0 : num(ch.longestMs, "longestMs"),
      raw: { generator: gr, receiver: rr },
    };
  } finally {
    await Promise.all([sink.dispose(), gen?.dispose()]);
  }
}

/** Without and with a churning Worker, `mqRepeat` times, on a 2-queue veth. */
async function churnTest(b: Bench): Promise<ChurnResult[]> {
  const runs: ChurnResult[] = [];
  if (b.native === null) {
    errors.push("churn: not measured (the native generator was not built)");
    return runs;
  }
  const tb = await Testbed.create({ thirdOctet: "next", numRxQueues: 2, numTxQueues: 2 });
  try {
    for (let i = 1; i <= b.cfg.mqRepeat; i++) {
      for (const withChurn of i % 2 === 1 ? [false, true] : [true, false]) {
        const r = await attempt(
          `churn ${withChurn ? "with" : "without"} the churning Worker, run ${i}/${b.cfg.mqRepeat}`,
          () => churnFlow(b, tb, withChurn),
        );
        if (r !== null) runs.push(r);
      }
    }
  } finally {
    await tb.close();
  }
  return runs;
}

function churnTable(runs: ChurnResult[], cfg: Config): string {
  const head = ["second Worker", "longest gap ms", "p99.9 gap ms", "p99 gap ms", "received/sent"];
  const lines: string[][] = [head];
  for (const withChurn of [false, true]) {
    const rs = runs.filter((r) => r.churn === withChurn);
    const m = median(rs, (r) => r.maxGapMs);
    const label = withChurn
      ? `open/close loop on queue 1 (${rs.map((r) => r.cycles).join("/")} cycles, longest ${
        f(Math.max(0, ...rs.map((r) => r.longestCycleMs)), 0)
      } ms)`
      : "none";
    if (m === null) {
      lines.push([label, "failed", "", "", ""]);
      continue;
    }
    const med = (k: (r: ChurnResult) => number): string =>
      f(median(rs, k) === null ? 0 : k(median(rs, k)!), 2);
    lines.push([
      label,
      `${f(m.maxGapMs, 2)} (${rs.map((r) => f(r.maxGapMs, 1)).join(", ")})`,
      med((r) => r.p999GapMs),
      med((r) => r.p99GapMs),
      rs.map((r) => `${r.received}/${r.sent}`).join(", "),
    ]);
  }
  const widths = head.map((_, i) => Math.max(...lines.map((l) => l[i].length)));
  const fmt = (l: string[]): string => l.map((c, i) => c.padEnd(widths[i])).join(" | ").trimEnd();
  const rule = widths.map((w) => "-".repeat(w)).join("-|-");
  return [
    `Worker churn (issue 16): one process, two Workers on a 2-queue veth. Worker 1: a queue-affine ` +
    `socket on queue 0, receiveBatch (256) in recvMode 1, fed ${MQ_SIZE} B datagrams by the native ` +
    `generator paced to ${f(cfg.churnRate / 1e6, 3)} Mpps on queue 0; its gaps between receives ` +
    `that brought data. Worker 2: none, or a loop opening and closing a queue-affine bypass ` +
    `socket on queue 1 (its engine opens and closes every cycle). Median of ${cfg.mqRepeat} runs ` +
    `of ${cfg.durationMs} ms (longest gap: the median, then each run's).\n`,
    fmt(lines[0]),
    rule,
    ...lines.slice(1).map(fmt),
  ].join("\n");
}

// Runs one measurement; a failure is recorded and the benchmark goes on.
async function attempt<T>(what: string, fn: () => Promise<T>): Promise<T | null> {
  if (performance.now() - T_START > BUDGET_MS) {
    errors.push(`${what}: skipped (time budget of ${BUDGET_MS / 1000} s used up)`);
    return null;
  }
  const t0 = performance.now();
  try {
    const r = await fn();
    console.error(`bench: ${what}: done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    return r;
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    errors.push(`${what}: ${msg.slice(0, 3000)}`);
    console.error(`bench: ${what}: FAILED: ${msg}`);
    return null;
  }
}

// The sender that generates the rx-capacity load: the fastest there is, so that it is
// the limit as rarely as possible (on veth it also pays the receiving side's XDP work).
function generator(b: Bench): Sender {
  return b.native !== null ? "native" : "batch";
}

// The receiver that counts what a send-rate sender sent: the XDP counter costs the sending
// core (where veth runs the receiving side's XDP) the least.
function sendReceiver(b: Bench): Receiver {
  return b.native !== null ? "xdpcount" : "batch";
}

async function measure(b: Bench): Promise<Map<string, Row>> {
  const { cfg } = b;
  const rows = new Map<string, Row>();
  const paths = cfg.paths.filter((p) => p !== "native" || b.native !== null);
  if (b.native === null && cfg.paths.includes("native")) {
    errors.push("native ceiling: not measured (the program was not built)");
  }
  const want = (p: Path, t: string): boolean => cfg.tests.includes(t) && PATH_TESTS[p].includes(t);
  for (const size of cfg.sizes) {
    for (const path of paths) {
      const row: Row = emptyRow();
      rows.set(`${path}/${size}`, row);
    }
    // Within a repetition each test runs on every path in turn, in RUN_ORDER (reversed every
    // other repetition), so that the runs a ratio pairs ran seconds apart and a drift of the
    // VM's speed between them cancels over the repetitions.
    const runs = Math.max(cfg.repeat, cfg.rttRepeat);
    for (let i = 1; i <= runs; i++) {
      const order = RUN_ORDER.filter((p) => paths.includes(p));
      if (i % 2 === 0) order.reverse();
      for (const test of ["rx", "send", "rtt"] as const) {
        for (const path of order) {
          const repeat = test === "rtt" ? cfg.rttRepeat : cfg.repeat;
          if (!want(path, test) || i > repeat) continue;
          const row = rows.get(`${path}/${size}`)!;
          const tag = `${path} ${size} B, run ${i}/${repeat}`;
          if (test === "rx") {
            const r = await attempt(
              `rx capacity ${tag}`,
              () => flow(b, generator(b), path, size, cfg.busyUs),
            );
            if (r !== null) row.rxRuns.push(r);
          } else if (test === "send") {
            // want() holds only for paths that send (PATH_TESTS), i.e. Senders.
            const r = await attempt(
              `send rate ${tag}`,
              () => flow(b, path as Sender, sendReceiver(b), size),
            );
            if (r !== null) row.sendRuns.push(r);
          } else {
            const r = await attempt(`round trip ${tag}`, () => rtt(b, path, size));
            if (r !== null) row.rttRuns.push(r);
          }
        }
      }
    }
    for (const path of paths) settle(rows.get(`${path}/${size}`)!);
  }
  return rows;
}

// A row's medians, once its runs are in.
function settle(row: Row): void {
  row.rx = median(row.rxRuns, (r) => r.rxMpps);
  row.rxCap = median(
    row.rxRuns.filter((r) => r.rxPerCoreMpps !== null),
    (r) => r.rxPerCoreMpps!,
  );
  row.send = median(row.sendRuns, (r) => r.sendMpps);
  row.rtt = medianRtt(row.rttRuns);
}

const LAUNCHES: Launch[] = ["plain", "preload"];

/**
 * The `preload` test (issue 15): each unmodified program run plainly and under the
 * pre-load, back to back within a repetition (which goes first alternates), measured as
 * the rtt rows (the echoes) and the rx rows (the `for await` receiver: the same generator;
 * no `--busy-us`, an unmodified program cannot be told to spin) are. Its rows join `rows`
 * as "<program> <launch>/<size>".
 */
async function measurePreload(b: Bench, rows: Map<string, Row>): Promise<void> {
  const { cfg } = b;
  for (const size of preloadSizes(cfg)) {
    for (const p of ALL_PROGRAMS) {
      for (const l of LAUNCHES) rows.set(`${p} ${l}/${size}`, emptyRow());
    }
    const runs = Math.max(cfg.repeat, cfg.rttRepeat);
    for (let i = 1; i <= runs; i++) {
      const launches = i % 2 === 0 ? [...LAUNCHES].reverse() : LAUNCHES;
      for (const program of ALL_PROGRAMS) {
        const { test } = PROGRAMS[program];
        const repeat = test === "rtt" ? cfg.rttRepeat : cfg.repeat;
        if (i > repeat) continue;
        for (const launch of launches) {
          const u: Unmodified = `${program} ${launch}`;
          const row = rows.get(`${u}/${size}`)!;
          const tag = `${u} ${size} B, run ${i}/${repeat}`;
          if (test === "rtt") {
            const r = await attempt(`round trip ${tag}`, () => rtt(b, u, size));
            if (r === null) continue;
            row.rttRuns.push(r);
            checkCarrier(u, size, r.udpA, r.echoed, i);
          } else {
            const r = await attempt(`rx capacity ${tag}`, () => flow(b, generator(b), u, size));
            if (r === null) continue;
            row.rxRuns.push(r);
            checkCarrier(u, size, r.udpA, r.received, i);
          }
        }
        if (test === "rx") await pacedAtBar(b, rows, program, size, i);
      }
    }
    for (const p of ALL_PROGRAMS) for (const l of LAUNCHES) settle(rows.get(`${p} ${l}/${size}`)!);
  }
}

/**
 * "With no loss" (issue 15's bar): the receiver under the pre-load, offered PRELOAD_BAR.capacity
 * times what the plain one took per core in this repetition, paced, must lose nothing. Flat
 * out the generator outruns both (and the plain one sheds most), so that run says nothing
 * about loss at the bar's rate.
 */
async function pacedAtBar(
  b: Bench,
  rows: Map<string, Row>,
  program: Program,
  size: number,
  i: number,
): Promise<void> {
  const plain = rows.get(`${program} plain/${size}`)!.rxRuns.at(-1);
  const row = rows.get(`${program} preload/${size}`)!;
  const u: Unmodified = `${program} preload`;
  const tag = `${u} ${size} B paced at ${PRELOAD_BAR.capacity}x plain, run ${i}/${b.cfg.repeat}`;
  if (b.native === null || plain?.rxPerCoreMpps == null) {
    errors.push(
      `${tag}: not measured (${b.native === null ? "no native generator" : "no plain run"})`,
    );
    return;
  }
  const pps = Math.max(PACED_MIN_PPS, PRELOAD_BAR.capacity * plain.rxPerCoreMpps * 1e6);
  const r = await attempt(`rx ${tag}`, () => flow(b, "native", u, size, 0, pps));
  if (r === null) return;
  (row.pacedRuns ??= []).push(r);
  checkCarrier(u, size, r.udpA, r.received, i);
}

/** Which path carried a run's `datagrams`, by side A's kernel UDP InDatagrams. */
function carrier(udpA: Record<string, number>, datagrams: number): "nkb" | "kernel" {
  return (udpA.InDatagrams ?? 0) <= BYPASS_KERNEL_SHARE * datagrams ? "nkb" : "kernel";
}

// A Deno.listenDatagram program under the pre-load must be on nkb, and a plain one on the
// kernel: anything else measures something else. A node:dgram program stays on the kernel
// under the pre-load until the pre-load takes node:dgram over: the table shows it.
function checkCarrier(
  u: Unmodified,
  size: number,
  udpA: Record<string, number>,
  datagrams: number,
  run: number,
): void {
  const [program, launch] = u.split(" ") as [Program, Launch];
  const got = carrier(udpA, datagrams);
  const want = launch === "plain" ? "kernel" : program === "dgram-echo" ? got : "nkb";
  if (got !== want) {
    errors.push(
      `${u} ${size} B run ${run}: carried by ${got}, not ${want} (side A's kernel UDP ` +
        `InDatagrams +${udpA.InDatagrams ?? 0} for ${datagrams} datagrams)`,
    );
  }
}

// The run with the median p99, its p50 and p99.9 replaced by their own medians: the
// run-to-run spread of one percentile then does not pick the others.
function medianRtt(runs: RttResult[]): RttResult | null {
  const base = median(runs, (r) => r.p99);
  if (base === null) return null;
  const p50 = median(runs, (r) => r.p50)!.p50;
  const p999 = median(runs, (r) => r.p999)!.p999;
  return { ...base, p50, p999 };
}

// The run whose `key` is the median (the lower middle of an even count).
function median<T>(runs: T[], key: (r: T) => number): T | null {
  if (runs.length === 0) return null;
  const sorted = [...runs].sort((x, y) => key(x) - key(y));
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

function f(v: number | undefined, digits: number): string {
  return v === undefined ? "-" : v.toFixed(digits);
}

function ratio(a: number | undefined, b: number | undefined): string {
  return a === undefined || b === undefined || b === 0 ? "-" : `${(a / b).toFixed(2)}x`;
}

/**
 * The ratio of path `as` to path `zs`: the median of the repetitions' ratios, each taken
 * between runs that ran back to back (this VM's speed drifts by a third between
 * repetitions; within one it hardly moves). When a run failed the repetitions no longer
 * pair up: then the ratio of the medians.
 */
function pairedRatio<T>(
  as: T[],
  zs: T[],
  key: (r: T) => number | null | undefined,
  medianA: number | null | undefined,
  medianZ: number | null | undefined,
): string {
  const r = pairedRatioOf(as, zs, key, medianA, medianZ);
  return r === null ? "-" : `${r.toFixed(2)}x`;
}

/** {@linkcode pairedRatio} as a number; null when there is none. */
function pairedRatioOf<T>(
  as: T[],
  zs: T[],
  key: (r: T) => number | null | undefined,
  medianA: number | null | undefined,
  medianZ: number | null | undefined,
): number | null {
  const pairs = as.length === zs.length && as.length > 0
    ? as.map((a, i) => [key(a), key(zs[i])])
    : [];
  const ok = pairs.length > 0 && pairs.every(([x, y]) => typeof x === "number" && y);
  if (!ok) {
    return typeof medianA === "number" && typeof medianZ === "number" && medianZ !== 0
      ? medianA / medianZ
      : null;
  }
  const rs = pairs.map(([x, y]) => (x as number) / (y as number)).sort((x, y) => x - y);
  return rs[Math.floor((rs.length - 1) / 2)];
}

function emptyRow(): Row {
  return { rx: null, rxCap: null, send: null, rtt: null, rxRuns: [], sendRuns: [], rttRuns: [] };
}

function table(rows: Map<string, Row>, cfg: Config): string {
  const { sizes, tests } = cfg;
  const head = [
    "path",
    "payload",
    "rx capacity Mpps/core (busy %)",
    "rx delivered Mpps (loss %)",
    "offered Mpps",
    "send rate Mpps (loss %)",
    "rtt p50/p99/p99.9 us",
  ];
  const lines: string[][] = [head];
  // An empty cell: the path does not measure it, it was not asked for, or every run failed.
  const none = (p: Path, t: string): string =>
    tests.includes(t) && PATH_TESTS[p].includes(t) ? "failed" : "-";
  for (const size of sizes) {
    const get = (p: Path): Row | undefined => rows.get(`${p}/${size}`);
    for (const p of ALL_PATHS) {
      if (!cfg.paths.includes(p)) continue;
      const r = get(p);
      const rx = r?.rx;
      const keptUp = rx && rx.lossPct < KEPT_UP_LOSS_PCT ? "*" : "";
      const t = r?.rtt;
      lines.push([
        LABEL[p],
        `${size} B`,
        r?.rxCap?.rxPerCoreMpps != null
          ? `${f(r.rxCap.rxPerCoreMpps, 3)} (${f(r.rxCap.rxCpuPct!, 0)} %)`
          : rx
          ? "-"
          : none(p, "rx"),
        rx ? `${f(rx.rxMpps, 3)} (${f(rx.lossPct, 2)} %)${keptUp}` : none(p, "rx"),
        rx ? f(rx.sendMpps, 3) : "",
        r?.send ? `${f(r.send.sendMpps, 3)} (${f(r.send.lossPct, 2)} %)` : none(p, "send"),
        t ? `${f(t.p50, 1)} / ${f(t.p99, 1)} / ${f(t.p999, 1)}` : none(p, "rtt"),
      ]);
    }
    for (const p of ["copy", "copy0", "batch", "batch0"] as const) {
      if (!cfg.paths.includes(p)) continue;
      for (const base of ["kernel", "native"] as const) {
        if (!cfg.paths.includes(base)) continue;
        const a = get(p);
        const z = get(base);
        const has = (t: string): boolean =>
          PATH_TESTS[p].includes(t) && PATH_TESTS[base].includes(t);
        const ar = a ?? emptyRow();
        const zr = z ?? emptyRow();
        const rtts = has("rtt")
          ? (["p50", "p99", "p999"] as const).map((k) =>
            pairedRatio(ar.rttRuns, zr.rttRuns, (r) => r[k], a?.rtt?.[k], z?.rtt?.[k])
          ).join(" / ")
          : "";
        const rx = (key: (r: FlowResult) => number | null, pick: (r: Row) => FlowResult | null) => {
          const am = a && pick(a);
          const zm = z && pick(z);
          return pairedRatio(ar.rxRuns, zr.rxRuns, key, am && key(am), zm && key(zm));
        };
        lines.push([
          `${SHORT[p]} / ${SHORT[base]}`,
          `${size} B`,
          has("rx") ? rx((r) => r.rxPerCoreMpps, (r) => r.rxCap) : "",
          has("rx") ? rx((r) => r.rxMpps, (r) => r.rx) : "",
          "",
          has("send")
            ? pairedRatio(
              ar.sendRuns,
              zr.sendRuns,
              (r) => r.sendMpps,
              a?.send?.sendMpps,
              z?.send?.sendMpps,
            )
            : "",
          rtts,
        ]);
      }
    }
  }
  const widths = head.map((_, i) => Math.max(...lines.map((l) => l[i].length)));
  const fmt = (l: string[]): string => l.map((c, i) => c.padEnd(widths[i])).join(" | ").trimEnd();
  const rule = widths.map((w) => "-".repeat(w)).join("-|-");
  return [fmt(lines[0]), rule, ...lines.slice(1).map(fmt)].join("\n");
}

/**
 * The `preload` test runs at the first of `--sizes` only (default 64 B): the bar is about
 * what a datagram costs the program, and every size costs 70-100 s more.
 */
function preloadSizes(cfg: Config): number[] {
  return cfg.sizes.slice(0, 1);
}

/** How a row's runs were carried: "nkb", "kernel", or both ("kernel 2/5") when they differ. */
function carriedBy(row: Row): string {
  const each = [
    ...row.rttRuns.map((r) => carrier(r.udpA, r.echoed)),
    ...row.rxRuns.map((r) => carrier(r.udpA, r.received)),
  ];
  if (each.length === 0) return "-";
  const kernel = each.filter((c) => c === "kernel").length;
  if (kernel === 0) return "nkb";
  return kernel === each.length ? "kernel" : `kernel ${kernel}/${each.length}`;
}

// The verdict against issue 15's bar, e.g. "met" or "missed: p99 0.34x > 0.30x".
function verdict(checks: [string, number | null, "<=" | ">=", number][], noLoss?: boolean): string {
  const missed: string[] = [];
  for (const [what, got, op, bar] of checks) {
    if (got === null) missed.push(`${what} not measured`);
    else if (op === "<=" ? got > bar : got < bar) {
      missed.push(`${what} ${got.toFixed(2)}x ${op === "<=" ? ">" : "<"} ${bar.toFixed(2)}x`);
    }
  }
  if (noLoss === false) missed.push("loss");
  return missed.length === 0 ? "met" : `missed: ${missed.join(", ")}`;
}

/**
 * The `preload` test's table: each unmodified program plainly and under the pre-load, and
 * the ratios (preload / plain, paired by repetition) next to issue 15's bar.
 */
function preloadTable(rows: Map<string, Row>, cfg: Config): string {
  const head = [
    "unmodified program",
    "payload",
    "carried by",
    "rtt p50/p99/p99.9 us",
    "rx capacity Mpps/core (busy %)",
    "rx delivered Mpps (loss %)",
    "bar (issue 15)",
  ];
  const lines: string[][] = [head];
  for (const size of preloadSizes(cfg)) {
    for (const program of ALL_PROGRAMS) {
      const get = (l: Launch): Row => rows.get(`${program} ${l}/${size}`) ?? emptyRow();
      const rtt = PROGRAMS[program].test === "rtt";
      for (const l of LAUNCHES) lines.push(preloadLine(`${program} ${l}`, size, get(l), rtt));
      const [z, a] = [get("plain"), get("preload")];
      if (rtt) lines.push(rttBarLine(program, size, a, z));
      else lines.push(...rxBarLines(program, size, a, z));
    }
  }
  const widths = head.map((_, i) => Math.max(...lines.map((l) => l[i].length)));
  const fmt = (l: string[]): string => l.map((c, i) => c.padEnd(widths[i])).join(" | ").trimEnd();
  const rule = widths.map((w) => "-".repeat(w)).join("-|-");
  return [fmt(lines[0]), rule, ...lines.slice(1).map(fmt)].join("\n");
}

// One program's figures, plainly or under the pre-load.
function preloadLine(label: string, size: number, r: Row, rtt: boolean): string[] {
  const t = r.rtt;
  const failed = (r.rttRuns.length + r.rxRuns.length === 0) ? "failed" : "";
  return [
    label,
    `${size} B`,
    carriedBy(r),
    rtt ? (t ? `${f(t.p50, 1)} / ${f(t.p99, 1)} / ${f(t.p999, 1)}` : failed) : "",
    rtt
      ? ""
      : r.rxCap?.rxPerCoreMpps != null
      ? `${f(r.rxCap.rxPerCoreMpps, 3)} (${f(r.rxCap.rxCpuPct!, 0)} %)`
      : failed,
    rtt ? "" : r.rx ? `${f(r.rx.rxMpps, 3)} (${f(r.rx.lossPct, 2)} %)` : failed,
    "",
  ];
}

function times(v: number | null): string {
  return v === null ? "-" : `${v.toFixed(2)}x`;
}

// An echo's ratios (`a` under the pre-load, `z` plain) against the round-trip bar.
function rttBarLine(program: Program, size: number, a: Row, z: Row): string[] {
  const ratioOf = (k: "p50" | "p99" | "p999"): number | null =>
    pairedRatioOf(a.rttRuns, z.rttRuns, (r) => r[k], a.rtt?.[k], z.rtt?.[k]);
  const [p50, p99, p999] = [ratioOf("p50"), ratioOf("p99"), ratioOf("p999")];
  return [
    `${program} preload / plain`,
    `${size} B`,
    "",
    `${times(p50)} / ${times(p99)} / ${times(p999)}`,
    "",
    "",
    `p50 <= ${PRELOAD_BAR.p50}x, p99 <= ${PRELOAD_BAR.p99}x: ` +
    verdict([["p50", p50, "<=", PRELOAD_BAR.p50], ["p99", p99, "<=", PRELOAD_BAR.p99]]) +
    (carriedBy(a) === "nkb" ? "" : " (the pre-load left its socket on the kernel)"),
  ];
}

// The receiver's paced runs (`a` under the pre-load), and its ratios to `z` (plain) against
// the capacity bar.
function rxBarLines(program: Program, size: number, a: Row, z: Row): string[][] {
  const cap = pairedRatioOf(
    a.rxRuns,
    z.rxRuns,
    (r) => r.rxPerCoreMpps,
    a.rxCap?.rxPerCoreMpps,
    z.rxCap?.rxPerCoreMpps,
  );
  const del = pairedRatioOf(a.rxRuns, z.rxRuns, (r) => r.rxMpps, a.rx?.rxMpps, z.rx?.rxMpps);
  const paced = a.pacedRuns ?? [];
  const lossless = paced.length > 0 ? paced.every((r) => r.received >= r.sent) : false;
  const pm = median(paced, (r) => r.lossPct);
  return [[
    `${program} preload, paced`,
    `${size} B`,
    paced.length > 0 ? carriedBy({ ...emptyRow(), rxRuns: paced }) : "",
    "",
    "",
    pm ? `${f(pm.rxMpps, 3)} (${f(pm.lossPct, 2)} %) of ${f(pm.sendMpps, 3)} offered` : "failed",
    `offered ${PRELOAD_BAR.capacity}x plain's capacity: ` +
    `${paced.filter((r) => r.received >= r.sent).length}/${paced.length} runs lost none`,
  ], [
    `${program} preload / plain`,
    `${size} B`,
    "",
    "",
    times(cap),
    times(del),
    `capacity >= ${PRELOAD_BAR.capacity}x, no loss: ` +
    verdict([["capacity", cap, ">=", PRELOAD_BAR.capacity]], lossless),
  ]];
}

// Every run's figure, so that the spread behind each median shows.
function spread(rows: Map<string, Row>): string {
  const out: string[] = [];
  for (const [key, r] of rows) {
    const rx = r.rxRuns.map((x) => `${f(x.rxMpps, 3)}/${f(x.lossPct, 1)}%`).join(" ");
    const offered = r.rxRuns.map((x) => f(x.sendMpps, 3)).join(" ");
    const perCore = r.rxRuns.filter((x) => x.rxPerCoreMpps !== null)
      .map((x) => `${f(x.rxPerCoreMpps!, 3)}/${f(x.rxCpuPct!, 0)}%`).join(" ");
    const send = r.sendRuns.map((x) => `${f(x.sendMpps, 3)}/${f(x.lossPct, 1)}%`).join(" ");
    const rtt = r.rttRuns.map((x) => `${f(x.p50, 1)}/${f(x.p99, 1)}/${f(x.p999, 1)}`).join(" ");
    out.push(
      `${key.replace("/", " ")} B: rx Mpps/loss ${rx || "-"} (offered ${offered || "-"}` +
        `${perCore ? `; per core/busy ${perCore}` : ""}); ` +
        `send Mpps/loss ${send || "-"}; rtt us ${rtt || "-"}`,
    );
  }
  return out.join("\n");
}

async function environment(): Promise<Record<string, unknown>> {
  const uname = await run(["uname", "-r"]);
  return {
    date: new Date().toISOString(),
    kernel: uname.stdout.trim(),
    cpus: navigator.hardwareConcurrency,
    deno: Deno.version.deno,
    lib: Deno.env.get("NKB_LIB") ?? LIB,
    loadavg: (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" "),
  };
}

// The preload test's method and table.
function printPreload(rows: Map<string, Row>, cfg: Config): void {
  console.log(
    `\nunmodified programs (issue 15), each run plainly (deno run) and under the pre-load ` +
      `(deno run --preload preload.ts --allow-ffi, receive mode 1: what nkb run starts), ` +
      `back to back (which goes first alternates); the ratios are preload / plain, the ` +
      `median of the repetitions'. Round trips against the same client as above; rx: the ` +
      `same generator into a for await receiver, capacity per core its datagrams per second ` +
      `of its process's CPU time from its first datagram to its last (a receiver in receive ` +
      `mode 1 spins while it waits, and that time counts: a lower bound); paced: the ` +
      `receiver under the pre-load offered ${PRELOAD_BAR.capacity}x the plain one's capacity ` +
      `of the same repetition (ceiling mqtx), which it must take without loss. carried by: side ` +
      `A's kernel UDP InDatagrams (nkb: at most ${BYPASS_KERNEL_SHARE * 100} % of the ` +
      `datagrams). deno-echo: ${PROGRAMS["deno-echo"].label} (bench/workers/plain_echo.ts); ` +
      `dgram-echo: ${PROGRAMS["dgram-echo"].label} (dgram_echo.ts; on the kernel under the ` +
      `pre-load until it takes node:dgram over); for-await: ` +
      `${PROGRAMS["for-await"].label} (plain_sink.ts).\n`,
  );
  console.log(preloadTable(rows, cfg));
}

async function main(): Promise<void> {
  const cfg = parseConfig(Deno.args);
  await ensureBuilt();
  const nativeBuild = ["send", "mq", "preload", "churn"].some((t) => cfg.tests.includes(t)) ||
      cfg.paths.includes("native")
    ? await ensureNative()
    : { path: null, built: false, command: [], error: "not needed" };
  const stale = Testbed.removeStale();
  if (stale.length > 0) console.error(`bench: removed stale namespaces ${stale.join(", ")}`);
  const env = await environment();
  const tb = await Testbed.create();
  const watchdog = setTimeout(() => {
    console.error(`bench: watchdog: still running after ${WATCHDOG_MS} ms, giving up`);
    tb.closeSync();
    Deno.exit(2);
  }, Math.max(1000, WATCHDOG_MS - (performance.now() - T_START)));
  Deno.unrefTimer(watchdog);
  const b: Bench = { tb, cfg, native: nativeBuild.path };
  let rows: Map<string, Row>;
  let idleResults: IdleResult[] | null = null;
  let mqRuns: Map<number, MqResult[]> | null = null;
  let churnRuns: ChurnResult[] | null = null;
  try {
    console.error(`bench: testbed ${tb.a.ns} (${tb.a.cidr}) <-> ${tb.b.ns} (${tb.b.cidr})`);
    if (cfg.tests.includes("idle")) idleResults = await attempt("idle CPU", () => idle(b));
    rows = PATH_TESTS_ALL.some((t) => cfg.tests.includes(t)) ? await measure(b) : new Map();
    if (cfg.tests.includes("preload")) await measurePreload(b, rows);
  } finally {
    await tb.close();
  }
  try {
    if (cfg.tests.includes("mq")) mqRuns = await attempt("multi-queue", () => multiQueue(b));
    if (cfg.tests.includes("churn")) churnRuns = await attempt("Worker churn", () => churnTest(b));
  } finally {
    clearTimeout(watchdog);
  }
  const seconds = (performance.now() - T_START) / 1000;
  const sendRx = RECEIVER_LABEL[sendReceiver(b)];
  console.log(
    `\nnkb bench: veth between two namespaces, traffic B -> A, ${env.cpus} CPUs, ` +
      `Linux ${env.kernel}, Deno ${env.deno}, load average at start ${env.loadavg}`,
  );
  console.log(`lib: ${env.lib}; native ceiling: ${nativeBuild.path ?? "not built"}`);
  console.log(
    `rx capacity and send rate: median of ${cfg.repeat} runs of ${cfg.durationMs} ms; ` +
      `ratios: the median of the repetitions' ratios (runs back to back). ` +
      `rx generator ("offered" is its rate): ${LABEL[generator(b)]} (batches of 256) for ` +
      `every receiver. rx capacity per core: the busy-polling receivers (recvMode 1) ` +
      `never wait: busy elsewhere for ${cfg.busyUs} us, then they drain the ring until ` +
      `it is empty, and again; the figure is datagrams drained per second of draining ` +
      `(saturated; the median over the datagrams of their drain's rate, after a warm-up: ` +
      `busy polling for 300 ms from the first datagram), busy % the share of the time ` +
      `they spent draining. The kernel path ` +
      `and recvMode 0 (which sleep when idle): datagrams per second of their process's ` +
      `CPU time, busy % that time's share. send-rate receiver: ${sendRx}.`,
  );
  console.log(
    `* loss < ${KEPT_UP_LOSS_PCT} %: the receiver kept up, so delivered is the ` +
      `generator's rate.`,
  );
  console.log(
    `round trip: ${cfg.rttRepeat} runs of ${cfg.rttCount} after ${cfg.rttWarmup} warm-up, ` +
      `each percentile the ` +
      `median of the runs'; client: python3 kernel UDP socket busy-polling a non-blocking recv; servers: ` +
      `Deno.listenDatagram echo (kernel), nkb receiveSync+sendSync loop in recvMode 1 ` +
      `(nkb copying) and 0, nkb receiveBatch+SendBatch.reply+sendBatch loop (nkb batch), ` +
      `native nkb_recv_batch(1)+nkb_send busy loop. Two-party runs: side A's process ` +
      `pinned to CPU 0, side B's to CPU 1.\n`,
  );
  if (PATH_TESTS_ALL.some((t) => cfg.tests.includes(t))) console.log(table(rows, cfg));
  if (cfg.tests.includes("preload")) printPreload(rows, cfg);
  if (idleResults !== null) {
    const idleText = idleResults.map((r) =>
      `${r.what} ${f(r.cpuPct, 1)} % (${r.ticks} ticks; schedstat ${f(r.schedPct, 2)} %)`
    ).join(", ");
    console.log(
      `\nidle CPU (a receiver waiting ${cfg.idleMs} ms, no traffic; /proc/<pid>/stat ` +
        `utime+stime / wall time): ${idleText}`,
    );
  }
  if (mqRuns !== null) console.log(`\n${mqTable(mqRuns, cfg)}`);
  if (churnRuns !== null) console.log(`\n${churnTable(churnRuns, cfg)}`);
  console.log(`\nper run:\n${spread(rows)}`);
  if (mqRuns !== null) {
    for (const [w, rs] of mqRuns) {
      const each = rs.map((r) => `${f(r.deliveredMpps, 3)}/${f(r.lossPct, 1)}%`).join(" ");
      console.log(`mq ${w} Worker(s): delivered Mpps/loss ${each || "-"}`);
    }
  }
  console.log(`\n${seconds.toFixed(0)} s`);
  if (errors.length > 0) console.log(`\nproblems:\n- ${errors.join("\n- ")}`);
  if (cfg.jsonPath !== null) {
    const raw = {
      environment: env,
      config: cfg,
      native: nativeBuild,
      idle: idleResults,
      multiQueue: mqRuns === null ? null : Object.fromEntries(mqRuns),
      churn: churnRuns,
      results: Object.fromEntries(rows),
      seconds,
      errors,
    };
    await Deno.writeTextFile(cfg.jsonPath, JSON.stringify(raw, null, 2) + "\n");
    console.log(`raw numbers: ${cfg.jsonPath}`);
  }
  if (errors.length > 0) Deno.exitCode = 1;
}

await main();
