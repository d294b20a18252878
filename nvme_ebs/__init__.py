"""EBS and EC2 instance-store NVMe statistics (log page 0xD0) through a small C core.

import nvme_ebs
for d in nvme_ebs.discover():
    if d.kind is nvme_ebs.VolumeKind.EBS:
        stats = nvme_ebs.DeviceNode(d.controller_path).read_stats()
        print(d.volume_id, stats.total_read_ops, stats.volume_queue_length)
"""

from ._native import parse_identify, parse_log_page, set_command_timeout
from ._version import __version__
from .device import DeviceNode
from .discovery import discover
from .errors import (
    DeviceGoneError,
    DeviceNotFoundError,
    DeviceOSError,
    DevicePermissionError,
    NotAnEbsVolumeError,
    NotNvmeDeviceError,
    NvmeEbsError,
    NvmeStatusError,
    PageFormatError,
)
from .model import (
    ControllerIdentity,
    EbsStats,
    LatencyBin,
    LatencyHistogram,
    NvmeController,
    PageKind,
    VolumeKind,
    volume_id_from_serial,
)

__all__ = [
    "ControllerIdentity",
    "DeviceGoneError",
    "DeviceNode",
    "DeviceNotFoundError",
    "DeviceOSError",
    "DevicePermissionError",
    "EbsStats",
    "LatencyBin",
    "LatencyHistogram",
    "NotAnEbsVolumeError",
    "NotNvmeDeviceError",
    "NvmeController",
    "NvmeEbsError",
    "NvmeStatusError",
    "PageFormatError",
    "PageKind",
    "VolumeKind",
    "__version__",
    "discover",
    "parse_identify",
    "parse_log_page",
    "set_command_timeout",
    "volume_id_from_serial",
]

# Earlier names, kept importable for a while: each use warns once.
_RENAMED = {"NvmeDevice": "NvmeController", "Device": "DeviceNode", "open_device": "DeviceNode"}


def __getattr__(name: str) -> object:
    if name in _RENAMED:
        import warnings

        warnings.warn(f"nvme_ebs.{name} is now nvme_ebs.{_RENAMED[name]}", DeprecationWarning, stacklevel=2)
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module 'nvme_ebs' has no attribute {name!r}")
