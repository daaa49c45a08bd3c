#!/usr/bin/env bash
# run-local.sh: build clawswarm (release) and run the controller on this
# machine with the embedded local runtime: no cluster, agents as local
# processes, state in ~/.local/share/clawswarm (CLAWSWARM_STATE_DIR).
#
#   scripts/run-local.sh                    one agent, "demo", owned by "me"
#   CLAWSWARM_LOCAL_AGENTS=alice=U1,bob=U2 scripts/run-local.sh
#
# Agents answer through a workload; configure one of:
#   CLAWSWARM_WORKLOAD_URL=https://api.openai.com CLAWSWARM_WORKLOAD_TOKEN=$OPENAI_API_KEY \
#   CLAWSWARM_WORKLOAD_MODEL=gpt-4.1-mini scripts/run-local.sh      (any /v1/responses server)
#   CLAWSWARM_WORKLOAD_COMMAND='<command serving /v1/responses on {port}>' scripts/run-local.sh
# Without one, everything starts and says plainly that no workload is configured.
#
# Then, in another terminal:  scripts/clawswarm chat demo "hello"
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
export CLAWSWARM_CACHE="${CLAWSWARM_CACHE:-${HOME}/.cache/clawswarm}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${CLAWSWARM_CACHE}/target}"

command -v cargo >/dev/null || { echo "run-local: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
echo "==> cargo build --release --bins (first build takes a few minutes)" >&2
cargo build --release --locked --bins -p clawswarm-controller -p clawswarm-sidecar >&2

if [[ -z "${CLAWSWARM_WORKLOAD_URL:-}" && -z "${CLAWSWARM_WORKLOAD_COMMAND:-}" ]]; then
    cat >&2 <<'EOM'
==> No workload configured. Agents will start and connect, but every turn will
    say that no workload is configured. Set CLAWSWARM_WORKLOAD_URL (+ _TOKEN,
    _MODEL) or CLAWSWARM_WORKLOAD_COMMAND; see the top of this script.
EOM
fi
export CLAWSWARM_LOCAL_AGENTS="${CLAWSWARM_LOCAL_AGENTS:-demo=me}"
echo "==> starting the controller; chat with: scripts/clawswarm chat ${CLAWSWARM_LOCAL_AGENTS%%=*} \"hello\"" >&2
exec "${CARGO_TARGET_DIR}/release/clawswarm" run "$@"
