#!/bin/sh
# nobody blinds root's `nkb stat` to another unprivileged user's sockets by pre-creating
# that user's part R/<uid> (a non-root writer cannot rename a squatter away). Held: root's
# `nkb stat` (and any root writer at its start) sets the squatter aside; the victim's
# process already running stays unlisted (the warning says so), its next one publishes.
# Usage (root, from the worktree): repro/squat_uid.sh ; creates and removes uid 64999.
set -u
T=$(mktemp -d /tmp/nkb-squat-XXXXXX); chmod 1777 "$T"; R=$T/nkb
D=$PWD/.tools/deno/node_modules/.bin/deno
useradd -M -s /usr/sbin/nologin -u 64999 nkbvictim 2>/dev/null
NKB_REGISTRY_DIR=$R $D run -A repro/hold_sock.ts 0 >/dev/null 2>&1     # R made by root
setpriv --reuid=65534 --regid=65534 --clear-groups mkdir -m 0700 "$R/64999"
NKB_REGISTRY_DIR=$R setpriv --reuid=64999 --regid=64999 --clear-groups \
  $D run -A repro/hold_sock.ts 6 2>&1 | head -1 &
sleep 4
NKB_REGISTRY_DIR=$R $D run -A cli.ts stat -a -u 2>&1
wait
NKB_REGISTRY_DIR=$R setpriv --reuid=64999 --regid=64999 --clear-groups \
  $D run -A repro/hold_sock.ts 4 2>&1 | head -1 &                      # the victim's next
sleep 2
NKB_REGISTRY_DIR=$R $D run -A cli.ts stat -a -u 2>&1
wait
userdel nkbvictim; rm -rf "$T"
