#!/usr/bin/env bash
# Instructions per transaction of a pgpilot build in transaction pooling, counted by valgrind's
# callgrind (the machine's load does not move the count): 200 warm-up transactions, then collection
# on around `pgbench -S -c 10 -j 1 -t 1000 -M MODE` against the pgstack primary (BENCHMARKS.md).
# Usage: benches/callgrind.sh [BIN] [simple|extended|prepared] [OUT]
# OUT.1 keeps the profile for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
BIN=${1:-$RELEASE_BIN}; MODE=${2:-extended}; OUT=${3:-$(mktemp -d)/callgrind.out}
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install -y valgrind" >&2; exit 1; }
PORT=29440
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT" "$BIN" serve \
  --listen 127.0.0.1:$PORT --primary postgres://postgres@127.0.0.1:55432/postgres \
  --pool-size 20 --pool-mode transaction >"$OUT.log" 2>&1 &
VG=$!
trap 'kill $VG 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  as_pg "$PGBIN/pg_isready" -q -h 127.0.0.1 -p $PORT && break
  sleep 0.2
done
bench() { as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p $PORT -U postgres -S -c 10 -j 1 -M "$MODE" -n "$@" postgres; }
bench -t 20 >/dev/null
callgrind_control -i on $VG >/dev/null 2>&1
bench -t 1000 | grep -E 'processed'
callgrind_control -i off $VG >/dev/null 2>&1
callgrind_control -d $VG >/dev/null 2>&1
kill $VG; wait $VG 2>/dev/null || true
total=$(callgrind_annotate "$OUT.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$MODE: $((total / 10000)) instructions per transaction (profile: $OUT.1)"
