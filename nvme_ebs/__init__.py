"""EBS and EC2 instance-store NVMe statistics (log page 0xD0) through a small C core.

import nvme_ebs
for d in nvme_ebs.discover():
    if d.kind is nvme_ebs.VolumeKind.EBS:
        stats = nvme_ebs.open_device(d.controller_path).read_stats()
        print(d.volume_id, stats.total_read_ops, stats.volume_queue_length)
"""

from ._native import parse_identify, parse_log_page
from .device import Device, open_device
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
    NvmeDevice,
    PageKind,
    VolumeKind,
    volume_id_from_serial,
)

__all__ = [
    "ControllerIdentity",
    "Device",
    "DeviceGoneError",
    "DeviceNotFoundError",
    "DeviceOSError",
    "DevicePermissionError",
    "EbsStats",
    "LatencyBin",
    "LatencyHistogram",
    "NotAnEbsVolumeError",
    "NotNvmeDeviceError",
    "NvmeDevice",
    "NvmeEbsError",
    "NvmeStatusError",
    "PageFormatError",
    "PageKind",
    "VolumeKind",
    "discover",
    "open_device",
    "parse_identify",
    "parse_log_page",
    "volume_id_from_serial",
]
