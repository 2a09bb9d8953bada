#!/usr/bin/env bash
# Install the headless browser used by the MLflow UI tests (tests/test_ui.py) and
# scripts/ui_screenshot.py: Debian chromium + chromium-driver, and selenium in a venv.
# Idempotent: does nothing when everything is already present.
# Usage: scripts/install_browser.sh [VENV_DIR]   (default: .venv)
set -euo pipefail

VENV="${1:-.venv}"
PY="$VENV/bin/python"
CHROMIUM=/usr/bin/chromium
DRIVER=/usr/bin/chromedriver

if [[ ! -x "$PY" ]]; then
    echo "install_browser: no python at $PY (pass the venv directory as \$1)" >&2
    exit 2
fi

have_driver_pkg() { "$PY" -c "import selenium.webdriver" >/dev/null 2>&1; }

if [[ -x "$CHROMIUM" && -x "$DRIVER" ]] && have_driver_pkg; then
    echo "install_browser: chromium, chromedriver and selenium already present; nothing to do"
    exit 0
fi

if [[ ! -x "$CHROMIUM" || ! -x "$DRIVER" ]]; then
    SUDO=""
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || { echo "install_browser: need root or sudo for apt-get" >&2; exit 2; }
        SUDO="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends chromium chromium-driver fonts-liberation
fi

if ! have_driver_pkg; then
    "$PY" -m pip install "selenium>=4.20,<5"
fi

"$CHROMIUM" --version
"$DRIVER" --version
"$PY" -c "import selenium; print('selenium', selenium.__version__)"
