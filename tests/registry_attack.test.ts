/**
 * Attacks on the registry found after its hardening (issue 12), each tried by nobody
 * (setpriv) in a directory of the test's own, mode 01777 as /dev/shm.
 *
 * R planted as something other than a directory (a link, a file, a FIFO) before any
 * nkb process ran: root's processes published nothing, so root's `nkb stat` listed
 * none of them. A root process now renames another user's object aside and makes R.
 *
 * A user's flood of valid registry files is bounded per uid: nobody runs 70 idle
 * processes, each with a file that passes every check (its own live process, all 1,024
 * slots in use). Root's scan lists at most 65,536 of nobody's sockets, says how many of
 * its processes it left unread, and still lists root's own socket. Before the bound,
 * 4,000 such processes (2.1 GB of files) killed root's `nkb stat` after 125 s ("Fatal
 * JavaScript out of memory", V8's 4 GB heap); 2,000 cost it 19 s and 3.1 GB.
 */

import assert from "node:assert/strict";
import { readRegistry } from "../src/registry_read.ts";
import type { TestbedProcess } from "../examples/testbed.ts";
import { FIXTURES } from "./helpers/testbed.ts";
import { asNobody, holdCommand, NOBODY, setprivAs, spawn, withTempDir } from "./helpers/nobody.ts";

const PROCESSES = 70;
const BUDGET = 65_536;
const TIMEOUT_MS = 30_000;

// "valid": every slot a socket; "odd": every slot mid-write for good (a warning each).
for (const mode of ["valid", "odd"]) {
  Deno.test({
    name:
      `registry flood (${mode}): one user's files are read up to a per-uid bound; root's still are`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: () =>
      // 01777, as /dev/shm: nobody may create its own R/65534 in R.
      withTempDir("flood", 0o1777, async (base) => {
        const dir = `${base}/nkb`;
        const procs: TestbedProcess[] = [];
        try {
          const hold = spawn("hold", holdCommand(0, TIMEOUT_MS * 2), { NKB_REGISTRY_DIR: dir });
          procs.push(hold);
          await hold.nextWith("ready", TIMEOUT_MS);
          const flood = spawn("flood", [
            ...setprivAs(NOBODY),
            "/usr/bin/python3",
            `${FIXTURES}reg_flood.py`,
            dir,
            String(PROCESSES),
            "60",
            mode,
          ], {});
          procs.push(flood);
          for (let i = 0; i < 3000 && !flood.lines.some((l) => l.includes("flooded")); i++) {
            await new Promise((r) => setTimeout(r, 10));
          }
          assert.match(
            flood.lines.join("\n"),
            new RegExp(`flooded ${PROCESSES} processes`),
            flood.stderr,
          );

          // The bound is on reading: counted before the kernel check, which these slots
          // (no socket named) would fail; that check is tests/registry_verify.test.ts's.
          const scan = readRegistry({ dir, cleanup: false, verify: false });
          const theirs = scan.sockets.filter((s) => s.uid === NOBODY);
          const stillWritten = scan.warnings.filter((w) => w.includes(`still being written`));
          assert.equal(theirs.length, mode === "valid" ? BUDGET : 0, `nobody's sockets listed`);
          assert.equal(stillWritten.length, mode === "valid" ? 0 : BUDGET, `slot warnings`);
          const unread = scan.warnings.filter((w) => w.startsWith(`uid ${NOBODY}: `));
          assert.equal(unread.length, 1, scan.warnings.join("\n"));
          assert.match(
            unread[0],
            new RegExp(`^uid ${NOBODY}: ${BUDGET} sockets and warnings listed, .* ([0-9]+) more`),
          );
          // At least the flood's 6 files past the bound were not read.
          const n = Number(/ ([0-9]+) more/.exec(unread[0])![1]);
          assert.ok(n >= PROCESSES - BUDGET / 1024, unread[0]);
          // Root's socket is listed as root's: the flood hides nothing of another user.
          const ours = scan.sockets.filter((s) => s.uid === 0 && s.pid === hold.pid);
          assert.equal(ours.length, 1, JSON.stringify(scan.processes.filter((p) => p.uid === 0)));
          assert.equal(ours[0].local.address, "127.0.0.1");
          // Checked against the kernel: none of the flood's slots names a socket its process
          // holds; root's is still listed, verified.
          const t0 = performance.now();
          const checked = readRegistry({ dir, cleanup: false });
          console.log(`verified scan of the flood: ${Math.round(performance.now() - t0)} ms`);
          assert.equal(checked.sockets.filter((s) => s.uid === NOBODY).length, 0);
          const mine = checked.sockets.filter((s) => s.pid === hold.pid);
          assert.deepEqual(mine.map((s) => s.verified), [true], checked.warnings.join("\n"));
        } finally {
          for (const p of procs) {
            try {
              p.kill("SIGTERM");
            } catch {
              // gone
            }
            await p.wait(TIMEOUT_MS).catch(() => {});
            await p.dispose();
          }
        }
      }),
  });
}

