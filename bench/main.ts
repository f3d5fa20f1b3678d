/**
 * The nkb benchmark: bypass path (UdpBypass) against kernel path
 * (Deno.listenDatagram) over the veth of a {@linkcode Testbed}.
 *
 * `deno task bench [--json PATH] [--duration-ms N] [--rtt-count N] [--repeat N]
 *  [--sizes 64,1024] [--tests rx,send,rtt]`
 *
 * Each figure is the median of `--repeat` runs (default 3; round trips: the run
 * with the median p99), bypass and kernel runs interleaved.
 *
 * Every figure comes from child processes in the testbed's namespaces
 * (bench/workers/), traffic flows from side B to side A:
 * - rx capacity: an nkb sender (sendSync in a tight loop) into an nkb receiver
 *   (receiveSync, recvMode 1) or a Deno.listenDatagram receiver; counted by
 *   sequence number until the end markers that follow a drain pause.
 * - send rate: an nkb sender (sendSync) or a Deno.listenDatagram sender (await
 *   each send) into an nkb receiver, which also counts.
 * - round trip: a busy-polling python3 kernel-socket client against an nkb echo
 *   server (receiveSync + sendSync busy loop) or a Deno.listenDatagram echo.
 *
 * @module
 */

import { run, Testbed, type TestbedProcess } from "../examples/testbed.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const WORKERS = `${ROOT}bench/workers/`;
const LIB = `${ROOT}zig-out/lib/libnkb.so`;
const BUILD_TIMEOUT_MS = 300_000;
const READY_TIMEOUT_MS = 20_000;
const RESULT_SLACK_MS = 20_000;
const EXIT_TIMEOUT_MS = 10_000;
const WATCHDOG_MS = 290_000;
const BASE_PORT = 9000;
const SETUP_TRIES = 3;
const RTT_TIMEOUT_MS = 100;

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
  tests: string[];
  jsonPath: string | null;
}

type Impl = "nkb" | "kernel";

/** One sender -> receiver run. */
interface FlowResult {
  sender: Impl;
  receiver: Impl;
  size: number;
  sent: number;
  received: number;
  lossPct: number;
  sendMpps: number;
  rxMpps: number;
  senderMs: number;
  receiverSpanMs: number;
  txFull: number;
  receiverStats: unknown;
  senderStats: unknown;
  udpA: Record<string, number>;
}

/** One round-trip run. */
interface RttResult {
  server: Impl;
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
  serverStats: unknown;
}

/** The figures of one path at one payload size: medians of the runs (null: every run failed). */
interface Row {
  rx: FlowResult | null;
  send: FlowResult | null;
  rtt: RttResult | null;
  rxRuns: FlowResult[];
  sendRuns: FlowResult[];
  rttRuns: RttResult[];
}

const errors: string[] = [];
let portSeq = 0;

function parseConfig(argv: string[]): Config {
  const args = argv[0] === "--" ? argv.slice(1) : argv; // `deno task bench -- ...` passes "--"
  const cfg: Config = {
    sizes: [64, 1024],
    durationMs: 2000,
    drainMs: 300,
    count: 50_000_000,
    rttCount: 20_000,
    rttWarmup: 2_000,
    rttMaxS: 30,
    repeat: 3,
    tests: ["rx", "send", "rtt"],
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
    else if (key === "--tests") cfg.tests = value.split(",");
    else if (key === "--sizes") cfg.sizes = value.split(",").map(Number);
    else throw new Error(`bad argument ${key} ${value}`);
  }
  if (!cfg.tests.every((t) => ["rx", "send", "rtt"].includes(t))) {
    throw new Error("--tests: a comma-separated subset of rx,send,rtt");
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

/** Builds the shim with ./nkbw build when it is missing or older than a source. */
async function ensureBuilt(): Promise<void> {
  let newest = 0;
  for (const e of Deno.readDirSync(`${ROOT}ffi`)) {
    if (e.isFile && /\.[ch]$/.test(e.name)) {
      newest = Math.max(newest, mtimeMs(`${ROOT}ffi/${e.name}`));
    }
  }
  const lib = mtimeMs(LIB);
  if (lib >= 0 && lib >= newest) return;
  console.error(`bench: ${lib < 0 ? "no" : "stale"} ${LIB}: running ./nkbw build`);
  const r = await run([`${ROOT}nkbw`, "build"], BUILD_TIMEOUT_MS);
  if (r.code !== 0) throw new Error(`./nkbw build failed (${r.code}):\n${r.stderr}${r.stdout}`);
}

function num(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isFinite(v)) throw new Error(`${what}: not a number: ${v}`);
  return v;
}

function rec(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== "object" || v === null) throw new Error(`${what}: not an object`);
  return v as Record<string, unknown>;
}

