/**
 * `nkb stat` and `nkb phys` as a library: the tables' columns and alignment for
 * each option, the sockets listed by default and with `all`, and the queue
 * holdings `listPhys` reads from the registry (on `lo`, no namespaces needed).
 */

import assert from "node:assert/strict";
import { formatStat, listSockets, statJson } from "../src/stat.ts";
import { formatPhys, listPhys, type PhysInfo, UnknownFieldError } from "../src/phys.ts";
import {
  processStartTicks,
  type RegisteredSocket,
  RegistryLayout as L,
} from "../src/registry_read.ts";
import {
  heldUdpSocket,
  liveProcess,
  ownNetnsIno,
  plantFile,
  registryFile,
  ZERO_STATS,
} from "./helpers/registry_file.ts";

function sock(over: Partial<RegisteredSocket>): RegisteredSocket {
  return {
    pid: 1495,
    uid: 0,
    user: "root",
    command: "udpsend",
    cmdline: ["sparc/udpsend", "-n", "-i", "192.168.0.1"],
    netnsIno: "1",
    slot: 0,
    createdMs: 0,
    local: { address: "0.0.0.0", port: 48944 },
    remote: null,
    state: "Idle",
    bypass: true,
    affine: false,
    interface: "net11",
    ifindex: 3,
    firstQueue: 0,
    queueCount: 1,
    recvMode: 1,
    reason: null,
    stats: { ...ZERO_STATS, opkts: 281790 },
    inode: "1",
    recvQ: 0,
    group: null,
    groups: 0,
    verified: true,
    ...over,
  };
}

// Given out of order: the table sorts by pid, then slot.
const SOCKETS: RegisteredSocket[] = [
  sock({
    pid: 20001,
    slot: 4,
    local: { address: "198.18.0.1", port: 9000 },
    remote: { address: "198.18.0.2", port: 12345 },
    state: "Connected",
    stats: { ...ZERO_STATS, ipkts: 5, kernelIpkts: 2, opkts: 7, kernelOpkts: 1, dpkts: 3 },
    netnsIno: "4026532301",
    recvQ: 17,
    group: "239.1.2.3",
    groups: 3,
    user: "daemon",
    command: "echo\x1b[31m",
    cmdline: ["deno", "run", "a\nb"],
  }),
  sock({}),
  sock({
    pid: 20001,
    slot: 1,
    bypass: false,
    interface: null,
    reason: "loopback",
    local: { address: "127.0.0.1", port: 53 },
  }),
];

function lines(...l: string[]): string {
  return l.map((x) => `${x}\n`).join("");
}

Deno.test("formatStat: netstat -k columns (Netns, Recv-Q, Group too), aligned, numbers right, sorted by pid and slot", () => {
  assert.equal(
    formatStat(SOCKETS),
    lines(
      "UDP: IPv4",
      "Local Address   Remote Address   State     If         Netns Recv-Q Ipkts  Opkts Dpkts Group",
      "--------------- ---------------- --------- ----- ---------- ------ ----- ------ ----- -----------",
      "*:48944                          Idle      net11          1      0     0 281790     0 -",
      "127.0.0.1:53                     Idle      -              1      0     0 281790     0 -",
      "198.18.0.1:9000 198.18.0.2:12345 Connected net11 4026532301     17     7      8     3 239.1.2.3+2",
    ),
  );
});

Deno.test("formatStat -u: User, Pid and comm; control characters never reach the terminal", () => {
  assert.equal(
    formatStat(SOCKETS, { users: true }),
    lines(
      "UDP: IPv4",
      "Local Address   Remote Address   State     If         Netns Recv-Q Ipkts  Opkts Dpkts Group       User     Pid Command",
      "--------------- ---------------- --------- ----- ---------- ------ ----- ------ ----- ----------- ------ ----- ---------",
      "*:48944                          Idle      net11          1      0     0 281790     0 -           root    1495 udpsend",
      "127.0.0.1:53                     Idle      -              1      0     0 281790     0 -           root   20001 udpsend",
      "198.18.0.1:9000 198.18.0.2:12345 Connected net11 4026532301     17     7      8     3 239.1.2.3+2 daemon 20001 echo?[31m",
    ),
  );
});