Deno.test({
  name: "registry planted: R as another user's link, file or FIFO is renamed aside by root",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withTempDir("planted", 0o1777, async (base) => {
      const dir = `${base}/nkb`;
      const plants: Record<string, string> = {
        "link to a FIFO": `mkfifo ${base}/f && ln -s ${base}/f ${dir}`,
        "dangling link": `ln -s /nonexistent ${dir}`,
        "file": `touch ${dir}`,
        "FIFO": `mkfifo ${dir}`,
        "link to nobody's directory": `mkdir ${base}/d && ln -s ${base}/d ${dir}`,
      };
      for (const [what, script] of Object.entries(plants)) {
        for (const e of Deno.readDirSync(base)) {
          await Deno.remove(`${base}/${e.name}`, { recursive: true });
        }
        await asNobody(script);
        const hold = spawn(`hold (${what})`, holdCommand(0, TIMEOUT_MS), { NKB_REGISTRY_DIR: dir });
        try {
          await hold.nextWith("ready", TIMEOUT_MS);
          const scan = readRegistry({ dir, cleanup: false });
          const ours = scan.sockets.filter((s) => s.pid === hold.pid);
          assert.equal(ours.length, 1, `${what}: ${hold.stderr} ${scan.warnings.join("; ")}`);
          assert.match(hold.stderr, /squatted by another user, renamed to \.nkb\.squatted\./, what);
          const info = Deno.lstatSync(dir);
          assert.ok(info.isDirectory && info.uid === 0, what);
          assert.equal((info.mode ?? 0) & 0o7777, 0o1777, what);
          await hold.send({ go: true });
          assert.equal((await hold.wait(TIMEOUT_MS)).code, 0, `${what}: ${hold.stderr}`);
        } finally {
          await hold.dispose();
        }
      }
    }),
});

Deno.test({
  name: "registry sweep: a scan that could not read every process removes no file",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const base = await Deno.makeTempDir({ prefix: `nkb-sweep-${Deno.pid}-` });
    const dir = `${base}/nkb`;
    const hold = spawn("hold", holdCommand(0, TIMEOUT_MS), { NKB_REGISTRY_DIR: dir });
    try {
      await hold.nextWith("ready", TIMEOUT_MS);
      const files = (): string[] => [...Deno.readDirSync(`${dir}/0`)].map((e) => e.name).sort();
      const live = files().filter((n) => n.includes(`-${hold.pid}-`));
      assert.equal(live.length, 1, files().join());
      // A dead process's file: pid 0x7fffffff never runs (pid_max is at most 2^22).
      const dead = `${live[0].split("-")[0]}-2147483647-1.reg`;
      Deno.writeFileSync(`${dir}/0/${dead}`, new Uint8Array(8), { mode: 0o600 });
      // More processes than the bound (any user can start them): the hold is not read, so
      // its liveness is unknown and nothing goes. Before: the live file was removed.
      const partial = readRegistry({ dir, maxProcesses: 1 });
      assert.ok(partial.warnings.some((w) => /^\/proc: more than 1 processes/.test(w)));
      assert.deepEqual(files(), [dead, live[0]].sort());
      // Every process read: only the dead file goes.
      const full = readRegistry({ dir });
      assert.ok(full.sockets.some((s) => s.pid === hold.pid), full.warnings.join("\n"));
      assert.deepEqual(files(), live);
      await hold.send({ go: true });
      assert.equal((await hold.wait(TIMEOUT_MS)).code, 0, hold.stderr);
    } finally {
      await hold.dispose();
      await Deno.remove(base, { recursive: true });
    }
  },
});
