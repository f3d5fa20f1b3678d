/**
 * Every fuzz target in tests/fuzz/ (`<name>.c` with its seed corpus `corpus/<name>/`) runs
 * for a bounded time under libFuzzer with ASan and UBSan (`./nkbw fuzz <name> <seconds>`),
 * starting from the repository's corpus; new inputs go to a temporary directory that is
 * removed, never to the repository. A test fails on any crash, leak, timeout, sanitizer
 * report or failed check, on a seed that did not load, and on a run too short to mean
 * anything. It prints executions and coverage (libFuzzer's cov/ft figures).
 */

import assert from "node:assert/strict";
import { ROOT } from "./helpers/zig.ts";

/** How long each target runs here; `./nkbw fuzz <name> 600` runs one longer. */
const SECONDS = 20;
/** Fewer executions than this in SECONDS means the fuzzer did not really run. */
const MIN_RUNS = 20_000;
/** Lines any finding prints (sanitizers, libFuzzer's own crash/leak/timeout/OOM reports). */
const FINDING =
  /ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer)|runtime error:|fuzz check failed|SUMMARY: |Test unit written to/;

/** The targets: tests/fuzz/<name>.c, each with tests/fuzz/corpus/<name>/. */
function targets(): string[] {
  const names: string[] = [];
  for (const e of Deno.readDirSync(`${ROOT}tests/fuzz`)) {
    if (e.isFile && e.name.endsWith(".c")) names.push(e.name.slice(0, -2));
  }
  return names.sort();
}

/** Counts the regular files of a seed corpus directory. */
function seedCount(name: string): number {
  let n = 0;
  for (const e of Deno.readDirSync(`${ROOT}tests/fuzz/corpus/${name}`)) n += e.isFile ? 1 : 0;
  return n;
}

/** A number that `re` captures from `text`, or NaN when it does not match. */
function figure(text: string, re: RegExp): number {
  const m = text.match(re);
  return m ? Number(m[1]) : NaN;
}

Deno.test("fuzz: there are at least the frame and registry targets, each with a seed corpus", () => {
  const names = targets();
  for (const want of ["frame", "registry"]) {
    assert.ok(names.includes(want), `targets: ${names.join(", ")}`);
  }
  for (const name of names) assert.ok(seedCount(name) > 0, `tests/fuzz/corpus/${name}/ is empty`);
});

for (const name of targets()) {
  Deno.test(`fuzz ${name}: ${SECONDS} s of libFuzzer + ASan + UBSan find nothing`, async () => {
    const work = await Deno.makeTempDir({ prefix: `nkb-fuzz-${name}-${Deno.pid}-` });
    try {
      const run = await new Deno.Command(`${ROOT}nkbw`, {
        args: ["fuzz", name, String(SECONDS)],
        env: { NKB_FUZZ_WORK: work },
        stdout: "piped",
        stderr: "piped",
        // Build, seed loading and the run; an install of clang-14 if it is missing.
        signal: AbortSignal.timeout((SECONDS + 300) * 1000),
      }).output();
      const out = new TextDecoder().decode(run.stdout) + new TextDecoder().decode(run.stderr);
      const finding = out.split("\n").filter((line) => FINDING.test(line));
      assert.deepEqual(finding, [], out.slice(-6000));
      assert.equal(run.code, 0, out.slice(-6000));
      const artifacts = [...Deno.readDirSync(`${work}/artifacts`)].map((e) => e.name);
      assert.deepEqual(artifacts, [], "libFuzzer saved inputs: a finding");
      // The repository's corpus was read whole, so the run started from it.
      const seeds = figure(out, /INFO: seed corpus: files: (\d+)/);
      assert.equal(seeds, seedCount(name), "seed files loaded");
      const runs = figure(out, /Done (\d+) runs in/);
      // libFuzzer writes the corpus size as 2957b, 324Kb or 1Mb.
      const done = out.match(/#\d+\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)\/(\d+)(b|Kb|Mb)/);
      assert.ok(done !== null, "no final DONE line");
      assert.ok(runs >= MIN_RUNS, `only ${runs} executions`);
      console.log(
        `fuzz ${name}: ${runs} executions in ${SECONDS} s, cov ${done[1]}, ft ${done[2]}, ` +
          `corpus ${done[3]} inputs (${seeds} seeds), ${done[4]} ${
            done[5] === "b" ? "bytes" : done[5]
          }`,
      );
    } finally {
      await Deno.remove(work, { recursive: true });
    }
  });
}
