/**
 * While a bypass socket is active on an interface, the rest of the stack keeps
 * working there: ICMP echo, ARP, TCP, and UDP to another port.
 */

import assert from "node:assert/strict";
import { createTestbed } from "./helpers/testbed.ts";
import { spawnRx, spawnTx, WINDOW } from "./helpers/stream.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };

Deno.test({
  name: "coexistence: ping, ARP, TCP and kernel UDP keep working beside an active bypass socket",
  ...opts,
  fn: async (t) => {
    await using tb = await createTestbed();
    const server = tb.spawnDeno("a", "echo_server.ts", [
      "--mode=bypass",
      `--host=${tb.a.ip}`,
      "--port=9000",
      "--count=100",
      "--idleMs=60000",
    ]);
    const ready = await server.nextWith("ready", 15_000);
    assert.equal((ready.bypass as { active: boolean }).active, true, JSON.stringify(ready));
    assert.equal(
      await tb.xdpAttached("a"),
      true,
      await tb.linkText("a"),
    );
    // Forget what the setup resolved: ARP must work from scratch.
    await tb.execOk("a", ["ip", "neigh", "flush", "dev", tb.a.ifname]);
    await tb.execOk("b", ["ip", "neigh", "flush", "dev", tb.b.ifname]);

    await t.step("ping both ways (ICMP echo, raw socket)", async () => {
      for (const [s, dst] of [["b", tb.a.ip], ["a", tb.b.ip]] as const) {
        const ping = tb.spawnPython(s, "ping.py", [dst, "3", "1"]);
        const r = await ping.nextWith("received", 10_000);
        assert.equal(r.received, 3, `ping ${dst} from ${tb.side(s).ns}: ${JSON.stringify(r)}`);
      }
    });

    await t.step("ARP: each side has the other's address resolved", async () => {
      const a = await tb.neigh("a");
      const b = await tb.neigh("b");
      const ok = /REACHABLE|STALE|DELAY|PROBE/;
      const lineA = a.split("\n").find((l) => l.startsWith(tb.b.ip + " ")) ?? "";
      const lineB = b.split("\n").find((l) => l.startsWith(tb.a.ip + " ")) ?? "";
      assert.match(lineA, ok, `ip neigh in a:\n${a}`);
      assert.match(lineA, /lladdr/, `ip neigh in a:\n${a}`);
      assert.match(lineB, ok, `ip neigh in b:\n${b}`);
      assert.match(lineB, /lladdr/, `ip neigh in b:\n${b}`);
    });

    await t.step("TCP: a connection to the bypass host echoes 64 KiB", async () => {
      const srv = tb.spawnDeno("a", "tcp.ts", [
        "--role=server",
        `--host=${tb.a.ip}`,
        "--port=9500",
      ]);
      await srv.nextWith("ready", 15_000);
      const cli = tb.spawnDeno("b", "tcp.ts", [
        "--role=client",
        `--host=${tb.a.ip}`,
        "--port=9500",
      ]);
      const c = await cli.nextWith("done", 20_000);
      const s = await srv.nextWith("done", 20_000);
      assert.equal(c.ok, true, `client ${JSON.stringify(c)} server ${JSON.stringify(s)}`);
      assert.equal(s.ok, true, `server ${JSON.stringify(s)}`);
    });

    await t.step("UDP to another port of the same address goes through the kernel", async () => {
      const count = 2000;
      const rx = spawnRx(tb, "a", {
        mode: "kernel",
        port: 9001,
        count,
        api: "async",
        ackTo: tb.b.ip,
        ackPort: 9901,
      });
      await rx.nextWith("ready", 15_000);
      const tx = spawnTx(tb, "b", {
        mode: "kernel",
        port: 9101,
        toPort: 9001,
        count,
        api: "async",
        window: WINDOW,
        ackPort: 9901,
      });
      await tx.nextWith("done", 30_000);
      const r = await rx.nextWith("done", 30_000);
      assert.equal(r.missing, 0, JSON.stringify(r));
      assert.equal(r.corrupt, 0, JSON.stringify(r));
    });

    await t.step("the bypass socket still echoes, and saw none of the other traffic", async () => {
      const cli = tb.spawnDeno("b", "echo_client.ts", [
        "--mode=kernel",
        `--host=${tb.b.ip}`,
        "--port=9100",
        `--to=${tb.a.ip}`,
        "--toPort=9000",
        "--count=100",
      ]);
      const c = await cli.nextWith("done", 30_000);
      assert.equal(c.answered, 100, JSON.stringify(c));
      const done = await server.nextWith("done", 10_000);
      const st = done.stats as Record<string, number>;
      assert.equal(done.echoed, 100, JSON.stringify(done));
      assert.equal(st.ipkts, 100, `bypass socket stats ${JSON.stringify(st)}`);
      assert.equal(st.kernelIpkts, 0, `bypass socket stats ${JSON.stringify(st)}`);
      assert.equal(st.rxInvalid, 0, `bypass socket stats ${JSON.stringify(st)}`);
    });
  },
});
