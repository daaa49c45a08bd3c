#!/usr/bin/env bash
# Build the release binaries and run every benchmark figure; results go to
# benches/results/{latest.json,README.md}. Extra arguments go to
# `clawswarm-bench all` (e.g. --turns 2000 --scale-agents 1000,5000).
set -euo pipefail
cd "$(dirname "$0")/.."
export CLAWSWARM_CACHE="${CLAWSWARM_CACHE:-${HOME}/.cache/clawswarm}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${CLAWSWARM_CACHE}/target}"
ulimit -n "$(ulimit -Hn)" || true
cargo build --release --locked --bins
exec "${CARGO_TARGET_DIR}/release/clawswarm-bench" all "$@"
