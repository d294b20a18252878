"""Finds NVMe controllers and their namespaces through sysfs alone (no ioctl, no privilege)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from .model import NvmeDevice, VolumeKind

_CONTROLLER = re.compile(r"nvme([0-9]+)")
_NAMESPACE = re.compile(r"nvme([0-9]+)n([0-9]+)")
# Native multipath: the controller holds hidden per-path nodes nvme<subsys>c<ctrl>n<ns>.
_PATH_NAMESPACE = re.compile(r"nvme([0-9]+)c[0-9]+n([0-9]+)")
_ATTR_LIMIT = 256


def _read_attr(directory: Path, name: str) -> str:
    """A short attribute file; anything but a regular file (a FIFO in a crafted tree) reads as empty."""
    try:
        fd = os.open(directory / name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return os.read(fd, _ATTR_LIMIT).decode("ascii", "replace").strip()
    except OSError:
        return ""
    finally:
        os.close(fd)


def _natural(name: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"[0-9]+", name))


def _entries(directory: Path, pattern: re.Pattern[str]) -> list[str]:
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted((n for n in names if pattern.fullmatch(n)), key=_natural)


def _subsystem_namespaces(sysfs: Path, controller: str) -> list[str] | None:
    """The namespace heads of the subsystem that holds `controller`, if one does."""
    root = sysfs / "class" / "nvme-subsystem"
    try:
        subsystems = os.listdir(root)
    except OSError:
        return None
    for subsystem in subsystems:
        if os.path.lexists(root / subsystem / controller):
            return _entries(root / subsystem, _NAMESPACE)
    return None


def _namespaces(sysfs: Path, controller_dir: Path, controller: str) -> list[str]:
    classic = _entries(controller_dir, _NAMESPACE)
    if classic:
        return classic
    paths = _entries(controller_dir, _PATH_NAMESPACE)
    if not paths:
        return []
    heads = _subsystem_namespaces(sysfs, controller)
    if heads is not None:
        return heads
    # No subsystem directory to ask: derive the head's name from the path node's.
    derived = (_PATH_NAMESPACE.fullmatch(p) for p in paths)
    return sorted({f"nvme{m.group(1)}n{m.group(2)}" for m in derived if m}, key=_natural)


def discover(sysfs: str = "/sys", dev: str = "/dev") -> list[NvmeDevice]:
    """Every NVMe controller under `sysfs`, classified by model, with device paths under `dev`.

    Only names of the kernel's own shape (nvme<N>, nvme<N>n<M>) are taken, so a crafted
    sysfs tree cannot steer a later open() outside `dev`.
    """
    sysfs_root = Path(sysfs)
    class_dir = sysfs_root / "class" / "nvme"
    devices = []
    for controller in _entries(class_dir, _CONTROLLER):
        cdir = class_dir / controller
        model = _read_attr(cdir, "model")
        namespaces = tuple(_namespaces(sysfs_root, cdir, controller))
        devices.append(
            NvmeDevice(
                controller=controller,
                controller_path=os.path.join(dev, controller),
                namespaces=namespaces,
                block_device=os.path.join(dev, namespaces[0]) if namespaces else None,
                model=model,
                serial=_read_attr(cdir, "serial"),
                firmware=_read_attr(cdir, "firmware_rev"),
                kind=VolumeKind.from_model(model),
                transport=_read_attr(cdir, "transport") or "pcie",
            )
        )
    return devices
