#!/bin/sh
# Creates (up) or removes (down) a veth pair between namespaces atkA-$TAG and atkB-$TAG:
# A = 198.19.77.1/24, B = 198.19.77.2/24. Usage: netns.sh up|down TAG
set -e
T=$2
case "$1" in
up)
  ip netns add atkA-$T; ip netns add atkB-$T
  ip link add atka$T type veth peer name atkb$T
  ip link set atka$T netns atkA-$T; ip link set atkb$T netns atkB-$T
  ip -n atkA-$T addr add 198.19.77.1/24 dev atka$T; ip -n atkB-$T addr add 198.19.77.2/24 dev atkb$T
  ip -n atkA-$T link set atka$T up; ip -n atkB-$T link set atkb$T up
  ip -n atkA-$T link set lo up; ip -n atkB-$T link set lo up ;;
down)
  ip netns del atkA-$T 2>/dev/null || true; ip netns del atkB-$T 2>/dev/null || true ;;
esac
