"""Section 3: the same families through prometheus_client's own renderer, as the baseline.

The snapshot is taken once, in this process, from the simulator; both renderers then write it:
prometheus_client's `generate_latest` over a registry holding `ebs_exporter.client_families.EbsCollector`,
and the exporter's direct renderer `ebs_exporter.render.render` (encoded to bytes, as served).
"""

from __future__ import annotations

from dataclasses import dataclass

from measure import Summary, per_call
from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest as text_latest
from prometheus_client.openmetrics.exposition import generate_latest as om_latest

from ebs_exporter import build_info
from ebs_exporter.client_families import EbsCollector
from ebs_exporter.collector import Collector
from ebs_exporter.render import render
from ebs_exporter.simulate import SimulatedSource


@dataclass(frozen=True)
class BaselineResult:
    volumes: int
    bins: int
    client_text: Summary  # generate_latest, text format 0.0.4
    client_openmetrics: Summary
    ours_text: Summary  # render(...).encode()
    ours_openmetrics: Summary


def run_one(volumes: int, bins: int, repeats: int) -> BaselineResult:
    collector = Collector(SimulatedSource(volumes, bins, clock=iter(range(1_700_000_000, 1 << 62)).__next__))
    collector.collect()
    snapshot = collector.collect()
    collector.close()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EbsCollector(lambda: snapshot, build_info()))
    ours = render(snapshot, False, build_info())
    # Same samples in the same order: prometheus_client's text is a superset of ours only in spelling.
    theirs = text_latest(registry).decode()
    if len(theirs.splitlines()) != len(ours.splitlines()):
        raise AssertionError("the two renderers wrote a different number of lines")
    number = max(1, 2000 // (volumes * bins))
    return BaselineResult(
        volumes,
        bins,
        per_call(lambda: text_latest(registry), number, repeats),
        per_call(lambda: om_latest(registry), number, repeats),
        per_call(lambda: render(snapshot, False, build_info()).encode(), number, repeats),
        per_call(lambda: render(snapshot, True, build_info()).encode(), number, repeats),
    )
