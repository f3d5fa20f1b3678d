/**
 * Unmodified programs under the pre-load (issue 15, the bar's second item): a multicast
 * receiver and a sender loop, each run plainly (`deno run`) and under `nkb run --no-spin`,
 * against a kernel peer (python3) in the other namespace. Both ways the same datagrams
 * arrive; the program's namespace's kernel UDP counters (/proc/net/snmp) show which path
 * carried them, and `nkb stat` lists the receiver's socket with its group. The async echo
 * server is tests/preload.test.ts.
 */

import assert from "node:assert/strict";
import {
  createTestbed,
  programCommand,
  type Testbed,
  type TestbedProcess,
} from "./helpers/testbed.ts";
import { ROOT } from "./helpers/zig.ts";

const OPTS = { sanitizeResources: false, sanitizeOps: false };
const COUNT = 500;
// Administratively scoped (multicast cannot come from 198.18.0.0/15).
const GROUP = "239.255.15.1";
const MCAST_PORT = 9620;
const SINK_PORT = 9621;
// Datagrams between the peer's 1 ms rests: well under a veth backlog or socket buffer.
const BURST = 10;
// The program's own permissions.
const DENO_FLAGS = ["--no-lock", "--allow-net", "--unstable-net"];

function command(preload: boolean, script: string, args: string[]): string[] {
  return programCommand(preload, DENO_FLAGS, script, args);
}

interface StatSocket {
  cmdline: string[];
  local: { address: string; port: number };
  bypass: boolean;
  group: string | null;
  reason: string | null;
}

/** `nkb stat -a --json` in side a: every socket nkb tracks there, bypass or not. */
async function stat(tb: Testbed): Promise<StatSocket[]> {
  const cli = [Deno.execPath(), "run", "-A", "--no-lock", `${ROOT}cli.ts`];
  const out = await tb.execOk("a", [...cli, "stat", "-a", "--json"], 30_000);
  return JSON.parse(out).sockets as StatSocket[];
}

/** The route that carries multicast out of each side (the testbed has no default route). */
async function multicastRoutes(tb: Testbed): Promise<void> {
  for (const s of ["a", "b"] as const) {
    await tb.execOk(s, ["ip", "route", "add", "224.0.0.0/4", "dev", tb.side(s).ifname]);
  }
}

/**
 * A kernel multicast sender in side b: `count` datagrams to GROUP:port from b's address
 * (a rest of 1 ms every BURST), then "stop" three times 100 ms apart (one is enough).
 */
async function sendToGroup(tb: Testbed, port: number, count: number): Promise<void> {
  await tb.execOk("b", [
    "python3",
    "-c",
    `import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(${
      JSON.stringify(tb.b.ip)
    }))
for i in range(${count}):
    s.sendto(b"m%d" % i, (${JSON.stringify(GROUP)}, ${port}))
    if (i + 1) % ${BURST} == 0:
        time.sleep(0.001)
for _ in range(3):
    time.sleep(0.1)
    s.sendto(b"stop", (${JSON.stringify(GROUP)}, ${port}))`,
  ], 30_000);
}

interface RxOutcome {
  received: number;
  kernelIn: number;
  /** Datagrams the kernel dropped for a full receive buffer (why a plain run lost any). */
  rcvbufErrors: number;
  stderr: string;
  /** The program's socket as `nkb stat -a` showed it while joined; null when not listed. */
  listed: StatSocket | null;
}

/** How a receiver binds and joins: the usual ways, each a case. */
interface RxKind {
  name: string;
  bind: string;
  iface: (tb: Testbed) => string;
}

const RX_KINDS: RxKind[] = [
  { name: "bound to 0.0.0.0, joined on its address", bind: "0.0.0.0", iface: (tb) => tb.a.ip },
  { name: "bound to 0.0.0.0, joined on 0.0.0.0", bind: "0.0.0.0", iface: () => "0.0.0.0" },
  { name: "bound to the group, joined on its address", bind: GROUP, iface: (tb) => tb.a.ip },
];

async function runReceiver(preload: boolean, kind: RxKind): Promise<RxOutcome> {
  await using tb = await createTestbed();
  await multicastRoutes(tb);
  const script = "plain_mcast_rx.ts";
  const args = [kind.bind, `${MCAST_PORT}`, GROUP, kind.iface(tb), `${2 * COUNT}`];
  const proc = tb.spawn("a", command(preload, script, args), {
    name: `${script}${preload ? " (nkb run)" : ""}`,
  });
  await proc.next((m) => m.listening === true, 30_000, "listening");
  // Under nkb run the program is nkb run's child: known by its command line.
  const listed =
    (await stat(tb)).find((s) =>
      s.local.port === MCAST_PORT && s.cmdline.join(" ").includes(script)
    ) ?? null;
  const before = await tb.udpCounters("a");
  await sendToGroup(tb, MCAST_PORT, COUNT);
  const done = await proc.next((m) => m.received !== undefined, 30_000, "received");
  const after = await tb.udpCounters("a");
  assert.equal((await proc.wait(10_000)).code, 0, proc.stderr);
  return {
    received: Number(done.received),
    kernelIn: after.InDatagrams - before.InDatagrams,
    rcvbufErrors: after.RcvbufErrors - before.RcvbufErrors,
    stderr: proc.stderr,
    listed,
  };
}

