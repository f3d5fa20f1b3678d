/**
 * Device drops on send. A veth hands each frame to its peer's 256-entry queue, emptied
 * by the peer's NAPI; when that falls behind, the veth drops the frame and the kernel
 * completes it as sent (in copy mode it says so only as EBUSY from the TX doorbell).
 * Each such drop must be counted (`interfaceTxDrops`, equal to the device's own
 * tx_dropped), and the frames a refusing device left on the TX ring must still leave
 * while the sender does nothing more (the engine's pusher), not wait for its close.
 */

import assert from "node:assert/strict";
import { createTestbed, type Testbed } from "./helpers/testbed.ts";
import {
  brief,
  bypassReceiver,
  bypassSender,
  stats,
  unpacedBatches,
  WAIT_MS,
} from "./helpers/stream.ts";
import { stallNapi } from "./helpers/napi_stall.ts";
import { OPTS, SLACK } from "./fixtures/fb_driver.ts";

async function txDropped(tb: Testbed): Promise<number> {
  const path = `/sys/class/net/${tb.b.ifname}/statistics/tx_dropped`;
  return Number((await tb.execOk("b", ["cat", path])).trim());
}

Deno.test({
  name: "tx drops: a stalled veth peer drops sends; each drop is counted, none waits for close",
  ...OPTS,
  fn: async () => {
    const N = 200_000;
    await using tb = await createTestbed();
    // The receiver ends 1.5 s after its last datagram, the sender closes 4 s after its
    // last send: frames left on the TX ring until that close would be missing here.
    const rx = await bypassReceiver(tb, { ...unpacedBatches(N), idleMs: 1500 });
    const devBefore = await txDropped(tb);
    await using _stall = await stallNapi(tb, "a");
    const tx = await bypassSender(tb, { ...unpacedBatches(N), lingerMs: 4000 });
    const rxDone = await rx.nextWith("done", WAIT_MS);
    const txDone = await tx.nextWith("done", 20_000);
    const devDrops = (await txDropped(tb)) - devBefore;
    const all = `receiver ${brief(rxDone)}\nsender ${brief(txDone)}`;
    const txDrops = stats(txDone).interfaceTxDrops;
    const st = stats(rxDone);
    console.log(
      `sent ${txDone.sent}, received ${rxDone.unique}, sender interfaceTxDrops ${txDrops} ` +
        `(device tx_dropped +${devDrops}), receiver interfaceDrops ${st.interfaceDrops} ` +
        `rxDropped ${st.rxDropped}`,
    );
    assert.equal(txDone.sent, N, all);
    assert.equal(rxDone.error, null, all);
    assert.equal(rxDone.duplicates, 0, all);
    assert.equal(rxDone.corrupt, 0, all);
    assert.ok(devDrops > 0, `the stall made the device drop nothing: nothing was tested\n${all}`);
    assert.equal(
      (rxDone.unique as number) + st.interfaceDrops + st.rxDropped + txDrops,
      N,
      `delivered + counted drops != sent\n${all}`,
    );
    // The device's count also has the kernel's own packets it dropped (neighbour
    // discovery, say): a few more, never fewer.
    assert.ok(
      devDrops >= txDrops && devDrops <= txDrops + SLACK,
      `counted ${txDrops}, the device dropped ${devDrops}\n${all}`,
    );
  },
});
