/**
 * Fallback rules 7 and 8: a process without the privileges (capabilities,
 * locked memory) falls back with `missing-privilege` naming what is missing, or
 * exits under _NET_KERNEL_BYPASS_ERR_EXIT=1; packet filter rules (nftables,
 * iptables) and IPsec (xfrm policies, states) in the namespace keep sockets on
 * the kernel path, while rules added after setup leave a bypass socket alone.
 */

import assert from "node:assert/strict";
import {
  agentCommand,
  assertBypass,
  bindActive,
  bindNew,
  createFbTestbed,
  exchange,
  exitAll,
  OPTS,
  sh,
  show,
  sockPair,
  startAgent,
  startPair,
  startPeer,
  type Testbed,
} from "./fixtures/fb_driver.ts";

const SETPRIV = ["setpriv", "--inh-caps=-all", "--ambient-caps=-all"];

function dropCaps(caps: string[]): string[] {
  return [...SETPRIV, `--bounding-set=${caps.map((c) => `-${c}`).join(",")}`, "--"];
}

Deno.test({
  name: "rule 7: missing capabilities or memlock: missing-privilege naming them; ERR_EXIT=1 exits",
  ...OPTS,
  fn: async (t) => {
    await using tb = await createFbTestbed();
    const peer = await startPeer(tb, "b");
    await peer.ok("open", { id: "p", host: tb.b.ip, port: 9000 });
    let port = 9300;

    async function dropped(prefix: string[], detail: RegExp[], tag: string): Promise<void> {
      const ag = await startAgent(tb, "a", { prefix, name: `fb_agent(${tag})` });
      const p = port++;
      const r = await bindNew(ag, "s", tb.a.ip, p);
      assertBypass(r, { active: false, reason: "missing-privilege" });
      for (const re of detail) assert.match(r.bypass.detail ?? "", re, show(r.bypass));
      await exchange(tb, ag, peer, { ...sockPair(tb, "s", p), path: "kernel", tag });
      assert.equal(await tb.xdpAttached("a"), false, await tb.linkText("a"));
      await ag.exit();
    }

    await t.step("without CAP_NET_RAW", async () => {
      await dropped(dropCaps(["net_raw"]), [/NET_RAW/], "noraw");
    });

    await t.step("without CAP_NET_RAW, CAP_NET_ADMIN, CAP_BPF, CAP_SYS_ADMIN", async () => {
      const caps = ["net_raw", "net_admin", "bpf", "sys_admin"];
      await dropped(dropCaps(caps), [/NET_RAW/, /NET_ADMIN/, /BPF/], "nocaps");
    });

    await t.step("without CAP_IPC_LOCK and a 1 MiB memlock limit", async () => {
      const prefix = ["prlimit", "--memlock=1048576:1048576", ...dropCaps(["ipc_lock"])];
      await dropped(prefix, [/IPC_LOCK|memlock/i], "nomemlock");
    });

    await t.step(
      "_NET_KERNEL_BYPASS_ERR_EXIT=1 without CAP_NET_RAW: exit 1 naming it",
      async () => {
        const proc = tb.spawn("a", [...dropCaps(["net_raw"]), ...agentCommand()], {
          stdin: true,
          env: { _NET_KERNEL_BYPASS_ERR_EXIT: "1" },
          name: "fb_agent(ERR_EXIT=1)",
        });
        await proc.nextWith("ready", 20_000);
        await proc.send({ seq: 1, op: "new", id: "s" });
        await proc.send({ seq: 2, op: "bind", id: "s", host: tb.a.ip, port: port++ });
        const st = await proc.wait(15_000);
        assert.notEqual(st.code, 0, `exit code ${st.code}: ${proc.stderr}`);
        assert.equal(proc.messages.some((m) => m.re === 2), false, "bind answered: it went on");
        assert.match(proc.stderr, /missing-privilege/, proc.stderr);
        assert.match(proc.stderr, /NET_RAW/, proc.stderr);
      },
    );
    await peer.exit();
  },
});

/** The commands that add nftables table `table` with a rule dropping UDP to port 9. */
function nftDropTable(table: string): string[][] {
  return [
    ["nft", "add", "table", "inet", table],
    ["nft", "add", "chain", "inet", table, "c", "{ type filter hook input priority 0; }"],
    ["nft", "add", "rule", "inet", table, "c", "udp", "dport", "9", "drop"],
  ];
}

/** The command that adds an xfrm policy for a's datagrams to b. */
function xfrmPolicy(tb: Testbed): string[] {
  return [
    "ip",
    "xfrm",
    "policy",
    "add",
    "src",
    `${tb.a.ip}/32`,
    "dst",
    `${tb.b.ip}/32`,
    "dir",
    "out",
  ];
}

