/**
 * The data-path tests' side of `tests/fixtures/rx.ts` and `tx.ts`: their
 * command lines, the summaries they print, the namespaces' Udp counters around
 * a stream, the two streams several tests run (kernel peer to a, bypass sender
 * in a to a kernel peer) and the checks on a receiver's and a sender's end.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Side, UdpCounters } from "../../examples/testbed.ts";
import type { Api, Mode } from "../fixtures/common.ts";
import type { Message, Testbed, TestbedProcess } from "./testbed.ts";

/** Unrelated UDP a namespace may count while a stream runs. */
export const SLACK = 100;

/** How long a receiver of a 100k-datagram stream may take. */
export const WAIT_MS = 90_000;

/**
 * Datagrams in flight for kernel receivers: 32 full-size skbs fit the default
 * 208 KiB receive buffer even on an interface with native XDP (larger truesize);
 * 64 did not.
 */
export const WINDOW = 32;

/** `stats` of an rx.ts/tx.ts summary (UdpBypass sockets). */
export interface Stats {
  ipkts: number;
  opkts: number;
  kernelIpkts: number;
  kernelOpkts: number;
  rxInvalid: number;
  rxDropped: number;
  txFull: number;
  sendSpinMax: number;
  interfaceDrops: number;
  interfaceTxDrops: number;
}

/** `bypass` of a fixture's summary. */
export interface Bypass {
  active: boolean;
  interface: string | null;
  reason: string | null;
}

/** The socket stats in a fixture's message. */
export function stats(m: Message): Stats {
  return m.stats as Stats;
}

/** The bypass state in a fixture's message. */
export function bypass(m: Message): Bypass {
  return m.bypass as Bypass;
}

/** A message as text for assertion messages. */
export function brief(m: Message): string {
  return JSON.stringify(m);
}

/** rx.ts's arguments (see its usage). */
export interface RxArgs {
  mode: Mode;
  /** Default: its side's address. */
  host?: string;
  /** Default 9000. */
  port?: number;
  count: number;
  api: Api;
  batch?: number;
  minSize?: number;
  maxSize?: number;
  /** With ackPort: acknowledge to ackTo:ackPort (the sender's window). */
  ackTo?: string;
  ackPort?: number;
  /** Ends this long after the last datagram (default 3000). */
  idleMs?: number;
}

/** tx.ts's arguments (see its usage). */
export interface TxArgs {
  mode: Mode;
  /** Default: its side's address. */
  host?: string;
  /** Default 9100. */
  port?: number;
  /** Default: the other side's address. */
  to?: string;
  /** Default 9000. */
  toPort?: number;
  count: number;
  api: Api;
  batch?: number;
  minSize?: number;
  maxSize?: number;
  /** With ackPort: at most `window` datagrams unacknowledged. */
  window?: number;
  ackPort?: number;
  /** Every other datagram to to2:toPort2. */
  to2?: string;
  toPort2?: number;
  /** Waits this long after the last send before reporting and closing (default 100). */
  lingerMs?: number;
}

/** `--key=value` for every key given a value. */
function flags(o: object): string[] {
  return Object.entries(o).filter(([, v]) => v !== undefined).map(([k, v]) => `--${k}=${v}`);
}

/** Starts rx.ts in side `s` (`name` for messages). */
export function spawnRx(tb: Testbed, s: Side, o: RxArgs, name?: string): TestbedProcess {
  const args = flags({ host: tb.side(s).ip, port: 9000, ...o });
  return tb.spawnDeno(s, "rx.ts", args, name === undefined ? {} : { name });
}

/** Starts tx.ts in side `s`. */
export function spawnTx(tb: Testbed, s: Side, o: TxArgs): TestbedProcess {
  const to = tb.side(s === "a" ? "b" : "a").ip;
  return tb.spawnDeno(
    s,
    "tx.ts",
    flags({ host: tb.side(s).ip, port: 9100, to, toPort: 9000, ...o }),
  );
}

/** The Udp counters of both sides, grown since {@linkcode udpSince}. */
export interface UdpGrowth {
  a: UdpCounters;
  b: UdpCounters;
}

/** Reads both sides' Udp counters now; the function returned reads them again and gives after - before. */
export async function udpSince(tb: Testbed): Promise<() => Promise<UdpGrowth>> {
  const beforeA = await tb.udpCounters("a");
  const beforeB = await tb.udpCounters("b");
  const grown = (before: UdpCounters, after: UdpCounters): UdpCounters =>
    Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - before[k]]));
  return async () => {
    const afterA = await tb.udpCounters("a");
    const afterB = await tb.udpCounters("b");
    return { a: grown(beforeA, afterA), b: grown(beforeB, afterB) };
  };
}

/**
 * A receiver's end: it ended by count with all `count` datagrams, no error,
 * nothing lost, corrupt, of the wrong size, duplicated or out of order.
 */
export function assertAllIntact(rx: Message, count: number, what: string): void {
  const summary = JSON.stringify({ ...rx, stats: undefined, bypass: undefined });
  assert.equal(rx.error, null, `${what}: receiver error ${summary}`);
  assert.equal(rx.end, "count", `${what}: receiver ended early ${summary}`);
  assert.equal(rx.unique, count, `${what}: lost datagrams ${summary}`);
  assert.equal(rx.missing, 0, `${what}: lost datagrams ${summary}`);
  assert.equal(rx.corrupt, 0, `${what}: corrupt datagrams ${summary}`);
  assert.equal(rx.wrongSize, 0, `${what}: wrong sizes ${summary}`);
  assert.equal(rx.duplicates, 0, `${what}: duplicates ${summary}`);
  assert.equal(rx.reordered, 0, `${what}: out of order ${summary}`);
}

