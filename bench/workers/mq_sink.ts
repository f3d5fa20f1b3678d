/**
 * Multi-queue receiver: `--workers 1` is one Worker whose socket covers every queue
 * of the interface; `--workers N` is N Workers, Worker i with a queue-affine socket
 * on queue i (`{ queue: i, reusePort: true }`), all on one address and port. Each
 * does `--work-us` of work per datagram (a xorshift loop calibrated here, so that
 * every configuration does the same work).
 *
 * `--host IP --port N --max-ms N --workers N --flows N --work-us N`
 *
 * Prints `{ready, bypass, workIters}` once every Worker listens, then `{result}`
 * with the sum and each Worker's figures.
 *
 * @module
 */

import { emit, int, listenArgs, next, parseArgs, runWorker, work } from "./common.ts";

type Msg = Record<string, unknown>;
const READY_MS = 15_000;
const CALIBRATE_ITERS = 2_000_000;

// Iterations of `work` that take `us` microseconds on this core (best of three).
function calibrate(us: number): number {
  if (us === 0) return 0;
  work(1, CALIBRATE_ITERS); // warm the JIT
  let best = Infinity;
  for (let r = 0; r < 3; r++) {
    const t0 = performance.now();
    work(r + 2, CALIBRATE_ITERS);
    best = Math.min(best, performance.now() - t0);
  }
  return Math.max(1, Math.round(us * CALIBRATE_ITERS / (best * 1000)));
}

await runWorker(async () => {
  const args = parseArgs(Deno.args);
  const { host, port, maxMs } = listenArgs(args);
  const n = int(args, "workers");
  const flows = int(args, "flows");
  if (n < 1 || n > 8) throw new Error("--workers must be 1..8");
  const workIters = calibrate(int(args, "work-us"));
  const url = new URL("./mq_worker.ts", import.meta.url);
  const workers = Array.from({ length: n }, () => new Worker(url, { type: "module" }));
  try {
    const ready = workers.map((w) => next(w, "ready", READY_MS));
    const done = workers.map((w) => next(w, "done", READY_MS + maxMs));
    workers.forEach((w, i) =>
      w.postMessage({
        host,
        port,
        queue: n === 1 ? null : i,
        flows: n === 1 ? flows : 1,
        workIters,
        maxMs,
      })
    );
    const states = (await Promise.all(ready)).map((m) => m.bypass);
    const active = states.every((s) => (s as { active?: boolean } | null)?.active === true);
    emit({
      ready: true,
      bypass: active ? states[0] : states.find((s) => !(s as Msg)?.active),
      workIters,
    });
    const results = (await Promise.all(done)).map((m) => m.result as Msg);
    const sum = (k: string): number => results.reduce((a, r) => a + Number(r[k]), 0);
    const firstMs = Math.min(...results.map((r) => Number(r.firstMs)).filter((v) => v > 0));
    const lastMs = Math.max(...results.map((r) => Number(r.lastMs)));
    emit({
      result: {
        received: sum("received"),
        ended: results.every((r) => Number(r.ended) >= (n === 1 ? flows : 1)),
        spanMs: Number.isFinite(firstMs) ? lastMs - firstMs : 0,
        workIters,
        workers: results,
      },
    });
  } finally {
    workers.forEach((w) => w.terminate());
  }
});
