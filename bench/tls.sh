#!/bin/sh
# bench/tls.sh: TLS handshakes per second and bulk throughput, aiolua beside
# openssl measured in the same run (issues 5 and 12).  Makes a throwaway CA
# and an RSA-2048 and a P-256 server certificate.
#   ./aiolua must be built; SECS=4 (s_time duration), MB=200, ROUNDS=2
#
# Two openssl baselines:
#   openssl      s_server / s_client as they come: TLS 1.3, X25519,
#                AES-256-GCM (the target of issue 12)
#   openssl-1.2  the same protocol as aiolua (mbedTLS 2.28 has no TLS 1.3):
#                TLS 1.2, ECDHE on P-256, AES-GCM (aiolua's first choice on
#                a CPU with AES-NI; ChaCha20-Poly1305 before 2026-11-26)
# Handshakes: `openssl s_time -new` (one client, one connection at a time)
# against each server in turn, ROUNDS times, the rate over the wall clock
# (s_time's own "real seconds" is a whole number); "cpu" is the server's
# CPU time per handshake (/proc/PID/stat).  Bulk: MB megabytes uploaded
# openssl s_client -> s_server, and bench/tls_bulk.lua -> tls_server.lua.
set -e
AIOLUA=${AIOLUA:-$PWD/aiolua}
SECS=${SECS:-4}
MB=${MB:-200}
ROUNDS=${ROUNDS:-2}
DIR=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d /tmp/aiolua-tlsbench.XXXXXX)
pids=""
trap 'for p in $pids; do kill $p 2>/dev/null; done; rm -rf "$T"' EXIT
cd "$T"
q() { "$@" >/dev/null 2>&1; }
q openssl req -x509 -new -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > ext
q openssl req -new -newkey rsa:2048 -nodes -keyout rsa.key -out rsa.csr -subj /CN=localhost
q openssl x509 -req -in rsa.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out rsa.pem -days 2 -extfile ext
q openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ec.key -out ec.csr -subj /CN=localhost
q openssl x509 -req -in ec.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out ec.pem -days 2 -extfile ext
mkfifo idle  # s_server's stdin, opened read-write: never at EOF
TICK=$(getconf CLK_TCK)

port=$(( 20000 + $$ % 20000 ))
# start_servers KEYTYPE: openssl on $port, openssl-1.2 on $port+1, aiolua
# on $port+2; their pids in $po $pl $pa.  A server that could not listen
# (a port somebody else holds) has exited after the pause: then all three
# start again on the next ports, up to five times.
start_servers() {
  tries=0
  while :; do
    start_three "$1"
    if kill -0 $po 2>/dev/null && kill -0 $pl 2>/dev/null && kill -0 $pa 2>/dev/null; then
      return 0
    fi
    stop_servers
    tries=$((tries + 1))
    if [ $tries -ge 5 ]; then echo "tls.sh: the servers would not start" >&2; exit 1; fi
  done
}
start_three() {
  port=$((port + 3))
  openssl s_server -accept 127.0.0.1:$port -cert $1.pem -key $1.key -quiet <>idle >/dev/null 2>&1 &
  po=$!
  openssl s_server -accept 127.0.0.1:$((port + 1)) -cert $1.pem -key $1.key -quiet \
    -no_tls1_3 -groups P-256 -cipher 'ECDHE+AESGCM' <>idle >/dev/null 2>&1 &
  pl=$!
  "$AIOLUA" "$DIR/tls_server.lua" $1.pem $1.key $((port + 2)) >/dev/null 2>&1 &
  pa=$!
  pids="$pids $po $pl $pa"
  sleep 0.5
}
stop_servers() { kill $po $pl $pa 2>/dev/null || true; }
now() { date +%s.%N; }
cpu() { awk '{ print $14 + $15 }' /proc/$1/stat; }
# hs PORT PID: "handshakes seconds cputicks" of one s_time run
hs() {
  c0=$(cpu $2); t0=$(now)
  n=$(openssl s_time -connect 127.0.0.1:$1 -new -time "$SECS" 2>/dev/null |
      awk '/connections in .* real seconds/ { print $1 }')
  t1=$(now); c1=$(cpu $2)
  echo "$n $t0 $t1 $c0 $c1" | awk '{ print $1, $3 - $2, $5 - $4 }'
}
# the suite each server negotiates with s_time's client
suite() {
  echo | openssl s_client -connect 127.0.0.1:$1 2>/dev/null |
    awk '/^New, / { sub(/,$/, "", $2); print $2, $5; exit }'
}

