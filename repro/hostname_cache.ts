// An address whose hostname getter answers differently on each read poisons the
// socket's destination cache: later plain sends to 198.19.77.2 go to 198.19.77.1.
// Usage (inside netns.sh's A namespace):
//   deno run -A --unstable-net repro/hostname_cache.ts
// Prints how many of 5 plain sends to 198.19.77.2:9777 arrived at 198.19.77.1:9777.
import { UdpBypass } from "../mod.ts";
const self = Deno.listenDatagram({ transport: "udp", hostname: "198.19.77.1", port: 9777 });
const sock = UdpBypass.listenDatagram({ transport: "udp", hostname: "198.19.77.1", port: 9778 });
let reads = 0;
const tricky = {
  transport: "udp" as const,
  get hostname(): string {
    return ++reads === 2 ? "198.19.77.1" : "198.19.77.2";
  },
  port: 9777,
};
sock.sendSync(new Uint8Array([0]), tricky);
for (let i = 1; i <= 5; i++) {
  sock.sendSync(new Uint8Array([i]), { transport: "udp", hostname: "198.19.77.2", port: 9777 });
}
let misdirected = 0;
for (let i = 0; i < 6; i++) {
  const got = await Promise.race([
    self.receive().then(([d]) => d[0]),
    new Promise<null>((r) => setTimeout(() => r(null), 300)),
  ]);
  if (got === null) break;
  if (got > 0) misdirected++;
}
console.log(
  `hostname reads: ${reads}; plain sends to 198.19.77.2 that arrived at 198.19.77.1: ${misdirected} of 5`,
);
sock.close();
self.close();
Deno.exit(0);
