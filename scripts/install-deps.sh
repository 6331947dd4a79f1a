#!/usr/bin/env bash
# Installs the system packages and npm test packages aula needs; skips what is present.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

pkgs=(
  pkg-config libssl-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools
  ffmpeg chromium nodejs npm redis-server coturn
  systemd  # systemd-analyze verifies deploy/aula.service
)
missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    # nodejs/npm may come from elsewhere than Debian; a working binary is enough.
    if { [ "$p" = nodejs ] && command -v node >/dev/null; } || { [ "$p" = npm ] && command -v npm >/dev/null; }; then
      continue
    fi
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install-deps: system packages present"
fi

# A real S3 API on loopback for the storage tests (moto's server, from PyPI).
if ! python3 -c "import moto.server" 2>/dev/null; then
  echo "install-deps: pip install moto[server]"
  python3 -m pip install -q 'moto[server]'
fi

# npm packages: playwright-core (drives Debian's chromium in tests), hls.js (vendored into
# web/vendor by scripts/build-web.sh), yjs / y-protocols / y-websocket / ws (the collaboration
# tests' real Yjs clients, and the reference server the collab bench compares against).
if [ ! -f web/node_modules/.package-lock.json ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
  echo "install-deps: npm ci (web/)"
  (cd web && npm ci --no-audit --no-fund --loglevel=error)
fi