/** Adds an IPsec state: a full ESP SA, or where the kernel has no ESP a larval one. */
async function addXfrmState(tb: Testbed): Promise<boolean> {
  const r = await tb.exec("a", [
    "ip",
    "xfrm",
    "state",
    "add",
    "src",
    tb.a.ip,
    "dst",
    tb.b.ip,
    "proto",
    "esp",
    "spi",
    "0x1000",
    "mode",
    "transport",
    "enc",
    "cbc(aes)",
    "0x0123456789abcdef0123456789abcdef",
  ]);
  if (r.code === 0) return true;
  if (!/not found|not supported|Unknown/i.test(r.stderr)) {
    throw new Error(`ip xfrm state add: ${r.stderr}`);
  }
  // Kernels without ESP/AH still let an SPI be allocated: that larval SA is a state too.
  const spi = ["ip", "xfrm", "state", "allocspi", "src", tb.a.ip, "dst", tb.b.ip, "proto", "esp"];
  const larval = await tb.exec("a", [...spi, "mode", "transport"]);
  if (larval.code !== 0) throw new Error(`ip xfrm state allocspi: ${larval.stderr}`);
  return true;
}

Deno.test({
  name: "rule 8: nftables/iptables rules -> packet-filter, xfrm -> ipsec; rules after setup: kept",
  ...OPTS,
  fn: async (t) => {
    await using tb = await createFbTestbed();
    const [ag, peer] = await startPair(tb, 9000);
    let port = 9400;

    async function kernelCase(tag: string, reason: string): Promise<void> {
      const p = port++;
      const r = await bindNew(ag, tag, tb.a.ip, p);
      assertBypass(r, { active: false, reason });
      assert.equal(typeof r.bypass.detail, "string", show(r.bypass));
      await exchange(tb, ag, peer, { ...sockPair(tb, tag, p), path: "kernel", tag });
    }

    async function control(tag: string): Promise<void> {
      await bindActive(ag, tag, tb.a.ip, port++, tb.a.ifname);
      await ag.ok("close", { id: tag });
    }

    await t.step("an nftables rule: packet-filter; the table deleted: bypass again", async () => {
      await sh(tb, "a", ...nftDropTable("fbt"));
      await kernelCase("nft", "packet-filter");
      await sh(tb, "a", ["nft", "delete", "table", "inet", "fbt"]);
      await control("nft-ctl");
    });

    for (const ipt of ["iptables", "iptables-legacy"]) {
      await t.step(`an ${ipt} rule: packet-filter; deleted: bypass again`, async () => {
        // ./nkbw test installs nftables and iptables: their absence is a failure here.
        const which = await tb.exec("a", ["sh", "-c", `command -v ${ipt}`]);
        assert.equal(which.code, 0, `${ipt} is not installed`);
        const rule = ["INPUT", "-p", "udp", "--dport", "9", "-j", "DROP"];
        await sh(tb, "a", [ipt, "-A", ...rule]);
        await kernelCase(ipt, "packet-filter");
        await sh(tb, "a", [ipt, "-D", ...rule]);
        await control(`${ipt}-ctl`);
      });
    }

    await t.step("an xfrm policy: ipsec; flushed: bypass again", async () => {
      await sh(tb, "a", xfrmPolicy(tb));
      await kernelCase("xfrmpol", "ipsec");
      await sh(tb, "a", ["ip", "xfrm", "policy", "flush"]);
      await control("xfrmpol-ctl");
    });

    await t.step("an xfrm state: ipsec", async () => {
      assert.equal(await addXfrmState(tb), true);
      const r = await bindNew(ag, "xfrmsa", tb.a.ip, port++);
      assertBypass(r, { active: false, reason: "ipsec" });
      await sh(tb, "a", ["ip", "xfrm", "state", "flush"]);
    });

    await t.step("rules added after setup: the bypass socket keeps working", async () => {
      const p = port++;
      await bindActive(ag, "after", tb.a.ip, p, tb.a.ifname);
      await sh(tb, "a", ...nftDropTable("fbt2"), xfrmPolicy(tb));
      await exchange(tb, ag, peer, { ...sockPair(tb, "after", p), path: "bypass", tag: "after" });
      assertBypass(await ag.ok("state", { id: "after" }), { active: true, ifname: tb.a.ifname });
      // A socket decided now falls back.
      const late = await bindNew(ag, "late", tb.a.ip, port++);
      assertBypass(late, { active: false, reason: "packet-filter" });
    });
    await exitAll(ag, peer);
  },
});
