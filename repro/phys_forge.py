#!/usr/bin/env python3
"""Run as an unprivileged user: a sleep process of its own whose registry file claims one
bypass socket holding queues [0, COUNT) of interface IFINDEX (IFNAME). No AF_XDP socket, no
XDP program. Before registry version 3 root's `nkb phys -v` counted the queues as in use and
named the pid a holder; now the slot names no socket the process holds: not listed, one warning.
Usage: phys_forge.py R IFINDEX IFNAME COUNT SECONDS"""
import os, signal, struct, subprocess, sys, time

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
R, ifindex, ifname, count, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
uid = os.geteuid()
ud = f"{R}/{uid}"
os.makedirs(ud, mode=0o700, exist_ok=True)
pidns = os.stat("/proc/self/ns/pid").st_ino
netns = os.stat("/proc/self/ns/net").st_ino
p = subprocess.Popen(["sleep", str(secs + 5)])
with open(f"/proc/{p.pid}/stat") as f:
    start = int(f.read().rsplit(")", 1)[1].split()[19])
head = bytearray(4096)
head[0:8] = b"NKBREG\0\1"
struct.pack_into("<IIIIIIQQQQ", head, 8, int(os.environ.get("NKB_REG_VERSION", "3")), 4096, 512, 1, p.pid, uid, start,
                 int(time.time() * 1000), netns, pidns)
slot = bytearray(512)
struct.pack_into("<II", slot, 0, 0, 1)
struct.pack_into("<4s4sHHIIII", slot, 16, bytes([10, 0, 0, 1]), bytes(4), 9000, 0, 1 | 8,
                 ifindex, 0, count)
slot[48:48 + len(ifname)] = ifname.encode()
path = f"{ud}/{pidns}-{p.pid}-{start}.reg"
with open(path, "wb") as f:
    f.write(bytes(head) + bytes(slot))
print(f"forged {path}", flush=True)
try:
    time.sleep(secs)
finally:
    p.kill()
    os.unlink(path)
