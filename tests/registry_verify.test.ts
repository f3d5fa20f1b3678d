/**
 * Root's views believe no claim the kernel does not back (issue 12): nobody (through
 * setpriv) publishes registry files of his own processes that claim bypass sockets and
 * the queues of lo. A file is valid (its header matches the process), so before the
 * check root's `nkb stat` listed the claims and `nkb phys` counted the queues. Now:
 * a claim naming no socket the process holds, or a socket at other addresses, is not
 * listed; a process without CAP_NET_RAW holds no queue and bypasses nothing; one
 * warning per process names its pid. Every registry is a directory of the test's own.
 */

import assert from "node:assert/strict";
import { RegistryLayout as L } from "../src/registry_read.ts";
import { listSockets } from "../src/stat.ts";
import { listPhys } from "../src/phys.ts";
import { processStartTicks } from "../src/registry_read.ts";
import { ownPidnsIno, registryFile, registryName } from "./helpers/registry_file.ts";
import {
  holdCommand,
  NOBODY,
  scanCommand,
  setprivAs,
  spawn,
  stopped,
  withTempDir,
} from "./helpers/nobody.ts";

const TIMEOUT_MS = 30_000;
/** setpriv's arguments that make nobody. */
const SETPRIV = setprivAs(NOBODY).slice(1);

/**
 * nobody's python holding one UDP socket on 127.0.0.1:port; prints its fd, then sleeps.
 * `userns`: in a user namespace of his own (unshare -Ur: a full CapEff there).
 */
function nobodyHolder(port: number, userns = false): Deno.ChildProcess {
  const py = "import socket,sys,time\n" +
    "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n" +
    `s.bind(("127.0.0.1",${port}))\n` +
    "print(s.fileno(),flush=True)\n" +
    "time.sleep(60)\n";
  return new Deno.Command("setpriv", {
    args: [...SETPRIV, ...(userns ? ["unshare", "-Ur"] : []), "/usr/bin/python3", "-c", py],
    stdout: "piped",
    stderr: "null",
  }).spawn();
}

/** The first line the child prints (bounded wait). */
async function firstLine(child: Deno.ChildProcess): Promise<string> {
  const reader = child.stdout.getReader();
  let text = "";
  const deadline = Date.now() + TIMEOUT_MS;
  try {
    for (let i = 0; i < 1000 && !text.includes("\n") && Date.now() < deadline; i++) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
  } finally {
    reader.releaseLock();
  }
  assert.ok(text.includes("\n"), `no line from ${child.pid}`);
  return text.split("\n")[0];
}

/** Writes `bytes` as nobody's file R/65534/<name of pid> (as nobody: owner and mode his). */
async function publishAsNobody(dir: string, pid: number, bytes: Uint8Array): Promise<void> {
  const staged = await Deno.makeTempFile({ prefix: `nkb-verify-${Deno.pid}-` });
  try {
    Deno.writeFileSync(staged, bytes);
    Deno.chmodSync(staged, 0o644);
    const name = registryName({ pid, startTicks: processStartTicks(pid)! });
    const out = await new Deno.Command("setpriv", {
      args: [
        ...SETPRIV,
        "bash",
        "-c",
        `mkdir -p -m 0700 "$1" && cp "$2" "$1/$3" && chmod 0600 "$1/$3"`,
        "-",
        `${dir}/${NOBODY}`,
        staged,
        name,
      ],
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  } finally {
    Deno.removeSync(staged);
  }
}

/** Waits (bounded) until `pid` runs as nobody. */
async function runsAsNobody(pid: number): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (
      new RegExp(`^Uid:\\s+${NOBODY}\\s`, "m").test(Deno.readTextFileSync(`/proc/${pid}/status`))
    ) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`process ${pid} never ran as nobody`);
}

function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  return withTempDir("verify", 0o1777, fn);
}

const LO_QUEUE = {
  flags: L.flags.bypass | L.flags.bound,
  ifname: "lo",
  ifindex: 1,
  firstQueue: 0,
  queueCount: 1,
};

