/**
 * IPv4 addresses as the shim wants them: a u32 whose memory bytes are in
 * network order (what `struct in_addr` holds on this little-endian machine).
 *
 * @module
 */

// Four decimal octets without leading zeros, as Rust's Ipv4Addr parser (Deno's first try)
// reads them: the fast path that needs no FFI call. Other numeric forms (inet_aton's "010"
// is octal 8, "1.2.3" is 1.2.0.3) go to getaddrinfo as Deno's do (src/resolve.ts).
const OCTET = "(0|[1-9][0-9]{0,2})";
const DOTTED = new RegExp(`^${OCTET}\\.${OCTET}\\.${OCTET}\\.${OCTET}$`);

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
