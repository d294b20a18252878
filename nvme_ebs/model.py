"""The typed values nvme_ebs returns: frozen dataclasses keeping the page's raw integers."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar, overload

EBS_MODEL = "Amazon Elastic Block Store"
INSTANCE_STORE_MODEL = "Amazon EC2 NVMe Instance Storage"
AMAZON_VID = 0x1D0F
# What the page writes as the upper bound of an open-ended last bin.
OPEN_UPPER_BOUNDS = (0, (1 << 64) - 1)


class VolumeKind(str, enum.Enum):
    """What an NVMe controller is, judged by its model string."""

    EBS = "ebs"
    INSTANCE_STORE = "instance_store"
    OTHER = "other"

    @classmethod
    def from_model(cls, model: str) -> VolumeKind:
        model = model.strip()
        if model == EBS_MODEL:
            return cls.EBS
        if model == INSTANCE_STORE_MODEL:
            return cls.INSTANCE_STORE
        return cls.OTHER


def volume_id_from_serial(serial: str) -> str | None:
    """EBS serials are the volume id without its dash: vol0123... -> vol-0123..."""
    serial = serial.strip()
    if not serial.startswith("vol") or len(serial) < 4:
        return None
    return serial if serial[3] == "-" else f"vol-{serial[3:]}"


@dataclass(frozen=True)
class LatencyBin:
    """I/Os whose latency fell in [lower_us, upper_us); the last bin may be open-ended."""

    lower_us: int
    upper_us: int
    count: int


@dataclass(frozen=True)
class LatencyHistogram(Sequence[LatencyBin]):
    """A latency histogram kept as columns (cheap to build), readable as a sequence of bins."""

    lower_us: tuple[int, ...]
    upper_us: tuple[int, ...]
    counts: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.counts)

    @overload
    def __getitem__(self, index: int) -> LatencyBin: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[LatencyBin]: ...

    def __getitem__(self, index: int | slice) -> LatencyBin | Sequence[LatencyBin]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return LatencyBin(self.lower_us[index], self.upper_us[index], self.counts[index])

    def __iter__(self) -> Iterator[LatencyBin]:
        return map(LatencyBin, self.lower_us, self.upper_us, self.counts)

    @property
    def open_ended(self) -> bool:
        """True when the last bin has no upper bound (the page writes 0 or all ones)."""
        return bool(self.counts) and self.upper_us[-1] in OPEN_UPPER_BOUNDS


class PageKind(str, enum.Enum):
    """Which statistics page the magic announced."""

    EBS = "ebs"
    INSTANCE_STORE = "instance_store"


@dataclass(frozen=True)
class EbsStats:
    """The statistics page (log 0xD0). Times in microseconds, as the page has them."""

    kind: PageKind
    version: int
    total_read_ops: int
    total_write_ops: int
    total_read_bytes: int
    total_write_bytes: int
    total_read_time_us: int
    total_write_time_us: int
    ebs_volume_performance_exceeded_iops_us: int
    ebs_volume_performance_exceeded_tp_us: int
    ec2_instance_ebs_performance_exceeded_iops_us: int
    ec2_instance_ebs_performance_exceeded_tp_us: int
    volume_queue_length: int
    read_io_latency_histogram: LatencyHistogram
    write_io_latency_histogram: LatencyHistogram
    # The C decoder's struct these values came from, set on the instance by nvme_ebs._native
    # (None otherwise): the exporter writes its text straight from it. Not a field, so not part
    # of the value: equality, repr, asdict() and replace() leave it out.
    decoded: ClassVar[object] = None


@dataclass(frozen=True)
class ControllerIdentity:
    """Fields of Identify Controller that matter here, padding removed."""

    vid: int
    ssvid: int
    serial: str
    model: str
    firmware: str
    block_device_mapping: str | None

    @property
    def volume_id(self) -> str | None:
        return volume_id_from_serial(self.serial)

    @property
    def kind(self) -> VolumeKind:
        return VolumeKind.from_model(self.model)


@dataclass(frozen=True)
class NvmeController:
    """An NVMe controller found in sysfs, with the namespace block devices it serves."""

    controller: str
    controller_path: str
    namespaces: tuple[str, ...]
    block_device: str | None
    model: str
    serial: str
    firmware: str
    kind: VolumeKind
    transport: str

    @property
    def volume_id(self) -> str | None:
        return volume_id_from_serial(self.serial) if self.kind is VolumeKind.EBS else None

    @property
    def name(self) -> str:
        """The name people know the volume by: its first namespace, else the controller."""
        return self.namespaces[0] if self.namespaces else self.controller
