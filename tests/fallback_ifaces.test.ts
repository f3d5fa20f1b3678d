/**
 * Fallback rule 6: a socket bound to an address on an interface that cannot
 * carry the bypass (loopback, bond, bridge, VLAN, macvlan, vxlan, tun/tap, a
 * device with a foreign XDP program, a down device, a too-large MTU, no device
 * at all) reports why, and its datagrams still flow through the kernel.
 * Interface kinds this kernel does not have (it may lack bonding or 802.1Q) are
 * reported on stderr and not checked.
 */

import assert from "node:assert/strict";
import {
  addrUp,
  addVeth,
  bindActive,
  createFbTestbed,
  exchange,
  exitAll,
  FIXTURES,
  OPTS,
  sh,
  show,
  startAgent,
  startPeer,
  type Testbed,
} from "./fixtures/fb_driver.ts";
import type { Side } from "../examples/testbed.ts";

const MISSING_KIND = /Unknown device type|not supported|Requested type not found|No such/i;

/** `ip link add ...` in side `s`; false (with a note) when this kernel lacks the kind. */
async function tryAdd(tb: Testbed, s: Side, args: string[], what: string): Promise<boolean> {
  const r = await tb.exec(s, ["ip", "link", "add", ...args]);
  if (r.code === 0) return true;
  if (MISSING_KIND.test(r.stderr)) {
    console.error(
      `NOTE: this kernel has no ${what} (${r.stderr.trim()}): the live case cannot run; ` +
        "tests/decide.test.ts checks its decision on a synthetic link",
    );
    return false;
  }
  throw new Error(`ip link add ${args.join(" ")}: ${r.stderr}`);
}

