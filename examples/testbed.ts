/**
 * The embedded default network: two network namespaces joined by a veth pair,
 * for the demo, the benchmark and the integration tests. Addresses come from
 * 198.18.0.0/15 only (the benchmarking block of RFC 2544), so nothing here can
 * collide with a real network. Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and `ip` (iproute2).
 *
 * Deleting the namespaces removes the veth. Every testbed this process created
 * is also deleted on SIGINT, SIGTERM, an uncaught error and at exit, and
 * {@linkcode Testbed.removeStale} deletes what a killed earlier run left.
 *
 * @example
 * ```ts
 * await using tb = await Testbed.create();
 * console.log(await tb.execOk("a", ["ping", "-c", "1", tb.b.ip]));
 * const child = tb.spawnDeno("b", "worker.ts", ["--port", "9000"]);
 * console.log(await child.nextWith("ready", 10_000));
 * ```
 *
 * @module
 */

/** One side of the testbed. */
export type Side = "a" | "b";

/** What a side is made of. */
export interface TestbedSide {
  /** The network namespace's name. */
  readonly ns: string;
  /** The veth end in that namespace. */
  readonly ifname: string;
  /** Its IPv4 address (no prefix). */
  readonly ip: string;
  /** Its address with prefix, e.g. `198.18.0.1/24`. */
  readonly cidr: string;
}

/** Options of {@linkcode Testbed.create}. */
export interface TestbedOptions {
  /**
   * The third octet of both addresses (198.18.X.1 and 198.18.X.2), 0..255; default 0.
   * `"next"`: 1..250 in turn from a random start, so each testbed of this process
   * gets another /24.
   */
  thirdOctet?: number | "next";
  /** veth receive queues per end (`ip link ... numrxqueues N`); default: the kernel's (1). */
  numRxQueues?: number;
  /** veth transmit queues per end (`ip link ... numtxqueues N`); default: the kernel's (1). */
  numTxQueues?: number;
  /** MTU of both ends; default: the kernel's (1500). */
  mtu?: number;
  /** Keep IPv6 on (default false: disabled, so the link carries no background traffic). */
  ipv6?: boolean;
  /** Bound of each setup command in milliseconds; default 10000. */
  commandTimeoutMs?: number;
  /**
   * The directory of relative scripts given to {@linkcode Testbed.spawnDeno} and
   * {@linkcode Testbed.spawnPython}; default: the current directory.
   */
  scriptDir?: string;
}

/** Output of a finished command. */
export interface ExecResult {
  /** Exit code (non-zero also when the command timed out and was killed). */
  code: number;
  /** Its standard output. */
  stdout: string;
  /** Its standard error. */
  stderr: string;
}

/** Options of {@linkcode Testbed.spawn} and the script starters built on it. */
export interface SpawnOptions {
  /** Variables added to the inherited environment. */
  env?: Record<string, string>;
  /** Pipe stdin (for {@linkcode TestbedProcess.send}); default: stdin is /dev/null. */
  stdin?: boolean;
  /** A name for messages; default: the script or command and the side. */
  name?: string;
  /** Called with each stdout line (the line is also kept and parsed). */
  onStdout?: (line: string) => void;
  /** Called with each stderr line (the last few thousand characters are also kept). */
  onStderr?: (line: string) => void;
}

/** One parsed stdout line: the JSON object printed, or `{ raw }` for any other line. */
export type Message = Record<string, unknown>;

/** /proc/net/snmp `Udp:` counters by name (InDatagrams, NoPorts, InErrors, RcvbufErrors...). */
export type UdpCounters = Record<string, number>;

const NAME_PREFIX = "nkb-";
const STALE_NS = /^nkb-[0-9a-f]{4}-(\d+)-[ab]$/;
const DEFAULT_TIMEOUT_MS = 10_000;
const CARRIER_TIMEOUT_MS = 5_000;
const DISPOSE_TIMEOUT_MS = 3_000;
const STDERR_KEEP_CHARS = 8_000;
const MAX_QUEUES = 64;
const decoder = new TextDecoder();
let lastOctet = Math.floor(Math.random() * 250); // for thirdOctet "next"

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Runs a command on the host, killed after `timeoutMs`. */
export async function run(cmd: string[], timeoutMs = DEFAULT_TIMEOUT_MS): Promise<ExecResult> {
  if (cmd.length === 0) throw new TypeError("run: empty command");
  const out = await new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  }).output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** Like {@linkcode run}, but a non-zero exit throws with the command's stderr. */
