#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests (tests/test_web.py), if it is missing.
# Idempotent: does nothing when /usr/bin/chromium exists. Playwright drives this browser;
# `playwright install` is never used (it downloads from a host these machines cannot reach).
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [[ -x "$CHROMIUM" ]]; then
    exit 0
fi

# apt-get needs root; use sudo only when we are not root already.
SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "ensure_chromium: need root (or sudo) to install chromium" >&2; exit 1; }
    SUDO=(sudo)
fi

echo "ensure_chromium: installing Debian chromium" >&2
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

[[ -x "$CHROMIUM" ]] || { echo "ensure_chromium: $CHROMIUM still missing after install" >&2; exit 1; }
