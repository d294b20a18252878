"""The direct renderer must produce exactly the samples prometheus_client would, in both formats."""

from __future__ import annotations

import pytest
from pagesource import PageSource, stats_page
from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest as text_latest
from prometheus_client.openmetrics.exposition import generate_latest as om_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families as text_parse

from ebs_exporter.client_families import EbsCollector
from ebs_exporter.collector import Collector
from ebs_exporter.render import render
from ebs_exporter.simulate import SimulatedSource
from ebs_exporter.snapshot import Snapshot
from nvme_ebs import NvmeStatusError, VolumeKind
from nvme_ebs import testing as pg

BUILD = {"version": "1.2.3", "revision": "0123abc", "python_version": "3.11.7"}


def _snapshot(num_bins: int) -> Snapshot:
    source = PageSource()
    for i in range(4):
        source.add(f"nvme{i + 1}", f"vol0{i:016x}", stats_page(i + 1, num_bins, open_last=i % 2 == 0))
    source.add("nvme7", "AWS0123456789", stats_page(9, num_bins, pg.MAGIC_INSTANCE_STORE), VolumeKind.INSTANCE_STORE)
    source.add("nvme8", 'vol0bad"label\\x', NvmeStatusError("/dev/nvme8", 2, 0x2109, "log"))
    source.add("nvme9", "vol0ffffffffffffffff", stats_page(3, 0))
    collector = Collector(source)
    collector.collect()
    return collector.collect()


def _families(families: object) -> dict[str, tuple[str, str, list[tuple[str, tuple[tuple[str, str], ...], float]]]]:
    out = {}
    for f in families:  # type: ignore[attr-defined]
        samples = sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in f.samples)
        out[f.name] = (f.type, f.documentation, samples)
    return out


def _registry(snapshot: Snapshot) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EbsCollector(lambda: snapshot, BUILD))
    return registry


@pytest.mark.parametrize("num_bins", [28, 64])
def test_text_format_matches_prometheus_client(num_bins: int) -> None:
    snapshot = _snapshot(num_bins)
    ours = _families(text_parse(render(snapshot, openmetrics=False, build=BUILD)))
    theirs = _families(text_parse(text_latest(_registry(snapshot)).decode()))
    assert ours == theirs
    # and it is not trivially equal: every kind of family is there
    assert {
        "ebs_read_ops",
        "ec2_instance_store_read_ops",
        "ebs_read_io_latency_seconds",
        "ebs_volume_info",
        "ebs_device_up",
        "ebs_device_errors",
        "ebs_devices",
        "ebs_exporter_build_info",
    } <= set(ours)
    assert len(ours["ebs_read_io_latency_seconds"][2]) > 4 * num_bins


@pytest.mark.parametrize("num_bins", [28, 64])
def test_openmetrics_matches_prometheus_client(num_bins: int) -> None:
    snapshot = _snapshot(num_bins)
    ours = _families(om_parse(render(snapshot, openmetrics=True, build=BUILD) + "# EOF\n"))
    theirs = _families(om_parse(om_latest(_registry(snapshot)).decode()))
    assert ours == theirs
    assert ours["ebs_volume"][0] == "info"


def test_simulated_volumes_match_too() -> None:
    collector = Collector(SimulatedSource(5, num_bins=64))
    snapshot = collector.collect()
    ours = _families(text_parse(render(snapshot)))
    theirs = _families(text_parse(text_latest(_registry(snapshot)).decode()))
    theirs.pop("ebs_exporter_build_info")
    assert ours == theirs
