/**
 * The pre-load module (net_kernel_bypass(3LIB)'s `LD_PRELOAD`, as Deno has it):
 *
 * ```sh
 * deno run --preload jsr:@nkb/udp/preload --allow-ffi --allow-net app.ts
 * ```
 *
 * makes every UDP socket the program creates with `Deno.listenDatagram` (which needs
 * `--unstable-net`) or node:dgram (`udp4`, also inside npm packages; see
 * src/node_dgram.ts) an nkb socket, decided by the contract's rules (bind, connect, first
 * send, multicast interface), with no change to the program. Everything else (`unixpacket`, TCP, …) is untouched, and so
 * is a call Deno itself would refuse for want of `--allow-net`: it goes to Deno, which
 * throws its own error. A scoped `--allow-net=<hosts>` (or any `--deny-net`) keeps Deno's
 * sockets too, after one line on stderr: Deno checks every destination of a send or
 * connect against it, and nkb's sockets do not. Workers the program starts get the same:
 * Deno does not evaluate `--preload` modules in Workers, so this module wraps each
 * Worker's module in one that imports this module first.
 *
 * Never worse than without it: when the native library cannot load (or FFI is neither
 * granted nor denied: the pre-load does not prompt for it), the program runs as
 * without the pre-load, after one line on stderr that says why; with
 * `_NET_KERNEL_BYPASS_ERR_EXIT=1` it exits with status 1 instead, as the contract says.
 *
 * @module
 */

import { LibraryLoadError } from "./src/errors.ts";
import { lib } from "./src/ffi.ts";
import { envValue, fullyGranted } from "./src/load.ts";
import { installNodeDgram } from "./src/node_dgram.ts";
import { UdpBypass } from "./src/udp_bypass.ts";

const INSTALLED = Symbol.for("nkb.preload.installed");

type ListenDatagram = typeof Deno.listenDatagram;

/** Whether Deno would let this program listen there (no prompt: a query). */
function netGranted(options: Deno.UdpListenOptions): boolean {
  try {
    const host = `${options.hostname ?? "0.0.0.0"}:${Number(options.port ?? 0)}`;
    return Deno.permissions.querySync({ name: "net", host }).state === "granted";
  } catch {
    return false;
  }
}

/**
 * Whether the program may reach every host. Deno checks each destination of a send and
 * connect against --allow-net/--deny-net; nkb's sockets do not, so a scoped grant keeps
 * Deno's sockets, which do.
 */
function netGrantedForAll(): boolean {
  try {
    return fullyGranted(Deno.permissions.querySync({ name: "net" }));
  } catch {
    return false;
  }
}

let scopedNoted = false;

type UdpOptions = Deno.UdpListenOptions & { transport: "udp" };

/**
 * Whether a socket bound at `options` may be nkb's. Not granted for every host: Deno's
 * socket, which checks each destination (and the bind: Deno's own error or prompt where
 * the address is not granted either).
 */
function mayTakeOver(options: Deno.UdpListenOptions): boolean {
  if (netGrantedForAll()) return true;
  if (!scopedNoted && netGranted(options)) {
    scopedNoted = true;
    console.error(
      "nkb preload: UDP stays on Deno's own sockets: --allow-net is scoped (or --deny-net " +
        "is given), and Deno checks each destination where nkb would not",
    );
  }
  return false;
}

function installListen(original: ListenDatagram): void {
  // Deno's own, called as Deno would be: whatever overload the options pick.
  const deno = original.bind(Deno) as (options: unknown) => Deno.DatagramConn;
  const listenDatagram = function listenDatagram(options: UdpOptions): Deno.DatagramConn {
    if (options?.transport !== "udp") return deno(options);
    if (!mayTakeOver(options)) return deno(options);
    try {
      return UdpBypass.listenDatagram(options);
    } catch (e) {
      // nkb is IPv4 only: an address that resolves first to IPv6 ("::", "::1") is Deno's
      // to bind, as without the pre-load (NotSupported is thrown for nothing else).
      if (e instanceof Deno.errors.NotSupported) return deno(options);
      throw e;
    }
  };
  Deno.listenDatagram = listenDatagram as ListenDatagram;
}

/** A Worker's module URL wrapped in a module that imports this one first. */
function wrapped(specifier: string | URL): string | URL {
  const href = specifier instanceof URL ? specifier.href : specifier;
  if (typeof href !== "string" || !URL.canParse(href)) return specifier;
  const code = `import ${JSON.stringify(import.meta.url)};\nimport ${JSON.stringify(href)};\n`;
  return URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
}

function installWorker(): void {
  const Original = globalThis.Worker;
  if (typeof Original !== "function") return;
  // A subclass: `instanceof Worker` and every method stay as they are.
  class Worker extends Original {
    constructor(specifier: string | URL, options?: WorkerOptions) {
      super(wrapped(specifier), options);
    }
  }
  // Deno's constructor declares one parameter; a program could read it.
  Object.defineProperty(Worker, "length", { value: Original.length });
  globalThis.Worker = Worker;
}

/** One line on stderr, and Deno's own sockets (or exit 1 under ERR_EXIT=1). */
function fallBack(why: string): void {
  if (envValue("_NET_KERNEL_BYPASS_ERR_EXIT") === "1") {
    console.error(`nkb preload: ${why} (exiting: _NET_KERNEL_BYPASS_ERR_EXIT=1)`);
    Deno.exit(1);
  }
  console.error(`nkb preload: UDP stays on Deno's own sockets: ${why}`);
}

/** FFI neither granted nor denied: loading would make Deno prompt, as the program would not. */
function ffiUnasked(): boolean {
  try {
    return Deno.permissions.querySync({ name: "ffi" }).state === "prompt";
  } catch {
    return false;
  }
}

function install(): void {
  const g = globalThis as Record<symbol, unknown>;
  if (g[INSTALLED]) return;
  g[INSTALLED] = true;
  if (ffiUnasked()) return fallBack("no --allow-ffi (the pre-load does not prompt for it)");
  try {
    lib();
  } catch (e) {
    if (!(e instanceof LibraryLoadError)) throw e;
    return fallBack(e.message);
  }
  // Without --unstable-net there is no Deno.listenDatagram; node:dgram needs no flag.
  const original = Deno.listenDatagram;
  if (typeof original === "function") installListen(original);
  if (!installNodeDgram((hostname, port) => mayTakeOver({ hostname, port }))) {
    console.error(
      "nkb preload: node:dgram stays on Deno's own sockets: this Deno's node:dgram handle " +
        "is not the one nkb knows",
    );
  }
  installWorker();
}

install();
