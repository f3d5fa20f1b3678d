/**
 * The registry's trust boundary (issue 12, items 3 to 6), tried as an attacker would:
 * an unprivileged local user (nobody, through setpriv) who pre-creates the registry
 * directory and root's part of it, plants FIFOs, links, forged files and thousands of
 * junk entries, and swaps links in a racing loop; a file system full to the last
 * byte; two pid namespaces sharing one registry. Root's processes must start (bounded
 * time), be listed truthfully, and show nothing forged; warnings say what was skipped.
 * Every registry is a directory of the test's own (NKB_REGISTRY_DIR).
 */

import assert from "node:assert/strict";
import { readRegistry } from "../src/registry_read.ts";
import { fileOfProcess, ownPidnsIno, registryFile, registryName } from "./helpers/registry_file.ts";
import { createTestbed } from "./helpers/testbed.ts";
import { ROOT } from "./helpers/zig.ts";
import type { TestbedProcess } from "../examples/testbed.ts";
import {
  asNobody,
  DENO,
  holdCommand,
  NOBODY,
  scanCommand,
  setprivAs,
  spawn,
  stopped,
  withTempDir,
} from "./helpers/nobody.ts";

const TIMEOUT_MS = 30_000;

/** hold.ts: one socket on 127.0.0.1:port (the kernel path), kept until a line on stdin. */
function hold(dir: string, port: number, prefix: string[] = []): TestbedProcess {
  return spawn(`hold:${port}`, [...prefix, ...holdCommand(port, TIMEOUT_MS)], {
    NKB_REGISTRY_DIR: dir,
  });
}

async function finish(p: TestbedProcess): Promise<void> {
  try {
    await p.send({ go: true });
    const status = await p.wait(TIMEOUT_MS);
    assert.equal(status.code, 0, `${p.name} exit ${status.code}: ${p.stderr}`);
  } finally {
    await p.dispose();
  }
}

/**
 * A temporary base directory, removed at the end: mode 0755 (nobody may traverse it)
 * or 01777 (nobody may also create in it, as in /dev/shm).
 */
function withBase(fn: (base: string) => Promise<void>, mode = 0o755): Promise<void> {
  return withTempDir("hostile", mode, fn);
}

/** A process of nobody's that lives until killed (bounded by its own timeout). */
function nobodySleeper(): Deno.ChildProcess {
  return new Deno.Command("setpriv", {
    args: [...setprivAs(NOBODY).slice(1), "sleep", "60"],
    stdout: "null",
    stderr: "null",
  }).spawn();
}

/** Waits (bounded) until `pid` runs as nobody: setpriv has exec'd the real program. */
async function runsAsNobody(pid: number): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    if (new RegExp(`^Uid:\\s+${NOBODY}\\s`, "m").test(status)) {
      if (Deno.readTextFileSync(`/proc/${pid}/comm`).trim() === "sleep") return;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`process ${pid} never ran as nobody`);
}

