#!/usr/bin/env bash
# The gateway's hot path against PgBouncer and direct PostgreSQL, in one run (BENCHMARKS.md,
# "Gateway core"). Needs ../shared/bench (pgstack, compare, idle-clients) beside the repository,
# or BENCH_TOOLS pointing at them. Usage: benches/gateway.sh [ROUNDS] [SECONDS] [IDLE_CLIENTS]
#   1. pgbench select-only (50 clients), TPC-B-like (20) and connect-per-transaction (10) through
#      pgpilot, PgBouncer and straight to PostgreSQL: tps and the poolers' CPU per transaction;
#   2. resident memory per idle client, pgpilot and PgBouncer;
#   3. workload statistics on vs off (`[insight] enabled = false`), two gateways side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; SECS=${2:-6}; IDLE=${3:-9000}
source benches/common.sh
BIN=$RELEASE_BIN
PRIMARY=postgres://postgres@127.0.0.1:55432/postgres
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
serve() { "$BIN" serve --primary "$PRIMARY" --pool-size 20 --pool-mode transaction "$@" >/dev/null 2>&1 & pids+=($!); }
ready() { for _ in $(seq 50); do "$BIN" bench "postgres://postgres@127.0.0.1:$1/postgres" -t 1 --no-progress >/dev/null 2>&1 && return; sleep 0.2; done; }

echo "== pgbench through pgpilot, PgBouncer and direct =="
(cd /tmp && "$TOOLS/compare" "$BIN" "$ROUNDS" "$SECS")

echo "== resident memory per idle client ($IDLE clients) =="
serve --listen 127.0.0.1:56500
ready 56500
echo -n "pgpilot:   "; "$TOOLS/idle-clients" 56500 "$IDLE" "${pids[-1]}"
echo -n "pgbouncer: "; "$TOOLS/idle-clients" 56432 "$IDLE" "$(cat /tmp/pgstack/pgbouncer.pid)"
kill "${pids[-1]}"

echo "== workload statistics on vs off =="
off=$(mktemp --suffix .toml); printf '[insight]\nenabled = false\n' >"$off"
serve --listen 127.0.0.1:56500
serve --config "$off" --listen 127.0.0.1:56501
ready 56500; ready 56501
"$BIN" bench on=postgres://postgres@127.0.0.1:56500/postgres off=postgres://postgres@127.0.0.1:56501/postgres \
  -S -c 50 -j 2 -T "$SECS" --rounds $((ROUNDS + 2)) --no-progress