export async function runOk(cmd: string[], timeoutMs = DEFAULT_TIMEOUT_MS): Promise<string> {
  const r = await run(cmd, timeoutMs);
  if (r.code !== 0) {
    throw new Error(`${cmd.join(" ")} exited ${r.code}: ${(r.stderr + r.stdout).trim()}`);
  }
  return r.stdout;
}

/** Parses the two `Udp:` lines of /proc/net/snmp. */
export function parseUdpCounters(text: string): UdpCounters {
  const lines = text.split("\n").filter((l) => l.startsWith("Udp: "));
  if (lines.length < 2) throw new Error("no Udp: lines in /proc/net/snmp");
  const names = lines[0].trim().split(/\s+/).slice(1);
  const values = lines[1].trim().split(/\s+/).slice(1).map(Number);
  if (names.length !== values.length) throw new Error("malformed Udp: lines in /proc/net/snmp");
  const out: UdpCounters = {};
  names.forEach((n, i) => out[n] = values[i]);
  return out;
}

/**
 * A process started in a namespace. Its stdout is read as lines (JSON objects
 * are parsed); every wait is bounded and a failed wait throws with the
 * process's recent stderr.
 */
export class TestbedProcess {
  /** The name used in messages. */
  readonly name: string;
  /** The underlying process (its stdout and stderr are already being read). */
  readonly proc: Deno.ChildProcess;
  readonly #messages: Message[] = [];
  readonly #lines: string[] = [];
  readonly #writer: WritableStreamDefaultWriter<Uint8Array> | null;
  readonly #done: Promise<void>;
  #cursor = 0;
  #stderr = "";
  #exited: Deno.CommandStatus | null = null;
  #wake: (() => void) | null = null;

