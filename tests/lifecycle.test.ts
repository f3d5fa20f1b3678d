/**
 * Process exit: however a process with a bypass socket ends (normal end after
 * close, Deno.exit with the socket open, an uncaught exception, SIGKILL), no XDP
 * program stays on the interface and the next process gets the bypass within
 * 1 s of the previous one's death.
 */

import assert from "node:assert/strict";
import {
  createTestbed,
  type Message,
  sendUdp,
  sleep,
  type TestbedProcess,
} from "./helpers/testbed.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };
const NEXT_WITHIN_MS = 1000;

Deno.test({
  name:
    "process exit: close+end, Deno.exit, uncaught throw, SIGKILL leave no XDP; next bind is bypassed",
  ...opts,
  fn: async (t) => {
    await using tb = await createTestbed();
    const args = [`--host=${tb.a.ip}`, "--port=9000"];
    assert.equal(await tb.xdpAttached("a"), false, "XDP attached before any test");

    async function start(then: string, extra: string[] = []): Promise<[TestbedProcess, Message]> {
      const c = tb.spawnDeno("a", "hold.ts", [...args, `--then=${then}`, ...extra], {
        name: `hold(${then})`,
        stdin: true,
      });
      const ready = await c.nextWith("ready", 15_000);
      const b = ready.bypass as { active: boolean; interface: string };
      assert.equal(b.active, true, `hold(${then}) not bypassed: ${JSON.stringify(ready)}`);
      assert.equal(b.interface, tb.a.ifname);
      return [c, ready];
    }

    /** After `c` died at `diedAt`: no XDP left (polled up to 1 s), and a new holder is bypassed. */
    async function afterDeath(what: string, diedAt: number): Promise<void> {
      let attached = true;
      for (let i = 0; i < 50 && attached; i++) {
        attached = await tb.xdpAttached("a");
        if (attached) await sleep(20);
      }
      const link = await tb.linkText("a");
      assert.equal(
        attached,
        false,
        `${what}: XDP still attached ${Date.now() - diedAt} ms after:\n${link}`,
      );
    }

    let [child] = await start("close");

    const cases: [string, string, (c: TestbedProcess) => Promise<number>][] = [
      ["close, then the program ends", "exit", async (c) => {
        const st = await c.wait(10_000);
        assert.equal(st.code, 0, `exit code ${st.code}: ${c.stderr}`);
        return Date.now();
      }],
      ["Deno.exit(0) with the socket open", "throw", async (c) => {
        const st = await c.wait(10_000);
        assert.equal(st.code, 0, `exit code ${st.code}: ${c.stderr}`);
        return Date.now();
      }],
      ["uncaught exception with the socket open", "wait", async (c) => {
        const st = await c.wait(10_000);
        assert.equal(st.code, 1, `exit code ${st.code}: ${c.stderr}`);
        assert.match(c.stderr, /deliberate uncaught exception/);
        return Date.now();
      }],
      ["SIGKILL while bound", "close", async (c) => {
        c.kill("SIGKILL");
        const st = await c.wait(10_000);
        assert.equal(st.signal, "SIGKILL");
        return Date.now();
      }],
    ];
    for (const [what, nextThen, end] of cases) {
      await t.step(what, async () => {
        assert.equal(await tb.xdpAttached("a"), true, "no XDP while bound");
        await child.send({ go: true });
        const diedAt = await end(child);
        await afterDeath(what, diedAt);
        // The next holder: bypassed, and bound within 1 s of the death.
        const extra = nextThen === "close" ? ["--recvOne"] : [];
        const [next, ready] = await start(nextThen, extra);
        const after = (ready.t as number) - diedAt;
        console.log(`${what}: next holder bypassed ${after} ms after the death`);
        assert.ok(after <= NEXT_WITHIN_MS, `${what}: next bypass bind ${after} ms after the death`);
        child = next;
      });
    }

    await t.step("the last holder receives through the rings, then ends cleanly", async () => {
      await sendUdp(tb, "b", "still-works", tb.a.ip, 9000);
      const r = await child.nextWith("received", 10_000);
      assert.equal(r.received, "still-works", JSON.stringify(r));
      assert.equal((r.stats as Record<string, number>).ipkts, 1, JSON.stringify(r));
      await child.send({ go: true });
      const st = await child.wait(10_000);
      assert.equal(st.code, 0, child.stderr);
      await afterDeath("final close", Date.now());
    });
  },
});
