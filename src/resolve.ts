/**
 * Host names as Deno resolves them: the text is checked as Deno's permission check does
 * (its URIErrors), then getaddrinfo() ranks the addresses and the first one counts. Dotted
 * quads never reach the shim; other numeric forms (inet_aton's "1.2.3", "010.1.1.1", "5")
 * go to getaddrinfo as numeric-only lookups, which never touch the network; names go to a
 * full lookup: blocking for the synchronous calls (bind, connect, listenDatagram, as Deno's
 * listenDatagram blocks in getaddrinfo), on Deno's FFI thread pool for `send()`.
 *
 * nkb is IPv4 only: when getaddrinfo ranks an IPv6 address first, a send fails as Deno's
 * IPv4 socket fails (EAFNOSUPPORT) and a bind fails with `Deno.errors.NotSupported`
 * where Deno would bind an IPv6 socket.
 *
 * @module
 */

import { errorFromErrno } from "./errors.ts";
import { byteLengthOf, lib } from "./ffi.ts";
import { parseIpv4 } from "./ipv4.ts";

// ffi/nkb.h: NKB_RESOLVE_NUMERIC, NKB_RESOLVE_HEAD_WORDS, NKB_RESOLVE_NAME_MAX, NKB_EGAI_BASE.
const NUMERIC = 1;
const HEAD_WORDS = 2;
const NAME_MAX = 1024;
const EGAI_BASE = -20000;
const EAI_NONAME = -2;
// Only the first address counts, as in Deno; a few more show what a name stands for.
const ADDRS = 8;
// A label longer than this is Deno's URIError; shorter ones reach getaddrinfo (measured).
const LABEL_MAX = 255;
const encoder = new TextEncoder();

// What may appear in a host name or an address literal outside brackets; anything else
// (blanks, control characters, slashes, brackets) makes Deno's check throw a URIError.
const HOST_CHARS = /^[A-Za-z0-9._\-:%]*$/;
const IPV6_CHARS = /^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*$/;

// glibc's gai_strerror() texts: Deno's error is "failed to lookup address information: "
// and this text.
const GAI_TEXT: Record<number, string> = {
  [-1]: "Bad value for ai_flags",
  [-2]: "Name or service not known",
  [-3]: "Temporary failure in name resolution",
  [-4]: "Non-recoverable failure in name resolution",
  [-5]: "No address associated with hostname",
  [-6]: "ai_family not supported",
  [-7]: "ai_socktype not supported",
  [-8]: "Servname not supported for ai_socktype",
  [-9]: "Address family for hostname not supported",
  [-10]: "Memory allocation failure",
  [-12]: "Argument buffer overflow",
};

/** What getaddrinfo answered for a name. */
export interface Resolution {
  /** The IPv4 addresses in getaddrinfo's order (network byte order), at most 8. */
  readonly ips: readonly number[];
  /** How many results getaddrinfo ranked before the first IPv4 one (IPv6 addresses). */
  readonly ipv6First: number;
}

/**
 * The text of `host` as Deno takes it: null or undefined is `fallback`, anything else is
 * converted to a string (a number 5 is "5", resolved as 0.0.0.5, as Deno does).
 */
export function hostText(host: unknown, what: string, fallback: string): string {
  const value = host ?? fallback;
  if (typeof value === "string") return value;
  if (typeof value === "symbol") {
    throw new TypeError(`${what}: hostname must be a string, got a symbol`);
  }
  return String(value);
}

/**
 * Checks a host text that is not a dotted quad as Deno's permission check does, with its
 * URIErrors (Deno's words, which name no call: `_what` is for readers); returns the text
 * getaddrinfo gets (brackets taken off an IPv6 literal).
 */
export function lookupText(text: string, _what: string): string {
  if (text === "" || text === ".") {
    throw new URIError(`invalid empty host: '${text}'`);
  }
  if (text.startsWith("[") && text.endsWith("]")) {
    const inner = text.slice(1, -1);
    if (!IPV6_CHARS.test(inner)) throw new URIError(`invalid IPv6 address: '${text}'`);
    return inner;
  }
  if (!HOST_CHARS.test(text)) {
    throw new URIError(`invalid host '${text}': invalid char found in FQDN`);
  }
  if (text.includes(":")) return text;
  const bare = text.endsWith(".") ? text.slice(0, -1) : text;
  if (bare !== text && parseIpv4(bare) !== null) {
    throw new URIError(`invalid host: '${bare}'`);
  }
  for (const label of bare.split(".")) {
    if (label === "") {
      throw new URIError(`invalid host '${text}': empty label found in FQDN`);
    }
    if (label.length > LABEL_MAX) {
      throw new URIError(`invalid host '${text}': too long label found in FQDN`);
    }
  }
  return text;
}

function nameBytes(text: string, _what: string): Uint8Array<ArrayBuffer> {
  const name = encoder.encode(text);
  if (name.byteLength > NAME_MAX) {
    throw new URIError(`invalid host '${text}': longer than ${NAME_MAX} bytes`);
  }
  return name;
}

