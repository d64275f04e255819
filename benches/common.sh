# Sourced by the benchmark scripts, from the repository root: where the shared bench tools and
# PostgreSQL's binaries are, how to run a tool as the postgres user, then a release build and the
# pgstack servers (primary 55432, replica 55433, PgBouncer 56432) up.
TOOLS=${BENCH_TOOLS:-$(cd .. && pwd)/shared/bench}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cargo build --release -p pgpilot >/dev/null
# Where that build is: CARGO_TARGET_DIR moves it out of the repository.
RELEASE_BIN=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/pgpilot
"$TOOLS/pgstack" start >/dev/null
