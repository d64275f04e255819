#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what is missing, then runs every test against
# real PostgreSQL, Redis and drivers. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
cargo test --workspace --locked "$@"
