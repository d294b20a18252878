"""An in-memory Source for collector and renderer tests: pages given by the test, decoded by the C decoder."""

from __future__ import annotations

from dataclasses import dataclass, field

import nvme_ebs
from nvme_ebs import ControllerIdentity, EbsStats, NvmeController, VolumeKind
from nvme_ebs import testing as pg
from nvme_ebs.model import EBS_MODEL, INSTANCE_STORE_MODEL

# The model string each kind of controller reports (OTHER: the one QEMU's emulated controller has).
MODELS = {
    VolumeKind.EBS: EBS_MODEL,
    VolumeKind.INSTANCE_STORE: INSTANCE_STORE_MODEL,
    VolumeKind.OTHER: "QEMU NVMe Ctrl",
}


@dataclass
class FakeVolume:
    controller: str
    serial: str
    kind: VolumeKind = VolumeKind.EBS
    page: bytes | Exception = b""
    mapping: str = "sdf"

    def device(self) -> NvmeController:
        model = MODELS[self.kind]
        return NvmeController(
            self.controller,
            f"mem:{self.controller}",
            (f"{self.controller}n1",),
            None,
            model,
            self.serial,
            "1.0",
            self.kind,
            "pcie",
        )


@dataclass
class PageSource:
    volumes: list[FakeVolume] = field(default_factory=list)
    parallel_reads: bool = False
    reads: int = 0

    def add(
        self,
        controller: str,
        serial: str,
        page: bytes | Exception,
        kind: VolumeKind = VolumeKind.EBS,
        mapping: str = "sdf",
    ) -> FakeVolume:
        volume = FakeVolume(controller, serial, kind, page, mapping)
        self.volumes.append(volume)
        return volume

    def find(self, controller: str) -> FakeVolume | None:
        return next((v for v in self.volumes if v.controller == controller), None)

    def check(self) -> None:
        pass

    def discover(self) -> list[NvmeController]:
        return [v.device() for v in self.volumes]

    def read_stats(self, device: NvmeController) -> EbsStats:
        self.reads += 1
        volume = self.find(device.controller)
        assert volume is not None
        if isinstance(volume.page, Exception):
            raise volume.page
        return nvme_ebs.parse_log_page(volume.page, device.controller_path)

    def identify(self, device: NvmeController) -> ControllerIdentity:
        volume = self.find(device.controller)
        assert volume is not None
        return nvme_ebs.parse_identify(pg.encode_identify(volume.serial, device.model, "1.0", volume.mapping))


def histogram_bins(num_bins: int, seed: int = 1, open_last: bool = True) -> list[tuple[int, int, int]]:
    return [
        (lo, hi, (i * 7919 + seed) % 100_000) for i, (lo, hi) in enumerate(pg.power_of_two_bounds(num_bins, open_last))
    ]


def stats_page(seed: int = 1, num_bins: int = 28, magic: int = pg.MAGIC_EBS, open_last: bool = True) -> bytes:
    counters = {name: (i + 1) * 1_000_003 * seed for i, name in enumerate(pg.COUNTER_FIELDS)}
    reads = histogram_bins(num_bins, seed, open_last)
    writes = histogram_bins(num_bins, seed + 1, open_last)
    return pg.encode_stats_page(counters, reads, writes, magic=magic)
