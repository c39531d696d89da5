#!/usr/bin/env bash
# A container runtime for `make images` and `python -m pipelines run --runner container` on a machine
# without a Docker engine or a reachable registry: Debian's podman + runc, a Debian base image built
# locally with debootstrap, and podman's Docker-compatible API on a unix socket.
#
#   CONTAINER_CACHE   cache directory (default: $HOME/.cache/bert-kfp-containers)
#   CONTAINER_SOCKET  the API socket (default: /run/bert-kfp/podman.sock as root, else under $XDG_RUNTIME_DIR)
#   LOCAL_BASE_IMAGE  tag of the locally built base (default: localhost/bert-kfp/debian-python:3.11-bookworm)
#   DEBIAN_MIRROR     mirror for debootstrap (default: debootstrap's own)
#
# Idempotent: a second run finds the packages, the settings, the base image and the running service,
# and only prints the environment again. Progress goes to stderr; stdout is shell to `eval`:
#   export DOCKER_HOST=unix:///run/bert-kfp/podman.sock
#   export BASE_IMAGE=localhost/bert-kfp/debian-python:3.11-bookworm
set -euo pipefail

CACHE="${CONTAINER_CACHE:-$HOME/.cache/bert-kfp-containers}"
if [[ $(id -u) -eq 0 ]]; then
    DEFAULT_SOCKET=/run/bert-kfp/podman.sock
else
    DEFAULT_SOCKET="${XDG_RUNTIME_DIR:-/tmp}/bert-kfp/podman.sock"
fi
SOCKET="${CONTAINER_SOCKET:-$DEFAULT_SOCKET}"
BASE="${LOCAL_BASE_IMAGE:-localhost/bert-kfp/debian-python:3.11-bookworm}"
SUITE=bookworm # the Debian release of the public base (python:3.11-slim-bookworm); its python3 is 3.11
PACKAGES=(podman buildah runc debootstrap)
CONF=/etc/containers/containers.conf.d/50-bert-kfp.conf

log() { printf '[container-runtime] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install them with your package manager"
    log "installing Debian packages: ${missing[*]} (~1 min)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Without these every container fails at start (`setrlimit ... Operation not permitted`; crun: "cgroups in
# hybrid mode not supported"). A drop-in file, so the distribution's containers.conf stays untouched.
write_settings() {
    local want
    want=$'# Written by hack/containers/runtime.sh (bert-kfp).\n[containers]\ndefault_ulimits = ["nofile=16384:16384", "nproc=4096:4096"]\n\n[engine]\nruntime = "runc"\n'
    if [[ -f $CONF && "$(cat "$CONF")"$'\n' == "$want" ]]; then
        return
    fi
    log "writing $CONF (default_ulimits, runtime = runc)"
    as_root mkdir -p "$(dirname "$CONF")"
    printf '%s' "$want" | as_root tee "$CONF" >/dev/null
}

# The stand-in for the public python:3.11-slim-bookworm: Debian bookworm (minbase) with its python3 (3.11)
# and python3-venv, which is all images/Dockerfile asks of its base.
build_base() {
    if podman image exists "$BASE"; then
        log "base image $BASE present"
        return
    fi
    local rootfs="$CACHE/rootfs-$SUITE"
    if [[ ! -x $rootfs/usr/bin/python3 ]]; then
        log "debootstrap $SUITE into $rootfs (~2 min)"
        as_root rm -rf "$rootfs"
        mkdir -p "$CACHE"
        as_root debootstrap --variant=minbase --include=python3,python3-venv "$SUITE" "$rootfs" \
            ${DEBIAN_MIRROR:+"$DEBIAN_MIRROR"} >"$CACHE/debootstrap.log" 2>&1 \
            || die "debootstrap failed; see $CACHE/debootstrap.log"
        as_root rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    fi
    log "importing $rootfs as $BASE"
    as_root tar -C "$rootfs" -c . | podman import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE" >/dev/null
}

service_up() {
    [[ -S $SOCKET ]] && podman --url "unix://$SOCKET" version >/dev/null 2>&1
}

start_service() {
    if service_up; then
        log "podman API already listening on $SOCKET"
        return
    fi
    mkdir -p "$(dirname "$SOCKET")" "$CACHE"
    rm -f "$SOCKET"
    log "starting podman system service on $SOCKET (log: $CACHE/service.log)"
    setsid nohup podman system service --time=0 "unix://$SOCKET" >"$CACHE/service.log" 2>&1 </dev/null &
    echo $! >"$CACHE/service.pid"
    for _ in $(seq 50); do
        service_up && return
        sleep 0.2
    done
    die "podman system service did not come up; see $CACHE/service.log"
}

smoke_test() {
    podman run --rm --network host "$BASE" python3 -c 'import venv' \
        || die "a container of $BASE does not start; see the settings in $CONF"
}

main() {
    install_packages
    write_settings
    build_base
    smoke_test
    start_service
    log "ready: podman $(podman version --format '{{.Client.Version}}'), base $BASE"
    printf 'export DOCKER_HOST=unix://%s\nexport BASE_IMAGE=%s\n' "$SOCKET" "$BASE"
}

main "$@"