  /** Wraps a spawned process whose stdout and stderr are piped. */
  constructor(name: string, proc: Deno.ChildProcess, opts: SpawnOptions = {}) {
    this.name = name;
    this.proc = proc;
    this.#writer = opts.stdin ? proc.stdin.getWriter() : null;
    const out = readLines(proc.stdout, (line) => {
      opts.onStdout?.(line);
      this.#push(line);
    });
    const err = readLines(proc.stderr, (line) => {
      opts.onStderr?.(line);
      this.#stderr = (this.#stderr + line + "\n").slice(-STDERR_KEEP_CHARS);
    });
    this.#done = Promise.all([out, err, proc.status]).then(([, , status]) => {
      this.#exited = status;
      this.#notify();
    });
  }

  /** The process id (`ip netns exec` execs the command, so this is the command's pid). */
  get pid(): number {
    return this.proc.pid;
  }

  /** The exit status once the process exited and its output was read; else null. */
  get exited(): Deno.CommandStatus | null {
    return this.#exited;
  }

  /** The last few thousand characters of stderr. */
  get stderr(): string {
    return this.#stderr;
  }

  /** Every stdout line so far. */
  get lines(): readonly string[] {
    return this.#lines;
  }

  /** Every parsed stdout line so far. */
  get messages(): readonly Message[] {
    return this.#messages;
  }

  /** Waits up to `timeoutMs` for the next message (after those returned before) matching `pred`. */
  async next(
    pred: (m: Message) => boolean,
    timeoutMs: number,
    what = "a message",
  ): Promise<Message> {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < 1e7; i++) {
      while (this.#cursor < this.#messages.length) {
        const m = this.#messages[this.#cursor++];
        if (pred(m)) return m;
      }
      if (this.#exited !== null) {
        const { code, signal } = this.#exited;
        throw new Error(
          `${this.name}: exited (code ${code}, signal ${signal}) before ${what}` + this.#tail(),
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`${this.name}: no ${what} within ${timeoutMs} ms` + this.#tail());
      }
      await this.#sleepOrWake(left);
    }
    throw new Error(`${this.name}: gave up waiting for ${what}`);
  }

  /** Waits up to `timeoutMs` for a message that has the key `key`. */
  nextWith(key: string, timeoutMs: number): Promise<Message> {
    return this.next((m) => key in m, timeoutMs, `"${key}" message`);
  }

  /** Writes one JSON line to stdin (spawned with `stdin: true`). */
  async send(msg: Message): Promise<void> {
    if (this.#writer === null) throw new Error(`${this.name}: stdin is not piped`);
    await this.#writer.write(new TextEncoder().encode(JSON.stringify(msg) + "\n"));
  }

  /** Waits up to `timeoutMs` for the exit; on timeout kills the process and throws. */
  async wait(timeoutMs: number): Promise<Deno.CommandStatus> {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < 1e7 && this.#exited === null; i++) {
      const left = deadline - Date.now();
      if (left <= 0) {
        this.kill("SIGKILL");
        throw new Error(`${this.name}: did not exit within ${timeoutMs} ms` + this.#tail());
      }
      await this.#sleepOrWake(left);
    }
    if (this.#exited === null) throw new Error(`${this.name}: gave up waiting for the exit`);
    return this.#exited;
  }

  /** Sends a signal; a process that already exited is not an error. */
  kill(signal: Deno.Signal = "SIGKILL"): void {
    if (this.#exited !== null) return;
    try {
      this.proc.kill(signal);
    } catch {
      // already gone
    }
  }

  /** Closes stdin, kills the process if it still runs, waits (bounded) for its streams. */
  async dispose(): Promise<void> {
    try {
      await this.#writer?.close();
    } catch {
      // the process may be gone
    }
    this.kill("SIGKILL");
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#done,
      new Promise<void>((resolve) => timer = setTimeout(resolve, DISPOSE_TIMEOUT_MS)),
    ]);
    clearTimeout(timer);
  }

  #tail(): string {
    const msgs = JSON.stringify(this.#messages).slice(-1500);
    return `; messages ${msgs}; stderr:\n${this.#stderr}`;
  }

  #push(line: string): void {
    const text = line.trim();
    if (text === "") return;
    this.#lines.push(text);
    let msg: Message;
    try {
      const v = JSON.parse(text);
      msg = typeof v === "object" && v !== null && !Array.isArray(v) ? v : { raw: text };
    } catch {
      msg = { raw: text };
    }
    this.#messages.push(msg);
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  async #sleepOrWake(ms: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await new Promise<void>((resolve) => {
      this.#wake = resolve;
      timer = setTimeout(resolve, Math.min(ms, 1000));
    });
    clearTimeout(timer);
  }
}

async function readLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  const dec = new TextDecoder();
  let rest = "";
  try {
    for await (const chunk of stream) {
      rest += dec.decode(chunk, { stream: true });
      for (let nl = rest.indexOf("\n"); nl >= 0; nl = rest.indexOf("\n")) {
        onLine(rest.slice(0, nl));
        rest = rest.slice(nl + 1);
      }
    }
  } catch {
    // the stream ends with the process
  }
  if (rest !== "") onLine(rest);
}

// ---- the process-wide safety net ----------------------------------------------------------------

const live = new Set<Testbed>();
let hooked = false;

function cleanupAllSync(): void {
  for (const tb of [...live]) tb.closeSync();
}

function onSigint(): void {
  cleanupAllSync();
  Deno.exit(130);
}

function onSigterm(): void {
  cleanupAllSync();
  Deno.exit(143);
}

// unload: normal end and Deno.exit(); error/unhandledrejection: an uncaught failure (no unload).
const CLEANUP_EVENTS = ["unload", "error", "unhandledrejection"] as const;

function hook(): void {
  if (hooked) return;
  hooked = true;
  Deno.addSignalListener("SIGINT", onSigint);
  Deno.addSignalListener("SIGTERM", onSigterm);
  for (const ev of CLEANUP_EVENTS) globalThis.addEventListener(ev, cleanupAllSync);
}

