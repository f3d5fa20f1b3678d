/**
 * Another user's part of the registry, squatted (issue 12): nobody pre-creates R/<uid> of
 * an unprivileged user (one the test creates), so that user's processes publish nothing
 * and cannot repair it (a non-root writer cannot rename another's directory away). Root
 * does: root's `nkb stat` (readRegistry with cleanup) and a root writer at its start set
 * the squatter aside, and the victim's next process publishes and is listed. Its process
 * already running gave up and stays unlisted; the warning says so.
 */

import assert from "node:assert/strict";
import { readRegistry } from "../src/registry_read.ts";
import type { TestbedProcess } from "../examples/testbed.ts";
import { asNobody, holdCommand, NOBODY, setprivAs, spawn } from "./helpers/nobody.ts";

const TIMEOUT_MS = 30_000;

async function run(cmd: string, args: string[]): Promise<{ code: number; err: string }> {
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  return { code: out.code, err: new TextDecoder().decode(out.stderr) };
}

/** A user of our own (no home, no login): its uid, the first free one from 64999 down. */
async function makeUser(name: string): Promise<number> {
  for (let uid = 64999; uid > 64900; uid--) {
    const r = await run("useradd", ["-M", "-N", "-s", "/usr/sbin/nologin", "-u", `${uid}`, name]);
    if (r.code === 0) return uid;
    if (r.code !== 4) throw new Error(`useradd ${name}: exit ${r.code}: ${r.err}`); // 4: uid used
  }
  throw new Error("no free uid in 64901..64999");
}

/** hold.ts as `uid` (gid the same, no groups): one kernel-path socket on 127.0.0.1:port. */
function holdAs(uid: number, dir: string, port: number, home: string): TestbedProcess {
  const prefix = uid === 0 ? [] : setprivAs(uid);
  return spawn(`hold:${uid}:${port}`, [...prefix, ...holdCommand(port, TIMEOUT_MS)], {
    NKB_REGISTRY_DIR: dir,
    DENO_DIR: home,
    HOME: home,
  });
}

async function finish(p: TestbedProcess): Promise<void> {
  await p.send({ go: true });
  const status = await p.wait(TIMEOUT_MS);
  assert.equal(status.code, 0, `${p.name} exit ${status.code}: ${p.stderr}`);
}

/** Waits (bounded) until p's stderr matches. */
async function said(p: TestbedProcess, re: RegExp): Promise<boolean> {
  for (let i = 0; i < 1000 && !re.test(p.stderr); i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  return re.test(p.stderr);
}

function portsOf(uid: number, dir: string): number[] {
  return readRegistry({ dir, cleanup: false }).sockets.filter((s) => s.uid === uid)
    .map((s) => s.local.port);
}

Deno.test({
  name: "registry squat: root's stat and a root writer set another user's squatted R/<uid> aside",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const name = `nkbsq${Deno.pid}`;
    const base = Deno.makeTempDirSync({ prefix: `nkb-squat-${Deno.pid}-` });
    Deno.chmodSync(base, 0o755);
    const procs: TestbedProcess[] = [];
    let created = false;
    try {
      const uid = await makeUser(name);
      created = true;
      const home = `${base}/home`;
      Deno.mkdirSync(home);
      Deno.chownSync(home, uid, uid);
      const dir = `${base}/reg`;
      Deno.mkdirSync(dir);
      Deno.chmodSync(dir, 0o1777); // R as a root writer makes it
      await asNobody(`mkdir -m 0700 ${dir}/${uid}`);

      // The victim's process publishes nothing: R/<uid> is nobody's.
      const gaveUp = holdAs(uid, dir, 9801, home);
      procs.push(gaveUp);
      await gaveUp.nextWith("ready", TIMEOUT_MS);
      assert.ok(
        await said(gaveUp, new RegExp(`/${uid}: .*: no registry`)),
        gaveUp.stderr,
      );
      // A reader without cleanup only warns.
      const looked = readRegistry({ dir, cleanup: false });
      assert.deepEqual(looked.sockets.filter((s) => s.uid === uid), []);
      assert.ok(
        looked.warnings.includes(
          `${dir}/${uid}: squatted (not a directory of uid ${uid}, or writable by others): its files are not read`,
        ),
        looked.warnings.join("\n"),
      );
      assert.equal(Deno.statSync(`${dir}/${uid}`).uid, NOBODY);

      // Root's `nkb stat`: repairs it, and says that the running process stays unlisted.
      const stat = readRegistry({ dir });
      assert.deepEqual(stat.sockets.filter((s) => s.uid === uid), []);
      const squatWarnings = stat.warnings.filter((w) => w.includes(`${dir}/${uid}:`));
      assert.deepEqual(squatWarnings, [
        `${dir}/${uid}: squatted (not a directory of uid ${uid}, or writable by others): ` +
        `set aside; uid ${uid}'s next processes publish, its running ones gave up and stay unlisted`,
      ]);
      assert.throws(() => Deno.lstatSync(`${dir}/${uid}`), Deno.errors.NotFound);
      const aside = [...Deno.readDirSync(dir)].filter((e) =>
        e.name.startsWith(`.${uid}.squatted.`)
      );
      assert.equal(aside.length, 1);

      // The victim's next process publishes and root's stat lists it (not the one that gave up).
      const next = holdAs(uid, dir, 9802, home);
      procs.push(next);
      await next.nextWith("ready", TIMEOUT_MS);
      assert.deepEqual(portsOf(uid, dir), [9802]);
      const sub = Deno.statSync(`${dir}/${uid}`);
      assert.deepEqual([sub.uid, sub.mode! & 0o7777], [uid, 0o700]);
      await finish(next);

      // Squatted again, by a link, once the victim's directory is gone (as after a reboot
      // empties /dev/shm): a root writer at its start sets it aside.
      Deno.removeSync(`${dir}/${uid}`);
      await asNobody(`mkdir ${dir}/s && ln -s s ${dir}/${uid}`);
      const root = holdAs(0, dir, 9803, home);
      procs.push(root);
      await root.nextWith("ready", TIMEOUT_MS);
      assert.ok(
        await said(root, new RegExp(`/${uid}: squatted by another user, renamed to \\.${uid}\\.`)),
        root.stderr,
      );
      assert.throws(() => Deno.lstatSync(`${dir}/${uid}`), Deno.errors.NotFound);
      const again = holdAs(uid, dir, 9804, home);
      procs.push(again);
      await again.nextWith("ready", TIMEOUT_MS);
      assert.deepEqual(portsOf(uid, dir), [9804]);
      assert.deepEqual(portsOf(0, dir), [9803]);
      await finish(again);
      await finish(root);
      await finish(gaveUp);
    } finally {
      for (const p of procs) await p.dispose();
      if (created) {
        const r = await run("userdel", [name]);
        assert.equal(r.code, 0, `userdel ${name}: ${r.err}`);
      }
      Deno.removeSync(base, { recursive: true });
    }
  },
});
