// Deno alone, no nkb: a Worker whose nonblocking FFI call (libc usleep, 200 ms) is pending
// is terminated. Usage: deno run -A repro/deno_nonblocking_terminate.ts
const src =
  `const libc = Deno.dlopen("libc.so.6", { usleep: { parameters: ["u32"], result: "i32", nonblocking: true } });
libc.symbols.usleep(200000).then(() => {}); postMessage(1);`;
const url = URL.createObjectURL(new Blob([src], { type: "application/javascript" }));
const w = new Worker(url, { type: "module" });
await new Promise((r) => w.onmessage = r);
await new Promise((r) => setTimeout(r, 30));
w.terminate();
await new Promise((r) => setTimeout(r, 500));
console.log("survived");
