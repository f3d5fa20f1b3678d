/**
 * Fallback rules 10 and 12: ICMP port-unreachable shows on a kernel-path socket
 * as ConnectionRefused and not on a bypass socket (the contract); bad arguments
 * and misuse give typed errors.
 */

import assert from "node:assert/strict";
import {
  assertBypass,
  createFbTestbed,
  delta,
  type ErrInfo,
  OPTS,
  type Reply,
  show,
  sleep,
  startAgent,
  udp,
} from "./fixtures/fb_driver.ts";

Deno.test({
  name: "rule 10: ICMP port unreachable: ConnectionRefused on the kernel path, nothing on bypass",
  ...OPTS,
  fn: async (t) => {
    await using tb = await createFbTestbed();
    const ag = await startAgent(tb, "a");
    const closed = [tb.b.ip, 9999];

    await t.step("kernelOnly socket connected to a closed port", async () => {
      await ag.ok("new", { id: "k", opts: { kernelOnly: true } });
      await ag.ok("bind", { id: "k", host: tb.a.ip, port: 9700 });
      const c = await ag.ok("connect", { id: "k", host: closed[0], port: closed[1] });
      assertBypass(c, { active: false, reason: "forced-kernel" });
      const first = await ag.ok("send", { id: "k", to: null, tag: "icmp-k" });
      assert.equal(first.sent, 1, show(first));
      await sleep(200); // the ICMP error comes back
      const errs: (ErrInfo | undefined)[] = [];
      const second = await ag.ok("send", { id: "k", to: null, tag: "icmp-k2" });
      errs.push(second.errors[0]);
      if (second.sent === 1) {
        // The error may be reported by the next receive instead.
        const r = await ag.ok("recv", { id: "k", max: 1, timeoutMs: 300 });
        errs.push(r.error as ErrInfo | undefined);
      }
      assert.ok(
        errs.some((e) => e?.name === "ConnectionRefused"),
        `no ConnectionRefused: send ${show(second)}; errors ${show(errs)}`,
      );
    });

    await t.step("bypass socket connected to the same closed port: no error", async () => {
      await ag.ok("new", { id: "b" });
      await ag.ok("bind", { id: "b", host: tb.a.ip, port: 9701 });
      const c = await ag.ok("connect", { id: "b", host: closed[0], port: closed[1] });
      assertBypass(c, { active: true, ifname: tb.a.ifname });
      const before = await udp(tb, "b");
      const s = await ag.ok("send", { id: "b", to: null, tag: "icmp-b", count: 5, gapMs: 100 });
      assert.equal(s.sent, 5, show(s));
      assert.deepEqual(s.errors, [], show(s));
      assert.equal(s.stats.opkts, 5, show(s));
      const r = await ag.ok("recv", { id: "b", max: 1, timeoutMs: 300 });
      assert.equal(r.error, null, show(r));
      assert.deepEqual(r.got, [], show(r));
      const again = await ag.ok("send", { id: "b", to: null, tag: "icmp-b-again" });
      assert.equal(again.sent, 1, show(again));
      // The datagrams did reach the peer's kernel, which answered port unreachable.
      const noPorts = delta(before, await udp(tb, "b"), "NoPorts");
      assert.ok(noPorts >= 5, `peer NoPorts grew by ${noPorts}`);
    });
    await ag.exit();
  },
});

