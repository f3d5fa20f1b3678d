// A Worker that opened a socket is terminated without closing it; then the main isolate
// binds the same port. KIND=deno uses Deno.listenDatagram, KIND=nkb UdpBypass.
// Usage (inside netns.sh's A namespace): deno run -A --unstable-net repro/worker_terminate_leak.ts KIND
import { UdpBypass } from "../mod.ts";
const kind = Deno.args[0] ?? "nkb";
const keep = UdpBypass.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
const mod = new URL("../mod.ts", import.meta.url).href;
const open = kind === "deno"
  ? `Deno.listenDatagram({ transport: "udp", hostname: "198.19.77.1", port: 9650 })`
  : `UdpBypass.listenDatagram({ transport: "udp", hostname: "198.19.77.1", port: 9650 })`;
const src = `import { UdpBypass } from "${mod}"; const s = ${open}; postMessage(1);`;
const url = URL.createObjectURL(new Blob([src], { type: "application/javascript" }));
const w = new Worker(url, { type: "module" });
await new Promise((r) => w.onmessage = r);
w.terminate();
await new Promise((r) => setTimeout(r, 300));
try {
  const s = Deno.listenDatagram({ transport: "udp", hostname: "198.19.77.1", port: 9650 });
  console.log(kind, "port free after terminate");
  s.close();
} catch (e) {
  console.log(kind, "after terminate:", (e as Error).name);
}
keep.close();
