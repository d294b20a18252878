#!/usr/bin/env bash
# Builds the Dockerfile with podman on a Debian 12 base made here (scripts/image-base.sh),
# for machines that cannot pull the UBI images.
#
#   scripts/image-local.sh ARCH [TAG]   ARCH: amd64 or arm64 (emulated on other machines);
#                                       TAG defaults to localhost/ebs-metrics-exporter:local
#                                       (amd64) or :local-arm64
#
# The build uses the host's network namespace (no bridge is created): its steps fetch Debian
# packages and PyPI wheels. CONTAINERS_CONF defaults to the repository's containers.conf.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/containers.conf}
LOCAL_PYTHON=python3.11  # Debian 12's

fail() { echo "image-local: $*" >&2; exit 1; }

arch=${1:-}
case "$arch" in
    amd64) tag=${2:-localhost/ebs-metrics-exporter:local} ;;
    arm64) tag=${2:-localhost/ebs-metrics-exporter:local-arm64} ;;
    *) sed -n '5,7s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
esac
command -v podman >/dev/null || fail "podman not found (make deps installs it)"
if ! err=$(podman info 2>&1 >/dev/null); then
    fail "the engine does not start (podman info): $(tail -n 1 <<<"$err")"
fi
base=$("$HERE/image-base.sh" "$arch") || fail "the Debian 12 base image ($arch) was not built"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml")
revision=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
# What the build context holds (as .dockerignore lets it through) and the Dockerfile.
digest=$(cd "$ROOT" && find Dockerfile pyproject.toml setup.py README.md csrc nvme_ebs ebs_exporter \
    scripts/image-steps.sh scripts/requirements-build.txt -type f \
    ! -path '*/__pycache__/*' ! -name '*.py[cod]' ! -name '*.so' ! -name '*.o' ! -name _nvme_ebs_c.c -print0 \
    | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
# pip in the build trusts what pip here trusts (a proxy's CA, say), through a build secret.
secret=()
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
    secret=(--secret "id=pip-ca,src=$PIP_CERT")
fi
mkdir -p "$ROOT/build"
log=$ROOT/build/image-local-$arch.log
start=$(date +%s)
podman build --network=host --platform "linux/$arch" "${secret[@]}" \
    --build-arg BUILDER_IMAGE="$base" --build-arg RUNTIME_IMAGE="$base" --build-arg PYTHON="$LOCAL_PYTHON" \
    --build-arg VERSION="$version" --build-arg REVISION="$revision" --build-arg SOURCE_DIGEST="$digest" \
    -t "$tag" "$ROOT" >"$log" 2>&1 \
    || fail "podman build of $tag on $base failed; the end of $log:
$(tail -n 25 "$log")"
echo "image-local: $tag ($arch, on $base) built in $(($(date +%s) - start)) s" >&2
