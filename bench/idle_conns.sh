#!/bin/sh
# bench/idle_conns.sh: bytes of RSS per idle TCP connection on the aiolua
# server side (bench/idle_conns.lua); python3 holds the client ends.
#   N=10000 sh bench/idle_conns.sh
set -e
AIOLUA=${AIOLUA:-./aiolua}
N=${N:-10000}
DIR=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d /tmp/aiolua-idleconns.XXXXXX)
trap 'kill $spid 2>/dev/null; rm -rf "$T"' EXIT
ulimit -n $((N + 200)) 2>/dev/null || { echo "idle_conns: cannot raise the fd limit to $((N + 200))"; exit 1; }
"$AIOLUA" "$DIR/idle_conns.lua" "$N" "$T/port" >"$T/out" &
spid=$!
i=0; while [ ! -s "$T/port" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
python3 - "$(cat "$T/port")" "$N" "$T/out" <<'PY'
import socket, sys, time
port, n, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
deadline = time.time() + 60
while "RESULT" not in open(out).read() and time.time() < deadline:
    time.sleep(0.05)
for s in socks:
    s.close()
PY
wait $spid
cat "$T/out"
