#!/usr/bin/env bash
# Installs what the driver compatibility suite (pgpilot/tests/drivers.rs, docs/drivers.md) needs
# on Debian 12: a JDK and pgJDBC, Node.js with node-postgres, Go with pgx, and psycopg 3 and
# asyncpg in a virtualenv. Idempotent: when everything is there it only checks, in a second or two.
#
# Usage: scripts/install-driver-deps.sh        (as root, or with sudo available)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/drivers/python/.venv"
GOPATH_DEBIAN=/usr/share/gocode

say() { printf 'install-driver-deps: %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        say "need root to run: $*" >&2
        exit 1
    fi
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# --- Debian packages -------------------------------------------------------------------------
packages=()
# pgJDBC: Debian's jar, compiled against with the JDK's javac (no Maven download).
installed libpostgresql-jdbc-java || packages+=(libpostgresql-jdbc-java)
command -v javac >/dev/null || packages+=(default-jdk-headless)
# Node.js may come from elsewhere (NodeSource bundles npm; Debian's npm would conflict with it).
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)
# pgx: the Go module proxy is out of reach, Debian packages pgx v4 and its dependencies.
command -v go >/dev/null || packages+=(golang-go)
installed golang-github-jackc-pgx-v4-dev || packages+=(golang-github-jackc-pgx-v4-dev)
# The Python drivers go into a virtualenv; Debian's python3 needs python3-venv for one.
command -v python3 >/dev/null || packages+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || packages+=(python3-venv)

if [ "${#packages[@]}" -gt 0 ]; then
    say "apt-get install ${packages[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

# --- Python: psycopg 3 and asyncpg -----------------------------------------------------------
wanted_python() {
    "$VENV/bin/python" - "$ROOT/drivers/python/requirements.txt" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
pins = {}
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if "==" in line:
        name, v = line.split("==")
        pins[name.split("[")[0]] = v
sys.exit(0 if all(version(n) == v for n, v in pins.items()) else 1)
PY
}
if ! wanted_python; then
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    say "pip install -r drivers/python/requirements.txt (into drivers/python/.venv)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$ROOT/drivers/python/requirements.txt"
fi

# --- Node.js: node-postgres from the committed package-lock.json ------------------------------
NODE_DIR="$ROOT/drivers/node"
if [ ! -f "$NODE_DIR/node_modules/.package-lock.json" ] \
    || [ "$NODE_DIR/package-lock.json" -nt "$NODE_DIR/node_modules/.package-lock.json" ]; then
    say "npm ci (drivers/node)"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
fi

# --- Go: build the pgx program once, so the test finds a warm build cache ---------------------
(cd "$ROOT/drivers/go" && GO111MODULE=off GOPATH="$GOPATH_DEBIAN" GOFLAGS= go build -o /dev/null .)

say "ready: $(javac -version 2>&1), node $(node --version), $(go version | cut -d' ' -f3), $("$VENV/bin/python" -c 'import psycopg, asyncpg; print("psycopg", psycopg.__version__, "asyncpg", asyncpg.__version__)')"
