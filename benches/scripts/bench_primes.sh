#!/usr/bin/env bash
# Serves /10000 to 50 concurrent keep-alive connections (wrk, one client thread) in each mode,
# interleaved round by round so that background load hits every mode alike; prints req/s per
# mode and round, the server's CPU time per request (user + system, from /proc; robust against
# other load on the machine), then the medians. Usage: bench_primes.sh [rounds] [seconds] [N]
set -euo pipefail
rounds=${1:-3}
secs=${2:-10}
n=${3:-10000}
cd "$(dirname "$0")/../.."
cargo build --release -q -p stm-benches --example primes_server
bin=target/release/examples/primes_server
port=18888
declare -A results cpu
modes=("--serial" "--workers 1" "--workers 2")
# How many cores the machine gives us now: the time of one CPU-bound process against two at once
# (2.00 on an idle 2-core machine; less when other work shares the cores).
calibrate() {
  local t0 t1 t2
  t0=$(date +%s.%N)
  awk 'BEGIN { for (i = 0; i < 3e7; i++) x += i }'
  t1=$(date +%s.%N)
  awk 'BEGIN { for (i = 0; i < 3e7; i++) x += i }' & awk 'BEGIN { for (i = 0; i < 3e7; i++) x += i }'
  wait
  t2=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "%.2f", 2 * (b - a) / (c - b) }'
}
for r in $(seq 1 "$rounds"); do
  echo "round $r  cores available (calibration): $(calibrate)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
  for m in "${modes[@]}"; do
    # shellcheck disable=SC2086
    $bin --addr 127.0.0.1:$port $m > /dev/null &
    pid=$!
    for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$port/10" && break; sleep 0.1; done
    out=$(wrk -t1 -c50 -d"${secs}s" --latency "http://127.0.0.1:$port/$n")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    errs=$(echo "$out" | grep -E "Non-2xx|Socket errors" || true)
    reqs=$(curl -s "http://127.0.0.1:$port/stats" | sed -E 's/.*"requests":([0-9]+).*/\1/')
    ticks=$(awk '{print $14 + $15}' /proc/$pid/stat)
    hz=$(getconf CLK_TCK)
    cpu_ms=$(awk -v t="$ticks" -v hz="$hz" -v n="$reqs" 'BEGIN {printf "%.2f", t * 1000 / hz / n}')
    echo "round $r  ${m:-}  req/s $rps  cpu-ms/req $cpu_ms  ${errs}"
    results["$m"]+="$rps "
    cpu["$m"]+="$cpu_ms "
    kill -INT $pid
    wait $pid
  done
done
echo "medians:"
for m in "${modes[@]}"; do
  med=$(echo ${results["$m"]} | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  cmed=$(echo ${cpu["$m"]} | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "  $m  req/s $med  cpu-ms/req $cmed"
done
