"""Fake sysfs trees for discovery and exporter tests.

The tree looks like the kernel's: /sys/class/nvme/nvmeX is a symlink into
/sys/devices/..., attributes are padded the way the driver prints them, and with
native multipath the namespace heads live under /sys/class/nvme-subsystem/ while the
controller only holds hidden path nodes nvme<subsys>c<ctrl>n<nsid>.

    tree = SysfsTree(tmp_path / "sys")
    tree.add_controller("nvme0", EBS_MODEL, "vol0123456789abcdef0")
    tree.add_controller("nvme3", EBS_MODEL, "vol0fedcba9876543210", multipath_subsystem=2)
    nvme_ebs.discover(str(tree.root), "/host/dev")
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

EBS_MODEL = "Amazon Elastic Block Store"
INSTANCE_STORE_MODEL = "Amazon EC2 NVMe Instance Storage"
OTHER_MODEL = "Samsung SSD 980 PRO 1TB"
EBS_SERIAL = "vol0123456789abcdef0"
INSTANCE_STORE_SERIAL = "AWS1234567890ABCDEF"
OTHER_SERIAL = "S6B0NL0T123456K"

_CONTROLLER_NAME = re.compile(r"nvme([0-9]+)")


def _pad(value: str, width: int) -> str:
    """What the driver prints: the identify field with its space padding, then a newline."""
    return value.ljust(width) + "\n"


class SysfsTree:
    """Builds a fake sysfs under `root`; `root` is what discover() takes as its sysfs path."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.class_dir = self.root / "class" / "nvme"
        self.subsystem_class_dir = self.root / "class" / "nvme-subsystem"
        self._pci = self.root / "devices" / "pci0000:00"
        self._next_slot = 0x1B
        self.class_dir.mkdir(parents=True, exist_ok=True)

    def add_controller(
        self,
        name: str,
        model: str,
        serial: str,
        *,
        namespaces: Sequence[int] = (1,),
        multipath_subsystem: int | None = None,
        firmware: str = "1.0",
        transport: str = "pcie",
    ) -> Path:
        """Adds controller `name` (nvme<N>) serving namespaces with the given ids.

        Without `multipath_subsystem` the namespaces appear as nvme<N>n<nsid> inside the
        controller. With it, the heads nvme<S>n<nsid> go under nvme-subsys<S> and the
        controller gets the path nodes nvme<S>c<N>n<nsid>. Returns the controller's
        real directory (under devices/).
        """
        match = _CONTROLLER_NAME.fullmatch(name)
        if match is None:
            raise ValueError(f"not a controller name: {name!r}")
        instance = int(match.group(1))
        slot = f"0000:00:{self._next_slot:02x}.0"
        self._next_slot += 1
        cdir = self._pci / slot / "nvme" / name
        cdir.mkdir(parents=True)
        (cdir / "model").write_text(_pad(model, 40))
        (cdir / "serial").write_text(_pad(serial, 20))
        (cdir / "firmware_rev").write_text(_pad(firmware, 8))
        (cdir / "transport").write_text(transport + "\n")
        (cdir / "dev").write_text(f"241:{instance}\n")
        os.symlink(os.path.relpath(cdir, self.class_dir), self.class_dir / name)

        if multipath_subsystem is None:
            for nsid in namespaces:
                ns = cdir / f"{name}n{nsid}"
                ns.mkdir()
                (ns / "size").write_text("16777216\n")
            return cdir

        sdir = self.subsystem_dir(multipath_subsystem)
        (cdir / "subsysnqn").write_text(f"nqn.2014.08.org.nvmexpress:{multipath_subsystem}\n")
        os.symlink(os.path.relpath(cdir, sdir), sdir / name)
        for nsid in namespaces:
            path_node = cdir / f"nvme{multipath_subsystem}c{instance}n{nsid}"
            path_node.mkdir()
            (path_node / "size").write_text("16777216\n")  # the hidden path disk has attributes too
            head = sdir / f"nvme{multipath_subsystem}n{nsid}"
            head.mkdir(exist_ok=True)  # another controller of the subsystem may have made it
            (head / "size").write_text("16777216\n")
        return cdir

    def subsystem_dir(self, instance: int) -> Path:
        """The real directory of nvme-subsys<instance>, created with its class symlink."""
        sdir = self.root / "devices" / "virtual" / "nvme-subsystem" / f"nvme-subsys{instance}"
        if not sdir.is_dir():
            sdir.mkdir(parents=True)
            self.subsystem_class_dir.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(sdir, self.subsystem_class_dir), self.subsystem_class_dir / sdir.name)
        return sdir

    def controller_dir(self, name: str) -> Path:
        """The class entry of controller `name` (a symlink to its device directory)."""
        return self.class_dir / name

    def set_attr(self, controller: str, attr: str, value: str | bytes) -> None:
        path = self.controller_dir(controller) / attr
        if isinstance(value, bytes):
            path.write_bytes(value)
        else:
            path.write_text(value)

    def remove_attr(self, controller: str, attr: str) -> None:
        (self.controller_dir(controller) / attr).unlink()

    def add_ebs(
        self,
        name: str,
        serial: str = EBS_SERIAL,
        *,
        namespaces: Sequence[int] = (1,),
        multipath_subsystem: int | None = None,
    ) -> Path:
        return self.add_controller(
            name, EBS_MODEL, serial, namespaces=namespaces, multipath_subsystem=multipath_subsystem
        )

    def add_instance_store(
        self,
        name: str,
        serial: str = INSTANCE_STORE_SERIAL,
        *,
        namespaces: Sequence[int] = (1,),
        multipath_subsystem: int | None = None,
    ) -> Path:
        return self.add_controller(
            name, INSTANCE_STORE_MODEL, serial, namespaces=namespaces, multipath_subsystem=multipath_subsystem
        )

    def add_other(self, name: str, serial: str = OTHER_SERIAL, *, namespaces: Sequence[int] = (1,)) -> Path:
        return self.add_controller(name, OTHER_MODEL, serial, namespaces=namespaces, firmware="3B2QGXA7")