function unhookIfIdle(): void {
  if (!hooked || live.size > 0) return;
  hooked = false;
  Deno.removeSignalListener("SIGINT", onSigint);
  Deno.removeSignalListener("SIGTERM", onSigterm);
  for (const ev of CLEANUP_EVENTS) globalThis.removeEventListener(ev, cleanupAllSync);
}

function listNamespaces(): string[] {
  const out = new Deno.Command("ip", { args: ["netns", "list"], stdout: "piped", stderr: "null" })
    .outputSync();
  return decoder.decode(out.stdout).split("\n").map((l) => l.split(" ")[0]).filter((n) => n);
}

function deleteNamespaceSync(ns: string): void {
  new Deno.Command("ip", { args: ["netns", "del", ns], stdout: "null", stderr: "null" })
    .outputSync();
}

function pidAlive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

function checkCount(what: string, n: number | undefined, max: number): void {
  if (n !== undefined && !(Number.isInteger(n) && n >= 1 && n <= max)) {
    throw new RangeError(`${what} must be an integer 1..${max}, got ${n}`);
  }
}

/**
 * Two namespaces `a` and `b` joined by a veth pair. Create with
 * {@linkcode Testbed.create}; remove with {@linkcode Testbed.close} or
 * `await using`.
 */
export class Testbed {
  /** The short random id in every name (4 hex digits). */
  readonly id: string;
  /** Side A: namespace `nkb-<id>-<pid>-a`, address 198.18.X.1/24. */
  readonly a: TestbedSide;
  /** Side B: namespace `nkb-<id>-<pid>-b`, address 198.18.X.2/24. */
  readonly b: TestbedSide;
  readonly #opts: TestbedOptions;
  readonly #children = new Set<TestbedProcess>();
  #closed = false;

  private constructor(opts: TestbedOptions) {
    if (opts.thirdOctet === "next") lastOctet = lastOctet % 250 + 1;
    const octet = opts.thirdOctet === "next" ? lastOctet : opts.thirdOctet ?? 0;
    if (!Number.isInteger(octet) || octet < 0 || octet > 255) {
      throw new RangeError(`thirdOctet must be an integer 0..255, got ${octet}`);
    }
    checkCount("numRxQueues", opts.numRxQueues, MAX_QUEUES);
    checkCount("numTxQueues", opts.numTxQueues, MAX_QUEUES);
    if (opts.mtu !== undefined && !(Number.isInteger(opts.mtu) && opts.mtu >= 68)) {
      throw new RangeError(`mtu must be an integer >= 68, got ${opts.mtu}`);
    }
    this.#opts = opts;
    this.id = crypto.getRandomValues(new Uint16Array(1))[0].toString(16).padStart(4, "0");
    const side = (s: Side, host: number): TestbedSide => {
      const ifname = `nk${this.id}${Deno.pid}${s}`; // 2 + 4 + at most 7 + 1 <= 15
      const ip = `198.18.${octet}.${host}`;
      return { ns: `${NAME_PREFIX}${this.id}-${Deno.pid}-${s}`, ifname, ip, cidr: `${ip}/24` };
    };
    this.a = side("a", 1);
    this.b = side("b", 2);
    if (this.a.ifname.length > 15) throw new Error(`interface name ${this.a.ifname} too long`);
  }

  /** Creates both namespaces, the veth pair and the addresses; waits (bounded) for carrier. */
  static async create(opts: TestbedOptions = {}): Promise<Testbed> {
    const tb = new Testbed(opts);
    live.add(tb);
    hook();
    try {
      await tb.#setup();
    } catch (e) {
      await tb.close();
      throw e;
    }
    return tb;
  }

  /** Deletes `nkb-<id>-<pid>-a|b` namespaces whose creating process is gone; returns them. */
  static removeStale(): string[] {
    const removed: string[] = [];
    for (const ns of listNamespaces()) {
      const m = STALE_NS.exec(ns);
      if (m === null || Number(m[1]) === Deno.pid || pidAlive(Number(m[1]))) continue;
      deleteNamespaceSync(ns);
      removed.push(ns);
    }
    return removed;
  }

  /** The side named `s`. */
  side(s: Side): TestbedSide {
    return s === "a" ? this.a : this.b;
  }

