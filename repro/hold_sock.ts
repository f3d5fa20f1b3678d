// Opens one nkb socket (kernel path, 127.0.0.1) and holds it for SECONDS (default 30):
// a process that publishes in the registry. Usage: deno run -A repro/hold_sock.ts [SECONDS]
import { UdpBypass } from "../mod.ts";
const s = UdpBypass.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
console.log(`holding ${JSON.stringify(s.addr)} pid ${Deno.pid}`);
await new Promise((r) => setTimeout(r, Number(Deno.args[0] ?? 30) * 1000));
s.close();
