"""The same families as render.py, built with prometheus_client's metric classes.

Used by `EbsCollector` (so the exporter's metrics can be registered in any prometheus_client
registry) and by the parity test that holds render.py to prometheus_client's output.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import accumulate
from typing import Callable

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from nvme_ebs import PageKind

from . import metrics
from .collector import Snapshot, VolumeSample
from .render import info_labels

VOLUME_LABELS = ["volume_id", "device"]


def _histogram(name: str, help_text: str, samples: list[VolumeSample], write: bool) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, help_text, labels=VOLUME_LABELS)
    for s in samples:
        hist = s.stats.write_io_latency_histogram if write else s.stats.read_io_latency_histogram
        counts = s.write_counts if write else s.read_counts
        time_us = s.stats.total_write_time_us if write else s.stats.total_read_time_us
        cumulative = list(accumulate(counts))
        total = cumulative[-1] if cumulative else 0
        closed = hist.upper_us[:-1] if hist.open_ended else hist.upper_us
        buckets: list[tuple[str, float]] = [(metrics.le_label(u), c) for u, c in zip(closed, cumulative)]
        buckets.append(("+Inf", total))
        family.add_metric([s.state.volume_id, s.state.name], buckets, time_us / metrics.MICROS)
    return family


def families(snapshot: Snapshot, version: str | None = None) -> Iterator[Metric]:
    for kind in PageKind:
        chosen = [s for s in snapshot.samples if s.stats.kind is kind]
        if not chosen:
            continue
        prefix = metrics.PREFIX[kind]
        for c in metrics.COUNTERS:
            counter = CounterMetricFamily(prefix + c.suffix, c.help, labels=VOLUME_LABELS)
            for s in chosen:
                value = getattr(s.stats, c.field)
                counter.add_metric([s.state.volume_id, s.state.name], value if c.divisor == 1 else value / c.divisor)
            yield counter
        gauge = GaugeMetricFamily(prefix + metrics.QUEUE_LENGTH[0], metrics.QUEUE_LENGTH[1], labels=VOLUME_LABELS)
        for s in chosen:
            gauge.add_metric([s.state.volume_id, s.state.name], s.stats.volume_queue_length)
        yield gauge
        yield _histogram(prefix + metrics.READ_LATENCY[0], metrics.READ_LATENCY[1], chosen, False)
        yield _histogram(prefix + metrics.WRITE_LATENCY[0], metrics.WRITE_LATENCY[1], chosen, True)
    if snapshot.samples:
        info = InfoMetricFamily(metrics.INFO[0], metrics.INFO[1], labels=[])
        for s in snapshot.samples:
            info.add_metric([], info_labels(s.state))
        yield info
    if snapshot.health:
        up = GaugeMetricFamily(metrics.UP[0], metrics.UP[1], labels=["device"])
        for h in snapshot.health:
            up.add_metric([h.name], int(h.up))
        yield up
    errors = [(h.name, r, n) for h in snapshot.health for r, n in sorted(h.errors.items())]
    if errors:
        counter = CounterMetricFamily(metrics.ERRORS[0], metrics.ERRORS[1], labels=["device", "reason"])
        for device, reason, n in errors:
            counter.add_metric([device, reason], n)
        yield counter
    devices = GaugeMetricFamily(metrics.DEVICES[0], metrics.DEVICES[1], labels=["kind"])
    for kind_name, n in snapshot.devices_by_kind.items():
        devices.add_metric([kind_name], n)
    yield devices
    yield GaugeMetricFamily(metrics.DURATION[0], metrics.DURATION[1], value=snapshot.duration_seconds)
    if version is not None:
        yield InfoMetricFamily(metrics.BUILD_INFO[0], metrics.BUILD_INFO[1], value={"version": version})


class EbsCollector(Collector):
    """A prometheus_client collector over a snapshot source (each collect() takes a fresh one)."""

    def __init__(self, snapshots: Callable[[], Snapshot], version: str | None = None) -> None:
        self.snapshots = snapshots
        self.version = version

    def collect(self) -> Iterable[Metric]:
        return list(families(self.snapshots(), self.version))