  /** Whether {@linkcode close} has run. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Runs `cmd` in side `s`'s namespace, killed after `timeoutMs`. */
  exec(s: Side, cmd: string[], timeoutMs: number = this.#timeout()): Promise<ExecResult> {
    this.#checkOpen();
    return run(["ip", "netns", "exec", this.side(s).ns, ...cmd], timeoutMs);
  }

  /** Like {@linkcode exec}, but a non-zero exit throws. */
  execOk(s: Side, cmd: string[], timeoutMs: number = this.#timeout()): Promise<string> {
    this.#checkOpen();
    return runOk(["ip", "netns", "exec", this.side(s).ns, ...cmd], timeoutMs);
  }

  /** Starts `cmd` in side `s`'s namespace with stdout and stderr piped. */
  spawn(s: Side, cmd: string[], opts: SpawnOptions = {}): TestbedProcess {
    this.#checkOpen();
    if (cmd.length === 0) throw new TypeError("spawn: empty command");
    const proc = new Deno.Command("ip", {
      args: ["netns", "exec", this.side(s).ns, ...cmd],
      stdin: opts.stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
      env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1", ...opts.env },
    }).spawn();
    const name = opts.name ?? `${cmd.slice(0, 2).join(" ")}@${s}`;
    const child = new TestbedProcess(name, proc, opts);
    this.#children.add(child);
    return child;
  }

  /**
   * Starts `<this deno> run -A --unstable-net --no-lock script ...args` in side
   * `s`'s namespace. A relative `script` is taken from `scriptDir`.
   */
  spawnDeno(s: Side, script: string, args: string[] = [], opts: SpawnOptions = {}): TestbedProcess {
    const deno = [Deno.execPath(), "run", "-A", "--unstable-net", "--no-lock"];
    return this.#spawnScript(s, deno, script, args, opts);
  }

  /**
   * Starts `python3 script ...args` in side `s`'s namespace. A relative
   * `script` is taken from `scriptDir`.
   */
  spawnPython(
    s: Side,
    script: string,
    args: string[] = [],
    opts: SpawnOptions = {},
  ): TestbedProcess {
    return this.#spawnScript(s, ["python3"], script, args, opts);
  }

  /** The processes spawned so far (killed by {@linkcode close}). */
  get children(): ReadonlySet<TestbedProcess> {
    return this.#children;
  }

  /** The `Udp:` counters of /proc/net/snmp in side `s`'s namespace. */
  async udpCounters(s: Side): Promise<UdpCounters> {
    return parseUdpCounters(await this.execOk(s, ["cat", "/proc/net/snmp"]));
  }

  /** `ip -d link show dev ifname` in side `s`'s namespace (default: the side's veth end). */
  linkText(s: Side, ifname: string = this.side(s).ifname): Promise<string> {
    return this.execOk(s, ["ip", "-d", "link", "show", "dev", ifname]);
  }

  /** Whether an XDP program (native, generic or offload) is attached to `ifname` in side `s`. */
  async xdpAttached(s: Side, ifname: string = this.side(s).ifname): Promise<boolean> {
    return /\bprog\/xdp|\bxdp(generic|drv|offload)?\b/.test(await this.linkText(s, ifname));
  }

  /** The MAC address of `ifname` in side `s` (default: the side's veth end). */
  async mac(s: Side, ifname: string = this.side(s).ifname): Promise<string> {
    return (await this.execOk(s, ["cat", `/sys/class/net/${ifname}/address`])).trim();
  }

  /** `ip neigh show dev ifname` in side `s`'s namespace (default: the side's veth end). */
  neigh(s: Side, ifname: string = this.side(s).ifname): Promise<string> {
    return this.execOk(s, ["ip", "neigh", "show", "dev", ifname]);
  }

