// deno-lint-ignore-file
// JS attacks on a bypass socket: deno run -A --unstable-net js_cases.ts CASE
// Run inside the A namespace of netns.sh; prints the outcome; exit status 0 unless crashed.
import { RecvBatch, SendBatch, UdpBypass } from "../mod.ts";
const host = "198.19.77.1", peer = "198.19.77.2";
const c = Deno.args[0];
const sock = UdpBypass.listenDatagram({ transport: "udp", hostname: host, port: 9555 });
const out = (x: unknown) => console.log(c, JSON.stringify(x));
const run = async (f: () => unknown) => {
  try {
    out({ ok: await f() });
  } catch (e) {
    out({ err: `${(e as Error).name}: ${(e as Error).message}` });
  }
};
const P = new Uint8Array(100);
switch (c) {
  case "hostname-closes":
    await run(() =>
      sock.sendSync(P, {
        transport: "udp",
        get hostname() {
          sock.close();
          return peer;
        },
        port: 9,
      } as Deno.NetAddr)
    );
    break;
  case "port-toprimitive":
    await run(() =>
      sock.sendSync(P, {
        transport: "udp",
        hostname: peer,
        port: {
          [Symbol.toPrimitive]() {
            sock.close();
            return 9;
          },
        },
      } as unknown as Deno.NetAddr)
    );
    break;
  case "proxy-addr":
    await run(() =>
      sock.sendSync(
        P,
        new Proxy({}, {
          get(_t, k) {
            if (k === "hostname") {
              sock.close();
              return peer;
            }
            return k === "port" ? 9 : "udp";
          },
        }) as Deno.NetAddr,
      )
    );
    break;
  case "timeout-getter-closes":
    await run(() =>
      sock.receiveSync(undefined, {
        get timeoutMs() {
          try {
            sock.close();
          } catch { /**/ }
          return 50;
        },
      })
    );
    break;
  case "timeout-getter-closes-batch":
    await run(() =>
      sock.receiveBatch(new RecvBatch(8), {
        get timeoutMs() {
          try {
            sock.close();
          } catch { /**/ }
          return 50;
        },
      })
    );
    break;
  case "timeout-getter-transfers": {
    const buf = new Uint8Array(2048);
    let k = 0;
    await run(() =>
      sock.receiveSync(buf, {
        get timeoutMs() {
          if (k++ === 1) buf.buffer.transfer();
          return 50;
        },
      })
    );
    break;
  }
  case "batch-add-getter-closes": {
    const b = new SendBatch(4);
    b.add(P, { transport: "udp", hostname: peer, port: 9 });
    await run(() => sock.sendBatch(b));
    await run(() =>
      b.add(P, {
        transport: "udp",
        get hostname() {
          sock.close();
          return "198.19.77.3";
        },
        port: 9,
      })
    );
    await run(() => sock.sendBatch(b));
    break;
  }
  case "close-during-async":
    {
      const p = sock.receive();
      setTimeout(() => sock.close(), 20);
      await run(() => p);
    }
    break;
  case "close-during-async-twice":
    {
      const p = sock.receive();
      setTimeout(() => {
        sock.close();
      }, 20);
      await run(() => p);
      await run(() => sock.receive());
    }
    break;
  case "valueOf-port-bind":
    await run(() =>
      UdpBypass.listenDatagram({
        transport: "udp",
        hostname: host,
        port: {
          valueOf() {
            return 9556;
          },
        } as unknown as number,
      })
    );
    break;
  case "hostname-object":
    await run(() =>
      sock.sendSync(P, {
        transport: "udp",
        hostname: {
          toString() {
            sock.close();
            return peer;
          },
        } as unknown as string,
        port: 9,
      })
    );
    break;
  case "send-sab":
    await run(() =>
      sock.sendSync(new Uint8Array(new SharedArrayBuffer(64)), {
        transport: "udp",
        hostname: peer,
        port: 9,
      })
    );
    break;
  case "recv-sab":
    await run(() =>
      sock.receiveSync(
        new Uint8Array(new SharedArrayBuffer(64)) as unknown as Uint8Array<ArrayBuffer>,
        { timeoutMs: 10 },
      )
    );
    break;
  case "recv-resizable-zero": {
    const ab = new ArrayBuffer(2048, { maxByteLength: 4096 });
    const v = new Uint8Array(ab);
    ab.resize(0);
    await run(() => sock.receiveSync(v, { timeoutMs: 10 }));
    break;
  }
  case "recv-subarray-oob": {
    const ab = new ArrayBuffer(2048, { maxByteLength: 4096 });
    const v = new Uint8Array(ab, 1024, 512);
    ab.resize(1100); // view now out of bounds
    await run(() => sock.receiveSync(v, { timeoutMs: 10 }));
    break;
  }
  case "receiveBatch-ownprops": {
    const b = new RecvBatch(4);
    await run(() => sock.receiveBatch(Object.create(b), { timeoutMs: 10 }));
    break;
  }
  case "reply-from-fake": {
    const s = new SendBatch(4);
    await run(() => s.reply({ data: () => P, offset: () => 0 } as unknown as RecvBatch, 0, P));
    break;
  }
  case "worker-terminate-pending": {
    const src = `import { UdpBypass } from "${new URL("../mod.ts", import.meta.url)}";
const s = UdpBypass.listenDatagram({ transport: "udp", hostname: "${host}", port: 9557 });
s.receive(); postMessage("ok");`;
    const url = URL.createObjectURL(new Blob([src], { type: "application/javascript" }));
    for (let i = 0; i < 5; i++) {
      const w = new Worker(url, { type: "module" });
      await new Promise((r) => w.onmessage = r);
      await new Promise((r) => setTimeout(r, 30));
      w.terminate();
    }
    const s2 = UdpBypass.listenDatagram({ transport: "udp", hostname: host, port: 9558 });
    out({ bypass: s2.bypass });
    s2.close();
    break;
  }
}
try {
  sock.close();
} catch { /**/ }
out("end");
