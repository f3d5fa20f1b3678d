/**
 * Two network namespaces joined by a veth pair, one per test. Namespaces are
 * named `nkbt-<pid>-<n>-a|b`, addresses come from 198.18.0.0/15 only
 * (198.18.<n>.1 in `a`, 198.18.<n>.2 in `b`). Deleting the namespaces removes
 * the veth. A process-wide safety net deletes whatever this process left.
 *
 * @module
 */

import { JsonChild, sleep } from "./child.ts";

/** Output of a command run in a namespace. */
export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** /proc/net/snmp `Udp:` counters by name (InDatagrams, OutDatagrams, InCsumErrors, ...). */
export type UdpSnmp = Record<string, number>;

/** Options of {@linkcode NetPair.spawnDeno}. */
export interface SpawnOptions {
  env?: Record<string, string>;
  stdin?: boolean;
  name?: string;
}

const PREFIX = `nkbt-${Deno.pid}-`;
const EXEC_TIMEOUT_MS = 10_000;
const live = new Set<NetPair>();
const created = new Set<string>(); // namespace names this module instance created
// A random start keeps names and subnets apart should test files run in parallel workers.
let counter = Math.floor(Math.random() * 250);

/** The directory of the fixture scripts. */
export const FIXTURES: string = new URL("../fixtures/", import.meta.url).pathname;

