/**
 * IPv4 addresses as the shim wants them: a u32 whose memory bytes are in
 * network order (what `struct in_addr` holds on this little-endian machine).
 *
 * @module
 */

// Four decimal octets without leading zeros: inet_aton() would read "010" as octal 8 and
// "1.2.3" as 1.2.0.3, so such forms are refused as ambiguous rather than guessed.
const OCTET = "(0|[1-9][0-9]{0,2})";
const DOTTED = new RegExp(`^${OCTET}\\.${OCTET}\\.${OCTET}\\.${OCTET}$`);
// What may appear in a host name or an address literal; anything else (blanks, control
// characters, slashes) makes Deno's resolver throw URIError "invalid host".
const HOST_CHARS = /^[A-Za-z0-9._\-:%[\]]*$/;

/** Parses dotted IPv4 text, or returns null for anything else (IPv6, names, "01.2.3.4"). */
export function parseIpv4(text: string): number | null {
  const m = DOTTED.exec(text);
  if (m === null) return null;
  let value = 0;
  for (let i = 4; i >= 1; i--) {
    const octet = Number(m[i]);
    if (octet > 255) return null;
    value = (value << 8) | octet;
  }
  return value >>> 0;
}

/**
 * The address `host` names, for a call `what`: `fallback` when `host` is null or undefined
 * (Deno's defaults: "0.0.0.0" to listen, "127.0.0.1" to send). Errors as Deno's for what
 * it rejects: a URIError for characters no host name has; otherwise a TypeError, since
 * nkb takes only dotted-quad IPv4 text (no host names, no inet_aton forms) and a
 * non-string is not a host.
 *
 * @throws {URIError} for characters no host name has.
 * @throws {TypeError} for anything else but dotted-quad IPv4 text.
 */
export function hostIpv4(host: unknown, what: string, fallback: string): number {
  const text = host ?? fallback;
  if (typeof text !== "string") {
    throw new TypeError(`${what}: hostname must be a string, got ${typeof text}`);
  }
  const ip = parseIpv4(text);
  if (ip !== null) return ip;
  if (!HOST_CHARS.test(text)) throw new URIError(`${what}: invalid host '${text}'`);
  throw new TypeError(
    `${what}: "${text}" is not an IPv4 address (four decimal octets 0-255 without leading ` +
      "zeros; host names are not resolved)",
  );
}

/** Formats an address held in network byte order. */
export function formatIpv4(be: number): string {
  return `${be & 255}.${(be >>> 8) & 255}.${(be >>> 16) & 255}.${be >>> 24}`;
}

/** True for 224.0.0.0/4. */
export function isMulticast(be: number): boolean {
  return ((be & 255) >>> 4) === 0xe;
}

/** The Ethernet address of an IPv4 multicast group: 01:00:5e + the low 23 bits. */
export function multicastMac(be: number): Uint8Array {
  return new Uint8Array([0x01, 0x00, 0x5e, (be >>> 8) & 0x7f, (be >>> 16) & 255, be >>> 24]);
}

/** Formats six bytes as aa:bb:cc:dd:ee:ff. */
export function formatMac(mac: Uint8Array): string {
  return Array.from(mac.subarray(0, 6), (b) => b.toString(16).padStart(2, "0")).join(":");
}