Deno.test("formatStat -v: the whole command line, untruncated", () => {
  const long = sock({ pid: 9, cmdline: ["x", "y".repeat(300)] });
  const out = formatStat([...SOCKETS, long], { verbose: true });
  assert.equal(
    out,
    lines(
      "UDP: IPv4",
      `Local Address   Remote Address   State     If         Netns Recv-Q Ipkts  Opkts Dpkts Group       User     Pid Command`,
      `--------------- ---------------- --------- ----- ---------- ------ ----- ------ ----- ----------- ------ ----- ${
        "-".repeat(302)
      }`,
      `*:48944                          Idle      net11          1      0     0 281790     0 -           root       9 x ${
        "y".repeat(300)
      }`,
      "*:48944                          Idle      net11          1      0     0 281790     0 -           root    1495 sparc/udpsend -n -i 192.168.0.1",
      "127.0.0.1:53                     Idle      -              1      0     0 281790     0 -           root   20001 sparc/udpsend -n -i 192.168.0.1",
      "198.18.0.1:9000 198.18.0.2:12345 Connected net11 4026532301     17     7      8     3 239.1.2.3+2 daemon 20001 deno run a?b",
    ),
  );
});

Deno.test("formatStat -a: the Reason column, '-' when bypassing; -au puts it before User", () => {
  assert.equal(
    formatStat(SOCKETS, { all: true }),
    lines(
      "UDP: IPv4",
      "Local Address   Remote Address   State     If         Netns Recv-Q Ipkts  Opkts Dpkts Group       Reason",
      "--------------- ---------------- --------- ----- ---------- ------ ----- ------ ----- ----------- --------",
      "*:48944                          Idle      net11          1      0     0 281790     0 -           -",
      "127.0.0.1:53                     Idle      -              1      0     0 281790     0 -           loopback",
      "198.18.0.1:9000 198.18.0.2:12345 Connected net11 4026532301     17     7      8     3 239.1.2.3+2 -",
    ),
  );
  const header = formatStat([], { all: true, users: true }).split("\n")[1];
  assert.equal(
    header,
    "Local Address Remote Address State If Netns Recv-Q Ipkts Opkts Dpkts Group Reason User Pid Command",
  );
});

Deno.test("formatStat: an unbound socket is *:*, an undecided one says so", () => {
  const out = formatStat(
    [sock({
      local: { address: "0.0.0.0", port: 0 },
      state: "Unbound",
      bypass: false,
      interface: null,
    })],
    { all: true },
  );
  assert.match(out, /^\*:\*\s+Unbound\s+-\s+1\s+0\s+0 281790\s+0 -\s+undecided$/m);
});

const LINKS: PhysInfo[] = [
  {
    link: "eth0",
    ifindex: 2,
    mtu: 1500,
    rxQueues: 8,
    rgAvail: 6,
    rgInUse: 2,
    holders: [77, 1234],
    queuesHeld: [0, 3],
    xskQueues: [0, 3],
    xdp: "nkb",
    xdpProgId: 42,
    xdpProgName: "nkb_xdp",
    zeroCopy: "yes",
    source: "filter",
  },
  {
    link: "veth-long-name0",
    ifindex: 15,
    mtu: 9000,
    rxQueues: 1,
    rgAvail: 1,
    rgInUse: 0,
    holders: [],
    queuesHeld: [],
    xskQueues: [],
    xdp: "other",
    xdpProgId: 7,
    xdpProgName: "xdp_dummy",
    zeroCopy: "no",
    source: "registry",
  },
  {
    link: "ifb0",
    ifindex: 4,
    mtu: 1500,
    rxQueues: 1,
    rgAvail: 1,
    rgInUse: 0,
    holders: [],
    queuesHeld: [],
    xskQueues: null,
    xdp: "none",
    xdpProgId: 0,
    xdpProgName: null,
    zeroCopy: "unknown",
    source: "registry",
  },
];

