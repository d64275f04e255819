#!/usr/bin/env bash
# How close any proxy gets to direct PostgreSQL with `pgbench -M prepared -S -c 50` on this machine:
# rounds of direct PostgreSQL, PgBouncer in session mode (pool 50: the least work a proxy can do for
# prepared statements) and pgpilot in transaction mode (pool 20), each as a ratio of the direct run
# of its round (BENCHMARKS.md, "Prepared statements"). Needs ../shared/bench/pgstack and pgbouncer.
# Usage: benches/prepared-anchor.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; SECS=${2:-6}
source benches/common.sh
DIR=$(mktemp -d); chmod 755 "$DIR"
BOUNCER=29433 GATEWAY=29434
cat >"$DIR/pgbouncer.ini" <<INI
[databases]
postgres = host=127.0.0.1 port=55432 dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER
unix_socket_dir =
auth_type = trust
auth_file = $DIR/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 50
logfile = $DIR/pgbouncer.log
pidfile = $DIR/pgbouncer.pid
INI
echo '"postgres" ""' >"$DIR/userlist.txt"
[ "$(id -u)" = 0 ] && chown -R postgres "$DIR"
as_pg pgbouncer -d "$DIR/pgbouncer.ini"
"$RELEASE_BIN" serve --listen 127.0.0.1:$GATEWAY --primary postgres://postgres@127.0.0.1:55432/postgres \
  --pool-size 20 >"$DIR/pgpilot.log" 2>&1 &
gw=$!
trap 'kill $gw "$(cat "$DIR/pgbouncer.pid")" 2>/dev/null || true' EXIT
sleep 2
tps() { as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p "$1" -U postgres -n -S -c 50 -j 2 -T "$SECS" -M prepared postgres 2>/dev/null | awk '/^tps/ {print int($3)}'; }
for r in $(seq "$ROUNDS"); do
  d=$(tps 55432); b=$(tps $BOUNCER); p=$(tps $GATEWAY)
  printf 'round %s: direct %s  pgbouncer-session %s (%.2f)  pgpilot %s (%.2f)\n' "$r" "$d" "$b" \
    "$(echo "$b / $d" | bc -l)" "$p" "$(echo "$p / $d" | bc -l)"
done