// Spawns a worker and waits for its "ready"; an nkb worker must be on the bypass path.
async function startWorker(
  tb: Testbed,
  side: "a" | "b",
  script: string,
  impl: Impl,
  args: string[],
): Promise<TestbedProcess> {
  for (let attempt = 1; attempt <= SETUP_TRIES; attempt++) {
    const child = tb.spawnDeno(side, WORKERS + script, ["--impl", impl, ...args], {
      name: `${script}[${impl}]@${side}`,
    });
    const ready = await child.nextWith("ready", READY_TIMEOUT_MS);
    const bypass = ready.bypass as { active?: boolean; reason?: string; detail?: string } | null;
    if (impl === "kernel" || bypass?.active === true) return child;
    await child.dispose();
    const why = `${child.name}: not on the bypass path: ${bypass?.reason} (${bypass?.detail})`;
    if (attempt === SETUP_TRIES) throw new Error(why);
    console.error(`bench: ${why}; retrying`);
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error("unreachable");
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
  tb: Testbed,
  cfg: Config,
  sender: Impl,
  receiver: Impl,
  size: number,
): Promise<FlowResult> {
  const port = BASE_PORT + 2 * portSeq++;
  const udpBefore = await tb.udpCounters("a");
  const maxMs = cfg.durationMs + RESULT_SLACK_MS;
  const sink = await startWorker(tb, "a", "sink.ts", receiver, [
    ...["--host", tb.a.ip, "--port", `${port}`, "--max-ms", `${maxMs}`],
  ]);
  const blast = await startWorker(tb, "b", "blast.ts", sender, [
    ...["--src", tb.b.ip, "--sport", `${port + 1}`, "--dst", tb.a.ip, "--port", `${port}`],
    ...["--size", `${size}`, "--duration-ms", `${cfg.durationMs}`, "--count", `${cfg.count}`],
    ...["--drain-ms", `${cfg.drainMs}`],
  ]);
  const sr = rec((await blast.nextWith("result", maxMs)).result, "sender result");
  const rr = rec((await sink.nextWith("result", maxMs)).result, "receiver result");
  await Promise.all([blast.wait(EXIT_TIMEOUT_MS), sink.wait(EXIT_TIMEOUT_MS)]);
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
    txFull: num(sr.txFull, "txFull"),
    receiverStats: rr.stats,
    senderStats: sr.stats,
    udpA,
  };
}

async function rtt(tb: Testbed, cfg: Config, server: Impl, size: number): Promise<RttResult> {
  const port = BASE_PORT + 2 * portSeq++;
  const maxMs = cfg.rttMaxS * 1000 + RESULT_SLACK_MS;
  const echo = await startWorker(tb, "a", "echo.ts", server, [
    ...["--host", tb.a.ip, "--port", `${port}`, "--max-ms", `${maxMs}`],
  ]);
  const client = tb.spawn("b", [
    "python3",
    `${WORKERS}rtt_client.py`,
    ...[tb.b.ip, tb.a.ip, `${port}`, `${size}`, `${cfg.rttCount}`, `${cfg.rttWarmup}`],
    ...[`${cfg.rttMaxS}`, `${RTT_TIMEOUT_MS}`],
  ], { name: `rtt_client.py@b` });
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
    serverStats: er.stats,
  };
}

