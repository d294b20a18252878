"""Finds NVMe controllers and their namespaces through sysfs alone (no ioctl, no privilege).

`Discovery` remembers what it read: a controller whose sysfs directory is still the same one
(device, inode, times and link count), still holds its namespaces and still names the same
serial keeps its attributes from the last scan, so a steady node costs a stat per controller and
per namespace, and a read of the serial (through a descriptor kept open). sysfs keeps a
directory's times when entries come and go, but its link count is 2 + its subdirectories, and a
namespace is one: with the known ones still there, an unchanged count means no namespace came
or went. Where directories do not count their subdirectories (a crafted tree on a filesystem
that leaves the count at 1), it is listed instead.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from dataclasses import dataclass
from typing import Callable

from .model import NvmeController, VolumeKind

_CONTROLLER = re.compile(r"nvme([0-9]+)")
_NAMESPACE = re.compile(r"nvme([0-9]+)n([0-9]+)")
# Native multipath: the controller holds hidden per-path nodes nvme<subsys>c<ctrl>n<ns>.
_PATH_NAMESPACE = re.compile(r"nvme([0-9]+)c[0-9]+n([0-9]+)")
_ATTR_LIMIT = 256


def _open_attr(directory: str, name: str) -> int:
    """A descriptor of a short attribute file, or -1: anything but a regular file (a FIFO in a
    crafted tree) is not opened for reading."""
    try:
        fd = os.open(f"{directory}/{name}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return -1


def _pread_attr(fd: int) -> str:
    """The attribute's value now (sysfs answers a read at offset 0 afresh); empty for fd -1."""
    try:
        return os.pread(fd, _ATTR_LIMIT, 0).decode("ascii", "replace").strip()
    except OSError:  # the controller went away (ENODEV), or no file was opened (EBADF)
        return ""


def _read_attr(directory: str, name: str) -> str:
    """A short attribute file's value; anything but a regular file reads as empty."""
    fd = _open_attr(directory, name)
    if fd < 0:
        return ""
    try:
        return _pread_attr(fd)
    finally:
        os.close(fd)


def _natural(name: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"[0-9]+", name))


def _listing(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []


def _matching(names: list[str], pattern: re.Pattern[str]) -> list[str]:
    return sorted((n for n in names if pattern.fullmatch(n)), key=_natural)


def _entries(directory: str, pattern: re.Pattern[str]) -> list[str]:
    return _matching(_listing(directory), pattern)


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


def _namespaces(listing: list[str], controller: str, subsystems: Callable[[], dict[str, str]]) -> list[str]:
    classic = _matching(listing, _NAMESPACE)
    if classic:
        return classic
    paths = _matching(listing, _PATH_NAMESPACE)
    if not paths:
        return []
    subsystem = subsystems().get(controller)
    if subsystem is not None:
        return _entries(subsystem, _NAMESPACE)
    # No subsystem directory to ask: derive the head's name from the path node's.
    derived = (_PATH_NAMESPACE.fullmatch(p) for p in paths)
    return sorted({f"nvme{m.group(1)}n{m.group(2)}" for m in derived if m}, key=_natural)


def _entry(directory: str) -> tuple[int, int, int, int, int] | None:
    """What tells that a directory is still the one read: device, inode, times, link count."""
    try:
        st = os.stat(directory)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns, st.st_mtime_ns, st.st_nlink)


@dataclass(frozen=True)
class _Known:
    entry: tuple[int, int, int, int, int]  # _entry() of the directory
    listing: list[str]
    device: NvmeController
    serial_fd: int  # the serial attribute, kept open: a read is one call, not four; -1 if none

    def unchanged(self, cdir: str) -> bool:
        """The same namespaces (see the module docstring) and serial as when read."""
        if self.entry[4] < 2:  # no count of subdirectories to go by
            same = _listing(cdir) == self.listing
        else:
            same = all(os.path.isdir(f"{cdir}/{namespace}") for namespace in self.device.namespaces)
        return same and self.serial_fd >= 0 and _pread_attr(self.serial_fd) == self.device.serial

    def forget(self) -> None:
        if self.serial_fd >= 0:
            os.close(self.serial_fd)