/** Waits (bounded) until the processes' stderr, together, matches every pattern. */
async function stderrMatching(procs: TestbedProcess[], patterns: RegExp[]): Promise<boolean> {
  for (let i = 0; i < 1000; i++) {
    const all = procs.map((p) => p.stderr).join("\n");
    if (patterns.every((re) => re.test(all))) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return false;
}

function pidOneName(): string {
  const stat = Deno.readTextFileSync("/proc/1/stat");
  const start = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  return `${ownPidnsIno()}-1-${start}.reg`;
}

Deno.test({
  name:
    "registry hostile: nobody's FIFOs, links, forged files, squatted R and R/0, 9000 junk entries",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withBase(async (base) => {
      const dir = `${base}/reg`;
      const sleeper = nobodySleeper();
      const procs: TestbedProcess[] = [];
      try {
        await runsAsNobody(sleeper.pid);
        const me = fileOfProcess("", sleeper.pid).split("/").pop()!;
        // Forged: files claiming root, pid 1 and an sshd socket (port 22), made as root
        // and handed to nobody to plant.
        const forgedRoot = registryFile({ pid: 1, startTicks: 1n, uid: 0 }, [
          { index: 0, local: ["0.0.0.0", 22], flags: 9, ifname: "eth0", ifindex: 2 },
        ]);
        Deno.writeFileSync(`${base}/forged.bin`, forgedRoot, { mode: 0o644 });
        const pidOne = pidOneName();
        await asNobody(`
          set -e
          mkdir -m 0777 ${dir} ${dir}/0
          mkdir -m 0700 ${dir}/${NOBODY}
          chmod 0777 ${dir} ${dir}/0
          cd ${dir}/0
          # root's future files: FIFOs under every pid name nkb may use, links, forgeries
          for p in $(seq 1 400); do mkfifo "${ownPidnsIno()}-$p-1.reg" "$p.reg"; done
          ln -s /etc/shadow ${pidOne}.tmp && mv ${pidOne}.tmp ${pidOne}.link
          cp ${base}/forged.bin ${pidOne}
          cd ${dir}/${NOBODY}
          cp ${base}/forged.bin ${pidOne}
          mkfifo ${me}
          seq 1 9000 | sed 's/^/junk-/' | xargs touch
          cd ${dir}
          seq 1 3000 | sed 's/^/junk-/' | xargs touch
          mkfifo 1.reg
        `);
        // Root's processes start (bounded: a hang fails here) and take the tree back.
        procs.push(hold(dir, 9701), hold(dir, 9702));
        for (const p of procs) await p.nextWith("ready", TIMEOUT_MS);
        // One of them took R back and set the squatted R/0 aside (stderr, read in the background).
        const said = await stderrMatching(procs, [
          /owned by uid 65534, taken back \(root, 01777\)/,
          /\/0: squatted by another user, renamed to \.0\.squatted\./,
        ]);
        assert.ok(said, procs.map((p) => p.stderr).join("\n"));
        const r = Deno.statSync(dir);
        assert.deepEqual([r.uid, r.mode! & 0o7777], [0, 0o1777]);
        const r0 = Deno.statSync(`${dir}/0`);
        assert.deepEqual([r0.uid, r0.mode! & 0o7777], [0, 0o700]);

        // Root's reader: the truth about root's processes, nothing forged, warnings say why.
        const t0 = performance.now();
        const scan = readRegistry({ dir, cleanup: false });
        const scanMs = performance.now() - t0;
        const rows = scan.sockets.map((s) => [s.pid, s.user, s.command, s.local.port]);
        assert.deepEqual(rows, procs.map((p, i) => [p.proc.pid, "root", "deno", 9701 + i]));
        assert.ok(!scan.sockets.some((s) => s.local.port === 22 || s.pid === 1));
        const w = scan.warnings;
        assert.ok(w.includes(`${dir}/${NOBODY}/${me}: not a regular file, skipped`), w.join("\n"));
        console.log(`scan with 12,000 planted entries: ${scanMs.toFixed(1)} ms`);

        // The FIFO under nobody's live process's name becomes a forgery claiming uid 0.
        await asNobody(`
          cd ${dir}/${NOBODY} && rm ${me}
          cp ${base}/forged.bin ${me}
        `);
        const forged = readRegistry({ dir, cleanup: false });
        assert.deepEqual(forged.sockets.map((s) => s.pid), procs.map((p) => p.proc.pid));
        assert.ok(
          forged.warnings.some((x) =>
            x.startsWith(`${dir}/${NOBODY}/${me}: claims pid 1, the kernel says ${sleeper.pid}`)
          ),
          forged.warnings.join("\n"),
        );
        // With root's cleanup: the listing pass warns about the junk and deletes nothing live.
        const swept = readRegistry({ dir });
        assert.deepEqual(swept.sockets.map((s) => s.pid), procs.map((p) => p.proc.pid));
        const sw = swept.warnings.join("\n");
        assert.ok(
          sw.includes(`${dir}/${NOBODY}: more than 8192 entries, the rest were not read`),
          sw,
        );
        // 8,192 listed in readdir order: the two registry-like names may be among them or not.
        assert.ok(
          sw.includes(`${dir}/${NOBODY}: 819`) &&
            /: 819[0-2] entries that are not registry files, ignored/.test(sw),
          sw,
        );
        assert.ok(
          swept.warnings.some((x) =>
            /: 300[0-9] entries that are not per-user directories/.test(x)
          ),
          swept.warnings.join("\n"),
        );
        for (const p of procs) assert.ok(Deno.statSync(fileOfProcess(dir, p.proc.pid)).isFile);
        for (const p of procs) await finish(p);
        assert.deepEqual(readRegistry({ dir }).sockets, []);
      } finally {
        for (const p of procs) await p.dispose();
        await stopped(sleeper);
      }
    }, 0o1777),
});

Deno.test({
  name:
    "registry hostile: links and FIFOs swapped in a racing loop never make root's reader follow or hang",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withBase(async (base) => {
      const dir = `${base}/reg`;
      const sleeper = nobodySleeper();
      let racer: Deno.ChildProcess | null = null;
      try {
        await runsAsNobody(sleeper.pid);
        const path = fileOfProcess(dir, sleeper.pid);
        const name = path.split("/").pop()!;
        const sleeperFacts = {
          pid: sleeper.pid,
          startTicks: BigInt(name.split("-")[2].slice(0, -4)),
        };
        assert.equal(registryName(sleeperFacts), name);
        // nobody's honest file (port 4444) and a root file the link may point to (port 7777).
        const honest = registryFile({ ...sleeperFacts, uid: NOBODY }, [{
          index: 0,
          local: ["0.0.0.0", 4444],
        }]);
        const bait = registryFile({ ...sleeperFacts, uid: NOBODY }, [{
          index: 0,
          local: ["0.0.0.0", 7777],
        }]);
        Deno.writeFileSync(`${base}/honest.bin`, honest, { mode: 0o644 });
        Deno.writeFileSync(`${base}/bait.bin`, bait, { mode: 0o600 });
        Deno.mkdirSync(dir, { mode: 0o1777 });
        Deno.chmodSync(dir, 0o1777);
        await asNobody(`mkdir -m 0700 ${dir}/${NOBODY} && mkfifo ${dir}/${NOBODY}/fifo`);
        // The racer: a bounded loop swapping the name between a regular file and links
        // to a FIFO, to /dev/zero and to root's file (rename: atomic at every step).
        racer = new Deno.Command("setpriv", {
          args: [
            ...setprivAs(NOBODY).slice(1),
            "bash",
            "-c",
            `
            cd ${dir}/${NOBODY}
            for (( i = 0; i < 5000 && SECONDS < 60; i++ )); do
              [ -e ${base}/stop ] && break
              cp ${base}/honest.bin t && mv -f t ${name}
              ln -s fifo t && mv -f t ${name}
              ln -s /dev/zero t && mv -f t ${name}
              ln -s ${base}/bait.bin t && mv -f t ${name}
            done`,
          ],
          stdout: "null",
          stderr: "null",
        }).spawn();
        // Root's reader in a child: 400 scans must end (bounded), bait never shown.
        // Unverified: neither file names a socket the sleeper holds, and the kernel check
        // would hide a followed link's bait as well as the honest file.
        const scanner = spawn("scanner", scanCommand(dir, 400, "--unverified"), {});
        const summary = await scanner.nextWith("scans", TIMEOUT_MS * 2);
        await scanner.wait(TIMEOUT_MS);
        await scanner.dispose();
        console.log(`racing scans: ${JSON.stringify(summary)}`);
        assert.equal(summary.scans, 400);
        assert.ok(!(summary.ports as number[]).includes(7777), JSON.stringify(summary));
        for (const w of summary.warnings as string[]) {
          assert.match(w, /: not a regular file, skipped$|^$/, w);
        }
      } finally {
        // Stopped by asking: a killed bash would leave its last cp or ln writing.
        Deno.writeFileSync(`${base}/stop`, new Uint8Array(0));
        if (racer !== null) await racer.status;
        await stopped(sleeper);
      }
    }),
});

Deno.test({
  name: "registry hostile: a tmpfs full to the last byte is a warning; bypass works, exit 0",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withBase(async (base) => {
      const mnt = `${base}/tmpfs`;
      Deno.mkdirSync(mnt);
      const mount = await new Deno.Command("mount", {
        args: ["-t", "tmpfs", "-o", "size=2m,mode=0755", `nkb-full-${Deno.pid}`, mnt],
      }).output();
      assert.equal(mount.code, 0, new TextDecoder().decode(mount.stderr));
      try {
        const dir = `${mnt}/reg`;
        Deno.mkdirSync(`${dir}/0`, { recursive: true });
        Deno.chmodSync(dir, 0o1777);
        Deno.chmodSync(`${dir}/0`, 0o700);
        // Fill it: dd stops at ENOSPC (exit 1); then not one more byte fits.
        await new Deno.Command("dd", {
          args: ["if=/dev/zero", `of=${mnt}/fill`, "bs=4096"],
          stdout: "null",
          stderr: "null",
        }).output();
        const more = await new Deno.Command("dd", {
          args: ["if=/dev/zero", `of=${mnt}/more`, "bs=1", "count=1"],
          stderr: "piped",
        }).output();
        assert.match(new TextDecoder().decode(more.stderr), /No space left on device/);
        await using tb = await createTestbed();
        const agent = tb.spawnDeno("a", "obs_agent.ts", [
          `--host=${tb.a.ip}`,
          "--bypass=9800",
          "--expect=50",
        ], { env: { NKB_REGISTRY_DIR: dir }, stdin: true });
        try {
          const ready = await agent.nextWith("ready", TIMEOUT_MS);
          assert.ok((ready.bypass as { active: boolean }[])[0].active, JSON.stringify(ready));
          const code = `
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(50):
    s.sendto(b"full%d" % i, ("${tb.a.ip}", 9800))
    time.sleep(0.001)
`;
          await tb.execOk("b", ["python3", "-c", code], TIMEOUT_MS);
          const counted = await agent.nextWith("counted", TIMEOUT_MS);
          assert.deepEqual(counted.got, [50]);
          const stats = (counted.stats as { ipkts: number }[])[0];
          assert.equal(stats.ipkts, 50, "counted on the ring");
          await agent.send({ go: true });
          const status = await agent.wait(TIMEOUT_MS);
          assert.equal(status.code, 0, agent.stderr);
          assert.equal(status.signal, null);
          assert.match(
            agent.stderr,
            /nkb: warning: registry: .*\/reg\/0\/[0-9]+-[0-9]+-[0-9]+\.reg: cannot reserve 528384 bytes \(No space left on device\): no registry for this process, bypass unaffected/,
          );
          assert.deepEqual([...Deno.readDirSync(`${dir}/0`)], [], "nothing left behind");
        } finally {
          await agent.dispose();
        }
      } finally {
        const um = await new Deno.Command("umount", { args: [mnt] }).output();
        assert.equal(um.code, 0, new TextDecoder().decode(um.stderr));
      }
    }),
});

// The host pid of the process that is pid 1 of the namespace `unshare -f` created.
async function nsInit(unsharePid: number): Promise<number> {
  for (let i = 0; i < 500; i++) {
    try {
      const kids = Deno.readTextFileSync(`/proc/${unsharePid}/task/${unsharePid}/children`).trim();
      if (kids !== "") return Number(kids.split(" ")[0]);
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`unshare ${unsharePid} never forked`);
}

Deno.test({
  name: "registry hostile: two pid namespaces share a registry; neither deletes the other's file",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withBase(async (base) => {
      const dir = `${base}/reg`;
      const unshare = ["unshare", "-p", "-f", "--mount-proc", "--kill-child"];
      const a = hold(dir, 9711, unshare);
      const procs = [a];
      try {
        await a.nextWith("ready", TIMEOUT_MS);
        const aPid = await nsInit(a.proc.pid);
        const aFile = fileOfProcess(dir, aPid);
        // Both are pid 1 of their namespace: the older writers took each other's files
        // for dead ones. B starts (and sweeps) while A's file exists.
        const b = hold(dir, 9712, unshare);
        procs.push(b);
        await b.nextWith("ready", TIMEOUT_MS);
        const bPid = await nsInit(b.proc.pid);
        const bFile = fileOfProcess(dir, bPid);
        assert.match(aFile, /\/0\/[0-9]+-1-[0-9]+\.reg$/);
        assert.match(bFile, /\/0\/[0-9]+-1-[0-9]+\.reg$/);
        assert.notEqual(aFile, bFile);
        // A reader inside B's namespace sees B only and removes nothing of A's.
        const inB = spawn("stat-in-b", [
          "nsenter",
          "-t",
          String(bPid),
          "-p",
          "-m",
          DENO,
          "run",
          "-A",
          "--no-lock",
          `${ROOT}cli.ts`,
          "stat",
          "-a",
          "--json",
        ], { NKB_REGISTRY_DIR: dir });
        const seenInB = await inB.nextWith("sockets", TIMEOUT_MS);
        await inB.wait(TIMEOUT_MS);
        await inB.dispose();
        assert.deepEqual((seenInB.sockets as { pid: number }[]).map((s) => s.pid), [1]);
        assert.ok(Deno.statSync(aFile).isFile && Deno.statSync(bFile).isFile);
        // The host's reader: both, with host pids.
        const scan = readRegistry({ dir });
        assert.deepEqual(scan.warnings, []);
        assert.deepEqual(
          scan.sockets.map((s) => [s.pid, s.local.port]).sort(),
          [[aPid, 9711], [bPid, 9712]].sort(),
        );
        assert.ok(Deno.statSync(aFile).isFile && Deno.statSync(bFile).isFile);
        for (const p of procs) await finish(p);
      } finally {
        for (const p of procs) await p.dispose();
      }
    }),
});

Deno.test({
  name:
    "registry hostile: nobody's own nkb process is listed as nobody's; an R of another user is refused",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withBase(async (base) => {
      const dir = `${base}/reg`;
      Deno.mkdirSync(dir);
      Deno.chmodSync(dir, 0o1777);
      const other = `${base}/other`;
      Deno.mkdirSync(other);
      Deno.chmodSync(other, 0o1777);
      Deno.chownSync(other, NOBODY - 1, NOBODY - 1);
      const denoDir = `${base}/deno-dir`;
      Deno.mkdirSync(denoDir);
      Deno.chownSync(denoDir, NOBODY, NOBODY);
      const setpriv = setprivAs(NOBODY);
      const env = { DENO_DIR: denoDir, HOME: denoDir };
      const mine = spawn("nobody-hold", [...setpriv, ...holdCommand(9731, TIMEOUT_MS)], {
        ...env,
        NKB_REGISTRY_DIR: dir,
      });
      const refused = spawn("nobody-hold-other", [...setpriv, ...holdCommand(9732, TIMEOUT_MS)], {
        ...env,
        NKB_REGISTRY_DIR: other,
      });
      try {
        await mine.nextWith("ready", TIMEOUT_MS);
        await refused.nextWith("ready", TIMEOUT_MS);
        const scan = readRegistry({ dir });
        assert.deepEqual(scan.warnings, []);
        assert.deepEqual(
          scan.sockets.map((s) => [s.pid, s.uid, s.user, s.local.port]),
          [[mine.proc.pid, NOBODY, "nobody", 9731]],
        );
        const sub = Deno.statSync(`${dir}/${NOBODY}`);
        assert.deepEqual([sub.uid, sub.mode! & 0o7777], [NOBODY, 0o700]);
        assert.ok(
          await stderrMatching([refused], [
            new RegExp(
              `${other}: owned by uid ${NOBODY - 1} \\(neither root nor us\\): no registry`,
            ),
          ]),
          refused.stderr,
        );
        assert.deepEqual([...Deno.readDirSync(other)], [], "nothing published there");
        // nobody's reader, with a root process beside: its own socket, and one line about root's.
        const rootHold = hold(dir, 9733);
        try {
          await rootHold.nextWith("ready", TIMEOUT_MS);
          const scanner = spawn("nobody-scan", [...setpriv, ...scanCommand(dir, 2)], env);
          const summary = await scanner.nextWith("scans", TIMEOUT_MS);
          await scanner.wait(TIMEOUT_MS);
          await scanner.dispose();
          assert.deepEqual(summary.ports, [9731], JSON.stringify(summary));
          const warnings = summary.warnings as string[];
          assert.equal(warnings.length, 1, JSON.stringify(summary));
          assert.match(
            warnings[0],
            /\/N: permission denied: the sockets of uid N's processes are not listed$/,
          );
          await finish(rootHold);
        } finally {
          await rootHold.dispose();
        }
        await finish(mine);
        await finish(refused);
      } finally {
        await mine.dispose();
        await refused.dispose();
      }
    }),
});

Deno.test({
  name:
    "registry hostile: root writers starting at once on a squatted R/0 all end up in the one R/0",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withBase(async (base) => {
      // Each takes the squatter for its own to rename aside; none may move another's
      // fresh directory away (it would publish where no reader looks).
      for (let round = 0; round < 3; round++) {
        const dir = `${base}/reg${round}`;
        Deno.mkdirSync(dir);
        Deno.chmodSync(dir, 0o1777);
        await asNobody(`mkdir -m 0777 ${dir}/0`);
        const procs = [0, 1, 2].map((i) => hold(dir, 9740 + 3 * round + i));
        try {
          for (const p of procs) await p.nextWith("ready", TIMEOUT_MS);
          const scan = readRegistry({ dir, cleanup: false });
          assert.deepEqual(
            scan.sockets.map((s) => s.pid).sort(),
            procs.map((p) => p.proc.pid).sort(),
            `round ${round}: ${procs.map((p) => p.stderr).join("\n")}`,
          );
          for (const p of procs) await finish(p);
        } finally {
          for (const p of procs) await p.dispose();
        }
      }
    }),
});
