#!/usr/bin/env python3
"""The README's metric tables, written from the exporter's metric table (ebs_exporter/metrics.py).

scripts/metric_table.py            # print the tables
scripts/metric_table.py --write    # rewrite them in README.md, between their markers
scripts/metric_table.py --check    # exit 1 when README.md's tables differ (the tests run this)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ebs_exporter import metrics
from ebs_exporter.metrics import Family
from ebs_exporter.volumes import ALL_REASONS

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- metric-table: begin (scripts/metric_table.py --write) -->", "<!-- metric-table: end -->"
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


def replaced(readme: str) -> str:
    head, begin, rest = readme.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"metric_table: {README}: the markers {BEGIN!r} and {END!r} are missing")
    return f"{head}{BEGIN}\n{tables()}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the tables in README.md")
    mode.add_argument("--check", action="store_true", help="fail when README.md's tables are out of date")
    args = p.parse_args(argv)
    if not (args.write or args.check):
        sys.stdout.write(tables())
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
