#!/usr/bin/env python3
"""Run as nobody: re-creates R/0 (or R/<uid>) as its own directory as fast as it can for
SECONDS, racing root's rename-aside. Usage: resquat.py R UID SECONDS"""
import os, sys, time

R, uid, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
path = f"{R}/{uid}"
end = time.monotonic() + secs
made = 0
for i in range(50_000_000):
    try:
        os.mkdir(path, 0o700)
        made += 1
    except OSError:
        pass
    if (i & 1023) == 0 and time.monotonic() > end:
        break
print(f"made {made}", flush=True)