function resolution(rc: number, out: Uint32Array, text: string, what: string): Resolution {
  if (rc >= EGAI_BASE - 100 && rc < EGAI_BASE + 100 && rc !== EGAI_BASE) {
    const detail = GAI_TEXT[rc - EGAI_BASE] ?? `getaddrinfo error ${rc - EGAI_BASE}`;
    // Deno's own words.
    throw new Error(`failed to lookup address information: ${detail}`);
  }
  if (rc < 0) throw errorFromErrno(rc, `${what} "${text}"`);
  return { ips: Array.from(out.subarray(HEAD_WORDS, HEAD_WORDS + rc)), ipv6First: out[0] };
}

/** Resolves `text` (checked by {@linkcode lookupText}) with a blocking getaddrinfo. */
export function resolveSync(text: string, what: string): Resolution {
  const name = nameBytes(text, what);
  const out = new Uint32Array(HEAD_WORDS + ADDRS);
  const rc = lib().nkb_resolve(name, byteLengthOf(name), 0, out, byteLengthOf(out));
  return resolution(rc, out, text, what);
}

/** Resolves `text` on Deno's FFI thread pool: the event loop never waits on DNS. */
export async function resolveAsync(text: string, what: string): Promise<Resolution> {
  // Both arrays stay referenced here until the lookup's promise settles.
  const name = nameBytes(text, what);
  const out = new Uint32Array(HEAD_WORDS + ADDRS);
  const rc = await lib().nkb_resolve_async(name, byteLengthOf(name), 0, out, byteLengthOf(out));
  // Read after the lookup: the name's memory stays alive while the pool thread reads it.
  if (name.byteLength === 0) throw new Error("unreachable: a name is never empty");
  return resolution(rc, out, text, what);
}

/**
 * The numeric forms getaddrinfo reads without a lookup (inet_aton's and IPv6 literals),
 * or null when `text` is a name.
 */
export function resolveNumeric(text: string, what: string): Resolution | null {
  const name = nameBytes(text, what);
  const out = new Uint32Array(HEAD_WORDS + ADDRS);
  const rc = lib().nkb_resolve(name, byteLengthOf(name), NUMERIC, out, byteLengthOf(out));
  if (rc === EGAI_BASE + EAI_NONAME) return null;
  return resolution(rc, out, text, what);
}

/** The destination a send takes from `r`: an IPv6 one first fails as on Deno's IPv4 socket. */
export function firstForSend(r: Resolution, text: string, what: string): number {
  if (r.ipv6First > 0 || r.ips.length === 0) {
    throw new Error(
      `${what}: "${text}" resolves first to an IPv6 address and this socket is IPv4: ` +
        "Address family not supported by protocol (os error 97)",
    );
  }
  return r.ips[0];
}

/** The address a bind or connect takes from `r`: one that nkb, IPv4 only, can use. */
export function firstForBind(r: Resolution, text: string, what: string): number {
  if (r.ipv6First > 0 || r.ips.length === 0) {
    throw new Deno.errors.NotSupported(
      `${what}: "${text}" resolves first to an IPv6 address, where Deno would bind an IPv6 ` +
        "socket; nkb supports IPv4 only",
    );
  }
  return r.ips[0];
}

/**
 * The address `host` names for a bind, connect or listen, resolved as Deno's
 * listenDatagram resolves it (getaddrinfo, blocking): `fallback` for null or undefined.
 */
export function resolveForBind(host: unknown, what: string, fallback: string): number {
  const text = hostText(host, what, fallback);
  const ip = parseIpv4(text);
  if (ip !== null) return ip;
  const lookup = lookupText(text, what);
  const r = resolveNumeric(lookup, what) ?? resolveSync(lookup, what);
  return firstForBind(r, text, what);
}

/**
 * Thrown inside the send paths for a host name: send() resolves it off the event loop,
 * the synchronous sends turn it into the TypeError of {@linkcode HostNameLookup.typeError}.
 */
export class HostNameLookup extends Error {
  /** The text getaddrinfo gets. */
  readonly lookup: string;
  /** The host text as given (converted to a string). */
  readonly text: string;
  /** The destination port, once the caller has checked it (0 until then). */
  port = 0;
  readonly #what: string;
  /** A name `text` (`lookup` for getaddrinfo) that call `what` met. */
  constructor(what: string, text: string, lookup: string) {
    super(`${what}: "${text}" is a host name`);
    this.lookup = lookup;
    this.text = text;
    this.#what = what;
  }

  /** What a synchronous send throws for the name: they never wait on DNS. */
  typeError(): TypeError {
    return new TypeError(
      `${this.#what}: "${this.text}" is a host name; synchronous sends do not resolve names ` +
        "(a lookup could block): use send(), which resolves it asynchronously, or an address",
    );
  }
}

/**
 * The destination `host` names for a synchronous send (null or undefined: `fallback`):
 * dotted quads and the other numeric forms; a {@linkcode HostNameLookup} for a name.
 * `what` names the call in errors.
 */
export function destinationNoLookup(host: unknown, what: string, fallback: string): number {
  const text = hostText(host, what, fallback);
  const ip = parseIpv4(text);
  if (ip !== null) return ip;
  const lookup = lookupText(text, what);
  const r = resolveNumeric(lookup, what);
  if (r === null) throw new HostNameLookup(what, text, lookup);
  return firstForSend(r, text, what);
}
