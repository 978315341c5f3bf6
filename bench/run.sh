#!/bin/sh
# bench/run.sh: aiolua's own micro benchmarks (make bench).  Each runs once
# per repetition under /usr/bin/time; the table shows the median wall time,
# CPU time (user+sys) and peak RSS, and for idle the net bytes per task.
# Side-by-side figures against luv, cqueues, Node.js and asyncio come from
# ../shared/bench/run.sh micro (see README.md).
#   REPS=3 SPAWN_N=200000 PINGPONG_N=1000000 TIMERS_N=200000 IDLE_N=100000
#   LOCK_N=1000000 IDLE_CONNS_N=10000
set -e
AIOLUA=${AIOLUA:-./aiolua}
REPS=${REPS:-3}
DIR=$(dirname "$0")
TIME=/usr/bin/time
[ -x $TIME ] || { echo "bench: needs /usr/bin/time (apt-get install time)"; exit 1; }
PIN=""
command -v taskset >/dev/null && PIN="taskset -c 0"

measure() {  # measure NAME N -> "wall cpu rss" medians
  name=$1 n=$2
  for r in $(seq "$REPS"); do
    $PIN $TIME -f "%e %U %S %M" -o /tmp/aiolua-bench.$$ "$AIOLUA" "$DIR/$name.lua" "$n" >/dev/null
    awk '{ printf "%.3f %.3f %d\n", $1, $2 + $3, $4 }' /tmp/aiolua-bench.$$
  done | sort -n | awk -v m=$(( (REPS + 1) / 2 )) 'NR == m'
  rm -f /tmp/aiolua-bench.$$
}

printf "%-10s %9s %8s %8s %10s\n" bench n wall_s cpu_s peak_rss_kb
base=$(measure idle 0)
printf "%-10s %9s %8s %8s %10s\n" empty 0 $base
for spec in "spawn ${SPAWN_N:-200000}" "pingpong ${PINGPONG_N:-1000000}" \
            "timers ${TIMERS_N:-200000}" "idle ${IDLE_N:-100000}" \
            "lock ${LOCK_N:-1000000}"; do
  set -- $spec
  res=$(measure "$1" "$2")
  printf "%-10s %9s %8s %8s %10s\n" "$1" "$2" $res
  if [ "$1" = idle ]; then
    rss=$(echo "$res" | awk '{ print $3 }')
    brss=$(echo "$base" | awk '{ print $3 }')
    echo "idle: $(( (rss - brss) * 1024 / $2 )) bytes of RSS per sleeping task (net of the empty process)"
  fi
done

# memory per idle connection (server side; python3 holds the client ends)
if command -v python3 >/dev/null; then
  n=${IDLE_CONNS_N:-10000}
  b=$(N=$n AIOLUA="$AIOLUA" sh "$DIR/idle_conns.sh" | sed -n 's/.*bytes_per_conn=\([0-9]*\).*/\1/p')
  echo "idle connections: $b bytes of RSS per idle connection, server side (N=$n)"
fi
