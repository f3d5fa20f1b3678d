/**
 * `UdpBypass.listenDatagram` takes what `Deno.listenDatagram` takes (issue 13 item 6): a
 * value typed `Deno.UdpListenOptions & { transport: "udp" }` passes `deno check` (this
 * file is type-checked by `deno test`), and such a socket without a port is bound to one
 * the kernel picked, with `loopback` set as asked.
 */

import assert from "node:assert/strict";
import { UdpBypass } from "../mod.ts";
import { createTestbed } from "./helpers/testbed.ts";

/** Opens the same options with both, as a program switching to nkb would. */
function both(opts: Deno.UdpListenOptions & { transport: "udp" }): Deno.DatagramConn[] {
  return [Deno.listenDatagram(opts), UdpBypass.listenDatagram(opts)];
}

Deno.test({
  name: "listen types: Deno.UdpListenOptions & { transport: 'udp' } is a ListenOptions",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using tb = await createTestbed();
    const code = `
      import { UdpBypass } from ${JSON.stringify(new URL("../mod.ts", import.meta.url).href)};
      const opts: Deno.UdpListenOptions & { transport: "udp" } =
        { transport: "udp", hostname: ${JSON.stringify(tb.a.ip)}, loopback: true };
      const conns = [Deno.listenDatagram(opts), UdpBypass.listenDatagram(opts)];
      console.log(JSON.stringify(conns.map((c) => (c.addr as Deno.NetAddr).port > 0)));
      for (const c of conns) c.close();
    `;
    const out = await tb.execOk("a", [
      Deno.execPath(),
      "eval",
      "--unstable-net",
      "--check",
      code,
    ]);
    assert.deepEqual(JSON.parse(out.trim().split("\n").at(-1) ?? ""), [true, true]);
    // The function above is checked too; it is not run here (no namespace around it).
    assert.equal(typeof both, "function");
  },
});