class Discovery:
    """Scans `sysfs` as discover() does, reading again only what may have changed. It keeps a
    descriptor open per steady controller (its serial attribute) until the controller changes
    or close() is called; scans from several threads take turns."""

    def __init__(self, sysfs: str = "/sys", dev: str = "/dev") -> None:
        self.sysfs = sysfs
        self.dev = dev
        self._known: dict[str, _Known] = {}
        self._names: tuple[list[str], list[str]] = ([], [])  # class/nvme's listing, and its controllers in order
        # One scan at a time: a scan closes the descriptors of what changed, which another
        # scan must not be reading (a closed number can come back as another file).
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._forget_all()

    def __del__(self) -> None:
        if hasattr(self, "_known"):  # not when __init__ failed
            self._forget_all()

    def _forget_all(self) -> None:
        for known in self._known.values():
            known.forget()
        self._known = {}

    def scan(self) -> list[NvmeController]:
        """Every NVMe controller under `sysfs` (see discover())."""
        with self._lock:
            return self._scan()

    def _scan(self) -> list[NvmeController]:
        class_dir = f"{self.sysfs}/class/nvme"
        prefix: Callable[[str], bool] | None = None
        index: dict[str, str] | None = None

        def inside(path: str) -> bool:  # sysfs resolved once, and only if a controller is read again
            nonlocal prefix
            if prefix is None:
                prefix = _inside(self.sysfs)
            return prefix(path)

        def subsystems() -> dict[str, str]:  # listed once, and only if a multipath controller needs it
            nonlocal index
            if index is None:
                index = _subsystem_index(self.sysfs)
            return index

        known: dict[str, _Known] = {}
        devices = []
        names = _listing(class_dir)
        if names != self._names[0]:  # sorted again only when the set of controllers changed
            self._names = (names, _matching(names, _CONTROLLER))
        for controller in self._names[1]:
            cdir = f"{class_dir}/{controller}"
            entry = _entry(cdir)  # None: read as before, without remembering it
            last = self._known.get(controller)
            # The same directory as last time (so one found inside sysfs then).
            if last is not None and last.entry == entry and last.unchanged(cdir):
                known[controller] = last  # a name reused is a new serial, read again below
                devices.append(last.device)
                continue
            if not inside(cdir):
                continue
            listing = _listing(cdir)
            serial_fd = _open_attr(cdir, "serial")  # read now, and kept if the controller is remembered
            device = self._read(cdir, controller, listing, subsystems, _pread_attr(serial_fd))
            devices.append(device)
            if entry is not None and device.namespaces == tuple(_matching(listing, _NAMESPACE)):
                # (Multipath heads are listed elsewhere: not remembered.)
                known[controller] = _Known(entry, listing, device, serial_fd)
            elif serial_fd >= 0:
                os.close(serial_fd)
        for name, old in self._known.items():
            if known.get(name) is not old:
                old.forget()
        self._known = known
        return devices

    def _read(
        self,
        cdir: str,
        controller: str,
        listing: list[str],
        subsystems: Callable[[], dict[str, str]],
        serial: str,
    ) -> NvmeController:
        model = _read_attr(cdir, "model")
        namespaces = tuple(_namespaces(listing, controller, subsystems))
        return NvmeController(
            controller=controller,
            controller_path=os.path.join(self.dev, controller),
            namespaces=namespaces,
            block_device=os.path.join(self.dev, namespaces[0]) if namespaces else None,
            model=model,
            serial=serial,
            firmware=_read_attr(cdir, "firmware_rev"),
            kind=VolumeKind.from_model(model),
            transport=_read_attr(cdir, "transport") or "pcie",
        )


def discover(sysfs: str = "/sys", dev: str = "/dev") -> list[NvmeController]:
    """Every NVMe controller under `sysfs`, classified by model, with device paths under `dev`.

    Only names of the kernel's own shape (nvme<N>, nvme<N>n<M>) are taken, so a crafted
    sysfs tree cannot steer a later open() outside `dev`; and a controller whose directory
    resolves outside `sysfs` (the kernel's links all stay inside) is not read at all.
    """
    return Discovery(sysfs, dev).scan()
