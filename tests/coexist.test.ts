/**
 * While a bypass socket is active on an interface, the rest of the stack keeps
 * working there: ICMP echo, ARP, TCP, and UDP to another port.
 */

import assert from "node:assert/strict";
import { createNetPair } from "./helpers/netns.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };

Deno.test({
  name: "coexistence: ping, ARP, TCP and kernel UDP keep working beside an active bypass socket",
  ...opts,
  fn: async (t) => {
    await using net = await createNetPair();
    const server = net.spawnDeno(net.nsA, "echo_server.ts", [
      "--mode=bypass",
      `--host=${net.ipA}`,
      "--port=9000",
      "--count=100",
      "--idleMs=60000",
    ]);
    const ready = await server.nextWith("ready", 15_000);
    assert.equal((ready.bypass as { active: boolean }).active, true, JSON.stringify(ready));
    assert.equal(
      await net.xdpAttached(net.nsA, net.ifA),
      true,
      await net.linkText(net.nsA, net.ifA),
    );
    // Forget what the setup resolved: ARP must work from scratch.
    await net.execOk(net.nsA, ["ip", "neigh", "flush", "dev", net.ifA]);
    await net.execOk(net.nsB, ["ip", "neigh", "flush", "dev", net.ifB]);

    await t.step("ping both ways (ICMP echo, raw socket)", async () => {
      for (const [ns, dst] of [[net.nsB, net.ipA], [net.nsA, net.ipB]]) {
        const ping = net.spawnPython(ns, "ping.py", [dst, "3", "1"]);
        const r = await ping.nextWith("received", 10_000);
        assert.equal(r.received, 3, `ping ${dst} from ${ns}: ${JSON.stringify(r)}`);
      }
    });

    await t.step("ARP: each side has the other's address resolved", async () => {
      const a = await net.neigh(net.nsA, net.ifA);
      const b = await net.neigh(net.nsB, net.ifB);
      const ok = /REACHABLE|STALE|DELAY|PROBE/;
      const lineA = a.split("\n").find((l) => l.startsWith(net.ipB + " ")) ?? "";
      const lineB = b.split("\n").find((l) => l.startsWith(net.ipA + " ")) ?? "";
      assert.match(lineA, ok, `ip neigh in a:\n${a}`);
      assert.match(lineA, /lladdr/, `ip neigh in a:\n${a}`);
      assert.match(lineB, ok, `ip neigh in b:\n${b}`);
      assert.match(lineB, /lladdr/, `ip neigh in b:\n${b}`);
    });

    await t.step("TCP: a connection to the bypass host echoes 64 KiB", async () => {
      const srv = net.spawnDeno(net.nsA, "tcp.ts", [
        "--role=server",
        `--host=${net.ipA}`,
        "--port=9500",
      ]);
      await srv.nextWith("ready", 15_000);
      const cli = net.spawnDeno(net.nsB, "tcp.ts", [
        "--role=client",
        `--host=${net.ipA}`,
        "--port=9500",
      ]);
      const c = await cli.nextWith("done", 20_000);
      const s = await srv.nextWith("done", 20_000);
      assert.equal(c.ok, true, `client ${JSON.stringify(c)} server ${JSON.stringify(s)}`);
      assert.equal(s.ok, true, `server ${JSON.stringify(s)}`);
    });

    await t.step("UDP to another port of the same address goes through the kernel", async () => {
      const count = 2000;
      const rx = net.spawnDeno(net.nsA, "rx.ts", [
        "--mode=kernel",
        `--host=${net.ipA}`,
        "--port=9001",
        `--count=${count}`,
        "--api=async",
        `--ackTo=${net.ipB}`,
        "--ackPort=9901",
      ]);
      await rx.nextWith("ready", 15_000);
      const tx = net.spawnDeno(net.nsB, "tx.ts", [
        "--mode=kernel",
        `--host=${net.ipB}`,
        "--port=9101",
        `--to=${net.ipA}`,
        "--toPort=9001",
        `--count=${count}`,
        "--api=async",
        "--window=32",
        "--ackPort=9901",
      ]);
      await tx.nextWith("done", 30_000);
      const r = await rx.nextWith("done", 30_000);
      assert.equal(r.missing, 0, JSON.stringify(r));
      assert.equal(r.corrupt, 0, JSON.stringify(r));
    });

    await t.step("the bypass socket still echoes, and saw none of the other traffic", async () => {
      const cli = net.spawnDeno(net.nsB, "echo_client.ts", [
        "--mode=kernel",
        `--host=${net.ipB}`,
        "--port=9100",
        `--to=${net.ipA}`,
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
