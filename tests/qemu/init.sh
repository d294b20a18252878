#!/bin/sh
# /init of the kernel-test initramfs (busybox sh, PID 1). Copied verbatim by
# tests/qemu/harness.py; the run's parameters come from the kernel command line:
#   ebsq_tag=HEX      the run's unique tag; result lines start with "@@EBSQ-HEX@@ "
#   ebsq_run=PATH     host script to run, chrooted into an overlay of the host's root
# Whatever happens, the guest ends with "poweroff -f" so QEMU exits.

/bin/busybox mkdir -p /proc /sys /dev /bin /sbin /usr/bin /usr/sbin
/bin/busybox mount -t devtmpfs devtmpfs /dev
# The initramfs has no /dev/console node of its own: reopen the console now.
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys

tag=unset
run=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        ebsq_tag=*) tag="${arg#ebsq_tag=}" ;;
        ebsq_run=*) run="${arg#ebsq_run=}" ;;
    esac
done

# One JSON object per line, prefixed so the host can pick it out of the console.
emit() {
    echo "@@EBSQ-${tag}@@ $1"
}

finish() {
    emit "{\"event\": \"poweroff\", \"stage\": \"$1\", \"uptime\": \"$(cut -d' ' -f1 /proc/uptime)\"}"
    sync
    poweroff -f
    sleep 30
}

failed=
while read -r ko; do
    [ -n "$ko" ] || continue
    insmod "/lib/modules/$ko" 2>/dev/null || failed="$failed $ko"
done </etc/ebsq-modules
emit "{\"event\": \"modules\", \"failed\": \"${failed# }\"}"

# The PCI probe of the NVMe controller is asynchronous.
i=0
while [ ! -b /dev/nvme0n1 ] && [ "$i" -lt 200 ]; do
    sleep 0.05
    i=$((i + 1))
done
if [ -b /dev/nvme0n1 ]; then nvme=present; else nvme=missing; fi
emit "{\"event\": \"nvme\", \"state\": \"$nvme\", \"polls\": $i}"

mkdir -p /host /ovl /newroot
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=524288 hostroot /host; then
    emit '{"event": "error", "stage": "mount-9p"}'
    finish mount-9p
fi
mount -t tmpfs -o mode=0755 tmpfs /ovl
mkdir -p /ovl/upper /ovl/work
if ! mount -t overlay overlay -o lowerdir=/host,upperdir=/ovl/upper,workdir=/ovl/work /newroot; then
    emit '{"event": "error", "stage": "mount-overlay"}'
    finish mount-overlay
fi
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
# No tmpfs over /tmp: the checkout (and its venv) may live there; the overlay is writable anyway.
mount -t tmpfs tmpfs /newroot/run
mount -t configfs configfs /newroot/sys/kernel/config || emit '{"event": "error", "stage": "configfs"}'
ip link set lo up || emit '{"event": "error", "stage": "loopback"}'

if [ -z "$run" ] || [ ! -f "/newroot$run" ]; then
    emit "{\"event\": \"error\", \"stage\": \"guest-script-missing\"}"
    finish guest-script-missing
fi
emit "{\"event\": \"chroot\", \"uptime\": \"$(cut -d' ' -f1 /proc/uptime)\"}"
chroot /newroot /bin/sh "$run"
emit "{\"event\": \"guest-exit\", \"rc\": $?}"
finish done
