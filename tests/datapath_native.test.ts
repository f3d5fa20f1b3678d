/**
 * ffi/datapath.c against an engine in plain memory, without root: receive batches with
 * demux and park, malformed descriptors, batch boundaries, sends through the TX ring,
 * waits, the companion socket's turns, the lock order and the drain of a queue given up
 * (give.c), with every UMEM frame accounted for after each step (tests/native/datapath_check.c
 * plays the kernel's side of the rings).
 * Built from the shim's own sources with assertions on and undefined behaviour trapping;
 * run as nobody in a user and network namespace of its own (its loopback carries the
 * companion sockets' datagrams).
 */

import assert from "node:assert/strict";
import { buildWithShim, CHECK_FLAGS, shimSources } from "./helpers/zig.ts";

Deno.test("datapath: rings in plain memory, every frame accounted for", async () => {
  const bin = await Deno.makeTempFile({ prefix: "nkb-datapath-check-" });
  try {
    const sources = await shimSources();
    assert.ok(sources.includes("ffi/datapath.c"), sources.join(", "));
    const build = await buildWithShim("tests/native/datapath_check.c", bin, CHECK_FLAGS);
    assert.equal(build.code, 0, build.stderr);
    // As nobody (when the test is root) in a network namespace of its own: the companion
    // sockets' datagrams go over that namespace's loopback, and nothing needs privilege.
    await Deno.chmod(bin, 0o755);
    const inNs = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$0"', bin];
    const argv = Deno.uid() === 0
      ? ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", ...inNs]
      : inNs;
    const run = await new Deno.Command(argv[0], {
      args: argv.slice(1),
      signal: AbortSignal.timeout(60_000),
    }).output();
    const out = new TextDecoder().decode(run.stdout);
    console.log(out.trim());
    assert.equal(run.code, 0, out + new TextDecoder().decode(run.stderr));
    for (
      const check of [
        "rx rounds",
        "demux and park",
        "invalid descriptors",
        "batch boundaries",
        "send",
        "wait",
        "companion socket",
        "lock order",
        "give up",
      ]
    ) {
      assert.match(out, new RegExp(`^${check}: .*failures 0$`, "m"), check);
    }
    assert.match(out, /^rx rounds: 3000 rounds, \d+ delivered, [1-9]\d* truncated, /m);
    assert.match(out, /^failures 0$/m);
  } finally {
    await Deno.remove(bin);
  }
});
