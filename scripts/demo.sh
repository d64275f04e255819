#!/usr/bin/env bash
# The quickstart: installs what is missing, builds pgpilot and runs `pgpilot demo` (a local primary +
# replica, pgpilot in front, a realistic workload, and a report). Arguments go to `pgpilot demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh demo
cargo build --release --locked -p pgpilot
exec target/release/pgpilot demo "$@"
