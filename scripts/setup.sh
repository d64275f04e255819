#!/usr/bin/env bash
# Installs what pgpilot's build, tests and demo need on a fresh Debian/Ubuntu machine, and nothing
# that is already there. Safe to run again. Usage: scripts/setup.sh [demo|test]
#   demo: the build toolchain's C needs, PostgreSQL, Redis
#   test: all of the above plus what the test suite drives (pgbouncer, promtool, chromium,
#         the drivers' runtimes, the deployment linters)
set -euo pipefail
what=${1:-test}
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

missing=()
want() { for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done; }
# Tools a machine may carry from outside Debian (NodeSource's node bundles npm, a rustup or pyenv
# toolchain): asked for by command, since Debian's package would conflict or is not needed.
want_cmd() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }

want pkg-config libclang-dev curl ca-certificates
want_cmd cc build-essential
want_cmd git git
want postgresql postgresql-contrib redis-server
if [ "$what" = test ]; then
  # The drivers' runtimes (JDK, Node.js, Go, Python) and the deployment linters come from
  # scripts/install-driver-deps.sh and scripts/install-deploy-lint-deps.sh.
  want pgbouncer prometheus chromium chromium-driver
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# hypopg must match the server's major version (postgresql-15-hypopg on Debian 12).
pg_major=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n1)
if [ -n "$pg_major" ] && ! dpkg -s "postgresql-$pg_major-hypopg" >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "postgresql-$pg_major-hypopg" >/dev/null || \
    echo "setup: postgresql-$pg_major-hypopg is not available: the advisor will fall back to heuristics"
fi

# The packaged clusters are not used (tests start their own); keep the system ones from holding ports.
if command -v pg_lsclusters >/dev/null 2>&1; then
  pg_lsclusters -h 2>/dev/null | awk '$4=="online"{print $1, $2}' | while read -r v c; do $SUDO pg_ctlcluster "$v" "$c" stop || true; done
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found: install Rust from https://rustup.rs (stable) and run again" >&2
  exit 1
fi

if [ "$what" = test ]; then
  [ -x scripts/install-driver-deps.sh ] && scripts/install-driver-deps.sh
  [ -x scripts/install-deploy-lint-deps.sh ] && scripts/install-deploy-lint-deps.sh
fi
echo "setup: ready"
