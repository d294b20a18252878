"""Where volumes come from: the host's sysfs and device nodes, or the simulator.

A source finds devices (cheap, every scrape) and reads them (one admin command each).
"""

from __future__ import annotations

import os
from typing import Protocol

import nvme_ebs
import nvme_ebs.discovery
from nvme_ebs import ControllerIdentity, EbsStats, NvmeController


class Source(Protocol):
    # True when reads block outside the GIL (ioctls) and gain from running side by side.
    parallel_reads: bool

    def check(self) -> None:
        """Raises OSError, naming the path, when the source cannot work (readiness)."""

    def discover(self) -> list[NvmeController]: ...

    def read_stats(self, device: NvmeController) -> EbsStats: ...

    def identify(self, device: NvmeController) -> ControllerIdentity: ...


def ioctl_path(device: NvmeController) -> str:
    """The node the admin commands go to: the controller's character device, which every
    layout has (the namespace node of a multipath head may sit elsewhere)."""
    return device.controller_path


class HostSource:
    """Real devices: discovery through sysfs, statistics through the NVMe admin ioctl."""

    parallel_reads = True

    def __init__(self, sysfs: str = "/sys", dev: str = "/dev") -> None:
        self.sysfs = sysfs
        self.dev = dev
        self._discovery = nvme_ebs.discovery.Discovery(sysfs, dev)

    def check(self) -> None:
        """sysfs must be readable; a node without NVMe (no class/nvme) is fine, an unreadable one is not."""
        os.listdir(os.path.join(self.sysfs, "class"))
        nvme = os.path.join(self.sysfs, "class", "nvme")
        if os.path.lexists(nvme):
            os.listdir(nvme)
        os.listdir(self.dev)

    def discover(self) -> list[NvmeController]:
        return self._discovery.scan()

    def read_stats(self, device: NvmeController) -> EbsStats:
        return nvme_ebs.DeviceNode(ioctl_path(device)).read_stats()

    def identify(self, device: NvmeController) -> ControllerIdentity:
        return nvme_ebs.DeviceNode(ioctl_path(device)).identify()
