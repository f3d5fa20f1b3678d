/**
 * Deno is the reference (issue 12 item 11): tests/fixtures/differential.ts makes the same
 * sends and listens against `Deno.listenDatagram` and `UdpBypass.listenDatagram` in a
 * testbed namespace, and this test compares what happened: success (and where a send
 * with no hostname went: 127.0.0.1, as Deno's) or the error's class. Each remaining
 * difference is listed below with why, and must be exactly what is seen, so that a change
 * on either side shows.
 */

import assert from "node:assert/strict";
import { createTestbed } from "./helpers/testbed.ts";

/** Observed Deno and nkb classes of a case that differs on purpose. */
const KNOWN: Record<string, [string, string, string]> = {
  // Deno converts the number to text and resolves "5" as 0.0.0.5 (inet_aton).
  "hostname number": ["Deno.errors.NetworkUnreachable", "TypeError", "no host names, no coercion"],
  "listen hostname number": ["Deno.errors.AddrNotAvailable", "TypeError", "same"],
  // Deno resolves inet_aton forms (octal and short quads); nkb refuses them as ambiguous.
  'hostname "198.18.50.02"': ["ok", "TypeError", "leading zero: octal to inet_aton"],
  'listen hostname "198.18.50.02"': ["ok", "TypeError", "same"],
  'hostname "1.2.3"': ["Deno.errors.NetworkUnreachable", "TypeError", "1.2.0.3 to inet_aton"],
  'listen hostname "1.2.3"': ["Deno.errors.AddrNotAvailable", "TypeError", "same"],
  // Deno's resolver fails (no DNS in the namespace) with a plain Error; nkb resolves nothing.
  'hostname "256.1.1.1"': ["Error", "TypeError", "name resolution is issue 13's"],
  'listen hostname "256.1.1.1"': ["Error", "TypeError", "same"],
  // Deno truncates these and sends (to port 0 and 1); nkb refuses them.
  "port 65536": ["ok", "TypeError", "Deno sends to port 65536 & 0xffff"],
  "port 1.5": ["ok", "TypeError", "Deno sends to port 1"],
};

Deno.test({
  name: "differential: hostnames, ports and payloads as Deno.listenDatagram takes them",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using tb = await createTestbed();
    const child = tb.spawnDeno("a", "differential.ts", [`--host=${tb.a.ip}`, `--peer=${tb.b.ip}`]);
    const status = await child.wait(60_000);
    assert.equal(status.code, 0, child.stderr);
    const done = child.messages.find((m) => "results" in m);
    assert.ok(done !== undefined, child.stderr);
    type Outcome = { cls: string; msg?: string; got?: number };
    const results = done.results as Record<string, { deno: Outcome; nkb: Outcome }>;
    const bad: string[] = [];
    for (const [name, { deno, nkb }] of Object.entries(results)) {
      const row = `${name}: deno ${deno.cls}${deno.got !== undefined ? ` got ${deno.got}` : ""}` +
        ` | nkb ${nkb.cls}${nkb.got !== undefined ? ` got ${nkb.got}` : ""} ${nkb.msg ?? ""}`;
      console.log(row);
      const known = KNOWN[name];
      const same = deno.cls === nkb.cls && deno.got === nkb.got;
      if (known !== undefined) {
        if (deno.cls !== known[0] || nkb.cls !== known[1]) bad.push(`${row} (known: ${known})`);
      } else if (!same) {
        bad.push(row);
      }
      // An nkb error says what is wrong: it names the call and the value or the rule.
      if (nkb.cls !== "ok") assert.match(nkb.msg ?? "", /send|listen|bind|port|host|data/, row);
    }
    assert.deepEqual(bad, []);
    assert.equal(Object.keys(results).length, 30);
    // The sends with no hostname reached 127.0.0.1 on both, and the detached payload went
    // as an empty datagram on both.
    assert.deepEqual(results["hostname null"].nkb, { cls: "ok", got: 3 });
    assert.deepEqual(results["payload detached"].nkb, { cls: "ok", got: 0 });
  },
});
