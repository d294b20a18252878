"""The metric table (ebs_exporter/metrics.py) is the one source: the page's fields, both renderers
and the README agree with it."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pagesource import PageSource, stats_page
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse

from ebs_exporter import metrics
from ebs_exporter.collector import Collector
from ebs_exporter.render import render
from nvme_ebs import DevicePermissionError, EbsStats, LatencyHistogram, VolumeKind, layout
from nvme_ebs import testing as pg

ROOT = Path(__file__).resolve().parent.parent
STATS_FIELDS = {f.name: f for f in dataclasses.fields(EbsStats)}


def test_every_page_counter_is_exported_exactly_once() -> None:
    used = [f.field for f in metrics.SCALARS]
    assert sorted(used) == sorted(layout.COUNTER_FIELDS)


def test_every_histogram_of_the_page_is_exported_with_its_time_as_sum() -> None:
    histogram_fields = {n for n, f in STATS_FIELDS.items() if f.type in (LatencyHistogram, "LatencyHistogram")}
    assert (
        {f.field for f in metrics.HISTOGRAMS}
        == histogram_fields
        == {
            "read_io_latency_histogram",
            "write_io_latency_histogram",
        }
    )
    for f in metrics.HISTOGRAMS:
        assert f.sum_field in layout.COUNTER_FIELDS and f.sum_field.endswith("_us") and f.scale == metrics.MICROS


@pytest.mark.parametrize("family", metrics.FAMILIES, ids=lambda f: f.name)
def test_names_follow_the_prometheus_conventions(family: metrics.Family) -> None:
    assert re.fullmatch(r"[a-z][a-z0-9_]*", family.name)
    assert not family.name.endswith(("_total", "_info"))
    assert family.type in ("counter", "gauge", "histogram", "info")
    if family.scale == metrics.MICROS or family.unit == "seconds":  # base units, named
        assert family.name.endswith("_seconds") and family.unit == "seconds"
    assert family.help.endswith(".") and "\n" not in family.help
    if family.per_volume:
        assert family.labels == metrics.VOLUME_LABELS and family.field in STATS_FIELDS


def test_names_are_unique_across_kinds() -> None:
    names = [f.full_name(kind) for f in metrics.PAGE_FAMILIES for kind in metrics.PREFIX]
    names += [f.name for f in metrics.EXPORTER_FAMILIES]
    assert len(names) == len(set(names))


def test_a_scrape_serves_every_family_of_the_table_with_its_labels() -> None:
    source = PageSource()
    source.add("nvme1", "vol0aaaaaaaaaaaaaaaa", stats_page(1, 28))
    source.add("nvme2", "AWS0123456789", stats_page(2, 28, pg.MAGIC_INSTANCE_STORE), VolumeKind.INSTANCE_STORE)
    source.add("nvme3", "vol0bbbbbbbbbbbbbbbb", DevicePermissionError(13, "/dev/nvme3", "read"))
    text = (
        render(
            Collector(source).collect(),
            openmetrics=True,
            build={"version": "1.2.3", "revision": "r", "python_version": "3"},
        )
        + "# EOF\n"
    )
    served = {f.name: f for f in om_parse(text)}
    for family in metrics.FAMILIES:
        kinds = list(metrics.PREFIX) if family.per_volume else [None]
        for kind in kinds:
            name = family.full_name(kind) if kind else family.name
            assert name in served, name
            got = served[name]
            assert got.documentation == family.help
            assert got.type == family.type
            labels = {k for s in got.samples for k in s.labels} - {"le"}
            assert labels == set(family.labels), name


def test_the_readme_tables_are_the_metric_table() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "metric_table.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    readme = (ROOT / "README.md").read_text()
    for family in metrics.FAMILIES:
        assert f"`{family.exposed_name()}`" in readme
