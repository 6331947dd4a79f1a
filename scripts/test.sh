#!/usr/bin/env bash
# Runs every test: installs what is missing, checks format and lints, runs the Rust tests and
# the browser tests (real headless Chromium against a real `aula serve`).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

bash scripts/install-deps.sh

echo "== web/vendor matches npm (scripts/build-web.sh)"
bash scripts/build-web.sh --check
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== no import circles among crate modules (scripts/check-modules.py)"
python3 scripts/check-modules.py
echo "== cargo test"
cargo test --workspace --quiet
# `cargo test --workspace` has built target/debug/aula (aula's own tests run it); a separate
# `cargo build -p aula` would resolve features differently and rebuild much of the tree.
test -x target/debug/aula || { echo "target/debug/aula missing after cargo test"; exit 1; }
echo "== browser tests (node --test, playwright-core + /usr/bin/chromium)"
# A per-test timeout turns a hung test into a failure instead of a stuck CI job.
(cd web && node --test --test-concurrency=1 --test-timeout=300000 tests/)
echo "== edge worker tests (node --test)"
node --test --test-timeout=60000 deploy/cloudflare-worker/test/
