#!/usr/bin/env bash
# Install Debian's nginx-light, the local stand-in for CloudFront (`make serve EDGE=1`,
# tests/test_edge.py), if `nginx` is not on PATH. Idempotent: a no-op once installed.
# Only the binary is used: scripts/serve.py runs it unprivileged with its own config
# (`nginx -p DIR -c conf`); the packaged system service is not needed and not started.
set -euo pipefail

# Debian installs nginx in /usr/sbin, which is not on every user's PATH.
if command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]]; then
    exit 0
fi

# apt-get needs root; use sudo only when we are not root already.
SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "ensure_nginx: need root (or sudo) to install nginx-light" >&2; exit 1; }
    SUDO=(sudo)
fi

echo "ensure_nginx: installing Debian nginx-light" >&2
"${SUDO[@]}" apt-get update -q
# On a full Debian host the package also starts its own system service (port 80); nothing
# here uses it, and in containers policy-rc.d usually stops it from starting at all.
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light

command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] \
    || { echo "ensure_nginx: nginx still missing after install" >&2; exit 1; }