  /** Kills the children, then deletes both namespaces (and so the veth). Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all([...this.#children].map((c) => c.dispose()));
    this.#children.clear();
    const errors: string[] = [];
    for (const ns of [this.a.ns, this.b.ns]) {
      const r = await run(["ip", "netns", "del", ns], this.#timeout());
      if (r.code !== 0 && !/No such file|not found/i.test(r.stderr)) {
        errors.push(`ip netns del ${ns}: ${r.stderr.trim()}`);
      }
    }
    live.delete(this);
    unhookIfIdle();
    if (errors.length > 0) throw new Error(`testbed cleanup: ${errors.join("; ")}`);
  }

  /** The synchronous {@linkcode close} of the safety net: kills the children, deletes the namespaces. */
  closeSync(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const c of this.#children) c.kill("SIGKILL");
    const present = new Set(listNamespaces());
    for (const ns of [this.a.ns, this.b.ns]) if (present.has(ns)) deleteNamespaceSync(ns);
    live.delete(this);
    unhookIfIdle();
  }

  /** Removes the testbed with `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #timeout(): number {
    return this.#opts.commandTimeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  #spawnScript(
    s: Side,
    interpreter: string[],
    script: string,
    args: string[],
    opts: SpawnOptions,
  ): TestbedProcess {
    const dir = this.#opts.scriptDir;
    const path = script.startsWith("/") || !dir ? script : `${dir.replace(/\/*$/, "/")}${script}`;
    const base = script.slice(script.lastIndexOf("/") + 1);
    return this.spawn(s, [...interpreter, path, ...args], {
      ...opts,
      name: opts.name ?? `${base}@${s}`,
    });
  }

  #checkOpen(): void {
    if (this.#closed) throw new Error(`testbed ${this.id} is closed`);
  }

  async #setup(): Promise<void> {
    const t = this.#timeout();
    const { a, b } = this;
    await runOk(["ip", "netns", "add", a.ns], t);
    await runOk(["ip", "netns", "add", b.ns], t);
    const queues: string[] = [];
    if (this.#opts.numRxQueues) queues.push("numrxqueues", String(this.#opts.numRxQueues));
    if (this.#opts.numTxQueues) queues.push("numtxqueues", String(this.#opts.numTxQueues));
    await runOk([
      "ip",
      "link",
      "add",
      a.ifname,
      "netns",
      a.ns,
      ...queues,
      "type",
      "veth",
      "peer",
      "name",
      b.ifname,
      "netns",
      b.ns,
      ...queues,
    ], t);
    for (const s of ["a", "b"] as const) {
      const side = this.side(s);
      if (!this.#opts.ipv6) {
        await this.execOk(s, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], t);
        await this.execOk(s, ["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"], t);
      }
      await this.execOk(s, ["ip", "link", "set", "dev", "lo", "up"], t);
      if (this.#opts.mtu !== undefined) {
        await this.execOk(s, ["ip", "link", "set", "dev", side.ifname, "mtu", `${this.#opts.mtu}`]);
      }
      await this.execOk(s, ["ip", "addr", "add", side.cidr, "dev", side.ifname], t);
      await this.execOk(s, ["ip", "link", "set", "dev", side.ifname, "up"], t);
    }
    await this.#waitCarrier(CARRIER_TIMEOUT_MS);
    // Each side knows the other's MAC from the start, as hosts that have talked before
    // do: nkb never waits for ARP (a send to an unresolved neighbour goes through the
    // kernel), so a cold neighbour table would put a test's first datagrams there.
    // (STALE: usable, and confirmed by the kernel on first use, as a learned entry is.)
    const macs = { a: await this.mac("a"), b: await this.mac("b") };
    for (const [s, peer] of [["a", "b"], ["b", "a"]] as const) {
      const [side, other] = [this.side(s), this.side(peer)];
      await this.execOk(s, [
        "ip",
        "neigh",
        "replace",
        other.ip,
        "lladdr",
        macs[peer],
        "dev",
        side.ifname,
        "nud",
        "stale",
      ], t);
    }
  }

  async #waitCarrier(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < 1000; i++) {
      const states = await Promise.all(
        (["a", "b"] as const).map((s) =>
          this.execOk(s, ["cat", `/sys/class/net/${this.side(s).ifname}/operstate`])
        ),
      );
      if (states.every((st) => st.trim() === "up")) return;
      if (Date.now() > deadline) throw new Error(`veth not up after ${timeoutMs} ms: ${states}`);
      await sleep(20);
    }
    throw new Error("veth carrier: gave up");
  }
}
