#!/usr/bin/env bash
# test.sh: the project's test command. Installs what the tests need (cached outside the repo,
# see scripts/deps.sh and docs/dependencies.md), then runs rustfmt, clippy and the tests.
#
#   scripts/test.sh [extra cargo test args...]      e.g. scripts/test.sh -- --nocapture
#
# Environment: CLAWSWARM_CACHE (default ~/.cache/clawswarm), CARGO_TARGET_DIR (default
# $CLAWSWARM_CACHE/target), CLAWSWARM_TEST_DEPS (overrides the component list below).
set -euo pipefail

# Components the tests need; add `kube` here when tests use it.
TEST_DEPS=(grpcurl promtool openclaw kube bwrap)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"

export CLAWSWARM_CACHE="${CLAWSWARM_CACHE:-${HOME}/.cache/clawswarm}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${CLAWSWARM_CACHE}/target}"

if [[ -n "${CLAWSWARM_TEST_DEPS+x}" ]]; then
    read -r -a TEST_DEPS <<<"${CLAWSWARM_TEST_DEPS}"
fi

step() { printf '==> %s\n' "$*" >&2; }

if ((${#TEST_DEPS[@]} > 0)); then
    step "deps: ${TEST_DEPS[*]}"
    deps_env="$(bash scripts/deps.sh "${TEST_DEPS[@]}")"
    eval "${deps_env}"
fi

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets --locked -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

# The end-to-end tests run the real binaries; `cargo test` alone does not
# build binaries of packages without integration tests.
step "cargo build --workspace --bins --locked"
cargo build --workspace --bins --locked
# The end-to-end harness would otherwise build them again from inside the tests.
export CLAWSWARM_TEST_BINS_BUILT=1

step "cargo test --workspace --locked $*"
cargo test --workspace --locked "$@"
