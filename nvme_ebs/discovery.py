"""Finds NVMe controllers and their namespaces through sysfs alone (no ioctl, no privilege)."""

from __future__ import annotations

import os
import re
import stat
from typing import Callable

from .model import NvmeController, VolumeKind

_CONTROLLER = re.compile(r"nvme([0-9]+)")
_NAMESPACE = re.compile(r"nvme([0-9]+)n([0-9]+)")
# Native multipath: the controller holds hidden per-path nodes nvme<subsys>c<ctrl>n<ns>.
_PATH_NAMESPACE = re.compile(r"nvme([0-9]+)c[0-9]+n([0-9]+)")
_ATTR_LIMIT = 256


def _read_attr(directory: str, name: str) -> str:
    """A short attribute file; anything but a regular file (a FIFO in a crafted tree) reads as empty."""
    try:
        fd = os.open(f"{directory}/{name}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
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


def _entries(directory: str, pattern: re.Pattern[str]) -> list[str]:
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted((n for n in names if pattern.fullmatch(n)), key=_natural)


def _resolved(path: str) -> str:
    """Where `path` really is, resolved by the kernel (one open, one readlink); realpath() as
    a fallback where /proc is missing. Both follow every symlink on the way."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return os.path.realpath(path)
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)
    finally:
        os.close(fd)


def _inside(sysfs: str) -> Callable[[str], bool]:
    """A test of whether a path resolves (symlinks followed) to somewhere under `sysfs`."""
    prefix = _resolved(sysfs).rstrip("/") + "/"
    return lambda path: (_resolved(path) + "/").startswith(prefix)


def _subsystem_index(sysfs: str) -> dict[str, str]:
    """controller name -> the nvme-subsystem directory that holds it (the first one listed)."""
    root = f"{sysfs}/class/nvme-subsystem"
    index: dict[str, str] = {}
    inside = _inside(sysfs)
    try:
        subsystems = os.listdir(root)
    except OSError:
        return index
    for subsystem in subsystems:
        if not inside(f"{root}/{subsystem}"):
            continue
        try:
            names = os.listdir(f"{root}/{subsystem}")
        except OSError:
            continue
        for name in names:
            index.setdefault(name, f"{root}/{subsystem}")
    return index


def _namespaces(controller_dir: str, controller: str, subsystems: Callable[[], dict[str, str]]) -> list[str]:
    classic = _entries(controller_dir, _NAMESPACE)
    if classic:
        return classic
    paths = _entries(controller_dir, _PATH_NAMESPACE)
    if not paths:
        return []
    subsystem = subsystems().get(controller)
    if subsystem is not None:
        return _entries(subsystem, _NAMESPACE)
    # No subsystem directory to ask: derive the head's name from the path node's.
    derived = (_PATH_NAMESPACE.fullmatch(p) for p in paths)
    return sorted({f"nvme{m.group(1)}n{m.group(2)}" for m in derived if m}, key=_natural)


def discover(sysfs: str = "/sys", dev: str = "/dev") -> list[NvmeController]:
    """Every NVMe controller under `sysfs`, classified by model, with device paths under `dev`.

    Only names of the kernel's own shape (nvme<N>, nvme<N>n<M>) are taken, so a crafted
    sysfs tree cannot steer a later open() outside `dev`; and a controller whose directory
    resolves outside `sysfs` (the kernel's links all stay inside) is not read at all.
    """
    class_dir = f"{sysfs}/class/nvme"
    inside = _inside(sysfs)
    index: dict[str, str] | None = None

    def subsystems() -> dict[str, str]:  # listed once, and only if a multipath controller needs it
        nonlocal index
        if index is None:
            index = _subsystem_index(sysfs)
        return index

    devices = []
    for controller in _entries(class_dir, _CONTROLLER):
        cdir = f"{class_dir}/{controller}"
        if not inside(cdir):
            continue
        model = _read_attr(cdir, "model")
        namespaces = tuple(_namespaces(cdir, controller, subsystems))
        devices.append(
            NvmeController(
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