Deno.test({
  name:
    "rule 12: bad addresses TypeError, bad ports RangeError, closed BadResource, pending receives",
  ...OPTS,
  fn: async (t) => {
    await using tb = await createFbTestbed();
    const ag = await startAgent(tb, "a");
    const peerAddr = { $addr: [tb.b.ip, 9000] };
    let n = 0;

    /** Calls `method(...args)` on a new (or the given) socket and returns the error's name. */
    async function errName(method: string, args: unknown[], id?: string): Promise<string> {
      const sid = id ?? `x${n++}`;
      if (id === undefined) await ag.ok("new", { id: sid });
      const r: Reply = await ag.call("call", { id: sid, method, args });
      assert.equal(r.ok, false, `${method}(${JSON.stringify(args)}) succeeded: ${show(r)}`);
      return r.error?.name ?? "";
    }

    await ag.ok("new", { id: "bound" });
    await ag.ok("bind", { id: "bound", host: tb.a.ip, port: 9710 });

    await t.step("invalid addresses: Deno's errors in bind, connect and send", async () => {
      // Names are looked up (none resolves: no DNS in the namespace), except by sendSync,
      // which refuses them; an IPv6 address is no bind for nkb and no destination for an
      // IPv4 socket (EAFNOSUPPORT, as Deno's).
      const want: Record<string, [string, string, string]> = {
        "300.1.1.1": ["Error", "TypeError", "Error"],
        "abc": ["Error", "TypeError", "Error"],
        "::1": ["NotSupported", "Error", "Error"],
      };
      for (const [bad, [bindErr, syncErr, sendErr]] of Object.entries(want)) {
        assert.equal(await errName("bind", [{ hostname: bad, port: 9711 }]), bindErr, bad);
        assert.equal(await errName("connect", [{ hostname: bad, port: 9000 }]), bindErr, bad);
        const to = { $addr: [bad, 9000] };
        assert.equal(await errName("sendSync", [{ $bytes: 4 }, to], "bound"), syncErr, bad);
        assert.equal(await errName("send", [{ $bytes: 4 }, to], "bound"), sendErr, bad);
        assert.equal(await errName("sendSync", [{ $bytes: 4 }, to]), syncErr, `${bad} unbound`);
      }
    });

    await t.step(
      "ports -1 and 70000: RangeError in bind and connect, TypeError in send (Deno's)",
      async () => {
        for (const port of [-1, 70000]) {
          const what = `port ${port}`;
          assert.equal(await errName("bind", [{ hostname: tb.a.ip, port }]), "RangeError", what);
          assert.equal(await errName("connect", [{ hostname: tb.b.ip, port }]), "RangeError", what);
          const to = { $addr: [tb.b.ip, port] };
          assert.equal(await errName("sendSync", [{ $bytes: 4 }, to], "bound"), "TypeError", what);
          assert.equal(await errName("send", [{ $bytes: 4 }, to], "bound"), "TypeError", what);
        }
      },
    );

    await t.step("sendSync of 70000 bytes: Error EMSGSIZE (Deno's)", async () => {
      const name = await errName("sendSync", [{ $bytes: 70000 }, peerAddr], "bound");
      assert.equal(name, "Error");
      assert.equal(await errName("sendSync", [{ $bytes: 70000 }, peerAddr]), "Error");
    });

    await t.step("receiveSync into a 0-byte buffer: no error (null: nothing came)", async () => {
      const args = [{ $bytes: 0 }, { timeoutMs: 0 }];
      const r = await ag.call("call", { id: "bound", method: "receiveSync", args });
      assert.equal(r.ok, true, show(r));
    });

    await t.step("a second receive() while one is pending waits; close: Interrupted", async () => {
      await ag.ok("new", { id: "busy" });
      await ag.ok("bind", { id: "busy", host: tb.a.ip, port: 9712 });
      const r = await ag.ok("busy", { id: "busy" });
      assert.deepEqual(r.secondBeforeClose, { pending: true }, show(r));
      assert.equal((r.second as ErrInfo | null)?.name, "Interrupted", show(r));
      assert.equal((r.first as ErrInfo | null)?.name, "Interrupted", show(r));
    });

    await t.step("every call after close, and a second close: BadResource", async () => {
      await ag.ok("new", { id: "c" });
      await ag.ok("bind", { id: "c", host: tb.a.ip, port: 9713 });
      await ag.ok("close", { id: "c" });
      const calls: [string, unknown[]][] = [
        ["bind", [{ hostname: tb.a.ip, port: 9714 }]],
        ["connect", [{ hostname: tb.b.ip, port: 9000 }]],
        ["sendSync", [{ $bytes: 4 }, peerAddr]],
        ["send", [{ $bytes: 4 }, peerAddr]],
        ["receiveSync", [{ $bytes: 64 }, { timeoutMs: 0 }]],
        ["receive", [{ $bytes: 64 }]],
        ["stats", []],
        ["joinMulticastV4", ["239.255.18.1", tb.a.ip]],
        ["close", []],
      ];
      for (const [method, args] of calls) {
        assert.equal(await errName(method, args, "c"), "BadResource", method);
      }
      // addr still answers, as Deno's.
      const addr = await ag.call("addr", { id: "c" });
      assert.deepEqual(addr.addr, { transport: "udp", hostname: tb.a.ip, port: 9713 }, show(addr));
      // A never-bound socket too.
      await ag.ok("new", { id: "c2" });
      await ag.ok("close", { id: "c2" });
      assert.equal(await errName("close", [], "c2"), "BadResource", "double close");
      assert.equal(await errName("sendSync", [{ $bytes: 4 }, peerAddr], "c2"), "BadResource");
    });
    await ag.exit();
  },
});
