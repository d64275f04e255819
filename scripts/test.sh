#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what is missing, then runs every test against
# real PostgreSQL, Redis and drivers. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# Incremental state only helps a second build on the same machine; on CI it is gigabytes of disk.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
cargo test --workspace --locked "$@"
