#!/usr/bin/env bash
# Build the release binaries and run every benchmark figure; results go to
# benches/results/{latest.json,README.md}. Extra arguments go to
# `clawswarm-bench all` (e.g. --turns 2000 --scale-agents 1000,5000).
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)" || true
cargo build --release --bins
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/clawswarm-bench" all "$@"
