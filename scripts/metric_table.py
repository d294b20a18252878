#!/usr/bin/env python3
"""The README's metric tables, written from the exporter's metric table (ebs_exporter/metrics.py),
and its series counts, counted in what the renderer writes for simulated volumes.

scripts/metric_table.py            # print the tables
scripts/metric_table.py --write    # rewrite them in README.md, between their markers
scripts/metric_table.py --check    # exit 1 when README.md's tables differ (the tests run this)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prometheus_client import generate_latest

from ebs_exporter import build_info, metrics
from ebs_exporter.app import process_registry
from ebs_exporter.collector import Collector
from ebs_exporter.metrics import Family, LatencyBuckets
from ebs_exporter.render import Renderer
from ebs_exporter.simulate import SimulatedSource
from ebs_exporter.volumes import ALL_REASONS

README = Path(__file__).resolve().parent.parent / "README.md"
BUCKET_MODES = ("all", "coarse", "none")
VOLUMES_PER_NODE, NODES = 10, 1000
REASON_LIST = ", ".join(f"`{r}`" for r in ALL_REASONS)


def _source(family: Family) -> str:
    if not family.per_volume:
        return ""
    scaled = f"`{family.field}`" + (" (µs)" if family.scale == metrics.MICROS and family.type != "histogram" else "")
    if family.type == "histogram":
        return f"{scaled}; `_sum` = `{family.sum_field}` (µs)"
    return scaled


def _type(family: Family) -> str:
    return "info (a gauge of 1 in the text format)" if family.type == "info" else family.type


def _labels(family: Family) -> str:
    return ", ".join(f"`{label}`" for label in family.labels)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def tables() -> str:
    lines = [
        "| metric | type | unit | page field (log 0xD0) | meaning |",
        "|---|---|---|---|---|",
    ]
    for f in metrics.PAGE_FAMILIES:
        lines.append(_row([f"`{f.exposed_name()}`", f.type, f.unit, _source(f), f.help]))
    lines += ["", "Labels on each: `volume_id`, `device`. About the volumes and the exporter itself:", ""]
    lines += ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for f in metrics.EXPORTER_FAMILIES:
        meaning = f.help + (f" Reasons: {REASON_LIST}." if f is metrics.DEVICE_ERRORS else "")
        lines.append(_row([f"`{f.exposed_name()}`", _type(f), _labels(f), meaning]))
    return "\n".join(lines) + "\n"


def series(volumes: int, bins: int, buckets: str) -> int:
    """Sample lines of one scrape of `volumes` simulated EBS volumes (the exporter's own families)."""
    collector = Collector(SimulatedSource(volumes, bins, clock=lambda: 1_700_000_000.0))
    try:
        text = Renderer(LatencyBuckets.parse(buckets)).render(collector.collect(), build=build_info())
    finally:
        collector.close()
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def client_series() -> int:
    """prometheus_client's own process_* and python_* series, the same on every node."""
    text = generate_latest(process_registry()).decode()
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def series_counts() -> str:
    own = client_series()
    lines = [
        f"| `--collector.latency-buckets` | bins | series per volume | per node, {VOLUMES_PER_NODE} volumes "
        f"| {NODES:,} such nodes |",
        "|---|---|---|---|---|",
    ]
    for mode in BUCKET_MODES:
        for bins in (28, 64):
            one, node = series(1, bins, mode), series(VOLUMES_PER_NODE, bins, mode)
            per_volume = (node - one) // (VOLUMES_PER_NODE - 1)
            cells = [f"`{mode}`", str(bins), str(per_volume), f"{node + own:,}", f"{(node + own) * NODES:,}"]
            lines.append(_row(cells))
    note = f"Per node, {own} of these are prometheus_client's `process_*` and `python_*` series."
    return "\n".join(lines) + f"\n\n{note}\n"


def _blocks() -> dict[str, str]:
    return {"metric-table": tables(), "series-counts": series_counts()}


def replaced(readme: str) -> str:
    for block, text in _blocks().items():
        begin, end = f"<!-- {block}: begin (scripts/metric_table.py --write) -->", f"<!-- {block}: end -->"
        head, found_begin, rest = readme.partition(begin)
        _, found_end, tail = rest.partition(end)
        if not found_begin or not found_end:
            raise SystemExit(f"metric_table: {README}: the markers {begin!r} and {end!r} are missing")
        readme = f"{head}{begin}\n{text}{end}{tail}"
    return readme


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the tables in README.md")
    mode.add_argument("--check", action="store_true", help="fail when README.md's tables are out of date")
    args = p.parse_args(argv)
    if not (args.write or args.check):
        sys.stdout.write("\n".join(_blocks().values()))
        return 0
    current = README.read_text(encoding="utf-8")
    wanted = replaced(current)
    if args.write:
        README.write_text(wanted, encoding="utf-8")
        return 0
    if wanted != current:
        print("metric_table: README.md's metric tables are out of date: run scripts/metric_table.py --write")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
