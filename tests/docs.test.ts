/**
 * The user documentation holds to what it promises: the README's `SendBatch` example, run
 * as written against a recording socket, sends every payload exactly once and in order
 * when `add()` returns false (the batch full by count, and by bytes); the README stays
 * small enough to read; every relative link of the published Markdown files resolves to
 * a file that is published too (so it works on JSR); the removed zero-copy class is named
 * in no published file. No network: nothing here opens a socket.
 */

import assert from "node:assert/strict";
import { SendBatch } from "../mod.ts";
import { SEND_META_WORDS } from "../src/ffi.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const README_MAX_BYTES = 24_000;

function readme(): string {
  return Deno.readTextFileSync(`${ROOT}README.md`);
}

// The README's send loop: its "### Batches" block up to the receive half, without the
// import line and the one type annotation (run as plain JavaScript).
function readmeSendLoop(): string {
  const text = readme();
  const section = text.indexOf("### Batches");
  assert.ok(section >= 0, "README has no '### Batches' section");
  const open = text.indexOf("```ts\n", section);
  const close = text.indexOf("\n```", open + 6);
  assert.ok(open > section && close > open, "the Batches section has no ts block");
  const block = text.slice(open + 6, close);
  const recvAt = block.indexOf("const inb");
  assert.ok(recvAt > 0, "the Batches block has no receive half");
  const send = block.slice(0, recvAt)
    .split("\n")
    .filter((line) => !line.startsWith("import "))
    .join("\n")
    .replace(": Deno.NetAddr", "");
  assert.match(send, /out\.add\(/, "the example adds no datagram");
  assert.match(send, /sendBatch\(out\)/, "the example sends no batch");
  return send;
}

type SendLoop = (
  sock: { sendBatch(b: SendBatch): number },
  payloads: Uint8Array[],
  SendBatch: unknown,
) => void;

// Runs the README's loop over `payloads`; returns what each sendBatch call carried.
function runSendLoop(payloads: Uint8Array[]): Uint8Array[][] {
  const sent: Uint8Array[][] = [];
  const sock = {
    sendBatch(b: SendBatch): number {
      const got: Uint8Array[] = [];
      for (let k = 0; k < b.length; k++) {
        const at = k * SEND_META_WORDS;
        got.push(b.bytes.slice(b.meta[at], b.meta[at] + b.meta[at + 1]));
      }
      sent.push(got);
      return b.length;
    },
  };
  const loop = new Function("sock", "payloads", "SendBatch", readmeSendLoop()) as SendLoop;
  loop(sock, payloads, SendBatch);
  return sent;
}

function payloadsOf(count: number, size: (i: number) => number): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => {
    const p = new Uint8Array(size(i));
    new DataView(p.buffer).setUint32(0, i); // every payload is told apart by its first word
    return p;
  });
}

function assertSentOnceInOrder(payloads: Uint8Array[], sent: Uint8Array[][]): void {
  for (const batch of sent) assert.ok(batch.length > 0, "an empty batch was sent");
  const flat = sent.flat();
  assert.equal(flat.length, payloads.length, "datagrams sent");
  for (let i = 0; i < payloads.length; i++) assert.deepEqual(flat[i], payloads[i], `datagram ${i}`);
}

Deno.test("README SendBatch example: a batch full by count is sent, then the datagram added", () => {
  const payloads = payloadsOf(600, (i) => 4 + (i * 37) % 1469); // 4..1472 bytes
  const sent = runSendLoop(payloads);
  assertSentOnceInOrder(payloads, sent);
  assert.deepEqual(sent.map((b) => b.length), [256, 256, 88]);
});

Deno.test("README SendBatch example: a batch full by bytes is sent, then the datagram added", () => {
  const payloads = payloadsOf(20, () => 60_000); // 6 fill the default 256 x 1500 bytes
  const sent = runSendLoop(payloads);
  assertSentOnceInOrder(payloads, sent);
  assert.deepEqual(sent.map((b) => b.length), [6, 6, 6, 2]);
});

Deno.test("README SendBatch example: no payloads, no send", () => {
  assert.deepEqual(runSendLoop([]), []);
});

Deno.test(`README stays under ${README_MAX_BYTES} bytes`, () => {
  const bytes = new TextEncoder().encode(readme()).byteLength;
  assert.ok(
    bytes < README_MAX_BYTES,
    `README.md is ${bytes} bytes: move method, history and long explanations to ` +
      "bench/README.md, CONTRIBUTING.md or SECURITY.md",
  );
});

// The files deno.json publishes: each entry a file, or a directory ending in "/".
function published(): string[] {
  const config = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`));
  const include: string[] = config.publish.include;
  const files: string[] = [];
  for (const entry of include) {
    if (!entry.endsWith("/")) {
      files.push(entry);
      continue;
    }
    for (const e of Deno.readDirSync(`${ROOT}${entry}`)) {
      if (e.isFile) files.push(`${entry}${e.name}`);
    }
  }
  return files;
}

Deno.test("published Markdown: every relative link resolves to a published file", () => {
  const files = published();
  const markdown = files.filter((f) => f.endsWith(".md"));
  assert.ok(markdown.includes("README.md") && markdown.length >= 3, markdown.join());
  const broken: string[] = [];
  let links = 0;
  for (const file of markdown) {
    const text = Deno.readTextFileSync(`${ROOT}${file}`);
    for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      const target = m[1].split("#")[0];
      if (target === "" || /^[a-z]+:/.test(target)) continue;
      links++;
      const dir = file.includes("/") ? file.slice(0, file.lastIndexOf("/") + 1) : "";
      const resolved = new URL(target, `file:///${dir}`).pathname.slice(1);
      if (!files.includes(resolved)) broken.push(`${file} -> ${m[1]}`);
    }
  }
  assert.ok(links > 0, "no relative link found: the scan is broken");
  assert.deepEqual(broken, []);
});

Deno.test("the removed zero-copy datagram class is named in no published file", () => {
  const name = ["ZeroCopy", "Datagram"].join("");
  const naming = published().filter((f) => Deno.readTextFileSync(`${ROOT}${f}`).includes(name));
  assert.deepEqual(naming, []);
});
