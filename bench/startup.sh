#!/bin/bash
# bench/startup.sh: start-up cost of `aiolua -e ''` against `lua5.4 -e ''`,
# both measured in the same run (issue 12: wall time within 1.5x, peak RSS
# at most 2 MiB more).  The N runs of each go in ROUNDS alternating blocks,
# so a burst of load from elsewhere on the machine hits both alike; the
# ratio is of the summed wall times.  Peak RSS is the median of 5 runs
# under /usr/bin/time.
#   N=200 ROUNDS=20 AIOLUA=./aiolua LUA=lua5.4 bash bench/startup.sh
set -e
AIOLUA=${AIOLUA:-./aiolua}
LUA=${LUA:-lua5.4}
N=${N:-200}
ROUNDS=${ROUNDS:-20}
TIME=/usr/bin/time
[ -x $TIME ] || { echo "bench: needs /usr/bin/time (apt-get install time)"; exit 1; }
command -v "$LUA" >/dev/null || { echo "bench: needs $LUA (apt-get install lua5.4)"; exit 1; }
per=$(( (N + ROUNDS - 1) / ROUNDS ))

block() {  # block PROG: $per runs of PROG -e '', wall microseconds
  local t0=${EPOCHREALTIME/./} i
  for (( i = 0; i < per; i++ )); do "$1" -e '' </dev/null >/dev/null; done
  echo $(( ${EPOCHREALTIME/./} - t0 ))
}

rss() {  # rss PROG: median peak RSS in KiB of 5 runs
  for i in 1 2 3 4 5; do
    $TIME -f %M "$1" -e '' 2>&1 </dev/null >/dev/null
  done | sort -n | sed -n 3p
}

lua_us=0 aio_us=0
for (( r = 0; r < ROUNDS; r++ )); do
  lua_us=$(( lua_us + $(block "$LUA") ))
  aio_us=$(( aio_us + $(block "$AIOLUA") ))
done
runs=$(( per * ROUNDS ))
lua_kb=$(rss "$LUA")
aio_kb=$(rss "$AIOLUA")
awk -v lua="$LUA -e ''" -v aio="$(basename "$AIOLUA") -e ''" -v n=$runs \
    -v lu=$lua_us -v au=$aio_us -v lk=$lua_kb -v ak=$aio_kb 'BEGIN {
  printf "%-22s %6s %9s %8s %12s\n", "start-up", "runs", "wall_s", "ms_each", "peak_rss_kb"
  printf "%-22s %6d %9.3f %8.3f %12d\n", lua, n, lu / 1e6, lu / n / 1e3, lk
  printf "%-22s %6d %9.3f %8.3f %12d\n", aio, n, au / 1e6, au / n / 1e3, ak
  printf "start-up: wall %.2fx of lua5.4 (target <= 1.5x), peak RSS %+d KiB (target <= +2048 KiB)\n", au / lu, ak - lk
}'
