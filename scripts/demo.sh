#!/usr/bin/env bash
# The quickstart: installs what is missing, builds pgpilot and runs `pgpilot demo` (a local primary +
# replica, pgpilot in front, a realistic workload, and a report). Arguments go to `pgpilot demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh demo
cargo build --release --locked -p pgpilot
# CARGO_TARGET_DIR, when set, is where that build went.
exec "${CARGO_TARGET_DIR:-target}/release/pgpilot" demo "$@"
