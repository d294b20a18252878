"""The volumes the kernel tests serve, and the page files that describe them.

Built here, deterministically, so that the guest (which serves them) and the host-side
assertions (which check what came back through the kernel) use the very same bytes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from nvme_ebs.model import EBS_MODEL, INSTANCE_STORE_MODEL
from nvme_ebs.testing import (
    COUNTER_FIELDS,
    MAGIC_EBS,
    MAGIC_INSTANCE_STORE,
    encode_identify,
    encode_stats_page,
    power_of_two_bounds,
)

U32_MAX = 0xFFFFFFFF


@dataclasses.dataclass(frozen=True)
class EmulatedVolume:
    serial: str
    model: str = EBS_MODEL
    mapping: str = "sdf"
    seed: int = 1  # makes each volume's counters its own
    version: int = 1

    @property
    def magic(self) -> int:
        return MAGIC_INSTANCE_STORE if self.model == INSTANCE_STORE_MODEL else MAGIC_EBS

    def counters(self) -> dict[str, int]:
        return {name: self.seed * 1_000_003 + i * 7919 for i, name in enumerate(COUNTER_FIELDS)}

    def read_bins(self) -> list[tuple[int, int, int]]:
        """28 bins, every fifth count at the 32-bit maximum."""
        counts = [U32_MAX if i % 5 == 0 else self.seed * 100 + i for i in range(28)]
        return [(lo, hi, c) for (lo, hi), c in zip(power_of_two_bounds(28), counts)]

    def write_bins(self) -> list[tuple[int, int, int]]:
        """64 bins (the most a page holds), some counts at the 32-bit maximum."""
        counts = [U32_MAX if i % 7 == 3 else self.seed + i for i in range(64)]
        return [(lo, hi, c) for (lo, hi), c in zip(power_of_two_bounds(64), counts)]

    def stats_page(self, magic: int | None = None) -> bytes:
        """Version != 0, the bins above, the counters of this volume's seed."""
        return encode_stats_page(
            self.counters(),
            self.read_bins(),
            self.write_bins(),
            magic=self.magic if magic is None else magic,
            version=self.version,
        )

    def identify_page(self) -> bytes:
        return encode_identify(self.serial, model=self.model, firmware="2.0", block_device_mapping=self.mapping)

    def write_files(self, pages: Path) -> None:
        (pages / f"{self.serial}.d0").write_bytes(self.stats_page())
        (pages / f"{self.serial}.id").write_bytes(self.identify_page())


# Connected at start: two EBS volumes and an instance-store one. HOTPLUG is connected
# after the first is disconnected, so that the kernel hands it the freed name.
EBS_A = EmulatedVolume("vol0aaaaaaaaaaaaaaa1", mapping="sdf", seed=1, version=1)
EBS_B = EmulatedVolume("vol0bbbbbbbbbbbbbbb2", mapping="xvdg", seed=2, version=3)
INSTANCE = EmulatedVolume("AWS1A2B3C4D5E6F7A8B9", model=INSTANCE_STORE_MODEL, mapping="ephemeral0", seed=3)
HOTPLUG = EmulatedVolume("vol0ccccccccccccccc3", mapping="sdh", seed=4, version=2)
VOLUMES = (EBS_A, EBS_B, INSTANCE, HOTPLUG)
FIRST_PORT = 4430


def port_of(volume: EmulatedVolume) -> int:
    return FIRST_PORT + VOLUMES.index(volume)
