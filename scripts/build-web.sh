#!/usr/bin/env bash
# Copies the front-end packages the pages use from npm (web/node_modules) into web/vendor/,
# which is embedded into the aula binary. Run after changing versions in web/package.json;
# the test script checks the vendored copies match npm.
set -euo pipefail
cd "$(dirname "$0")/../web"
[ -d node_modules/hls.js ] && [ -x node_modules/.bin/esbuild ] || npm ci --no-audit --no-fund
mkdir -p vendor
cp node_modules/hls.js/dist/hls.min.js vendor/hls.min.js
cp node_modules/hls.js/LICENSE vendor/hls.js.LICENSE
# The room page's collaboration code with its npm packages, one ES module (deterministic output
# for the same sources and versions).
node_modules/.bin/esbuild src/collab.js --bundle --format=esm --minify --target=es2020 \
  --legal-comments=none --log-level=warning --outfile=vendor/collab.bundle.js
if [ "${1:-}" = "--check" ]; then
  git diff --exit-code -- vendor/ || { echo "web/vendor is stale: run scripts/build-web.sh and commit" >&2; exit 1; }
fi
