#!/usr/bin/env bash
# A Debian 12 base image made here with debootstrap, for builds where no registry can be pulled.
#
#   scripts/image-base.sh ARCH     ARCH: amd64 or arm64; prints the image's name on stdout
#
# The image is named after a hash of this script (the recipe) and ARCH, and its root file
# system is kept as a tarball under $IMAGE_BASE_CACHE (default build/image-base/): a second run
# finds the image or re-imports the tarball; editing this script builds a new one. arm64 on
# another machine runs under qemu-user-static, registered with binfmt_misc (`binfmt` below).
# ENGINE names the engine (default podman).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ENGINE=${ENGINE:-podman}
CACHE=${IMAGE_BASE_CACHE:-$HERE/../build/image-base}
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
QEMU_BINFMT=/usr/lib/binfmt.d/qemu-aarch64.conf

fail() { echo "image-base: $*" >&2; exit 1; }

# Registers qemu-aarch64 with binfmt_misc when this machine is not arm64 itself. The F flag of
# Debian's entry opens the interpreter now, so it also serves inside containers.
binfmt() {
    [ "$(uname -m)" = aarch64 ] && return 0
    local dir=/proc/sys/fs/binfmt_misc
    [ -e "$dir/register" ] || mount -t binfmt_misc binfmt_misc "$dir" \
        || fail "cannot mount binfmt_misc on $dir (needs root)"
    [ -e "$dir/qemu-aarch64" ] && return 0
    [ -f "$QEMU_BINFMT" ] || fail "$QEMU_BINFMT missing: install qemu-user-static"
    cat "$QEMU_BINFMT" > "$dir/register" || fail "registering $QEMU_BINFMT with binfmt_misc failed"
}

main() {
    local arch=$1 recipe name tarball rootfs
    case "$arch" in amd64 | arm64) ;; *) fail "ARCH must be amd64 or arm64, not '$arch'" ;; esac
    command -v "$ENGINE" >/dev/null || fail "$ENGINE not found (make deps installs podman)"
    recipe=$(cat "${BASH_SOURCE[0]}" | sha256sum | cut -c1-12)
    name=localhost/ebs-exporter-base:debian12-$arch-$recipe
    if "$ENGINE" image exists "$name"; then
        echo "$name"
        return
    fi
    [ "$arch" = arm64 ] && binfmt
    mkdir -p "$CACHE"
    tarball=$CACHE/debian12-$arch-$recipe.tar
    if [ ! -f "$tarball" ]; then
        command -v debootstrap >/dev/null || fail "debootstrap not found (make deps installs it)"
        rootfs=$(mktemp -d "$CACHE/rootfs-$arch.XXXXXX")
        trap 'rm -rf "$rootfs"' EXIT
        echo "image-base: debootstrap $SUITE $arch (a few minutes, once)" >&2
        debootstrap --variant=minbase --arch="$arch" "$SUITE" "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 \
            || fail "debootstrap $SUITE $arch failed: $(tail -n 3 "$rootfs.log")"
        rm -f "$rootfs.log"
        cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
SOURCES
        # What debootstrap downloaded, and this machine's identity, stay out of the image.
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
        : >"$rootfs/etc/machine-id"
        rm -f "$rootfs/etc/hostname" "$rootfs/etc/resolv.conf"
        tar --numeric-owner --xattrs -C "$rootfs" -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
        trap - EXIT
    fi
    "$ENGINE" import --quiet --arch "$arch" --os linux --change 'CMD ["/bin/bash"]' "$tarball" "$name" >/dev/null \
        || fail "importing $tarball failed"
    echo "$name"
}

case "${1:-}" in
    amd64 | arm64) main "$1" ;;
    binfmt) binfmt ;;
    *) sed -n '4,5s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
esac
