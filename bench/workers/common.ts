/**
 * What the benchmark workers share: argument parsing, JSON-line output and the
 * datagram format (a little-endian u32 sequence number at offset 0).
 *
 * @module
 */

/** Sequence number of the datagrams that mark the end of a run. */
export const SEQ_END = 0xffff_ffff;
/** Sequence number of warm-up datagrams (not counted). */
export const SEQ_WARM = 0xffff_fffe;

/** `iters` rounds of xorshift32: stand-in application work the JIT cannot drop (keep the result). */
export function work(seed: number, iters: number): number {
  let x = seed | 1;
  for (let i = 0; i < iters; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
  }
  return x;
}

/** `--key value` arguments as a map. */
export function parseArgs(args: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i + 1 < args.length; i += 2) {
    if (!args[i].startsWith("--")) throw new Error(`bad argument ${args[i]}`);
    out.set(args[i].slice(2), args[i + 1]);
  }
  return out;
}

/** A required string argument. */
export function str(args: Map<string, string>, key: string): string {
  const v = args.get(key);
  if (v === undefined) throw new Error(`missing --${key}`);
  return v;
}

/** A required non-negative integer argument. */
export function int(args: Map<string, string>, key: string): number {
  const v = Number(str(args, key));
  if (!Number.isInteger(v) || v < 0) throw new Error(`--${key} must be a non-negative integer`);
  return v;
}

/** The receiving workers' common arguments: where to listen and for how long. */
export function listenArgs(
  args: Map<string, string>,
): { host: string; port: number; maxMs: number } {
  return { host: str(args, "host"), port: int(args, "port"), maxMs: int(args, "max-ms") };
}

/** The implementation a worker measures. */
export function impl(args: Map<string, string>): "nkb" | "kernel" {
  const v = str(args, "impl");
  if (v !== "nkb" && v !== "kernel") throw new Error(`--impl must be nkb or kernel, got ${v}`);
  return v;
}

/**
 * How an nkb worker moves datagrams (`--mode`, default `copy`), one of `modes`: one
 * per call (`copy`) or a batch of 256 per call (`batch`).
 */
export function nkbMode<M extends string>(args: Map<string, string>, modes: readonly M[]): M {
  const v = args.get("mode") ?? "copy";
  const m = modes.find((x) => x === v);
  if (m === undefined) throw new Error(`--mode must be one of ${modes.join(", ")}, got ${v}`);
  return m;
}

/** `--recv-mode 0|1` (default 1). */
export function recvMode(args: Map<string, string>): 0 | 1 {
  const v = args.get("recv-mode") ?? "1";
  if (v !== "0" && v !== "1") throw new Error(`--recv-mode must be 0 or 1, got ${v}`);
  return v === "0" ? 0 : 1;
}

const encoder = new TextEncoder();

/** Writes one JSON line to stdout, synchronously (busy loops never yield to the event loop). */
export function emit(msg: Record<string, unknown>): void {
  const bytes = encoder.encode(JSON.stringify(msg) + "\n");
  let off = 0;
  for (let i = 0; i < 1000 && off < bytes.length; i++) {
    off += Deno.stdout.writeSync(bytes.subarray(off));
  }
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Blocks the thread for `ms` milliseconds without yielding (for sync workers). */
export function spinFor(ms: number): void {
  const end = performance.now() + ms;
  for (let i = 0; i < 1e9 && performance.now() < end; i++) {
    // spin
  }
}

/** Runs `main`, reporting any error as `{ error }` and exiting non-zero. */
export async function runWorker(main: () => Promise<void> | void): Promise<void> {
  try {
    await main();
  } catch (e) {
    emit({ error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) });
    Deno.exit(1);
  }
}

/**
 * The first message of Worker `w` that has `key`, or a rejection after `ms` milliseconds or
 * at a message with `error`.
 */
export function next(
  w: Worker,
  key: string,
  ms: number,
): Promise<Record<string, unknown>> {
  type Msg = Record<string, unknown>;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`worker: no ${key} in ${ms} ms`)), ms);
    const onMessage = (e: MessageEvent<Msg>): void => {
      if ("error" in e.data) {
        clearTimeout(timer);
        reject(new Error(String(e.data.error)));
      }
      if (!(key in e.data)) return;
      clearTimeout(timer);
      w.removeEventListener("message", onMessage);
      resolve(e.data);
    };
    w.addEventListener("message", onMessage);
  });
}
