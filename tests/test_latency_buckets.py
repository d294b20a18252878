"""--collector.latency-buckets: fewer buckets, each still exact; both renderers agree; promtool passes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from exporter_harness import Exporter
from pagesource import PageSource, stats_page
from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest as text_latest
from prometheus_client.openmetrics.exposition import generate_latest as om_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families as text_parse

from ebs_exporter.client_families import EbsCollector
from ebs_exporter.collector import Collector
from ebs_exporter.metrics import LatencyBuckets
from ebs_exporter.render import Renderer, render
from ebs_exporter.snapshot import Snapshot
from nvme_ebs import VolumeKind
from nvme_ebs import testing as pg

MODES = ["all", "coarse", "none", "3", "64"]
LATENCY = "ebs_read_io_latency_seconds"


def _snapshot() -> Snapshot:
    source = PageSource()
    source.add("nvme1", "vol0aaaaaaaaaaaaaaaa", stats_page(1, 28))
    source.add("nvme2", "vol0bbbbbbbbbbbbbbbb", stats_page(2, 64, open_last=False))
    source.add("nvme3", "AWS0123456789", stats_page(3, 28, pg.MAGIC_INSTANCE_STORE), VolumeKind.INSTANCE_STORE)
    collector = Collector(source)
    return collector.collect()


def _render(snapshot: Snapshot, mode: str, openmetrics: bool = False) -> str:
    return Renderer(LatencyBuckets.parse(mode)).render(snapshot, openmetrics)


def _samples(families: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}  # type: ignore[attr-defined]


def _types(families: object) -> dict[str, str]:
    return {f.name: f.type for f in families}  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", MODES)
def test_both_renderers_agree_in_every_mode(mode: str) -> None:
    snapshot, buckets = _snapshot(), LatencyBuckets.parse(mode)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EbsCollector(lambda: snapshot, buckets=buckets))
    theirs_text, theirs_om = text_latest(registry).decode(), om_latest(registry).decode()
    ours_text = _render(snapshot, mode)
    ours_om = _render(snapshot, mode, openmetrics=True) + "# EOF\n"
    assert _samples(text_parse(ours_text)) == _samples(text_parse(theirs_text))
    assert _samples(om_parse(ours_om)) == _samples(om_parse(theirs_om))
    assert _types(om_parse(ours_om))[LATENCY] == ("summary" if mode == "none" else "histogram")


@pytest.mark.parametrize("mode", ["coarse", "3", "none"])
def test_kept_buckets_are_exact(mode: str) -> None:
    """Every bucket served in a coarser mode is one of the full mode's, with the same count."""
    snapshot = _snapshot()
    full = _samples(text_parse(render(snapshot)))
    fewer = _samples(text_parse(_render(snapshot, mode)))
    buckets = {k: v for k, v in fewer.items() if k[0].endswith("_bucket")}
    assert all(full[k] == v for k, v in buckets.items())
    for suffix in ("_count", "_sum"):  # unchanged in every mode
        assert {k: v for k, v in fewer.items() if k[0].endswith(suffix)} == {
            k: v for k, v in full.items() if k[0].endswith(suffix)
        }

    def per_volume(served: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, int]:
        counts = {dict(k[1])["device"]: 0 for k in full if k[0] == f"{LATENCY}_bucket"}
        for k in served:
            if k[0] == f"{LATENCY}_bucket":
                counts[dict(k[1])["device"]] += 1
        return counts

    full_per_volume, kept = per_volume(full), per_volume(buckets)
    if mode == "none":
        assert set(kept.values()) == {0}
    else:
        merge = LatencyBuckets.parse(mode).merge
        for device, n in kept.items():  # every merge-th finite edge, and +Inf
            assert n == (full_per_volume[device] - 1) // merge + 1, device


@pytest.mark.parametrize("mode", ["coarse", "none"])
def test_the_exporter_serves_each_mode_and_promtool_passes(mode: str, check_metrics: Callable[[str], None]) -> None:
    with Exporter(["--simulate", "2", "--simulate.bins", "64", f"--collector.latency-buckets={mode}"]) as running:
        text = running.metrics()
    check_metrics(text)
    buckets = [line for line in text.splitlines() if line.startswith(f"{LATENCY}_bucket")]
    assert len(buckets) == (0 if mode == "none" else 2 * (63 // 4 + 1))
    assert f"# TYPE {LATENCY} {'summary' if mode == 'none' else 'histogram'}" in text


@pytest.mark.parametrize("text", ["0", "65", "some", "-1", ""])
def test_bad_values_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="want all, coarse, none"):
        LatencyBuckets.parse(text)
