/**
 * Receive-side pieces without a network: `SendBatch.reply` addresses a reply to a
 * received datagram's sender, and `stats().waitNs` counts the time receives wait
 * (here on a loopback socket, which stays on the kernel path).
 */

import assert from "node:assert/strict";
import { RecvBatch, SendBatch, UdpBypass } from "../mod.ts";

const RECV_WORDS = 8; // offset, length, source (network order), port, flags, 0, 0, 0
const SEND_WORDS = 4; // offset, length, destination (network order), port

Deno.test("SendBatch.reply: the payload goes to the sender of datagram i, copied", () => {
  const rx = new RecvBatch(4, 4096);
  assert.equal(RecvBatch.WORDS, RECV_WORDS); // the layout loops over meta rely on
  rx.bytes.set([1, 2, 3], 100);
  rx.bytes.set([9, 9], 300);
  const peer = 0x0201_12c6; // 198.18.1.2 in network order, read as a little-endian u32
  rx.meta.set([100, 3, peer, 9000, 0, 0, 0, 0], 0);
  rx.meta.set([300, 2, peer + 1, 9001, 0, 0, 0, 0], RECV_WORDS);
  rx.length = 2;
  const tx = new SendBatch(4, 4096);
  assert.equal(tx.reply(rx, 1), true);
  assert.equal(tx.reply(rx, 0, new Uint8Array([7])), true);
  assert.equal(tx.length, 2);
  assert.deepEqual([...tx.meta.subarray(0, 2 * SEND_WORDS)], [
    0,
    2,
    peer + 1,
    9001,
    2,
    1,
    peer,
    9000,
  ]);
  assert.deepEqual([...tx.bytes.subarray(0, 3)], [9, 9, 7]);
  rx.bytes.fill(0); // the batch copied: a later receive into rx changes nothing sent
  assert.deepEqual([...tx.bytes.subarray(0, 2)], [9, 9]);
  assert.throws(() => tx.reply(rx, 2), RangeError);
  assert.throws(() => tx.reply(rx, -1), RangeError);
});

Deno.test("SendBatch.reply: a full batch takes nothing and says so", () => {
  const rx = new RecvBatch(1, 64);
  rx.meta.set([0, 8, 0x0201_12c6, 9000, 0, 0, 0, 0], 0);
  rx.length = 1;
  const tx = new SendBatch(1, 8);
  assert.equal(tx.reply(rx, 0), true);
  assert.equal(tx.reply(rx, 0), false);
  assert.equal(tx.length, 1);
});

Deno.test({
  name: "stats().waitNs: a receive that waits 60 ms counts about 60 ms",
  fn: () => {
    const sock = UdpBypass.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    try {
      assert.equal(sock.bypass.reason, "loopback");
      const before = sock.stats().waitNs;
      assert.equal(sock.receiveSync(undefined, { timeoutMs: 60 }), null);
      const waited = (sock.stats().waitNs - before) / 1e6;
      // Bounds, not timing: the wait ran its slice and was counted, nothing more.
      assert.ok(waited >= 50 && waited < 5_000, `waited ${waited} ms`);
    } finally {
      sock.close();
    }
  },
});
