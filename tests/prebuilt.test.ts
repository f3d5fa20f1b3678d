/**
 * The loader's parts that need no network: the synchronous SHA-256 against WebCrypto,
 * the verification of prebuilt bytes (refused when one byte differs, a platform without a
 * library named), the load errors for a bad NKB_LIB, and a Worker that imports nkb and is
 * sent a message at once (the module graph must evaluate synchronously: no top-level
 * await, or the message is lost).
 */

import assert from "node:assert/strict";
import { sha256Hex } from "../src/sha256.ts";
import { platform, PREBUILT, prebuiltBytes, verifyPrebuilt } from "../src/prebuilt.ts";
import { ROOT, zigCc } from "./helpers/zig.ts";

const MOD = new URL("../mod.ts", import.meta.url).href;

const decoder = new TextDecoder();

async function webSha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

Deno.test("sha256Hex equals WebCrypto at every padding boundary and on random data", async () => {
  const lengths = [0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 92_784];
  for (const n of lengths) {
    const bytes = new Uint8Array(n);
    crypto.getRandomValues(bytes.subarray(0, Math.min(n, 65536)));
    if (n > 65536) bytes.fill(0xa5, 65536);
    assert.equal(sha256Hex(bytes), await webSha256(bytes), `length ${n}`);
  }
  // FIPS 180-4's "abc".
  assert.equal(
    sha256Hex(new TextEncoder().encode("abc")),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
});

Deno.test("prebuilt bytes: verified when intact, refused when one byte differs", () => {
  const here = prebuiltBytes();
  assert.equal(here.ok, true, here.ok ? "" : here.message);
  if (!here.ok) return;
  assert.equal(here.platform, platform());
  const bad = here.bytes.slice();
  bad[bad.length >> 1] ^= 0x40;
  const refused = verifyPrebuilt(platform(), bad);
  assert.equal(refused.ok, false);
  if (refused.ok) return;
  assert.equal(refused.reason, "hash-mismatch");
  assert.match(refused.message, /refused the prebuilt libnkb\.so .* it was not loaded/);
  assert.ok(refused.message.includes(PREBUILT[platform()].sha256));

  const shorter = verifyPrebuilt(platform(), here.bytes.subarray(1));
  assert.equal(shorter.ok ? "" : shorter.reason, "hash-mismatch");

  const other = prebuiltBytes("linux-riscv64");
  assert.equal(other.ok, false);
  if (other.ok) return;
  assert.equal(other.reason, "unsupported-platform");
  assert.match(
    other.message,
    /no prebuilt libnkb\.so for linux-riscv64: .*linux-x86_64 and linux-aarch64/,
  );
});

interface Outcome {
  code: number;
  out: string;
}

async function runLoad(env: Record<string, string>, flags: string[]): Promise<Outcome> {
  const code = `import { UdpBypass } from "${MOD}";
try {
  UdpBypass.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 }).close();
  console.log(JSON.stringify({ ok: true }));
} catch (e) {
  console.log(JSON.stringify({ name: e.name, reason: e.reason, message: e.message }));
}`;
  // deno run (deno eval would grant every permission).
  const file = await Deno.makeTempFile({ prefix: "nkb-load-", suffix: ".ts" });
  try {
    await Deno.writeTextFile(file, code);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-lock", ...flags, file],
      env: { NO_COLOR: "1", ...env },
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: out.code, out: decoder.decode(out.stdout) + decoder.decode(out.stderr) };
  } finally {
    await Deno.remove(file).catch(() => {});
  }
}

Deno.test("load errors: NKB_LIB missing, not ELF, for another CPU, without the nkb ABI", async () => {
  const other = Deno.build.arch === "x86_64" ? "aarch64" : "x86_64";
  const cases: [string, string, RegExp][] = [
    [
      "/nonexistent/libnkb.so",
      "dlopen",
      /cannot load NKB_LIB \(\/nonexistent\/libnkb\.so\): .*No such file/,
    ],
    [`${ROOT}/README.md`, "dlopen", /it is not an ELF file/],
    [
      `${ROOT}/zig-out/dist/linux-${other}/lib/libnkb.so`,
      "unsupported-platform",
      new RegExp(`it is built for ${other}, this CPU is ${Deno.build.arch}`),
    ],
    ["libc.so.6", "abi-mismatch", /NKB_LIB \(libc\.so\.6\) is not libnkb\.so/],
  ];
  for (const [path, reason, text] of cases) {
    const r = await runLoad({ NKB_LIB: path }, ["--allow-ffi"]);
    assert.equal(r.code, 0, r.out);
    const m = JSON.parse(r.out.trim().split("\n")[0]);
    assert.equal(m.name, "LibraryLoadError", `${path}: ${r.out}`);
    assert.equal(m.reason, reason, `${path}: ${m.message}`);
    assert.match(m.message, text, path);
  }
  // A library with nkb's entry but another ABI version.
  const dir = await Deno.makeTempDir({ prefix: "nkb-abi-" });
  try {
    await Deno.writeTextFile(`${dir}/abi.c`, "int nkb_abi_version(void) { return 999; }\n");
    const cc = await zigCc(["-shared", "-fPIC", "-o", `${dir}/libold.so`, `${dir}/abi.c`]);
    assert.equal(cc.code, 0, cc.stderr);
    const r = await runLoad({ NKB_LIB: `${dir}/libold.so` }, ["--allow-ffi"]);
    const m = JSON.parse(r.out.trim().split("\n")[0]);
    assert.equal(m.reason, "abi-mismatch", r.out);
    assert.match(m.message, /has ABI 999, this version of nkb needs \d+: rebuild it/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }

  const denied = await runLoad({}, []);
  const m = JSON.parse(denied.out.trim().split("\n")[0]);
  assert.equal(m.reason, "permission", denied.out);
  assert.match(m.message, /needs --allow-ffi/);
});

Deno.test("a Worker that imports nkb gets a message posted before it evaluated", async () => {
  // The worker sets onmessage at its top level; a top-level await anywhere in nkb's module
  // graph would leave it unset when the message arrives, and the run would hang.
  const code = `const src = 'import { UdpBypass } from "${MOD}";' +
  'self.onmessage = () => self.postMessage(typeof UdpBypass);';
const w = new Worker(URL.createObjectURL(new Blob([src], { type: "text/javascript" })), { type: "module" });
const got = new Promise((r) => { w.onmessage = (e) => r(e.data); });
w.postMessage(1);
const t = setTimeout(() => { console.log("lost"); Deno.exit(1); }, 5000);
console.log(await got); clearTimeout(t); w.terminate();`;
  for (let i = 0; i < 5; i++) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--allow-read", code],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(decoder.decode(out.stdout).trim(), "function", decoder.decode(out.stderr));
  }
});
