#!/usr/bin/env bash
# The container image's build steps, runnable without a container engine.
#
# The Dockerfile runs `packages` in both stages, `wheel` in its builder stage and
# `install` in its runtime stage; `all` runs the last three without an engine:
#
#   scripts/image-steps.sh packages ROLE        install the distribution packages of ROLE,
#                                                builder or runtime, with microdnf, dnf or
#                                                apt-get (inside the image only)
#   scripts/image-steps.sh wheel OUTDIR          build the project's wheel and fetch its
#                                                dependencies' wheels into OUTDIR
#                                                (needs a C compiler and the kernel headers)
#   scripts/image-steps.sh install WHEELDIR VENV create VENV and install from WHEELDIR only:
#                                                no index, no source builds, no pip left behind
#   scripts/image-steps.sh smoke VENV            run VENV's entrypoint as the image does,
#                                                scrape it once, check it with promtool, SIGTERM
#   scripts/image-steps.sh all [WORKDIR]         the three in a row (CI); WORKDIR is kept
#                                                if given, a temporary one is removed
#
# PYTHON names the interpreter (default python3; the image uses python3.12).
set -euo pipefail

PYTHON=${PYTHON:-python3}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROJECT=ebs-metrics-exporter
CLEANUP=()
cleanup() { if [ ${#CLEANUP[@]} -gt 0 ]; then rm -rf "${CLEANUP[@]}"; fi; }
trap cleanup EXIT

usage() {
    sed -n '7,19s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

# Package names follow $PYTHON: python3.12 on UBI 9, python3.11 on Debian 12. Not
# version-pinned: the base image's tag fixes the release, and its repositories move with the
# security errata, so an exact version would stop resolving at the next update.
step_packages() {
    local role=$1 rpm deb
    case "$role" in
        builder)
            rpm="gcc kernel-headers $PYTHON $PYTHON-devel"
            deb="gcc libc6-dev linux-libc-dev $PYTHON-dev $PYTHON-venv"
            ;;
        runtime)
            rpm="$PYTHON"
            deb="$PYTHON-venv"
            ;;
        *) usage ;;
    esac
    # shellcheck disable=SC2086 # the lists are word lists
    if command -v microdnf >/dev/null; then
        microdnf install -y --nodocs --setopt=install_weak_deps=0 $rpm
        microdnf clean all
    elif command -v dnf >/dev/null; then
        dnf install -y --nodocs --setopt=install_weak_deps=0 $rpm
        dnf clean all
    elif command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $deb
        apt-get clean
        rm -rf /var/lib/apt/lists/*
    else
        echo "image-steps: no microdnf, dnf or apt-get in this image" >&2
        return 1
    fi
}

step_wheel() {
    local out=$1 root tools
    # The build's optional pip-ca secret (Dockerfile): a proxy's CA bundle for pip.
    if [ -f /run/secrets/pip-ca ]; then
        export PIP_CERT=/run/secrets/pip-ca
    fi
    root=$(cd "$HERE/.." && pwd)
    mkdir -p "$out"
    out=$(cd "$out" && pwd)
    tools=$(mktemp -d)
    CLEANUP+=("$tools")
    "$PYTHON" -m venv "$tools"
    "$tools/bin/python" -m pip install --quiet --no-cache-dir -r "$HERE/requirements-build.txt"
    "$tools/bin/python" -m build --wheel --outdir "$out" "$root"
    local wheels
    shopt -s nullglob
    wheels=("$out"/ebs_metrics_exporter-*.whl)
    shopt -u nullglob
    if [ "${#wheels[@]}" -ne 1 ]; then
        echo "image-steps: want exactly one project wheel in $out, found ${#wheels[@]}" >&2
        return 1
    fi
    # Binary wheels of the dependencies for the same interpreter, so the install step
    # needs neither an index nor a compiler.
    "$tools/bin/python" -m pip wheel --quiet --no-cache-dir --only-binary=:all: --wheel-dir "$out" "${wheels[0]}"
    echo "image-steps: wheels in $out:"
    ls -l "$out"
}

step_install() {
    local wheeldir=$1 venv=$2
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -I -m pip install --quiet --no-cache-dir --no-index --only-binary=:all: \
        --find-links "$wheeldir" "$PROJECT"
    # The runtime needs no installer: one tool less in the image.
    "$venv/bin/python" -I -m pip uninstall --quiet --yes pip
    echo "image-steps: installed into $venv:"
    "$venv/bin/python" -I -c 'import importlib.metadata as m
for name, version in sorted((d.metadata["Name"], d.version) for d in m.distributions()):
    print("  %s==%s" % (name, version))'
}

step_smoke() {
    "$1/bin/python" -I "$HERE/smoke-exporter.py" "$1"
}

step_all() {
    local work
    if [ $# -ge 1 ]; then
        work=$1
        mkdir -p "$work"
    else
        work=$(mktemp -d)
        CLEANUP+=("$work")
    fi
    rm -rf "$work/wheels" "$work/venv"
    step_wheel "$work/wheels"
    step_install "$work/wheels" "$work/venv"
    step_smoke "$work/venv"
}

case "${1:-}" in
    packages) [ $# -eq 2 ] || usage; step_packages "$2" ;;
    wheel) [ $# -eq 2 ] || usage; step_wheel "$2" ;;
    install) [ $# -eq 3 ] || usage; step_install "$2" "$3" ;;
    smoke) [ $# -eq 2 ] || usage; step_smoke "$2" ;;
    all) [ $# -le 2 ] || usage; shift; step_all "$@" ;;
    *) usage ;;
esac
