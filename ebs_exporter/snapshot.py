"""What one collection hands to the renderers: plain values, no exposition text."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from nvme_ebs import EbsStats

from .metrics import HISTOGRAMS
from .volumes import VolumeState
from .wrap import Offsets, totals


@dataclass(frozen=True)
class VolumeSample:
    """One successful read, and what keeps its histograms monotonic across 32-bit wraps."""

    state: VolumeState
    stats: EbsStats
    # What wrapping added to each bin, for the histograms where a bin has wrapped (keyed by
    # EbsStats field; the C renderer adds it to the page's own counts).
    offsets: dict[str, Offsets] = field(default_factory=dict)

    @cached_property
    def histogram_counts(self) -> dict[str, list[int]]:
        """The histograms' monotonic bin totals, keyed by EbsStats field (made only when asked:
        the C renderer works from the page and the offsets)."""
        return {
            family.field: totals(getattr(self.stats, family.field).counts, self.offsets.get(family.field))
            for family in HISTOGRAMS
        }


@dataclass(frozen=True)
class DeviceHealth:
    name: str
    up: bool
    errors: dict[str, int]  # the volume state's own counts, which it replaces and never changes


@dataclass(frozen=True)
class Snapshot:
    samples: list[VolumeSample]
    health: list[DeviceHealth]
    devices_by_kind: dict[str, int]
    duration_seconds: float
