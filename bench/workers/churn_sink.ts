/**
 * Two Workers in one process, each on its own queue of a 2-queue interface (issue 16): an
 * `rx` Worker receives a paced flow on queue 0 and records its gaps between receives; with
 * `--churn 1` a second Worker opens and closes a bypass socket on queue 1 in a loop
 * meanwhile (its engine opens and closes each time). With `--churn 0` the second Worker
 * does not run: the baseline.
 *
 * `--host IP --port N --churn-port N --max-ms N --churn 0|1`
 *
 * Prints `{ready, bypass}` once the receiver listens, then `{result}` with both Workers'.
 *
 * @module
 */

import { emit, int, listenArgs, next, parseArgs, runWorker } from "./common.ts";

type Msg = Record<string, unknown>;
const READY_MS = 15_000;

await runWorker(async () => {
  const args = parseArgs(Deno.args);
  const { host, port, maxMs } = listenArgs(args);
  const churnPort = int(args, "churn-port");
  const withChurn = int(args, "churn") === 1;
  const url = new URL("./churn_worker.ts", import.meta.url);
  const rx = new Worker(url, { type: "module" });
  const churner = withChurn ? new Worker(url, { type: "module" }) : null;
  try {
    const rxReady = next(rx, "ready", READY_MS);
    const rxDone = next(rx, "done", READY_MS + maxMs);
    rx.postMessage({ role: "rx", host, port, queue: 0, maxMs });
    const ready = await rxReady;
    let churnDone: Promise<Msg> | null = null;
    const stop = new SharedArrayBuffer(4);
    if (churner !== null) {
      churnDone = next(churner, "done", READY_MS + maxMs);
      churner.postMessage({ role: "churn", host, port: churnPort, queue: 1, maxMs, stop });
    }
    emit({ ready: true, bypass: ready.bypass });
    const r = (await rxDone).result as Msg;
    Atomics.store(new Int32Array(stop), 0, 1);
    const c = churnDone === null ? null : (await churnDone).result as Msg;
    emit({ result: { rx: r, churn: c } });
  } finally {
    rx.terminate();
    churner?.terminate();
  }
});
