/**
 * The tests' conventions on top of `examples/testbed.ts`: one testbed per test,
 * with its own /24, IPv6 left on (so the XDP program also sees the link's
 * IPv6 traffic), and scripts taken from `tests/fixtures/`. Loading this module
 * deletes the namespaces a killed earlier run left behind.
 *
 * @module
 */

import { type Side, Testbed } from "../../examples/testbed.ts";

export { type Message, sleep, Testbed, type TestbedProcess } from "../../examples/testbed.ts";

/** The directory of the fixture scripts. */
export const FIXTURES: string = new URL("../fixtures/", import.meta.url).pathname;

/** Creates the testbed of one test (remove it with `await using`). */
export function createTestbed(): Promise<Testbed> {
  return Testbed.create({ thirdOctet: "next", ipv6: true, scriptDir: FIXTURES });
}

/** Sends one UDP datagram `text` from side `s` to `host:port` with python3 (no Deno start-up). */
export async function sendUdp(
  tb: Testbed,
  s: Side,
  text: string,
  host: string,
  port: number,
): Promise<void> {
  const code = `import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); ` +
    `s.sendto(${JSON.stringify(text)}.encode(), (${JSON.stringify(host)}, ${port}))`;
  await tb.execOk(s, ["python3", "-c", code]);
}

Testbed.removeStale();
