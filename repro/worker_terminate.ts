// A Worker with a bypass socket whose async receive() is pending (nkb_wait_async on
// Deno's FFI thread pool) is terminated. Usage (inside netns.sh's A namespace):
//   deno run -A --unstable-net repro/worker_terminate.ts [ROUNDS]
// Prints "survived N" and exits 0 unless the process crashes.
const rounds = Number(Deno.args[0] ?? 5);
const mod = new URL("../mod.ts", import.meta.url).href;
for (let i = 0; i < rounds; i++) {
  const src = `import { UdpBypass } from "${mod}";
const s = UdpBypass.listenDatagram({ transport: "udp", hostname: "198.19.77.1", port: ${
    9600 + i
  } });
s.receive().catch(() => {}); postMessage(s.bypass.active);`;
  const url = URL.createObjectURL(new Blob([src], { type: "application/javascript" }));
  const w = new Worker(url, { type: "module" });
  const active = await new Promise((r) => w.onmessage = (e) => r(e.data));
  await new Promise((r) => setTimeout(r, 30));
  w.terminate();
  console.log(`round ${i}: bypass ${active}, terminated`);
}
await new Promise((r) => setTimeout(r, 500));
console.log(`survived ${rounds}`);
