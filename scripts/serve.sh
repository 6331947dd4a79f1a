#!/usr/bin/env bash
# Installs what is missing, builds aula (release) and runs `aula serve` on embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release -p aula
exec ./target/release/aula serve "$@"
