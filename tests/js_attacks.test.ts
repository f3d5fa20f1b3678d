/**
 * Plain JavaScript must not crash the process (issue 12, items 1 and 2): each attack on
 * a batch's or a datagram's buffers runs in a child process of its own
 * (tests/fixtures/js_attack.ts) on a bypass socket that takes datagrams from both paths;
 * the child must exit 0 and the attack end in what is asserted below: a batch whose
 * public properties were redefined works on its own private arrays; a batch whose
 * buffers were transferred or detached is a TypeError; a payload's or a receive buffer's
 * redefined `byteLength` (on the array or on %TypedArray%.prototype) changes nothing.
 * Also: the zero-copy receive is gone from the API and from the shim.
 */

import assert from "node:assert/strict";
import * as mod from "../mod.ts";
import { ABI_VERSION } from "../src/ffi.ts";
import { createTestbed, type Message } from "./helpers/testbed.ts";
import { ROOT } from "./helpers/zig.ts";

const DETACHED = /^TypeError: .*transferred or detached/;

// What each attack must end in: a predicate over the child's outcome.
const EXPECT: Record<string, (o: unknown) => boolean> = {
  // Redefined public properties: the batch receives into its own arrays, at most capacity.
  "recv-capacity-define": (o) => n(o) === 1,
  "recv-capacity-cast": (o) => /^TypeError: .*capacity/.test(String(o)),
  "recv-meta-small": (o) => n(o) >= 1,
  "recv-bytes-small": (o) => n(o) >= 1,
  "recv-bytes-transfer": (o) => DETACHED.test(String(o)),
  "recv-meta-transfer": (o) => DETACHED.test(String(o)),
  "recv-worker-transfer": (o) =>
    (o as { moved: number }).moved === 8 * 2048 + 8 * 32 &&
    DETACHED.test(String((o as { then: unknown }).then)),
  "recv-length-abuse": (o) => {
    const r = o as Record<string, unknown>;
    return r["5"] === "RangeError" && r["1000000000"] === "RangeError" &&
      r["-1"] === "RangeError" && r["0.5"] === "RangeError" && r.raised === "RangeError" &&
      n(r.after) >= 1 && n(r.after) <= 4;
  },
  "recv-buf-bytelength": (o) => (o as { size: number }).size === 16,
  "recv-buf-proto-bytelength": (o) => (o as { size: number }).size === 16,
  // Deno's receive takes the datagram, then its view of the buffer throws V8's error.
  "recv-async-transfer": (o) =>
    String(o) === "TypeError: Cannot perform Construct on a detached ArrayBuffer",
  "recv-resizable-shrink": (o) => String(o) === "RangeError: Invalid typed array length: 0",
  "recv-fake-batch": (o) => /^TypeError: receiveBatch: not a RecvBatch/.test(String(o)),
  "send-length-define": (o) => sent(o, [1000]),
  "send-meta-small": (o) => sent(o, [1000, 1000, 1000, 1000]),
  "send-bytes-small": (o) => sent(o, [1000, 1000, 1000, 1000]),
  "send-bytes-transfer": (o) => DETACHED.test(String(o)),
  "send-meta-transfer": (o) => DETACHED.test(String(o)),
  "send-worker-transfer": (o) =>
    (o as { moved: number }).moved === 4 * 1400 + 4 * 16 &&
    DETACHED.test(String((o as { then: unknown }).then)),
  "send-add-after-transfer": (o) => DETACHED.test(String(o)),
  "send-fake-batch": (o) => /^TypeError: sendBatch: not a SendBatch/.test(String(o)),
  // Deno sends an empty datagram for a detached payload: so does nkb.
  "send-payload-detached": (o) => same(o, { rc: 0, size: 0 }),
  "send-payload-detached-by-getter": (o) => same(o, { rc: 0, size: 0, reads: 1 }),
  "send-hostname-getter-twofaced": (o) => same(o, { reads: 1, size: -1 }),
  "batch-hostname-getter-twofaced": (o) => same(o, { reads: 1, sent: 4, size: -1 }),
  "send-payload-bytelength": (o) => same(o, { rc: 16, size: 16 }),
  "send-payload-proto-bytelength": (o) => same(o, { rc: 16, size: 16 }),
};

function n(o: unknown): number {
  return typeof o === "object" && o !== null ? (o as { n: number }).n : -1;
}

function sent(o: unknown, sizes: number[]): boolean {
  const r = o as { sent?: number; sizes?: number[] };
  return r?.sent === sizes.length && JSON.stringify(r.sizes) === JSON.stringify(sizes);
}

function same(o: unknown, want: unknown): boolean {
  return JSON.stringify(o) === JSON.stringify(want);
}

Deno.test({
  name: "js attacks: redefined, replaced, transferred and detached buffers never crash",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using tb = await createTestbed();
    const port = 9400;
    // The ring's traffic: a python sender on side B, 8 datagrams every 2 ms, bounded.
    const code = `
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + 120
while time.time() < end:
    for i in range(8): s.sendto(bytes([i]) * 700, ("${tb.a.ip}", ${port}))
    time.sleep(0.002)
`;
    const sender = tb.spawn("b", ["python3", "-c", code], { name: "ring sender" });
    const failures: string[] = [];
    let bypassed = 0;
    for (const [name, ok] of Object.entries(EXPECT)) {
      const child = tb.spawnDeno("a", "js_attack.ts", [
        `--host=${tb.a.ip}`,
        `--port=${port}`,
        `--case=${name}`,
      ], { name });
      const status = await child.wait(30_000);
      const msg: Message | undefined = child.messages.find((m) => m.case === name);
      const line = `${name}: exit ${status.code} signal ${status.signal} ` +
        `outcome ${JSON.stringify(msg?.outcome)}`;
      console.log(line);
      if (msg?.bypass === true) bypassed++;
      if (status.code !== 0 || msg === undefined || !ok(msg.outcome)) {
        failures.push(`${line}\n${child.stderr.slice(-2000)}`);
      }
    }
    sender.kill();
    assert.deepEqual(failures, []);
    // Every attack ran on an active bypass socket (both paths fed).
    assert.equal(bypassed, Object.keys(EXPECT).length);
  },
});

Deno.test("zero-copy receive is gone: no export, no shim symbol", () => {
  const names = Object.keys(mod);
  assert.ok(names.includes("RecvBatch") && names.includes("UdpBypass"), names.join());
  for (const name of names) assert.doesNotMatch(name, /zero.?copy|^Zc|zc/i);
  assert.equal("receiveZeroCopy" in mod.UdpBypass.prototype, false);
  const so = `${ROOT}zig-out/lib/libnkb.so`;
  for (const symbol of ["nkb_recv_zc", "nkb_zc_release", "nkb_sock_umem"]) {
    assert.throws(
      () => Deno.dlopen(so, { [symbol]: { parameters: [], result: "i32" } }),
      /symbol|undefined|not found/i,
      symbol,
    );
  }
  // The probe itself works: a symbol the shim has is found.
  const dl = Deno.dlopen(so, { nkb_abi_version: { parameters: [], result: "i32" } });
  assert.equal(dl.symbols.nkb_abi_version(), ABI_VERSION);
  dl.close();
});