// Runs one measurement; a failure is recorded and the benchmark goes on.
async function attempt<T>(what: string, fn: () => Promise<T>): Promise<T | null> {
  const t0 = performance.now();
  try {
    const r = await fn();
    console.error(`bench: ${what}: done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    return r;
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    errors.push(`${what}: ${msg}`);
    console.error(`bench: ${what}: FAILED: ${msg}`);
    return null;
  }
}

async function measure(tb: Testbed, cfg: Config): Promise<Map<string, Row>> {
  const rows = new Map<string, Row>();
  const paths = ["bypass", "kernel"] as const;
  for (const size of cfg.sizes) {
    for (const path of paths) {
      const row: Row = { rx: null, send: null, rtt: null, rxRuns: [], sendRuns: [], rttRuns: [] };
      rows.set(`${path}/${size}`, row);
    }
    // Repetitions interleave the paths, so that a disturbance hits both alike.
    for (let i = 1; i <= cfg.repeat; i++) {
      for (const path of paths) {
        const impl: Impl = path === "bypass" ? "nkb" : "kernel";
        const row = rows.get(`${path}/${size}`)!;
        const tag = `${path} ${size} B, run ${i}/${cfg.repeat}`;
        const want = (t: string): boolean => cfg.tests.includes(t);
        const rx = want("rx")
          ? await attempt(`rx capacity ${tag}`, () => flow(tb, cfg, "nkb", impl, size))
          : null;
        if (rx !== null) row.rxRuns.push(rx);
        const send = want("send")
          ? await attempt(`send rate ${tag}`, () => flow(tb, cfg, impl, "nkb", size))
          : null;
        if (send !== null) row.sendRuns.push(send);
        const r = want("rtt")
          ? await attempt(`round trip ${tag}`, () => rtt(tb, cfg, impl, size))
          : null;
        if (r !== null) row.rttRuns.push(r);
      }
    }
    for (const path of paths) {
      const row = rows.get(`${path}/${size}`)!;
      row.rx = median(row.rxRuns, (r) => r.rxMpps);
      row.send = median(row.sendRuns, (r) => r.sendMpps);
      row.rtt = median(row.rttRuns, (r) => r.p99);
    }
  }
  return rows;
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

function table(rows: Map<string, Row>, cfg: Config): string {
  const { sizes, tests } = cfg;
  const none = (t: string): string => tests.includes(t) ? "failed" : "-";
  const head = [
    "path",
    "payload",
    "rx capacity Mpps (loss %)",
    "offered Mpps",
    "send rate Mpps (loss %)",
  ];
  head.push("rtt p50/p99/p99.9 us");
  const lines: string[][] = [head];
  for (const size of sizes) {
    const b = rows.get(`bypass/${size}`);
    const k = rows.get(`kernel/${size}`);
    for (const [name, r] of [["bypass", b], ["kernel", k]] as const) {
      const t = r?.rtt ?? undefined;
      lines.push([
        name,
        `${size} B`,
        r?.rx ? `${f(r.rx.rxMpps, 3)} (${f(r.rx.lossPct, 2)} %)` : none("rx"),
        r?.rx ? f(r.rx.sendMpps, 3) : "-",
        r?.send ? `${f(r.send.sendMpps, 3)} (${f(r.send.lossPct, 2)} %)` : none("send"),
        t ? `${f(t.p50, 1)} / ${f(t.p99, 1)} / ${f(t.p999, 1)}` : none("rtt"),
      ]);
    }
    const rt = (r: Row | undefined, key: "p50" | "p99" | "p999"): number | undefined =>
      r?.rtt?.[key];
    lines.push([
      "bypass/kernel",
      `${size} B`,
      ratio(b?.rx?.rxMpps, k?.rx?.rxMpps),
      "",
      ratio(b?.send?.sendMpps, k?.send?.sendMpps),
      `${ratio(rt(b, "p50"), rt(k, "p50"))} / ${ratio(rt(b, "p99"), rt(k, "p99"))} / ${
        ratio(rt(b, "p999"), rt(k, "p999"))
      }`,
    ]);
  }
  const widths = head.map((_, i) => Math.max(...lines.map((l) => l[i].length)));
  const fmt = (l: string[]): string => l.map((c, i) => c.padEnd(widths[i])).join(" | ").trimEnd();
  const rule = widths.map((w) => "-".repeat(w)).join("-|-");
  return [fmt(lines[0]), rule, ...lines.slice(1).map(fmt)].join("\n");
}

// Every run's figure, so that the spread behind each median shows.
function spread(rows: Map<string, Row>): string {
  const out: string[] = [];
  for (const [key, r] of rows) {
    const rx = r.rxRuns.map((x) => `${f(x.rxMpps, 3)}/${f(x.lossPct, 1)}%`).join(" ");
    const send = r.sendRuns.map((x) => f(x.sendMpps, 3)).join(" ");
    const rtt = r.rttRuns.map((x) => `${f(x.p50, 1)}/${f(x.p99, 1)}/${f(x.p999, 1)}`).join(" ");
    out.push(
      `${key.replace("/", " ")} B: rx Mpps/loss ${rx || "-"}; send Mpps ${send || "-"}; ` +
        `rtt us ${rtt || "-"}`,
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

async function main(): Promise<void> {
  const cfg = parseConfig(Deno.args);
  await ensureBuilt();
  const stale = Testbed.removeStale();
  if (stale.length > 0) console.error(`bench: removed stale namespaces ${stale.join(", ")}`);
  const env = await environment();
  const t0 = performance.now();
  const tb = await Testbed.create();
  const watchdog = setTimeout(() => {
    console.error(`bench: watchdog: still running after ${WATCHDOG_MS} ms, giving up`);
    tb.closeSync();
    Deno.exit(2);
  }, WATCHDOG_MS);
  Deno.unrefTimer(watchdog);
  let rows: Map<string, Row>;
  try {
    console.error(`bench: testbed ${tb.a.ns} (${tb.a.cidr}) <-> ${tb.b.ns} (${tb.b.cidr})`);
    rows = await measure(tb, cfg);
  } finally {
    clearTimeout(watchdog);
    await tb.close();
  }
  const seconds = (performance.now() - t0) / 1000;
  console.log(
    `\nnkb bench: veth between two namespaces, traffic B -> A, ${env.cpus} CPUs, ` +
      `Linux ${env.kernel}, Deno ${env.deno}, load average at start ${env.loadavg}`,
  );
  console.log(`lib: ${env.lib}`);
  console.log(
    `rx capacity and send rate: median of ${cfg.repeat} runs of ${cfg.durationMs} ms; ` +
      `rx capacity generator: nkb ` +
      `sendSync loop ("offered" is its rate); send-rate receiver: nkb receiveSync (recvMode 1)`,
  );
  console.log(
    `round trip: ${cfg.rttCount} after ${cfg.rttWarmup} warm-up, the run with the median p99; client: python3 kernel UDP ` +
      `socket busy-polling a non-blocking recv; server: nkb receiveSync+sendSync busy loop ` +
      `(bypass) or Deno.listenDatagram echo (kernel)\n`,
  );
  console.log(table(rows, cfg));
  console.log(`\nper run:\n${spread(rows)}`);
  console.log(`\n${seconds.toFixed(0)} s`);
  if (errors.length > 0) console.log(`\nproblems:\n- ${errors.join("\n- ")}`);
  if (cfg.jsonPath !== null) {
    const raw = { environment: env, config: cfg, results: Object.fromEntries(rows), errors };
    await Deno.writeTextFile(cfg.jsonPath, JSON.stringify(raw, null, 2) + "\n");
    console.log(`raw numbers: ${cfg.jsonPath}`);
  }
  if (errors.length > 0) Deno.exitCode = 1;
}

await main();
