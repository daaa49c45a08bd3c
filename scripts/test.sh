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
TEST_DEPS=(grpcurl promtool openclaw kube bwrap search)

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
status=0
cargo test --workspace --locked "$@" || status=$?

# Every process a test started must be gone with it: an agent, sandbox or
# control plane left running is a leak the tests did not see. Only processes
# started since this script began count (a developer's own run-local.sh does
# not), and those still exiting get a few seconds.
survivors() {
    ps -eo pid=,etimes=,args= | awk -v max="${SECONDS}" -v target="${CARGO_TARGET_DIR}/" \
        -v tools="${CLAWSWARM_CACHE}/tools/" \
        '$3 != "awk" && $2 <= max && (index($0, target) || index($0, tools)) { print }'
}
for _ in $(seq 20); do
    [[ -z "$(survivors)" ]] && break
    sleep 0.5
done
left="$(survivors)"
if [[ -n "${left}" ]]; then
    step "processes the tests started are still running (a leak; killed now):"
    printf '%s\n' "${left}" >&2
    awk '{ print $1 }' <<<"${left}" | xargs -r kill -9 2>/dev/null || true
    ((status != 0)) || status=1
fi
exit "${status}"
