#!/usr/bin/env bash
# Build a real kube-apiserver (Kubernetes 1.20, from Debian's `kubernetes` source package) plus
# etcd for the cluster-facing tests in tests/k8s. Everything lands in a cache directory outside
# the repository; a second run reuses the binaries and exits in well under a second.
#
#   K8S_TEST_CACHE   cache directory (default: $HOME/.cache/bert-kfp-k8s)
#   K8S_REBUILD=1    rebuild kube-apiserver even when a binary is present
#
# Layout of the cache:
#   bin/kube-apiserver, bin/etcd    what tests/k8s runs
#   gopath/src/k8s.io/kubernetes    the unpacked source tree (GOPATH mode)
#   go-build/                       warm Go build cache (GOCACHE)
#   src/                            the downloaded Debian source package
# The tests also need `openssl` at run time (a service-account key), installed here as well.
set -euo pipefail

CACHE="${K8S_TEST_CACHE:-$HOME/.cache/bert-kfp-k8s}"
BIN="$CACHE/bin"
GOPATH_DIR="$CACHE/gopath"
TREE="$GOPATH_DIR/src/k8s.io/kubernetes"
SRC_DIR="$CACHE/src"
DEB_PACKAGES=(golang-go etcd-server golang-github-modern-go-reflect2-dev dpkg-dev openssl)
REFLECT2_DEBIAN=/usr/share/gocode/src/github.com/modern-go/reflect2
APT_SRC_FILE=/etc/apt/sources.list.d/bert-kfp-k8s-deb-src

log() { printf '[build-apiserver] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_update_once() {
    if [[ $apt_updated -eq 0 ]]; then
        log "apt-get update"
        as_root apt-get update -qq
        apt_updated=1
    fi
}

