#!/usr/bin/env bash
# Install the PostgreSQL server used by tests/test_scale.py (Debian package `postgresql`);
# the tests start their own throw-away server, never the system one. Idempotent: does nothing
# when initdb and pg_ctl are already there. When the package cannot be installed (no root, no
# apt-get) the reason is written to $VENV/.lad-postgres-unavailable, and the PostgreSQL tests
# skip printing it; otherwise they run (and fail loudly if the server is missing).
# Usage: scripts/install_postgres.sh [VENV_DIR]   (default: .venv)
set -uo pipefail

VENV="${1:-.venv}"
MARK="$VENV/.lad-postgres-unavailable"

have_server() {
    command -v pg_config >/dev/null 2>&1 && [[ -x "$(pg_config --bindir)/initdb" ]] && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

unavailable() {
    echo "install_postgres: $1" >&2
    mkdir -p "$VENV" && echo "$1" >"$MARK"
    exit 0
}

if have_server; then
    rm -f "$MARK"
    echo "install_postgres: PostgreSQL server already installed; nothing to do"
    exit 0
fi

SUDO=""
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null \
        || unavailable "PostgreSQL is not installed and installing it needs root (apt-get install postgresql)"
    SUDO="sudo -n"
fi
command -v apt-get >/dev/null 2>&1 || unavailable "PostgreSQL is not installed and there is no apt-get to install it"

export DEBIAN_FRONTEND=noninteractive
# policy-rc.d keeps the package from starting (or failing to start) the system cluster
# where no init system runs (containers); the tests start their own server
POLICY=/usr/sbin/policy-rc.d
ADDED_POLICY=0
if [[ ! -e "$POLICY" ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null && $SUDO chmod +x "$POLICY" && ADDED_POLICY=1
fi
$SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends postgresql
status=$?
[[ "$ADDED_POLICY" -eq 1 ]] && $SUDO rm -f "$POLICY"
[[ $status -eq 0 ]] || unavailable "apt-get install postgresql failed (exit $status)"
have_server || unavailable "postgresql installed but no initdb found"
rm -f "$MARK"
echo "install_postgres: installed $(ls -d /usr/lib/postgresql/*/bin | tail -1)"
