/**
 * Makes one side's veth fall behind on receive, as a busy 2-core machine does now and
 * then: its NAPI is made a kernel thread, pinned to the last CPU, and a SCHED_FIFO
 * process takes that CPU for BURST_MS of every PERIOD_MS, for TOTAL_MS at most. The
 * sending veth's queue to it (256 entries) then fills, and the veth drops what it is
 * given: what nkb counts as the sender's `interfaceTxDrops`.
 *
 * @module
 */

import { runOk, type Side, type Testbed } from "../../examples/testbed.ts";

const BURST_MS = 15;
const PERIOD_MS = 60;
const TOTAL_MS = 3000;
/** Bounds the /proc scan for the NAPI thread. */
const MAX_PROCS = 100_000;

/** The pids of the threaded NAPI of `ifname` (kernel threads named napi/<ifname>-<id>). */
async function napiThreads(ifname: string): Promise<number[]> {
  // A task's comm keeps 15 bytes: "napi/" and the first 10 of the interface's name.
  const prefix = `napi/${ifname}`.slice(0, 15);
  const pids: number[] = [];
  let seen = 0;
  for await (const entry of Deno.readDir("/proc")) {
    if (++seen > MAX_PROCS) break;
    if (!/^\d+$/.test(entry.name)) continue;
    const comm = await Deno.readTextFile(`/proc/${entry.name}/comm`).catch(() => "");
    if (comm.startsWith(prefix)) pids.push(Number(entry.name));
  }
  return pids;
}

/**
 * Starts the stall on side `s` (its XDP program must be attached: veth has a NAPI only
 * then). Dispose of the result to end it early.
 */
export async function stallNapi(tb: Testbed, s: Side): Promise<AsyncDisposable> {
  const { ifname } = tb.side(s);
  await tb.execOk(s, ["sh", "-c", `echo 1 > /sys/class/net/${ifname}/threaded`]);
  const pids = await napiThreads(ifname);
  if (pids.length === 0) throw new Error(`no NAPI thread for ${ifname}`);
  const cpu = `${navigator.hardwareConcurrency - 1}`;
  for (const pid of pids) await runOk(["taskset", "-p", "-c", cpu, `${pid}`]);
  const hog = `import time
end = time.monotonic() + ${TOTAL_MS / 1000}
while time.monotonic() < end:
    burst = time.monotonic() + ${BURST_MS / 1000}
    while time.monotonic() < burst:
        pass
    time.sleep(${(PERIOD_MS - BURST_MS) / 1000})
`;
  const child = new Deno.Command("timeout", {
    args: ["10", "chrt", "-f", "50", "taskset", "-c", cpu, "python3", "-c", hog],
    stdout: "null",
    stderr: "null",
  }).spawn();
  return {
    async [Symbol.asyncDispose](): Promise<void> {
      try {
        child.kill("SIGKILL");
      } catch { /* it ended on its own */ }
      await child.status;
    },
  };
}
