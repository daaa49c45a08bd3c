#!/usr/bin/env bash
# run-local.sh: build clawswarm (release) and run the controller on this machine with the embedded
# local runtime: no cluster, each agent a sidecar + real OpenClaw gateway as local processes, state
# in ~/.local/share/clawswarm (CLAWSWARM_STATE_DIR).
#
#   scripts/run-local.sh                          one agent, "demo", owned by "me"
#   CLAWSWARM_LOCAL_AGENTS=alice=U1,bob=U2 scripts/run-local.sh
#   scripts/run-local.sh --workload responses     any OpenAI-style /v1/responses server instead
#   scripts/run-local.sh --workload command       your own CLAWSWARM_WORKLOAD_COMMAND
#   scripts/run-local.sh -- ARGS...               extra `clawswarm run` arguments
#
# The model comes from what this machine has, first found wins:
#   ANTHROPIC_API_KEY                 Anthropic (CLAWSWARM_MODEL, default anthropic/claude-sonnet-4-20250514)
#   OPENAI_API_KEY                    OpenAI chat completions (CLAWSWARM_MODEL, default openai/gpt-4.1-mini)
#   CLAWSWARM_LOCAL_MODEL_URL         an OpenAI-compatible server, e.g. http://127.0.0.1:11434 (Ollama);
#                                     Ollama on its default port is found without it
# ANTHROPIC_BASE_URL / OPENAI_BASE_URL point the key at a gateway instead of the provider, as the
# providers' SDKs do (OPENAI_BASE_URL also serves --workload responses with OPENAI_API_KEY).
# With none, everything starts and the first turn says which variable to set.
# The key reaches the sidecars only (their model proxy); no OpenClaw process sees it.
#
# Installs (cached in ~/.cache/clawswarm, keyed by version): Node 24, the pinned OpenClaw, and
# bubblewrap (Debian's, unpacked into the cache), which seals each agent's workload in a sandbox.
# Stop: Ctrl-C (agents stop with the controller). Reset: rm -rf ~/.local/share/clawswarm.
# CLAWSWARM_BUILD_PROFILE=dev uses the debug build the test command makes (no release build).
# Then, in another terminal:  scripts/clawswarm chat demo "hello"
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
export CLAWSWARM_CACHE="${CLAWSWARM_CACHE:-${HOME}/.cache/clawswarm}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${CLAWSWARM_CACHE}/target}"
export CLAWSWARM_STATE_DIR="${CLAWSWARM_STATE_DIR:-${HOME}/.local/share/clawswarm}"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'run-local: %s\n' "$*" >&2; exit 1; }

workload=openclaw
while (($#)); do
    case "$1" in
        --workload) workload="${2:?--workload needs openclaw, responses or command}"; shift 2 ;;
        --workload=*) workload="${1#--workload=}"; shift ;;
        --) shift; break ;;
        *) break ;;
    esac
done
case "${workload}" in openclaw | responses | command) ;; *) die "--workload ${workload}: expected openclaw, responses or command" ;; esac

command -v cargo >/dev/null || die "cargo not found; install Rust from https://rustup.rs"
case "${CLAWSWARM_BUILD_PROFILE:-release}" in
    release)
        say "cargo build --release --bins (first build takes a few minutes)"
        cargo build --release --locked --bins -p clawswarm-controller -p clawswarm-sidecar >&2
        bin_dir="${CARGO_TARGET_DIR}/release"
        ;;
    dev)
        # The same build as the test command's, so nothing is rebuilt after it.
        say "cargo build --workspace --bins (debug)"
        cargo build --locked --workspace --bins >&2
        bin_dir="${CARGO_TARGET_DIR}/debug"
        ;;
    *) die "CLAWSWARM_BUILD_PROFILE=${CLAWSWARM_BUILD_PROFILE}: expected release or dev" ;;
esac
export CLAWSWARM_SIDECAR_BIN="${CLAWSWARM_SIDECAR_BIN:-${bin_dir}/clawswarm-sidecar}"

# A provider's base URL as the sidecar wants it: no trailing slash or /v1.
base_url() { local u="${1%/}"; printf '%s' "${u%/v1}"; }
# OpenAI's, or the gateway OPENAI_BASE_URL names (as the OpenAI SDKs honour it).
openai_url() { base_url "${OPENAI_BASE_URL:-https://api.openai.com}"; }

