/**
 * Idle-receiver worker: listens and waits in an async `receive()` that no
 * datagram ever ends, for `--max-ms`; the benchmark reads this process's CPU
 * time (/proc/<pid>/stat) meanwhile. nkb: `UdpBypass.receive()` in `--recv-mode`
 * 0 (sleeps in the shim's wait) or 1 (spins); kernel: `Deno.listenDatagram`.
 *
 * `--impl nkb|kernel [--recv-mode 0|1] --host IP --port N --max-ms N`
 *
 * Prints `{ready, bypass}` once listening, then `{result}` when the time is up.
 *
 * @module
 */

import { UdpBypass } from "../../mod.ts";
import { emit, impl, listenArgs, parseArgs, recvMode, runWorker } from "./common.ts";

await runWorker(async () => {
  const args = parseArgs(Deno.args);
  const { host, port, maxMs } = listenArgs(args);
  const nkb = impl(args) === "nkb"
    ? UdpBypass.listenDatagram({ transport: "udp", hostname: host, port, recvMode: recvMode(args) })
    : null;
  const conn: Deno.DatagramConn = nkb ??
    Deno.listenDatagram({ transport: "udp", hostname: host, port });
  emit({ ready: true, bypass: nkb?.bypass ?? null });
  let closed = false;
  // Closing the socket ends the pending receive (BadResource).
  const timer = setTimeout(() => {
    closed = true;
    conn.close();
  }, maxMs);
  let received = 0;
  for (let i = 0; i < 1000 && !closed; i++) {
    try {
      await conn.receive();
      received++;
    } catch (e) {
      if (closed) break;
      throw e;
    }
  }
  clearTimeout(timer);
  emit({ result: { received } });
  if (!closed) conn.close();
});