for (const kind of RX_KINDS) {
  Deno.test({
    name: `unmodified multicast receiver ${kind.name}: all plainly and under nkb run, bypassing`,
    ...OPTS,
    fn: async () => {
      const plain = await runReceiver(false, kind);
      assert.equal(plain.received, COUNT, JSON.stringify(plain));
      assert.ok(plain.kernelIn >= COUNT, `plain: kernel InDatagrams ${plain.kernelIn}`);
      assert.equal(plain.listed, null, "a plain program is not nkb's");
      assert.equal(plain.stderr.trim(), "", plain.stderr);

      const nkb = await runReceiver(true, kind);
      assert.equal(nkb.received, COUNT, JSON.stringify(nkb));
      assert.ok(nkb.kernelIn < COUNT / 10, `nkb run: kernel InDatagrams ${nkb.kernelIn}`);
      assert.ok(nkb.listed !== null, "nkb stat lists the program's socket");
      const { local, bypass, group, reason } = nkb.listed;
      assert.deepEqual(
        { local, bypass, group, reason },
        {
          local: { address: kind.bind, port: MCAST_PORT },
          bypass: true,
          group: GROUP,
          reason: null,
        },
      );
      assert.equal(nkb.stderr.trim(), "", nkb.stderr);
    },
  });
}

/**
 * A kernel receiver in side b on b's address and SINK_PORT: prints {"ready":true}, then
 * {"got":N}, N distinct payloads, once no datagram came for 1 s after the first (3 s when
 * none came; 30 s in all).
 */
function startSink(tb: Testbed): TestbedProcess {
  return tb.spawn("b", [
    "python3",
    "-c",
    `import json, socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (root): python names only SO_RCVBUF
s.bind((${JSON.stringify(tb.b.ip)}, ${SINK_PORT}))
print(json.dumps({"ready": True}), flush=True)
seen = set()
end = time.monotonic() + 30
s.settimeout(3.0)
for _ in range(100000):
    if time.monotonic() >= end:
        break
    try:
        seen.add(s.recv(2048))
    except socket.timeout:
        break
    s.settimeout(1.0)
print(json.dumps({"got": len(seen)}), flush=True)`,
  ], { name: "sink@b" });
}

interface TxOutcome {
  sent: number;
  got: number;
  kernelOut: number;
  stderr: string;
}

async function runSender(preload: boolean, bind: "own" | "wildcard"): Promise<TxOutcome> {
  await using tb = await createTestbed();
  const sink = startSink(tb);
  await sink.next((m) => m.ready === true, 10_000, "ready");
  const host = bind === "own" ? tb.a.ip : "0.0.0.0";
  const args = [host, tb.b.ip, `${SINK_PORT}`, `${COUNT}`, `${BURST}`];
  const before = await tb.udpCounters("a");
  const out = await tb.exec("a", command(preload, "plain_sender.ts", args), 60_000);
  const after = await tb.udpCounters("a");
  assert.equal(out.code, 0, out.stdout + out.stderr);
  const got = await sink.next((m) => m.got !== undefined, 40_000, "got");
  return {
    sent: JSON.parse(out.stdout.trim()).sent,
    got: Number(got.got),
    kernelOut: after.OutDatagrams - before.OutDatagrams,
    stderr: out.stderr,
  };
}

Deno.test({
  name: "unmodified sender loop bound to its address: every datagram arrives; nkb run bypasses",
  ...OPTS,
  fn: async () => {
    const plain = await runSender(false, "own");
    assert.deepEqual([plain.sent, plain.got], [COUNT, COUNT], JSON.stringify(plain));
    assert.ok(plain.kernelOut >= COUNT, `plain: kernel OutDatagrams ${plain.kernelOut}`);
    assert.equal(plain.stderr.trim(), "", plain.stderr);

    const nkb = await runSender(true, "own");
    assert.deepEqual([nkb.sent, nkb.got], [COUNT, COUNT], JSON.stringify(nkb));
    assert.ok(nkb.kernelOut < COUNT / 10, `nkb run: kernel OutDatagrams ${nkb.kernelOut}`);
    assert.equal(nkb.stderr.trim(), "", nkb.stderr);
  },
});

Deno.test({
  name: "unmodified sender loop bound to 0.0.0.0: the same under nkb run, on the kernel path",
  ...OPTS,
  fn: async () => {
    // The contract: a unicast send from a wildcard-bound socket settles it on the kernel
    // path (README, "When bypass is decided"). The program must not notice.
    const plain = await runSender(false, "wildcard");
    assert.deepEqual([plain.sent, plain.got], [COUNT, COUNT], JSON.stringify(plain));
    assert.ok(plain.kernelOut >= COUNT, `plain: kernel OutDatagrams ${plain.kernelOut}`);

    const nkb = await runSender(true, "wildcard");
    assert.deepEqual([nkb.sent, nkb.got], [COUNT, COUNT], JSON.stringify(nkb));
    assert.ok(nkb.kernelOut >= COUNT, `nkb run: kernel OutDatagrams ${nkb.kernelOut}`);
    assert.equal(nkb.stderr.trim(), "", nkb.stderr);
  },
});
