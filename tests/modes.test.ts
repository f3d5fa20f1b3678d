/**
 * The contract's knobs: _NET_KERNEL_BYPASS_RECV_MODE (0 sleeps in poll, 1 spins)
 * and _NET_KERNEL_BYPASS_SEND_BUSY_WAIT_CNT (tries on a full TX ring).
 */

import assert from "node:assert/strict";
import { createTestbed, sendUdp } from "./helpers/testbed.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };
const LATE_MS = 40;

async function idle(
  recvMode: "0" | "1",
  how: "env" | "option",
): Promise<{ cpu: number; maxLate: number; measured: Record<string, unknown> }> {
  await using tb = await createTestbed();
  const env = {
    _NET_KERNEL_BYPASS_RECV_MODE: how === "env" ? recvMode : recvMode === "0" ? "1" : "0",
  };
  const args = [
    `--host=${tb.a.ip}`,
    "--port=9000",
    ...(how === "option" ? [`--recvMode=${recvMode}`] : []),
  ];
  const child = tb.spawnDeno("a", "idle_rx.ts", args, { env });
  const ready = await child.nextWith("ready", 15_000);
  assert.equal((ready.bypass as { active: boolean }).active, true, JSON.stringify(ready));
  const measured = await child.nextWith("measured", 15_000);
  await sendUdp(tb, "b", "wake-up", tb.a.ip, 9000);
  const done = await child.nextWith("done", 10_000);
  assert.equal(
    done.received,
    "wake-up",
    `pending receive() did not deliver: ${JSON.stringify(done)}`,
  );
  console.log(`recv mode ${recvMode} (${how}): ${JSON.stringify(measured)}`);
  return { cpu: measured.cpuFraction as number, maxLate: measured.maxLateMs as number, measured };
}

Deno.test({
  name: "recv mode 0 (env): an idle pending receive() uses < 10% of a core; timers stay on time",
  ...opts,
  fn: async () => {
    const r = await idle("0", "env");
    assert.ok(r.cpu < 0.1, `CPU ${r.cpu} of a core: ${JSON.stringify(r.measured)}`);
    assert.ok(
      r.maxLate <= LATE_MS,
      `a 50 ms timer fired ${r.maxLate} ms late: ${JSON.stringify(r.measured)}`,
    );
  },
});

Deno.test({
  name: "recv mode 1 (env): an idle pending receive() spins (> 50% of a core); timers stay on time",
  ...opts,
  fn: async () => {
    const r = await idle("1", "env");
    assert.ok(r.cpu > 0.5, `CPU ${r.cpu} of a core: ${JSON.stringify(r.measured)}`);
    assert.ok(
      r.maxLate <= LATE_MS,
      `a 50 ms timer fired ${r.maxLate} ms late: ${JSON.stringify(r.measured)}`,
    );
  },
});

Deno.test({
  name: "recv mode: the recvMode option overrides the environment (option 0 over env 1)",
  ...opts,
  fn: async () => {
    const r = await idle("0", "option");
    assert.ok(r.cpu < 0.1, `CPU ${r.cpu} of a core: ${JSON.stringify(r.measured)}`);
  },
});

Deno.test({
  name: "send busy-wait count: with the link down, a send fails with TxRingFullError after 5 tries",
  ...opts,
  fn: async () => {
    await using tb = await createTestbed();
    const child = tb.spawnDeno("a", "tx_full.ts", [
      `--host=${tb.a.ip}`,
      "--port=9000",
      `--to=${tb.b.ip}`,
      "--toPort=9000",
      `--ifname=${tb.a.ifname}`,
    ], { env: { _NET_KERNEL_BYPASS_SEND_BUSY_WAIT_CNT: "5" } });
    const first = await child.nextWith("sent1", 15_000);
    assert.equal((first.bypass as { active: boolean }).active, true, JSON.stringify(first));
    assert.ok((first.sent1 as number) > 0, JSON.stringify(first));
    const done = await child.nextWith("done", 20_000);
    console.log(`tx full: ${JSON.stringify(done)}`);
    const err = done.error as { name: string; message: string } | null;
    const st = done.stats as Record<string, number>;
    assert.notEqual(err, null, `no send failed: ${JSON.stringify(done)}`);
    assert.equal(err!.name, "TxRingFullError", JSON.stringify(done));
    assert.equal(st.sendSpinMax, 5, JSON.stringify(done));
    assert.ok(st.txFull >= 1, JSON.stringify(done));
    // The socket is still the interface's (its frames wait on the ring), unless it noticed
    // the link went down, which it reports as such.
    const b = done.bypass as { active: boolean; reason: string | null };
    assert.ok(b.active || b.reason === "interface-down", JSON.stringify(done));
  },
});
