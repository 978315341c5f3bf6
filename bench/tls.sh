#!/bin/sh
# bench/tls.sh: TLS handshakes per second and bulk throughput, aiolua beside
# openssl measured in the same run (issue 5).  Makes a throwaway CA and an
# RSA-2048 and a P-256 server certificate.
#   ./aiolua must be built; SECS=4 (s_time duration), MB=200
set -e
AIOLUA=${AIOLUA:-$PWD/aiolua}
SECS=${SECS:-4}
MB=${MB:-200}
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

port=$(( 20000 + $$ % 20000 ))
start_pair() {  # start_pair KEYTYPE: an openssl s_server and an aiolua server
  port=$((port + 2))
  # stdin a FIFO opened read-write: never at EOF, so s_server stays
  [ -p idle ] || mkfifo idle
  openssl s_server -accept 127.0.0.1:$port -cert $1.pem -key $1.key -quiet <>idle >/dev/null 2>&1 &
  pids="$pids $!"
  "$AIOLUA" "$DIR/tls_server.lua" $1.pem $1.key $((port + 1)) >/dev/null 2>&1 &
  pids="$pids $!"
  sleep 0.5
}
rate() {  # rate PORT: handshakes per second with openssl s_time -new
  openssl s_time -connect 127.0.0.1:$1 -new -time "$SECS" 2>/dev/null |
    awk '/connections in .* real seconds/ { printf "%.0f", $1 / $4 }'
}

echo "== handshakes/s (openssl s_time -new, TLS 1.2, one client)"
for k in rsa ec; do
  start_pair $k
  o=$(rate $port); a=$(rate $((port + 1)))
  o2=$(rate $port); a2=$(rate $((port + 1)))
  echo "$k: openssl s_server $o $o2, aiolua $a $a2" |
    awk -v o="$o" -v o2="$o2" -v a="$a" -v a2="$a2" '{ print $0 "  ratio " sprintf("%.2f", (a + a2) / (o + o2)) }'
done

echo "== bulk upload of $MB MB over loopback (rsa certificate)"
start_pair rsa
t0=$(date +%s.%N)
head -c ${MB}M /dev/zero | openssl s_client -connect 127.0.0.1:$port -quiet -no_ign_eof >/dev/null 2>&1
t1=$(date +%s.%N)
echo "openssl s_client -> s_server: $(echo "$MB $t0 $t1" | awk '{ printf "%.1f MB/s", $1 / ($3 - $2) }')"
echo "aiolua client -> aiolua server: $("$AIOLUA" "$DIR/tls_bulk.lua" ca.pem $((port + 1)) "$MB")"