Deno.test({
  name:
    "registry verify: nobody's forged claims (no socket, wrong port, bypass without CAP_NET_RAW, CapEff of his own user namespace) fool neither stat nor phys",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withDir(async (dir) => {
      const port = 20000 + (Deno.pid % 20000);
      const holder = nobodyHolder(port);
      const nsHolder = nobodyHolder(port + 2, true);
      const idle = new Deno.Command("setpriv", {
        args: [...SETPRIV, "sleep", "60"],
        stdout: "null",
        stderr: "null",
      }).spawn();
      try {
        const fd = await firstLine(holder);
        const nsFd = await firstLine(nsHolder);
        const nsLink = Deno.readLinkSync(`/proc/${nsHolder.pid}/fd/${nsFd}`);
        const nsIno = BigInt(/^socket:\[(\d+)\]$/.exec(nsLink)![1]);
        assert.match(Deno.readTextFileSync(`/proc/${nsHolder.pid}/status`), /^CapEff:\s*0*1f+$/m);
        await runsAsNobody(idle.pid);
        const link = Deno.readLinkSync(`/proc/${holder.pid}/fd/${fd}`);
        const ino = BigInt(/^socket:\[(\d+)\]$/.exec(link)![1]);
        const proc = (pid: number) => ({
          pid,
          startTicks: processStartTicks(pid)!,
          uid: NOBODY,
          pidnsIno: ownPidnsIno(),
        });
        // The idle process (the phys forge an attacker found): a bypass socket on lo's queue 0 that
        // names no socket it holds (the inode is the holder's).
        await publishAsNobody(
          dir,
          idle.pid,
          registryFile(proc(idle.pid), [
            { index: 0, ...LO_QUEUE, local: ["127.0.0.1", port], sockIno: ino },
          ]),
        );
        // The holder: its real socket claimed as bypassing on lo's queue 0 (slot 0), and
        // the same socket claimed at another port (slot 1).
        await publishAsNobody(
          dir,
          holder.pid,
          registryFile(proc(holder.pid), [
            { index: 0, ...LO_QUEUE, local: ["127.0.0.1", port], sockIno: ino },
            { index: 1, ...LO_QUEUE, local: ["127.0.0.1", port + 1], sockIno: ino },
          ]),
        );
        // In a user namespace of his own (a full CapEff there, the host's network
        // namespace): his real socket claimed as bypassing on lo's queue 0.
        await publishAsNobody(
          dir,
          nsHolder.pid,
          registryFile(proc(nsHolder.pid), [
            { index: 0, ...LO_QUEUE, local: ["127.0.0.1", port + 2], sockIno: nsIno },
          ]),
        );

        const bypass = listSockets({ dir });
        assert.deepEqual(bypass.sockets, [], JSON.stringify(bypass.sockets));
        const all = listSockets({ dir, all: true });
        assert.deepEqual(
          all.sockets.map((
            s,
          ) => [s.pid, s.slot, s.local.port, s.bypass, s.interface, s.queueCount, s.verified]),
          [
            [holder.pid, 0, port, false, null, 0, true],
            [nsHolder.pid, 0, port + 2, false, null, 0, true],
          ].sort((a, b) => Number(a[0]) - Number(b[0])),
          all.warnings.join("\n"),
        );
        assert.deepEqual(all.sockets.map((s) => s.reason), [
          "unverified-bypass",
          "unverified-bypass",
        ]);
        const warned = (pid: number): string[] =>
          all.warnings.filter((w) => w.startsWith(`pid ${pid}:`));
        assert.equal(warned(idle.pid).length, 1, all.warnings.join("\n"));
        assert.match(warned(idle.pid)[0], /slot 0: socket \d+ is not among its descriptors/);
        assert.equal(warned(holder.pid).length, 1, all.warnings.join("\n"));
        assert.match(
          warned(holder.pid)[0],
          new RegExp(
            `slot 1: claims 127\\.0\\.0\\.1:${
              port + 1
            }, the kernel says 127\\.0\\.0\\.1:${port}.*without CAP_NET_RAW`,
          ),
        );
        assert.equal(warned(nsHolder.pid).length, 1, all.warnings.join("\n"));
        assert.match(
          warned(nsHolder.pid)[0],
          /^pid \d+: 1 bypass or queue claims without CAP_NET_RAW/,
        );
        assert.equal(all.warnings.length, 3, all.warnings.join("\n"));

        const phys = listPhys({ dir, links: ["lo"] });
        assert.equal(phys.links.length, 1);
        assert.equal(phys.links[0].rgInUse, 0);
        assert.deepEqual(phys.links[0].holders, []);
        assert.equal(phys.links[0].rgAvail, phys.links[0].rxQueues);
      } finally {
        await stopped(holder, true);
        await stopped(nsHolder, true);
        await stopped(idle);
      }
    }),
});

Deno.test({
  name:
    "registry verify: a reader that may not read root's /proc/P/fd lists root's sockets unverified and counts no queue; root's own read verifies them",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withDir(async (dir) => {
      const port = 20000 + ((Deno.pid + 7) % 20000);
      const denoDir = `${dir}-deno`;
      Deno.mkdirSync(denoDir);
      Deno.chownSync(denoDir, NOBODY, NOBODY);
      // Root's nkb process on the kernel path, its file readable by all (0644, R/0 0755).
      const holder = spawn("root-hold", holdCommand(port, TIMEOUT_MS), {
        NKB_REGISTRY_DIR: dir,
        NKB_REGISTRY_MODE: "0644",
      });
      try {
        await holder.nextWith("ready", TIMEOUT_MS);
        const own = listSockets({ dir, all: true });
        assert.deepEqual(own.warnings, []);
        assert.deepEqual(
          own.sockets.map((s) => [s.pid, s.local.port, s.verified, s.inode !== "0"]),
          [[holder.proc.pid, port, true, true]],
        );
        const scanner = spawn("nobody-scan", ["setpriv", ...SETPRIV, ...scanCommand(dir, 1)], {
          DENO_DIR: denoDir,
          HOME: denoDir,
        });
        const summary = await scanner.nextWith("scans", TIMEOUT_MS);
        await scanner.wait(TIMEOUT_MS);
        await scanner.dispose();
        assert.deepEqual(summary.ports, [port], JSON.stringify(summary));
        assert.deepEqual(summary.unverified, [port], JSON.stringify(summary));
        assert.deepEqual(summary.warnings, [
          "pid N: N sockets not verified (/proc/N/fd: permission denied): " +
          "listed as unverified, their queues not counted",
        ]);
        await holder.send({ go: true });
        assert.equal((await holder.wait(TIMEOUT_MS)).code, 0, holder.stderr);
      } finally {
        await holder.dispose();
        await Deno.remove(denoDir, { recursive: true });
      }
    }),
});