# The first model source this machine has, as the sidecars' model proxy settings.
# Sets: api, upstream, key, model (may stay empty).
detect_model() {
    api="" upstream="" key="" model="${CLAWSWARM_MODEL:-}"
    if [[ -n "${ANTHROPIC_API_KEY:-}" ]]; then
        api=anthropic upstream="$(base_url "${ANTHROPIC_BASE_URL:-https://api.anthropic.com}")" key="${ANTHROPIC_API_KEY}"
        say "model: Anthropic (ANTHROPIC_API_KEY) at ${upstream}, ${model:-anthropic/claude-sonnet-4-20250514}"
    elif [[ -n "${OPENAI_API_KEY:-}" ]]; then
        api=openai upstream="$(openai_url)" key="${OPENAI_API_KEY}" model="${model:-openai/gpt-4.1-mini}"
        say "model: OpenAI (OPENAI_API_KEY) at ${upstream}, ${model}"
    else
        local url="${CLAWSWARM_LOCAL_MODEL_URL:-}"
        if [[ -z "${url}" ]] && curl -sf -m 2 http://127.0.0.1:11434/v1/models >/dev/null 2>&1; then
            url=http://127.0.0.1:11434
        fi
        [[ -n "${url}" ]] || return 0
        url="${url%/}" url="${url%/v1}"
        local models
        models="$(curl -sf -m 5 "${url}/v1/models")" \
            || die "CLAWSWARM_LOCAL_MODEL_URL=${url}: GET ${url}/v1/models failed; is the server running?"
        if [[ -z "${model}" ]]; then
            local first
            first="$(grep -o '"id" *: *"[^"]*"' <<<"${models}" | head -1 | sed 's/.*"\([^"]*\)"$/\1/')"
            [[ -n "${first}" ]] || die "${url} serves no model yet (for Ollama: ollama pull llama3.2), or set CLAWSWARM_MODEL=local/NAME"
            model="local/${first}"
        fi
        # Local servers take any key; the proxy still needs one to send.
        api=openai upstream="${url}" key="${CLAWSWARM_LOCAL_MODEL_KEY:-local}"
        say "model: OpenAI-compatible server at ${url}, ${model}"
    fi
}

if [[ "${workload}" != responses && -z "${CLAWSWARM_BWRAP:-}" ]] && ! command -v bwrap >/dev/null; then
    say "deps: bubblewrap, each agent's sandbox (cached in ${CLAWSWARM_CACHE}/tools)"
    eval "$(bash scripts/deps.sh bwrap)"
fi

case "${workload}" in
    openclaw)
        say "deps: Node 24 + OpenClaw (cached in ${CLAWSWARM_CACHE}/tools; cold: 1-3 min)"
        eval "$(bash scripts/deps.sh openclaw)"
        export CLAWSWARM_WORKLOAD=openclaw CLAWSWARM_OPENCLAW_BIN="${CLAWSWARM_OPENCLAW}"
        if [[ -z "${CLAWSWARM_MODEL_API_KEY:-}${CLAWSWARM_MODEL_API_KEY_FILE:-}" ]]; then
            detect_model
            if [[ -n "${api}" ]]; then
                export CLAWSWARM_MODEL_API="${api}" CLAWSWARM_MODEL_UPSTREAM_URL="${upstream}" \
                    CLAWSWARM_MODEL_API_KEY="${key}"
                [[ -z "${model}" ]] || export CLAWSWARM_MODEL="${model}"
            else
                say "no model found: agents start, and each turn says which variable to set"
                say "(ANTHROPIC_API_KEY, OPENAI_API_KEY, or CLAWSWARM_LOCAL_MODEL_URL / Ollama on :11434)"
            fi
        fi
        ;;
    responses)
        export CLAWSWARM_WORKLOAD=responses
        if [[ -z "${CLAWSWARM_WORKLOAD_URL:-}" && -n "${OPENAI_API_KEY:-}" ]]; then
            export CLAWSWARM_WORKLOAD_URL="$(openai_url)" CLAWSWARM_WORKLOAD_TOKEN="${OPENAI_API_KEY}"
            export CLAWSWARM_WORKLOAD_MODEL="${CLAWSWARM_WORKLOAD_MODEL:-gpt-4.1-mini}"
        fi
        [[ -n "${CLAWSWARM_WORKLOAD_URL:-}" ]] \
            || say "no /v1/responses server: set CLAWSWARM_WORKLOAD_URL (+ _TOKEN, _MODEL) or OPENAI_API_KEY"
        ;;
    command)
        [[ -n "${CLAWSWARM_WORKLOAD_COMMAND:-}" ]] \
            || die "--workload command needs CLAWSWARM_WORKLOAD_COMMAND (a command serving /v1/responses on {port})"
        ;;
esac

export CLAWSWARM_LOCAL_AGENTS="${CLAWSWARM_LOCAL_AGENTS:-demo=me}"
say "state: ${CLAWSWARM_STATE_DIR} (reset: stop, then rm -rf it); stop: Ctrl-C"
say "starting the controller; chat with: scripts/clawswarm chat ${CLAWSWARM_LOCAL_AGENTS%%=*} \"hello\""
exec "${bin_dir}/clawswarm" run "$@"