/** A sender's end: everything sent, nothing failed. */
export function assertAllSent(tx: Message, count: number, what: string): void {
  assert.equal(tx.end, "count", `${what}: ${brief(tx)}`);
  assert.equal(tx.sent, count, `${what}: ${brief(tx)}`);
  assert.equal(tx.errors, 0, `${what}: ${brief(tx)}`);
}

/** What {@linkcode kernelToA} gives back. */
export interface KernelToA {
  /** The receiver's ready message. */
  ready: Message;
  /** The receiver's summary. */
  rx: Message;
  /** The sender's summary, or `{unfinished}`. */
  tx: Message;
  /** How much a's Udp InDatagrams grew. */
  inA: number;
}

/**
 * Streams `count` datagrams from a kernel sender in b (tx.ts, windowed when
 * `window` > 0) to rx.ts in a (`rx`: its mode, api and batch; acknowledging
 * when windowed), and checks the stream: all sent, all received intact.
 */
export async function kernelToA(
  tb: Testbed,
  count: number,
  rx: Pick<RxArgs, "mode" | "api" | "batch">,
  window = 0,
): Promise<KernelToA> {
  const windowed = window > 0;
  const receiver = spawnRx(tb, "a", {
    ...rx,
    count,
    ...(windowed ? { ackTo: tb.b.ip, ackPort: 9900 } : {}),
  });
  const ready = await receiver.nextWith("ready", 15_000);
  const udp = await udpSince(tb);
  const sender = spawnTx(tb, "b", {
    mode: "kernel",
    count,
    api: "async",
    ...(windowed ? { window, ackPort: 9900 } : {}),
  });
  // The receiver ends on its own (count, idle, time); a sender still going then is stuck.
  const rxDone = await receiver.nextWith("done", WAIT_MS);
  const txDone: Message = await sender.nextWith("done", 10_000).catch((e) => ({
    unfinished: String(e),
  }));
  const grown = await udp();
  assert.equal(txDone.sent, count, `sender: ${brief(txDone)}`);
  // b's counters tell the sender's own losses (SndbufErrors) from the receiver's.
  const about = `sender ${brief(txDone)}, sender's Udp growth ${JSON.stringify(grown.b)}`;
  assertAllIntact(rxDone, count, `receiver (stats ${JSON.stringify(rxDone.stats)}, ${about})`);
  return { ready, rx: rxDone, tx: txDone, inA: grown.a.InDatagrams };
}

/**
 * Streams `count` datagrams from a bypass sender in a (tx.ts; `tx`: its api and
 * batch size) with a window of {@linkcode WINDOW} to a kernel receiver in b that
 * acknowledges them, and checks the stream: the sender bypassed and through the
 * rings only, every datagram sent and received intact, nothing in a's Udp
 * counters, no checksum or other errors at the peer. Returns the sender's summary.
 */
export async function bypassToKernel(
  tb: Testbed,
  count: number,
  tx: Pick<TxArgs, "api" | "batch">,
): Promise<Message> {
  const receiver = spawnRx(tb, "b", {
    mode: "kernel",
    count,
    api: "async",
    ackTo: tb.a.ip,
    ackPort: 9900,
  });
  await receiver.nextWith("ready", 15_000);
  const udp = await udpSince(tb);
  const sender = spawnTx(tb, "a", { ...tx, mode: "bypass", count, window: WINDOW, ackPort: 9900 });
  const ready = await sender.nextWith("ready", 15_000);
  assert.equal(bypass(ready).active, true, `sender not bypassed: ${brief(ready)}`);
  const rxDone = await receiver.nextWith("done", WAIT_MS);
  const txDone = await sender.nextWith("done", 10_000);
  const grown = await udp();
  assertAllSent(txDone, count, "sender");
  assertAllIntact(rxDone, count, `kernel rx of bypass tx (sender ${brief(txDone)})`);
  assert.equal(bypass(txDone).active, true, brief(txDone));
  assert.equal(stats(txDone).opkts, count, `stats ${JSON.stringify(txDone.stats)}`);
  assert.equal(stats(txDone).kernelOpkts, 0, `stats ${JSON.stringify(txDone.stats)}`);
  assert.equal(grown.b.InCsumErrors, 0, "peer InCsumErrors grew");
  assert.equal(grown.b.InErrors, 0, "peer InErrors grew");
  const outA = grown.a.OutDatagrams;
  assert.ok(outA < SLACK, `sender namespace Udp OutDatagrams grew by ${outA}`);
  return txDone;
}

/** 64-byte datagrams from a bypass sender's `sendBatch` (256 a call, unpaced) into `receiveBatch`. */
export function unpacedBatches(count: number): RxArgs & TxArgs {
  return { mode: "bypass", count, api: "batch", batch: 256, minSize: 64, maxSize: 64 };
}

/** Starts rx.ts on side A and waits until it listens on the bypass path. */
export async function bypassReceiver(tb: Testbed, o: RxArgs): Promise<TestbedProcess> {
  const rx = spawnRx(tb, "a", o);
  const ready = await rx.nextWith("ready", 15_000);
  assert.equal(bypass(ready).active, true, `receiver not bypassed: ${brief(ready)}`);
  return rx;
}

/** Starts tx.ts on side B and waits until it is ready to send on the bypass path. */
export async function bypassSender(tb: Testbed, o: TxArgs): Promise<TestbedProcess> {
  const tx = spawnTx(tb, "b", o);
  const ready = await tx.nextWith("ready", 15_000);
  assert.equal(bypass(ready).active, true, `sender not bypassed: ${brief(ready)}`);
  return tx;
}