/** Runs a command on the host (not in a namespace), bounded in time. */
export async function run(cmd: string[], timeoutMs = EXEC_TIMEOUT_MS): Promise<ExecResult> {
  const out = await new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    signal: AbortSignal.timeout(timeoutMs),
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Like {@linkcode run}, but a non-zero exit is an error. */
export async function runOk(cmd: string[], timeoutMs = EXEC_TIMEOUT_MS): Promise<string> {
  const r = await run(cmd, timeoutMs);
  if (r.code !== 0) throw new Error(`${cmd.join(" ")} -> ${r.code}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** Parses the `Udp:` lines of /proc/net/snmp. */
export function parseUdpSnmp(text: string): UdpSnmp {
  const lines = text.split("\n").filter((l) => l.startsWith("Udp: "));
  if (lines.length < 2) throw new Error(`no Udp: lines in /proc/net/snmp:\n${text}`);
  const names = lines[0].split(/\s+/).slice(1);
  const values = lines[1].split(/\s+/).slice(1).map(Number);
  const out: UdpSnmp = {};
  names.forEach((n, i) => out[n] = values[i]);
  return out;
}

/** A pair of namespaces `a` and `b` joined by a veth (`ifA` in `a`, `ifB` in `b`). */
export class NetPair {
  readonly n: number;
  readonly nsA: string;
  readonly nsB: string;
  readonly ifA: string;
  readonly ifB: string;
  readonly ipA: string;
  readonly ipB: string;
  readonly #children = new Set<JsonChild>();
  #cleaned = false;

  constructor(n: number) {
    this.n = n;
    this.nsA = `${PREFIX}${n}-a`;
    this.nsB = `${PREFIX}${n}-b`;
    const tag = `nk${Deno.pid % 10000}x${n}`; // at most 12 characters + 1
    this.ifA = `${tag}a`;
    this.ifB = `${tag}b`;
    this.ipA = `198.18.${n}.1`;
    this.ipB = `198.18.${n}.2`;
  }

  /** Runs `cmd` in namespace `ns`, bounded in time. */
  exec(ns: string, cmd: string[], timeoutMs = EXEC_TIMEOUT_MS): Promise<ExecResult> {
    return run(["ip", "netns", "exec", ns, ...cmd], timeoutMs);
  }

  /** Like {@linkcode exec}, but a non-zero exit is an error. */
  execOk(ns: string, cmd: string[], timeoutMs = EXEC_TIMEOUT_MS): Promise<string> {
    return runOk(["ip", "netns", "exec", ns, ...cmd], timeoutMs);
  }

  /** Starts `deno run -A --unstable-net script args` in namespace `ns` (stdout JSON lines). */
  spawnDeno(ns: string, script: string, args: string[] = [], opts: SpawnOptions = {}): JsonChild {
    const path = script.startsWith("/") ? script : FIXTURES + script;
    const cmd = [ns, Deno.execPath(), "run", "-A", "--unstable-net", "--no-lock", path, ...args];
    return this.#spawn(opts.name ?? `${script}@${ns.slice(-1)}`, ["netns", "exec", ...cmd], opts);
  }

  /** Starts `python3 script args` in namespace `ns` (stdout JSON lines). */
  spawnPython(ns: string, script: string, args: string[] = []): JsonChild {
    const cmd = ["netns", "exec", ns, "python3", FIXTURES + script, ...args];
    return this.#spawn(`${script}@${ns.slice(-1)}`, cmd, {});
  }

  /** The Udp counters of /proc/net/snmp inside `ns`. */
  async snmp(ns: string): Promise<UdpSnmp> {
    return parseUdpSnmp(await this.execOk(ns, ["cat", "/proc/net/snmp"]));
  }

  /** `ip -d link show dev ifname` in `ns`. */
  linkText(ns: string, ifname: string): Promise<string> {
    return this.execOk(ns, ["ip", "-d", "link", "show", "dev", ifname]);
  }

  /** Whether an XDP program is attached to `ifname` (native, generic or offload). */
  async xdpAttached(ns: string, ifname: string): Promise<boolean> {
    return /\bprog\/xdp|\bxdp(generic|drv|offload)?\b/.test(await this.linkText(ns, ifname));
  }

  /** The MAC address of `ifname` in `ns`. */
  async mac(ns: string, ifname: string): Promise<string> {
    const text = await this.execOk(ns, ["cat", `/sys/class/net/${ifname}/address`]);
    return text.trim();
  }

  /** `ip neigh show dev ifname` in `ns`. */
  neigh(ns: string, ifname: string): Promise<string> {
    return this.execOk(ns, ["ip", "neigh", "show", "dev", ifname]);
  }

  /** Kills the children and deletes both namespaces (which removes the veth). */
  async cleanup(): Promise<void> {
    if (this.#cleaned) return;
    this.#cleaned = true;
    await Promise.all([...this.#children].map((c) => c.dispose()));
    this.#children.clear();
    for (const ns of [this.nsA, this.nsB]) {
      const r = await run(["ip", "netns", "del", ns]);
      if (r.code !== 0 && !r.stderr.includes("No such file")) {
        console.error(`netns cleanup: ip netns del ${ns}: ${r.stderr}`);
      }
      created.delete(ns);
    }
    live.delete(this);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.cleanup();
  }

  /** Children spawned by this pair. */
  get children(): ReadonlySet<JsonChild> {
    return this.#children;
  }

  async setup(): Promise<void> {
    live.add(this);
    for (const ns of [this.nsA, this.nsB]) {
      created.add(ns);
      await runOk(["ip", "netns", "add", ns]);
    }
    await runOk([
      "ip",
      "link",
      "add",
      this.ifA,
      "netns",
      this.nsA,
      "type",
      "veth",
      "peer",
      "name",
      this.ifB,
      "netns",
      this.nsB,
    ]);
    const sides: [string, string, string][] = [
      [this.nsA, this.ifA, this.ipA],
      [this.nsB, this.ifB, this.ipB],
    ];
    for (const [ns, ifname, ip] of sides) {
      await this.execOk(ns, ["ip", "link", "set", "dev", "lo", "up"]);
      await this.execOk(ns, ["ip", "addr", "add", `${ip}/24`, "dev", ifname]);
      await this.execOk(ns, ["ip", "link", "set", "dev", ifname, "up"]);
    }
    await this.waitCarrier();
  }

  /** Waits (bounded) until both ends report operational state UP. */
  async waitCarrier(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const a = await this.execOk(this.nsA, ["cat", `/sys/class/net/${this.ifA}/operstate`]);
      const b = await this.execOk(this.nsB, ["cat", `/sys/class/net/${this.ifB}/operstate`]);
      if (a.trim() === "up" && b.trim() === "up") return;
      if (Date.now() > deadline) throw new Error(`veth not up after ${timeoutMs} ms: ${a} ${b}`);
      await sleep(20);
    }
  }

  #spawn(name: string, args: string[], opts: SpawnOptions): JsonChild {
    const proc = new Deno.Command("ip", {
      args,
      stdin: opts.stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
      env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1", ...opts.env },
    }).spawn();
    const child = new JsonChild(name, proc, opts.stdin ?? false);
    this.#children.add(child);
    return child;
  }
}

/** Creates a fresh namespace pair with its own /24 (cleaned up on failure). */
export async function createNetPair(): Promise<NetPair> {
  counter = counter % 250 + 1;
  const pair = new NetPair(counter);
  try {
    await pair.setup();
  } catch (e) {
    await pair.cleanup();
    throw e;
  }
  return pair;
}

function listNamespaces(): string[] {
  const out = new Deno.Command("ip", { args: ["netns", "list"], stdout: "piped", stderr: "null" })
    .outputSync();
  return new TextDecoder().decode(out.stdout).split("\n").map((l) => l.split(" ")[0])
    .filter((n) => n !== "");
}

function pidAlive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

function deleteSync(ns: string): void {
  new Deno.Command("ip", { args: ["netns", "del", ns], stdout: "null", stderr: "null" })
    .outputSync();
}

/** Kills this module's children and deletes the namespaces it created and did not delete. */
export function cleanupLeftovers(): void {
  for (const c of [...live].flatMap((p) => [...p.children])) c.kill("SIGKILL");
  for (const ns of listNamespaces()) if (created.has(ns)) deleteSync(ns);
  created.clear();
}

/** Deletes `nkbt-<pid>-*` namespaces whose test process is gone (a killed earlier run). */
export function cleanupDeadRuns(): void {
  for (const ns of listNamespaces()) {
    const m = /^nkbt-(\d+)-\d+-[ab]$/.exec(ns);
    if (m !== null && Number(m[1]) !== Deno.pid && !pidAlive(Number(m[1]))) deleteSync(ns);
  }
}

cleanupDeadRuns();
globalThis.addEventListener("unload", cleanupLeftovers);
