#!/usr/bin/env bash
# ensure_deb.sh PACKAGE BINARY: install a Debian package if BINARY is missing. Idempotent.
#
# Used for what the tests drive but pip cannot install: `chromium` (Playwright drives
# /usr/bin/chromium; `playwright install` is never used, it downloads from a host these
# machines cannot reach) and `nginx-light` (the local CloudFront stand-in; only the binary is
# used, run unprivileged with its own config, never the packaged system service).
set -euo pipefail
package=${1:?usage: ensure_deb.sh PACKAGE BINARY}
binary=${2:?usage: ensure_deb.sh PACKAGE BINARY}

present() { command -v "$binary" >/dev/null || [[ -x "$binary" ]] || [[ -x "/usr/sbin/$binary" ]]; }
present && exit 0

# apt-get needs root; use sudo only when we are not root already.
SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "ensure_deb: need root (or sudo) to install $package" >&2; exit 1; }
    SUDO=(sudo)
fi

echo "ensure_deb: installing Debian $package" >&2
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$package"
present || { echo "ensure_deb: $binary still missing after installing $package" >&2; exit 1; }
