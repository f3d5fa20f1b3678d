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
import { runNativeCheck, shimSources } from "./helpers/zig.ts";

Deno.test("datapath: rings in plain memory, every frame accounted for", async () => {
  const sources = await shimSources();
  assert.ok(sources.includes("ffi/datapath.c"), sources.join(", "));
  // As nobody in a network namespace of its own: the companion sockets' datagrams go over
  // that namespace's loopback, and nothing needs privilege.
  const { code, out } = await runNativeCheck("tests/native/datapath_check.c", { netns: true });
  console.log(out.trim());
  assert.equal(code, 0, out);
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
});
