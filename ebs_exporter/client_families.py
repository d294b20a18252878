"""The same families as render.py, built from metrics.py's table with prometheus_client's metric classes.

Used by `EbsCollector` (so the exporter's metrics can be registered in any prometheus_client
registry) and by the parity test that holds render.py to prometheus_client's output.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import accumulate
from typing import Callable

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from nvme_ebs import LatencyHistogram, PageKind

from . import metrics
from .metrics import Family
from .snapshot import Snapshot, VolumeSample

_SCALAR_CLASSES = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}


def _scalar(family: Family, kind: PageKind, samples: list[VolumeSample]) -> Metric:
    cls = _SCALAR_CLASSES[family.type]
    metric: CounterMetricFamily | GaugeMetricFamily = cls(family.full_name(kind), family.help, labels=family.labels)
    for s in samples:
        value = getattr(s.stats, family.field)
        metric.add_metric([s.state.volume_id, s.state.name], value if family.scale == 1 else value / family.scale)
    return metric


def _histogram(
    family: Family, kind: PageKind, samples: list[VolumeSample], kept: metrics.LatencyBuckets
) -> HistogramMetricFamily | SummaryMetricFamily:
    name = family.full_name(kind)
    if kept.as_summary:
        summary = SummaryMetricFamily(name, family.help, labels=family.labels)
        for s in samples:
            total = sum(s.histogram_counts[family.field])
            summary.add_metric(
                [s.state.volume_id, s.state.name], total, getattr(s.stats, family.sum_field) / family.scale
            )
        return summary
    metric = HistogramMetricFamily(name, family.help, labels=family.labels)
    for s in samples:
        hist: LatencyHistogram = getattr(s.stats, family.field)
        cumulative = list(accumulate(s.histogram_counts[family.field]))
        total = cumulative[-1] if cumulative else 0
        closed = hist.upper_us[:-1] if hist.open_ended else hist.upper_us
        buckets: list[tuple[str, float]] = [
            (metrics.le_label(closed[i]), cumulative[i]) for i in kept.kept(len(closed))
        ]
        buckets.append(("+Inf", total))
        metric.add_metric([s.state.volume_id, s.state.name], buckets, getattr(s.stats, family.sum_field) / family.scale)
    return metric


def families(
    snapshot: Snapshot,
    build: Mapping[str, str] | None = None,
    buckets: metrics.LatencyBuckets = metrics.ALL_BUCKETS,
) -> Iterator[Metric]:
    for kind in PageKind:
        chosen = [s for s in snapshot.samples if s.stats.kind is kind]
        if not chosen:
            continue
        for family in metrics.PAGE_FAMILIES:
            if family.type == "histogram":
                yield _histogram(family, kind, chosen, buckets)
            else:
                yield _scalar(family, kind, chosen)
    if snapshot.samples:
        info = InfoMetricFamily(metrics.VOLUME_INFO.name, metrics.VOLUME_INFO.help, labels=[])
        for s in snapshot.samples:
            info.add_metric([], s.state.info_labels())
        yield info
    if snapshot.health:
        up = GaugeMetricFamily(metrics.DEVICE_UP.name, metrics.DEVICE_UP.help, labels=metrics.DEVICE_UP.labels)
        for h in snapshot.health:
            up.add_metric([h.name], int(h.up))
        yield up
    errors = [(h.name, r, n) for h in snapshot.health for r, n in sorted(h.errors.items())]
    if errors:
        family = metrics.DEVICE_ERRORS
        counter = CounterMetricFamily(family.name, family.help, labels=family.labels)
        for device, reason, n in errors:
            counter.add_metric([device, reason], n)
        yield counter
    devices = GaugeMetricFamily(metrics.DEVICES.name, metrics.DEVICES.help, labels=metrics.DEVICES.labels)
    for kind_name, n in snapshot.devices_by_kind.items():
        devices.add_metric([kind_name], n)
    yield devices
    family = metrics.COLLECT_DURATION
    yield GaugeMetricFamily(family.name, family.help, value=snapshot.duration_seconds)
    if build is not None:
        family = metrics.BUILD_INFO
        yield InfoMetricFamily(family.name, family.help, value={k: build[k] for k in family.labels})


class EbsCollector(Collector):
    """A prometheus_client collector over a snapshot source (each collect() takes a fresh one)."""

    def __init__(
        self,
        snapshots: Callable[[], Snapshot],
        build: Mapping[str, str] | None = None,
        buckets: metrics.LatencyBuckets = metrics.ALL_BUCKETS,
    ) -> None:
        self.snapshots = snapshots
        self.build = build
        self.buckets = buckets

    def collect(self) -> Iterable[Metric]:
        return list(families(self.snapshots(), self.build, self.buckets))
