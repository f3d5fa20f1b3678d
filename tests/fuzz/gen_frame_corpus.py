#!/usr/bin/env python3
"""Writes the seed corpus of the frame fuzz target: tests/fuzz/corpus/frame/*.bin.

One file per kind of frame the parser must tell apart (valid frames, each drop reason,
edge lengths; no empty file: libFuzzer skips those and always runs the empty input
itself). Checksums are computed here independently of ffi/frame.c. Deterministic:
running it again rewrites the same bytes. Usage: python3 tests/fuzz/gen_frame_corpus.py
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "frame")
DST_MAC = bytes([2, 0, 0, 0, 0, 2])
SRC_MAC = bytes([2, 0, 0, 0, 0, 1])
SADDR = bytes([198, 18, 0, 1])
DADDR = bytes([198, 18, 0, 2])


def csum(data: bytes) -> int:
    """RFC 1071: complement of the one's-complement sum of 16-bit big-endian words."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def sum_0xffff_payload() -> bytes:
    """A payload whose UDP checksum computes to 0, which must go out as 0xffff (RFC 768)."""
    base = frame(b"sum\0\0\0", udp_csum="none")
    pseudo = SADDR + DADDR + struct.pack("!BBH", 0, 17, 8 + 6)
    partial = ~csum(pseudo + base[34:]) & 0xFFFF  # the one's-complement sum so far
    fill = 0xFFFF - partial  # adding it makes the sum 0xffff, the checksum 0
    return b"sum\0" + struct.pack("!H", fill)


def frame(payload: bytes = b"hello", *, ethertype: int = 0x0800, ihl: int = 5,
          frag: int = 0x4000, proto: int = 17, ip_len_delta: int = 0,
          udp_len_delta: int = 0, udp_csum: str = "full", ip_csum_xor: int = 0,
          pad: int = 0, sport: int = 40000, dport: int = 7777, version: int = 4) -> bytes:
    """An Ethernet/IPv4/UDP frame; the keywords break one thing at a time."""
    options = b"\x01" * (4 * (ihl - 5)) if ihl > 5 else b""
    udp_len = 8 + len(payload) + udp_len_delta
    ip_len = 20 + len(options) + 8 + len(payload) + ip_len_delta
    ip = struct.pack("!BBHHHBBH4s4s", version << 4 | ihl, 0, ip_len & 0xFFFF, 0x1234, frag, 64,
                     proto, 0, SADDR, DADDR) + options
    ip = ip[:10] + struct.pack("!H", csum(ip) ^ ip_csum_xor) + ip[12:]
    pseudo = SADDR + DADDR + struct.pack("!BBH", 0, 17, udp_len & 0xFFFF)
    udp = struct.pack("!HHHH", sport, dport, udp_len & 0xFFFF, 0) + payload
    if udp_csum == "full":
        value = csum(pseudo + udp) or 0xFFFF
    elif udp_csum == "partial":  # checksum offload: the folded pseudo-header sum only
        value = ~csum(pseudo) & 0xFFFF
    elif udp_csum == "bad":
        value = (csum(pseudo + udp) or 0xFFFF) ^ 0x0100
    else:
        value = 0
    udp = udp[:6] + struct.pack("!H", value) + udp[8:]
    eth = DST_MAC + SRC_MAC + struct.pack("!H", ethertype)
    return eth + ip + udp + b"\0" * pad


SEEDS = {
    "valid-5": frame(),
    "valid-empty": frame(b""),
    "valid-odd-63": frame(bytes(range(63))),
    "valid-1472": frame(bytes(i * 7 & 0xFF for i in range(1472))),
    "valid-no-csum": frame(b"zero checksum", udp_csum="none"),
    "valid-partial-csum": frame(b"offloaded", udp_csum="partial"),
    "valid-no-df": frame(b"no DF", frag=0),
    "valid-eth-padded": frame(b"", pad=18),
    "valid-ports-0-65535": frame(b"p", sport=0, dport=65535),
    "valid-csum-ffff": frame(sum_0xffff_payload()),
    "bad-udp-csum": frame(udp_csum="bad"),
    "bad-ip-csum": frame(ip_csum_xor=0x0001),
    "ip-options": frame(ihl=6),
    "ip-options-max": frame(ihl=15),
    "fragment-first": frame(frag=0x2000),
    "fragment-offset": frame(frag=0x00B9),
    "not-udp-tcp": frame(proto=6),
    "not-udp-icmp": frame(proto=1),
    "arp": frame(ethertype=0x0806),
    "vlan": frame(ethertype=0x8100),
    "ipv6-ethertype": frame(ethertype=0x86DD),
    "ip-version-6": frame(version=6),
    "ip-len-too-long": frame(ip_len_delta=1),
    "ip-len-too-short": frame(ip_len_delta=-1),
    "ip-len-below-28": frame(b"", ip_len_delta=-9),
    "udp-len-mismatch": frame(udp_len_delta=1),
    "udp-len-short": frame(udp_len_delta=-1),
    "short-41": frame(b"")[:41],
    "short-14": frame()[:14],
}


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, name + ".bin"), "wb") as f:
            f.write(data)
    print(f"{len(SEEDS)} seeds in {OUT}")


if __name__ == "__main__":
    main()