echo "== handshakes/s (openssl s_time -new, one client; ROUNDS=$ROUNDS x ${SECS}s each)"
for k in rsa ec; do
  start_servers $k
  echo "$k certificate: openssl $(suite $port), openssl-1.2 $(suite $((port + 1))), aiolua $(suite $((port + 2)))"
  : > $k.res
  r=0
  while [ $r -lt "$ROUNDS" ]; do
    echo "openssl $(hs $port $po)" >> $k.res
    echo "openssl-1.2 $(hs $((port + 1)) $pl)" >> $k.res
    echo "aiolua $(hs $((port + 2)) $pa)" >> $k.res
    r=$((r + 1))
  done
  stop_servers
  awk -v tick="$TICK" -v k=$k '
    { n[$1] += $2; s[$1] += $3; c[$1] += $4; runs[$1] = runs[$1] sprintf(" %.0f", $2 / $3) }
    END {
      for (i = 1; i <= 3; i++) {
        w = i == 1 ? "openssl" : i == 2 ? "openssl-1.2" : "aiolua"
        rate[w] = n[w] / s[w]
        printf "  %-5s %-12s %6.0f/s (runs:%s)  server cpu %.2f ms/handshake\n", k, w, rate[w], runs[w], 1000 * c[w] / tick / n[w]
      }
      printf "  %-5s ratio aiolua/openssl %.2f, aiolua/openssl-1.2 %.2f\n", k, rate["aiolua"] / rate["openssl"], rate["aiolua"] / rate["openssl-1.2"]
    }' $k.res
done

echo "== bulk upload of $MB MB over loopback (rsa certificate; ROUNDS=$ROUNDS)"
start_servers rsa
: > bulk.res
# up PORT [s_client options]: MB/s of one openssl upload
up() {
  p=$1; shift
  t0=$(now)
  head -c ${MB}M /dev/zero | openssl s_client -connect 127.0.0.1:$p -quiet -no_ign_eof "$@" >/dev/null 2>&1
  t1=$(now)
  echo "$MB $t0 $t1" | awk '{ printf "%.1f", $1 / ($3 - $2) }'
}
r=0
while [ $r -lt "$ROUNDS" ]; do
  echo "openssl $(up $port)" >> bulk.res
  echo "openssl-1.2 $(up $((port + 1)))" >> bulk.res
  a=$("$AIOLUA" "$DIR/tls_bulk.lua" ca.pem $((port + 2)) "$MB")
  echo "aiolua ${a%% *} ${a#* }" >> bulk.res
  r=$((r + 1))
done
stop_servers
awk '
  { m[$1] += $2; k[$1]++; runs[$1] = runs[$1] " " $2; if ($1 == "aiolua") note = $0 }
  END {
    for (i = 1; i <= 3; i++) {
      w = i == 1 ? "openssl" : i == 2 ? "openssl-1.2" : "aiolua"
      printf "  %-12s %6.1f MB/s (runs:%s)\n", w, m[w] / k[w], runs[w]
    }
    sub(/^aiolua [0-9.]+ MB\/s /, "", note)
    printf "  aiolua: %s\n", note
    printf "  ratio aiolua/openssl %.2f, aiolua/openssl-1.2 %.2f\n", m["aiolua"] / m["openssl"], m["aiolua"] / m["openssl-1.2"]
  }' bulk.res
