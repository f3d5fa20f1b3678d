#!/usr/bin/env python3
"""Round-trip client: a kernel UDP socket that busy-polls (non-blocking recv in a spin loop).

usage: rtt_client.py SRC DST PORT SIZE COUNT WARMUP MAX_SECONDS TIMEOUT_MS

Sends WARMUP + COUNT sequence-numbered datagrams one at a time, each after the echo of the
previous one (or its timeout), then end markers. Prints one JSON line: {"result": {...}} with
the COUNT measured round trips' percentiles in microseconds. Every loop is bounded by count and
time.
"""
import gc
import json
import socket
import struct
import sys
import time

SEQ_END = 0xFFFFFFFF


def percentile(sorted_ns, q):
    if not sorted_ns:
        return None
    k = min(len(sorted_ns) - 1, max(0, int(round(q * len(sorted_ns) + 0.5)) - 1))
    return sorted_ns[k] / 1000.0


def main():
    src, dst, port, size, count, warmup, max_s, timeout_ms = sys.argv[1:9]
    port, size, count, warmup = int(port), int(size), int(count), int(warmup)
    max_ns = int(float(max_s) * 1e9)
    timeout_ns = int(timeout_ms) * 1_000_000
    assert size >= 4 and count > 0 and warmup >= 0
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    s.setblocking(False)
    addr = (dst, port)
    payload = bytearray(size)
    rbuf = bytearray(65536)
    rtts = []
    lost = stale = 0
    clock = time.perf_counter_ns
    start = clock()
    total = warmup + count
    i = 0
    print(json.dumps({"ready": True}), flush=True)
    gc.disable()  # no collector pauses inside the measured loop
    while i < total and clock() - start < max_ns:
        struct.pack_into("<I", payload, 0, i)
        t0 = clock()
        s.sendto(payload, addr)
        deadline = t0 + timeout_ns
        got = False
        while True:  # bounded by the per-packet timeout
            try:
                n = s.recv_into(rbuf)
            except BlockingIOError:
                if clock() > deadline:
                    break
                continue
            t1 = clock()
            if n >= 4 and struct.unpack_from("<I", rbuf, 0)[0] == i:
                got = True
                break
            stale += 1
            if t1 > deadline:
                break
        if got:
            if i >= warmup:
                rtts.append(t1 - t0)
        elif i >= warmup:
            lost += 1
        i += 1
    elapsed = (clock() - start) / 1e9
    struct.pack_into("<I", payload, 0, SEQ_END)
    for _ in range(5):
        s.sendto(payload, addr)
        time.sleep(0.01)
    rtts.sort()
    result = {
        "sent": i,
        "measured": len(rtts),
        "lost": lost,
        "stale": stale,
        "elapsedS": elapsed,
        "p50": percentile(rtts, 0.50),
        "p99": percentile(rtts, 0.99),
        "p999": percentile(rtts, 0.999),
        "min": rtts[0] / 1000.0 if rtts else None,
        "max": rtts[-1] / 1000.0 if rtts else None,
        "mean": sum(rtts) / len(rtts) / 1000.0 if rtts else None,
    }
    print(json.dumps({"result": result}), flush=True)


if __name__ == "__main__":
    main()
