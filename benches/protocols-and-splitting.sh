#!/usr/bin/env bash
# pgbench through pgpilot against its anchors, rounds interleaved with the order rotating, medians
# (BENCHMARKS.md, "Prepared statements" and "Read/write splitting"). Needs ../shared/bench/pgstack
# (primary 55432, streaming replica 55433, PgBouncer 56432), or BENCH_TOOLS pointing at it.
# Usage: benches/protocols-and-splitting.sh [ROUNDS] [SECONDS]
#   1. -M prepared -S -c 50: pgpilot (transaction pooling, pool 20) vs direct PostgreSQL;
#   2. -M extended -S -c 50: pgpilot vs PgBouncer (transaction pooling);
#   3. -S -c 50: pgpilot splitting reads over primary + replica vs pgpilot on the primary alone,
#      and where the reads went.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; SECS=${2:-6}
source benches/common.sh
BIN=$RELEASE_BIN
P=postgres://postgres@127.0.0.1:55432/postgres
R=postgres://postgres@127.0.0.1:55433/postgres
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
# Below the kernel's ephemeral range (32768-60999 here): a port in it can be taken at any moment by
# one of the many client connections a benchmark opens, and the gateway then cannot listen.
SINGLE=29500 SPLIT=29501 SINGLE_HTTP=29510 SPLIT_HTTP=29511
"$BIN" serve --listen 127.0.0.1:$SINGLE --primary "$P" --pool-size 20 --http 127.0.0.1:$SINGLE_HTTP >/tmp/pp-single.log 2>&1 & pids+=($!)
"$BIN" serve --listen 127.0.0.1:$SPLIT --primary "$P" --replica "$R" --pool-size 20 --http 127.0.0.1:$SPLIT_HTTP >/tmp/pp-split.log 2>&1 & pids+=($!)
for port in $SINGLE $SPLIT; do
  for _ in $(seq 50); do as_pg "$PGBIN/psql" -h 127.0.0.1 -p $port -U postgres -tAc 'select 1' postgres >/dev/null 2>&1 && break; sleep 0.2; done
done
logs=(/tmp/pp-single.log /tmp/pp-split.log)
for i in 0 1; do
  kill -0 "${pids[$i]}" 2>/dev/null || { echo "a gateway did not start; ${logs[$i]} says:" >&2; tail -n 5 "${logs[$i]}" >&2; exit 1; }
done
sleep 2   # the splitting gateway's monitor sees the replica
tps() { as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p "$1" -U postgres -n -S -c 50 -j 2 -T "$SECS" -M "$2" postgres 2>/dev/null | awk '/^tps/ {print int($3)}'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
compare() {  # NAME PROTOCOL LABEL_A PORT_A LABEL_B PORT_B
  local name=$1 proto=$2 la=$3 pa=$4 lb=$5 pb=$6 a=() b=()
  for r in $(seq "$ROUNDS"); do
    if (( r % 2 )); then a+=("$(tps "$pa" "$proto")"); b+=("$(tps "$pb" "$proto")");
    else b+=("$(tps "$pb" "$proto")"); a+=("$(tps "$pa" "$proto")"); fi
  done
  local ma mb; ma=$(printf '%s\n' "${a[@]}" | median); mb=$(printf '%s\n' "${b[@]}" | median)
  printf '%-28s %-10s %8s %-10s %8s  ratio %.2f   (rounds: %s | %s)\n' "$name" "$la" "$ma" "$lb" "$mb" \
    "$(echo "$ma / $mb" | bc -l)" "${a[*]}" "${b[*]}"
}
compare "prepared -S -c 50" prepared pgpilot $SINGLE direct 55432
compare "extended -S -c 50" extended pgpilot $SINGLE pgbouncer 56432
compare "simple -S -c 50, splitting" simple split $SPLIT single $SINGLE
echo "reads routed by the splitting gateway:"
curl -s http://127.0.0.1:$SPLIT_HTTP/api/v1/monitoring/replicas | python3 -c '
import json, sys
for r in json.load(sys.stdin)["replicas"]:
    print("  %-8s %-18s reads_routed=%s" % (r["role"], r["server"], r.get("reads_routed")))'