Deno.test("formatPhys: show-phys -G columns; -v adds HOLDERS", () => {
  assert.equal(
    formatPhys(LINKS),
    lines(
      "LINK             RG-AVAIL  RG-INUSE  XDP              ZEROCOPY   MTU",
      "eth0                    6         2  nkb              yes       1500",
      "veth-long-name0         1         0  other:xdp_dummy  no        9000",
      "ifb0                    1         0  -                unknown   1500",
    ),
  );
  assert.equal(
    formatPhys(LINKS, { verbose: true }),
    lines(
      "LINK             RG-AVAIL  RG-INUSE  XDP              ZEROCOPY   MTU  HOLDERS",
      "eth0                    6         2  nkb              yes       1500  77,1234",
      "veth-long-name0         1         0  other:xdp_dummy  no        9000  -",
      "ifb0                    1         0  -                unknown   1500  -",
    ),
  );
});

Deno.test("formatPhys -o: fields in the order asked, case-insensitive; unknown ones are a typed error", () => {
  assert.equal(
    formatPhys(LINKS, { fields: ["link", "ifindex", "RXQ", "queues", "xdp-prog", "holders"] }),
    lines(
      "LINK             IFINDEX  RXQ  QUEUES  XDP-PROG     HOLDERS",
      "eth0                   2    8  0,3     42:nkb_xdp   77,1234",
      "veth-long-name0       15    1  -       7:xdp_dummy  -",
      "ifb0                   4    1  -       -            -",
    ),
  );
  assert.throws(() => formatPhys(LINKS, { fields: ["LINK", "RG-INUSE-UMAC"] }), (e: unknown) => {
    assert.ok(e instanceof UnknownFieldError);
    assert.equal(e.field, "RG-INUSE-UMAC");
    assert.ok(e.valid.includes("RG-AVAIL") && e.valid.includes("ZEROCOPY"));
    assert.match(e.message, /valid fields: LINK, IFINDEX, RXQ, RG-AVAIL/);
    return true;
  });
});

