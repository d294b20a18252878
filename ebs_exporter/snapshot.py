"""What one collection hands to the renderers: plain values, no exposition text."""

from __future__ import annotations

from dataclasses import dataclass, field

from nvme_ebs import EbsStats

from .volumes import VolumeState


@dataclass(frozen=True)
class VolumeSample:
    """One successful read, with the histogram totals made monotonic (keyed by EbsStats field)."""

    state: VolumeState
    stats: EbsStats
    histogram_counts: dict[str, list[int]]
    # What wrapping added to each bin, for the histograms where a bin has wrapped (the C
    # renderer adds it to the page's own counts).
    offsets: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceHealth:
    name: str
    up: bool
    errors: dict[str, int]


@dataclass(frozen=True)
class Snapshot:
    samples: list[VolumeSample]
    health: list[DeviceHealth]
    devices_by_kind: dict[str, int]
    duration_seconds: float