install_missing_packages() {
    local missing=() pkg
    for pkg in "${DEB_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        apt_update_once
        log "installing Debian packages: ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

# Print deb-src entries mirroring the existing `deb` entries of this release's own Debian archive
# (the entries whose suites include the release codename), in both sources formats.
derive_deb_src_entries() {
    local codename=$1
    local deb822=() oneline=()
    shopt -s nullglob
    deb822=(/etc/apt/sources.list.d/*.sources)
    oneline=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list)
    shopt -u nullglob
    if [[ ${#deb822[@]} -gt 0 ]]; then
        awk -v codename="$codename" '
            BEGIN { RS = ""; ORS = "\n\n" }
            {
                n = split($0, lines, "\n"); types = ""; suites = ""; enabled = "yes"
                for (i = 1; i <= n; i++) {
                    if (lines[i] ~ /^Types:/) types = lines[i]
                    if (lines[i] ~ /^Suites:/) suites = lines[i] " "
                    if (lines[i] ~ /^Enabled:[ \t]*no/) enabled = "no"
                }
                if (enabled == "no" || types !~ /[ \t]deb([ \t]|$)/) next
                if (suites !~ ("[ \t]" codename "[ \t]")) next
                out = ""
                for (i = 1; i <= n; i++) {
                    if (lines[i] ~ /^#/) continue
                    if (lines[i] ~ /^Types:/) lines[i] = "Types: deb-src"
                    out = out lines[i] "\n"
                }
                printf "%s\n", out
            }' "${deb822[@]}" >"$2.sources.tmp"
    else
        : >"$2.sources.tmp"
    fi
    local f
    : >"$2.list.tmp"
    for f in "${oneline[@]}"; do
        [[ -f $f ]] || continue
        awk -v codename="$codename" '
            $1 == "deb" {
                for (i = 2; i <= NF; i++) if ($i == codename) { $1 = "deb-src"; print; next }
            }' "$f" >>"$2.list.tmp"
    done
}

ensure_deb_src() {
    apt_update_once
    if apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Package: kubernetes'; then
        return
    fi
    local codename
    # shellcheck source=/dev/null
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [[ -n $codename ]] || die "cannot tell the Debian codename from /etc/os-release"
    local tmp
    tmp=$(mktemp -d)
    derive_deb_src_entries "$codename" "$tmp/entries"
    if [[ ! -s $tmp/entries.sources.tmp && ! -s $tmp/entries.list.tmp ]]; then
        rm -rf "$tmp"
        die "found no 'deb' entry for '$codename' in /etc/apt/sources.list{,.d/*} to mirror as deb-src"
    fi
    [[ -s $tmp/entries.sources.tmp ]] && as_root cp "$tmp/entries.sources.tmp" "$APT_SRC_FILE.sources"
    [[ -s $tmp/entries.list.tmp ]] && as_root cp "$tmp/entries.list.tmp" "$APT_SRC_FILE.list"
    rm -rf "$tmp"
    log "added deb-src entries in $APT_SRC_FILE.*"
    apt_updated=0
    apt_update_once
    apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Package: kubernetes' \
        || die "the Debian source package 'kubernetes' is still not known to apt after adding deb-src"
}

fetch_source_tree() {
    if [[ -f $TREE/cmd/kube-apiserver/apiserver.go ]]; then
        log "reusing source tree $TREE"
        return
    fi
    ensure_deb_src
    mkdir -p "$SRC_DIR"
    if ! compgen -G "$SRC_DIR/kubernetes_*.dsc" >/dev/null; then
        log "downloading the Debian source package 'kubernetes'"
        (cd "$SRC_DIR" && apt-get source --download-only -qq kubernetes)
    fi
    local dsc
    dsc=$(compgen -G "$SRC_DIR/kubernetes_*.dsc" | sort | tail -n1)
    log "unpacking $(basename "$dsc")"
    rm -rf "$SRC_DIR/unpacked" "$TREE"
    dpkg-source --no-check -x "$dsc" "$SRC_DIR/unpacked" >/dev/null
    mkdir -p "$(dirname "$TREE")"
    mv "$SRC_DIR/unpacked" "$TREE"
    [[ -f $TREE/cmd/kube-apiserver/apiserver.go ]] || die "unexpected source layout in $TREE"
}

go_env() {
    env GOPATH="$GOPATH_DIR" GO111MODULE=off GOFLAGS= GOCACHE="$CACHE/go-build" \
        CGO_ENABLED=0 "$@"
}

# reflect2 1.0.1 (vendored) crashes with Go >= 1.18 on the first CRD request; use Debian's 1.0.2.
replace_reflect2() {
    local vendored="$TREE/vendor/github.com/modern-go/reflect2"
    [[ -d $REFLECT2_DEBIAN ]] || die "missing $REFLECT2_DEBIAN (golang-github-modern-go-reflect2-dev)"
    if [[ -f $vendored/.from-debian ]]; then
        return
    fi
    log "replacing vendored modern-go/reflect2 by Debian's"
    rm -rf "$vendored"
    mkdir -p "$vendored"
    cp -rL "$REFLECT2_DEBIAN/." "$vendored/"
    find "$vendored" -name '*_test.go' -delete
    touch "$vendored/.from-debian"
}

# pkg/generated/openapi is not shipped: generate it the way Makefile.generated_files does, from
# every package that carries a `+k8s:openapi-gen=` tag (less code-generator and sample-apiserver).
generate_openapi() {
    local out="$TREE/pkg/generated/openapi/zz_generated.openapi.go"
    if [[ -f $out ]]; then
        return
    fi
    log "building openapi-gen"
    local tools="$CACHE/tools"
    mkdir -p "$tools"
    (cd "$TREE" && go_env go build -o "$tools/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen)
    log "generating pkg/generated/openapi"
    local dirs
    dirs=$(cd "$TREE" \
        && grep -rl --include='*.go' -E '^// ?\+k8s:openapi-gen=' \
            pkg cmd staging/src vendor/k8s.io 2>/dev/null \
        | xargs -r dirname | sort -u \
        | sed -e 's#^staging/src/##' -e 's#^vendor/##' -e 's#^\(pkg\|cmd\)/#k8s.io/kubernetes/\1/#' \
        | grep -v -e '^k8s.io/code-generator/' -e '^k8s.io/sample-apiserver/' \
        | sort -u | paste -sd, -)
    [[ -n $dirs ]] || die "no package with a +k8s:openapi-gen tag found"
    mkdir -p "$TREE/pkg/generated/openapi"
    (cd "$TREE" && go_env "$tools/openapi-gen" \
        --input-dirs "$dirs" \
        --output-base "$GOPATH_DIR/src" \
        --output-package k8s.io/kubernetes/pkg/generated/openapi \
        --output-file-base zz_generated.openapi \
        --go-header-file hack/boilerplate/boilerplate.generatego.txt \
        --report-filename "$tools/openapi-violations.report")
    [[ -f $out ]] || die "openapi-gen did not write $out"
}

build_apiserver() {
    local version
    version=$(cd "$TREE" && dpkg-parsechangelog -S Version 2>/dev/null | sed -e 's/^.*really//' -e 's/-[^-]*$//')
    version=${version:-1.20.2}
    local ldflags="-s -w" pkg
    # Both version packages, as hack/lib/version.sh does: /version is served from client-go's.
    for pkg in component-base/version client-go/pkg/version; do
        pkg=k8s.io/kubernetes/vendor/k8s.io/$pkg
        ldflags+=" -X $pkg.gitVersion=v$version -X $pkg.gitMajor=${version%%.*}"
        ldflags+=" -X $pkg.gitMinor=$(cut -d. -f2 <<<"$version") -X $pkg.gitTreeState=clean"
    done
    log "building kube-apiserver v$version (cold: 5-9 min on 2 cores; warm cache: seconds)"
    mkdir -p "$BIN"
    (cd "$TREE" && go_env go build -ldflags "$ldflags" -o "$BIN/kube-apiserver.tmp" ./cmd/kube-apiserver)
    mv -f "$BIN/kube-apiserver.tmp" "$BIN/kube-apiserver"
}

link_etcd() {
    local etcd
    etcd=$(command -v etcd || true)
    [[ -n $etcd ]] || etcd=/usr/bin/etcd
    [[ -x $etcd ]] || die "etcd not found (Debian package etcd-server)"
    mkdir -p "$BIN"
    ln -sfn "$etcd" "$BIN/etcd"
}

binaries_ok() {
    [[ -x $BIN/kube-apiserver && -x $BIN/etcd ]] \
        && "$BIN/kube-apiserver" --version >/dev/null 2>&1 \
        && "$BIN/etcd" --version >/dev/null 2>&1
}

main() {
    if [[ ${K8S_REBUILD:-0} != 1 ]] && binaries_ok; then
        log "up to date"
    else
        install_missing_packages
        command -v go >/dev/null || die "go not on PATH after installing golang-go"
        fetch_source_tree
        replace_reflect2
        generate_openapi
        build_apiserver
        link_etcd
        binaries_ok || die "built binaries do not run: $BIN"
    fi
    log "kube-apiserver: $BIN/kube-apiserver ($("$BIN/kube-apiserver" --version))"
    log "etcd:           $BIN/etcd ($("$BIN/etcd" --version | head -n1))"
    echo "$BIN"
}

main "$@"