async function withRegistry(
  fn: (dir: string, me: ReturnType<typeof liveProcess>) => Promise<void> | void,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "nkb-stat-" });
  try {
    await fn(dir, liveProcess());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("listSockets: bypass sockets by default, kernel-path ones too with all; statJson is plain data", async () => {
  await withRegistry((dir, me) => {
    const file = registryFile(me, [
      {
        index: 2,
        flags: L.flags.bypass | L.flags.bound,
        ifname: "veth0",
        ifindex: 9,
        queueCount: 1,
      },
      { index: 0, flags: L.flags.bound, reason: "loopback" },
    ]);
    plantFile(dir, me, file);
    Deno.writeTextFileSync(`${dir}/${me.uid}/1.reg`, "damaged");
    const def = listSockets({ dir, verify: false });
    assert.deepEqual(def.sockets.map((s) => s.slot), [2]);
    assert.equal(def.warnings.length, 1);
    const all = listSockets({ dir, verify: false, all: true });
    assert.deepEqual(all.sockets.map((s) => [s.slot, s.reason]), [[0, "loopback"], [2, null]]);
    const json = statJson(all);
    assert.deepEqual(JSON.parse(JSON.stringify(json)), json);
    assert.deepEqual(json.warnings, all.warnings);
  });
});

Deno.test("listSockets: a slot's network namespace must be its process's, as /proc says", async () => {
  const real = heldUdpSocket();
  const own = ownNetnsIno();
  try {
    await withRegistry((dir, me) => {
      const on = { flags: L.flags.bound, local: ["127.0.0.1", real.port] as [string, number] };
      plantFile(
        dir,
        me,
        registryFile(me, [
          { index: 0, ...on, sockIno: real.ino, netnsIno: own, group: "239.1.2.3", groups: 1 },
          { index: 1, ...on, sockIno: real.ino, netnsIno: own + 1n }, // a lie
        ]),
      );
      const list = listSockets({ dir, all: true });
      assert.deepEqual(
        list.sockets.map((s) => [s.slot, s.netnsIno, s.group, s.groups, s.verified]),
        [[0, String(own), "239.1.2.3", 1, true]],
      );
      assert.equal(list.warnings.length, 1, list.warnings.join("\n"));
      assert.match(
        list.warnings[0],
        new RegExp(`slot 1: claims network namespace ${own + 1n}, the process is in ${own}`),
      );
      // Unverified, the file's word is what is shown.
      const unchecked = listSockets({ dir, all: true, verify: false });
      assert.deepEqual(unchecked.sockets.map((s) => s.netnsIno), [String(own), String(own + 1n)]);
    });
  } finally {
    real.conn.close();
  }
});

Deno.test("listPhys: queues held on lo by live sockets of this namespace, lo only when named", async () => {
  // Claims the kernel backs: each slot names a socket this (capable) process holds.
  const real = [heldUdpSocket(), heldUdpSocket(), heldUdpSocket()];
  const on = (i: number) => ({
    local: ["127.0.0.1", real[i].port] as [string, number],
    sockIno: real[i].ino,
  });
  try {
    await withRegistry((dir, me) => {
      const held = { flags: L.flags.bypass | L.flags.bound, ifname: "lo", ifindex: 1 };
      const file = registryFile({ ...me, netnsIno: 1n }, [ // a lie: /proc says which it is
        { index: 0, ...held, ...on(0), firstQueue: 0, queueCount: 1 },
        { index: 1, ...held, ...on(1), firstQueue: 0, queueCount: 1 }, // the same queue: counted once
        { index: 2, flags: L.flags.bound, ...on(2), reason: "loopback" },
      ]);
      plantFile(dir, me, file);
      const lo = listPhys({ dir, links: ["lo", "nkb-no-such0", "../etc"] });
      assert.deepEqual(lo.warnings.sort(), [
        '"../etc": not an interface name',
        "nkb-no-such0: no such interface",
      ]);
      assert.equal(lo.links.length, 1);
      const l = lo.links[0];
      assert.equal(l.link, "lo");
      assert.equal(l.ifindex, 1);
      assert.ok(l.rxQueues >= 1);
      assert.equal(l.rgInUse, 1);
      assert.equal(l.rgAvail, l.rxQueues - 1);
      assert.deepEqual(l.holders, [me.pid]);
      assert.deepEqual(l.queuesHeld, [0]);
      assert.deepEqual(l.xskQueues, []); // lo: no AF_XDP socket, the kernel says
      assert.ok(["none", "nkb", "other", "unknown"].includes(l.xdp));
      assert.ok(listPhys({ dir }).links.every((x) => x.link !== "lo"));
    });
  } finally {
    for (const r of real) r.conn.close();
  }
});

Deno.test("listPhys: sockets of another network namespace hold nothing here", async () => {
  await withRegistry(async (dir, me) => {
    // A process in a network namespace of its own (unshare -n keeps its pid across exec).
    const child = new Deno.Command("unshare", { args: ["-n", "sleep", "30"] }).spawn();
    try {
      const ownNet = Deno.readLinkSync("/proc/self/ns/net");
      for (let i = 0; i < 200 && Deno.readLinkSync(`/proc/${child.pid}/ns/net`) === ownNet; i++) {
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.notEqual(Deno.readLinkSync(`/proc/${child.pid}/ns/net`), ownNet);
      const them = { ...me, pid: child.pid, startTicks: processStartTicks(child.pid)! };
      // The file's netns claim is this namespace's: the reader goes by /proc.
      const file = registryFile({ ...them, netnsIno: BigInt(/\d+/.exec(ownNet)![0]) }, [
        { index: 0, flags: L.flags.bypass, ifname: "lo", ifindex: 1, queueCount: 1 },
      ]);
      plantFile(dir, them, file);
      const scan = listSockets({ dir, verify: false });
      assert.deepEqual(scan.sockets.map((s) => s.pid), [child.pid], scan.warnings.join("\n"));
      const [l] = listPhys({ dir, verify: false, links: ["lo"] }).links;
      assert.equal(l.rgInUse, 0);
      assert.deepEqual(l.holders, []);
    } finally {
      child.kill("SIGKILL");
      await child.status;
    }
  });
});