Deno.test({
  name: "rule 6: loopback, bond, bridge, VLAN, macvlan, vxlan, tun/tap, foreign XDP, down, MTU",
  ...OPTS,
  fn: async (t) => {
    await using tb = await createFbTestbed();
    const ag = await startAgent(tb, "a");
    const peer = await startPeer(tb, "b");
    const local = await startPeer(tb, "a", "fb_peer@a");
    let port = 9200;

    /** Binds a new socket to `ip`, checks the reason, then (given a peer) kernel traffic. */
    async function check(
      tag: string,
      ip: string,
      reason: string | string[],
      via?: { peer: "b" | "a"; ip: string },
    ): Promise<void> {
      const id = `s-${tag}`;
      const p = port++;
      await ag.ok("new", { id });
      const r = await ag.ok("bind", { id, host: ip, port: p });
      const reasons = Array.isArray(reason) ? reason : [reason];
      assert.equal(r.bypass.active, false, `${tag}: ${show(r.bypass)}`);
      assert.ok(reasons.includes(r.bypass.reason ?? ""), `${tag}: ${show(r.bypass)}`);
      assert.equal(typeof r.bypass.detail, "string", `${tag}: ${show(r.bypass)}`);
      if (via === undefined) return;
      const ctl = via.peer === "b" ? peer : local;
      const ps = `p-${tag}`;
      await ctl.ok("open", { id: ps, host: via.ip, port: p + 500 });
      await exchange(tb, ag, ctl, {
        id,
        peerSock: ps,
        to: [via.ip, p + 500],
        back: [ip, p],
        path: "kernel",
        tag,
        counters: via.peer === "b" ? "a" : null,
      });
    }

    /** A veth pair fb<x>a (in a) - fb<x>b (in b) with 198.19.<net>.1/.2. */
    async function pair(x: string, net: number, extra: string[] = []): Promise<[string, string]> {
      const [na, nb] = [`fb${x}a`, `fb${x}b`];
      await addVeth(tb, na, nb, extra);
      await addrUp(tb, "b", `198.19.${net}.2/24`, nb);
      return [na, nb];
    }

    await t.step("lo: loopback; traffic with a local kernel socket", async () => {
      await check("lo", "127.0.0.1", "loopback", { peer: "a", ip: "127.0.0.1" });
    });

    /** Enslaves the a end of pair(x, net) to `dev` (bond, bridge), which gets 198.19.<net>.1. */
    async function enslave(dev: string, x: string, net: number): Promise<string> {
      const [na] = await pair(x, net);
      await sh(
        tb,
        "a",
        ["ip", "link", "set", "dev", na, "master", dev],
        ["ip", "addr", "add", `198.19.${net}.1/24`, "dev", dev],
        ["ip", "link", "set", "dev", na, "up"],
        ["ip", "link", "set", "dev", dev, "up"],
      );
      return na;
    }

    await t.step("bond with a veth enslaved: link-aggregation", async () => {
      if (!await tryAdd(tb, "a", ["fbbond", "type", "bond"], "bonding driver")) return;
      const na = await enslave("fbbond", "bd", 3);
      await check("bond", "198.19.3.1", "link-aggregation", { peer: "b", ip: "198.19.3.2" });
      await sh(tb, "a", ["ip", "addr", "add", "198.19.103.1/24", "dev", na]);
      await check("bondslave", "198.19.103.1", "link-aggregation");
    });

    await t.step("bridge with a veth port: bridge; an address on the port: bridge", async () => {
      if (!await tryAdd(tb, "a", ["fbbr", "type", "bridge"], "bridge")) return;
      const na = await enslave("fbbr", "br", 4);
      await check("bridge", "198.19.4.1", "bridge", { peer: "b", ip: "198.19.4.2" });
      await sh(tb, "a", ["ip", "addr", "add", "198.19.104.1/24", "dev", na]);
      await check("brport", "198.19.104.1", "bridge");
    });

    await t.step("VLAN on a veth: vlan", async () => {
      const [na, nb] = await pair("vl", 5);
      await sh(tb, "a", ["ip", "link", "set", "dev", na, "up"]);
      if (
        !await tryAdd(tb, "a", ["link", na, "name", "fbvl", "type", "vlan", "id", "100"], "802.1Q")
      ) {
        return;
      }
      await tryAdd(tb, "b", ["link", nb, "name", "fbvl", "type", "vlan", "id", "100"], "802.1Q");
      await addrUp(tb, "a", "198.19.105.1/24", "fbvl");
      await addrUp(tb, "b", "198.19.105.2/24", "fbvl");
      await check("vlan", "198.19.105.1", "vlan", { peer: "b", ip: "198.19.105.2" });
    });

    const virtuals = [["macvlan", "fbmv", "bridge", 6], ["ipvlan", "fbiv", "l2", 7]] as const;
    for (const [kind, dev, mode, net] of virtuals) {
      await t.step(`${kind} on the veth: virtual-interface`, async () => {
        const link = ["link", tb.a.ifname, "name", dev, "type", kind, "mode", mode];
        if (!await tryAdd(tb, "a", link, kind)) return;
        await addrUp(tb, "a", `198.19.${net}.1/24`, dev);
        await sh(tb, "b", ["ip", "addr", "add", `198.19.${net}.2/24`, "dev", tb.b.ifname]);
        const via = { peer: "b", ip: `198.19.${net}.2` } as const;
        await check(kind, `198.19.${net}.1`, "virtual-interface", via);
      });
    }

    await t.step("vxlan over the veth: virtual-interface", async () => {
      for (const s of ["a", "b"] as const) {
        const [me, other] = s === "a" ? [tb.a.ip, tb.b.ip] : [tb.b.ip, tb.a.ip];
        const args = ["fbvx", "type", "vxlan", "id", "42", "local", me, "remote", other];
        if (!await tryAdd(tb, s, [...args, "dstport", "4789", "dev", tb.side(s).ifname], "vxlan")) {
          return;
        }
        const ip = `198.19.8.${s === "a" ? 1 : 2}/24`;
        await addrUp(tb, s, ip, "fbvx");
      }
      await check("vxlan", "198.19.8.1", "virtual-interface", { peer: "b", ip: "198.19.8.2" });
    });

    await t.step("tap: virtual-interface; traffic to a local socket", async () => {
      await sh(tb, "a", ["ip", "tuntap", "add", "mode", "tap", "fbtap"]);
      await addrUp(tb, "a", "198.19.9.1/24", "fbtap");
      await check("tap", "198.19.9.1", "virtual-interface", { peer: "a", ip: tb.a.ip });
    });

    await t.step("tun (no link layer): virtual-interface or unsupported-interface", async () => {
      await sh(tb, "a", ["ip", "tuntap", "add", "mode", "tun", "fbtun"]);
      await addrUp(tb, "a", "198.19.10.1/24", "fbtun");
      await check("tun", "198.19.10.1", ["virtual-interface", "unsupported-interface"], {
        peer: "a",
        ip: tb.a.ip,
      });
      const r = await ag.ok("state", { id: "s-tun" });
      console.error(`NOTE: tun reports ${r.bypass.reason}: ${r.bypass.detail}`);
    });

    for (const mode of ["generic", "native"]) {
      await t.step(`veth with a foreign XDP program (${mode}): foreign-xdp-program`, async () => {
        const x = mode === "generic" ? "xg" : "xn";
        const net = mode === "generic" ? 11 : 12;
        const [na] = await pair(x, net);
        await addrUp(tb, "a", `198.19.${net}.1/24`, na);
        const att = await tb.exec("a", ["python3", `${FIXTURES}fb_xdp.py`, na, mode]);
        assert.equal(att.code, 0, `fb_xdp.py: ${att.stdout} ${att.stderr}`);
        assert.equal(await tb.xdpAttached("a", na), true, await tb.linkText("a", na));
        await check(`xdp-${mode}`, `198.19.${net}.1`, "foreign-xdp-program", {
          peer: "b",
          ip: `198.19.${net}.2`,
        });
        // Control: without the program the same address is bypassed.
        await tb.execOk("a", ["python3", `${FIXTURES}fb_xdp.py`, na, "detach"]);
        const id = `ctl-${mode}`;
        await bindActive(ag, id, `198.19.${net}.1`, port++, na);
        await ag.ok("close", { id });
      });
    }

    await t.step("a veth that is down: interface-down", async () => {
      const [na] = await pair("dn", 13);
      await sh(tb, "a", ["ip", "addr", "add", "198.19.13.1/24", "dev", na]);
      await check("down", "198.19.13.1", "interface-down");
    });

    await t.step("a veth with MTU 4000: mtu-too-large", async () => {
      const [na] = await pair("mt", 14, ["mtu", "4000"]);
      await addrUp(tb, "a", "198.19.14.1/24", na);
      await check("mtu", "198.19.14.1", "mtu-too-large", { peer: "b", ip: "198.19.14.2" });
    });

    await t.step("an address no interface owns (ip_nonlocal_bind): no-interface", async () => {
      await sh(tb, "a", ["sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1"]);
      await check("nonlocal", "198.19.99.1", "no-interface");
      await sh(tb, "a", ["sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=0"]);
    });

    await exitAll(ag, peer, local);
  },
});
