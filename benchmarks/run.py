"""Benchmarks of the EBS exporter, side by side in one run; prints Markdown tables.

    .venv/bin/python benchmarks/run.py           # the full run (`make bench`), a few minutes
    .venv/bin/python benchmarks/run.py --quick   # every section once over, in seconds (CI)

Sections: (1) decoding one page three ways, (2) full scrapes over HTTP of the exporter process,
through the fake NVMe controller and through --simulate, (2b) the C reference program doing the
same work through the same fake controller, (3) prometheus_client's generate_latest
of the same families as the baseline, (4) where the time of one scrape goes, (5) RSS after many
scrapes and start-up time, (6) the cost per volume from a linear fit. Times are medians over
repeats with (min-max) beside them. Benchmarks are not tests: nothing here fails on a slow
machine; the last table gathers the largest configuration's figures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import baseline
import decode
import inprocess
import reference
import scrape
from measure import linear_fit, machine_details

from ebs_exporter import app

MIB = 1 << 20
# The values the exporter sets by itself, given in the environment instead (it then leaves malloc alone).
GLIBC_TUNED = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "262144"}


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print("\n".join(lines), flush=True)


def section(title: str, *notes: str) -> None:
    print(f"\n### {title}\n")
    if notes:
        print("\n".join(notes) + "\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="few repeats and scrapes: checks that every part still works")
    p.add_argument("--repeats", type=int, help="timed scrapes per configuration (default 40, quick 3)")
    p.add_argument("--scrapes", type=int, help="scrapes before reading RSS (default 1000, quick 20)")
    p.add_argument("--volumes", default="1,8,32,128", help="volume counts, comma separated (default 1,8,32,128)")
    p.add_argument("--bins", default="28,64", help="histogram sizes, comma separated (default 28,64)")
    p.add_argument("--sources", default="fake,simulate", help="fake and/or simulate (default both)")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 40)
    args.scrapes = args.scrapes or (20 if args.quick else 1000)
    args.volumes = sorted(int(v) for v in args.volumes.split(","))
    args.bins = sorted(int(b) for b in args.bins.split(","))
    args.sources = [s for s in args.sources.split(",") if s]
    return args


def decoding(args: argparse.Namespace) -> None:
    section("1. Decoding one statistics page (µs per page)", "A simulated gp3 volume's page after an hour.")
    number, repeats = (200, 3) if args.quick else (5000, 15)
    decoded = decode.run(tuple(args.bins), number, repeats)
    names = list(dict.fromkeys(d.name for d in decoded))
    rows = [[name] + [d.per_page.text(1e6) for d in decoded if d.name == name] for name in names]
    table(["decoder", *(f"{b} bins" for b in args.bins)], rows)


def scrapes(args: argparse.Namespace, workdir: Path) -> list[scrape.ScrapeResult]:
    section(
        "2. Full scrape over HTTP of the exporter process (ms, median (min-max))",
        "`plain`: no Accept-Encoding (text format 0.0.4). `prometheus`: Prometheus's Accept (OpenMetrics)",
        "and `Accept-Encoding: gzip`. Time from sending the request to the body's last byte, over a",
        "kept-alive connection. CPU: the exporter process's user+system time per scrape (10 ms ticks).",
        "`fake`: sysfs fixture + fake NVMe controller (LD_PRELOAD): discovery, then per volume one",
        "open/ioctl/close that the fake answers from files. `simulate`: `--simulate N --simulate.bins B`.",
    )
    results = [
        scrape.scrape_one(source, volumes, bins, args.repeats, workdir)
        for source in args.sources
        for bins in args.bins
        for volumes in args.volumes
    ]
    table(
        ["source", "bins", "volumes", "samples", "bytes plain / gzip", "plain", "prometheus", "CPU ms plain / prom"],
        [
            [
                r.source, r.bins, r.volumes, r.samples, f"{r.plain_bytes:,} / {r.gzip_bytes:,}", r.plain.text(),
                r.prometheus.text(), f"{r.plain_cpu * 1e3:.1f} / {r.prometheus_cpu * 1e3:.1f}",
            ]
            for r in results
        ],
    )  # fmt: skip
    return results


def references(
    args: argparse.Namespace, results: list[scrape.ScrapeResult], workdir: Path
) -> list[reference.ReferenceResult]:
    bins = args.bins[-1]
    section(
        f"2b. The C reference: benchmarks/reference.c, {bins}-bin histograms (ms)",
        "A plain C program doing a scrape's work through the same fake controller, without HTTP:",
        "sysfs discovery, open/ioctl/close and decode per volume, the page families' text. Wall: the",
        "median round; CPU: per round (getrusage). `exporter / C`: the exporter's CPU per plain scrape",
        "(section 2, fake) over the reference's.",
    )
    rounds = 20 if args.quick else 400
    measured = [reference.run_one(v, bins, rounds, workdir) for v in args.volumes]
    cpu = {r.volumes: r.plain_cpu for r in results if r.source == "fake" and r.bins == bins}
    rows = []
    for m in measured:
        ratio = f"{cpu[m.volumes] / m.cpu:.1f}x" if cpu.get(m.volumes) else "-"
        rows.append([m.volumes, f"{m.bytes:,}", f"{m.wall * 1e3:.2f}", f"{m.cpu * 1e3:.2f}", ratio])
    table(["volumes", "bytes", "wall", "CPU", "exporter / C"], rows)
    return measured


def baselines(args: argparse.Namespace, results: list[scrape.ScrapeResult]) -> list[baseline.BaselineResult]:
    section(
        "3. Baseline: prometheus_client's generate_latest of the same families (ms, in-process)",
        "One snapshot, written by both renderers. `vs render`: generate_latest (text) / render (text);",
        "`vs <source> scrape`: generate_latest (text) / the whole plain HTTP scrape of section 2.",
    )
    measured = [baseline.run_one(v, b, 3 if args.quick else 10) for b in args.bins for v in args.volumes]
    plain = {(r.source, r.volumes, r.bins): r.plain.median for r in results}
    rows = []
    for b in measured:
        row: list[object] = [
            b.volumes, b.bins, b.client_text.text(), b.client_openmetrics.text(), b.ours_text.text(),
            b.ours_openmetrics.text(), f"{b.client_text.median / b.ours_text.median:.0f}x",
        ]  # fmt: skip
        for source in args.sources:
            full = plain.get((source, b.volumes, b.bins))
            row.append(f"{b.client_text.median / full:.1f}x" if full else "-")
        rows.append(row)
    table(
        [
            "volumes", "bins", "generate_latest text", "generate_latest OpenMetrics", "render text",
            "render OpenMetrics", "vs render", *(f"vs {s} scrape" for s in args.sources),
        ],
        rows,
    )  # fmt: skip
    return measured


def breakdown(args: argparse.Namespace) -> None:
    volumes, bins = args.volumes[-1], args.bins[-1]
    section(
        f"4. Where the time goes: one scrape of {volumes} volumes x {bins} bins, in-process (ms)",
        "`collect` reads pages prepared in advance: the exporter's own work without a device or simulator.",
    )
    steps = inprocess.run(volumes, bins, 3 if args.quick else 15)
    table(["step", "ms"], [[s.name, s.time.text()] for s in steps])


def memory(args: argparse.Namespace, workdir: Path) -> list[scrape.MemoryResult]:
    volumes, bins = args.volumes[-1], args.bins[-1]
    section(
        f"5. Memory after {args.scrapes:,} scrapes, and start-up time",
        "Scrapes alternate plain and Prometheus's headers. Start-up: from spawning the process to its",
        "first successful scrape. Steady RSS = VmRSS at the end, peak = VmHWM (/proc/PID/status).",
        "`default`: nothing in the environment, so the exporter sets glibc's malloc itself at start (2",
        "arenas, blocks from 256 KiB mapped on their own); second half: the same values given in the",
        "environment, which the exporter then leaves to glibc.",
    )
    results = [
        scrape.memory_one(s, volumes, bins, args.scrapes, workdir, env)
        for env in (None, GLIBC_TUNED)
        for s in args.sources
    ]
    table(
        ["source", "glibc malloc", "start-up ms", "RSS 1st scrape", "steady RSS", "peak RSS", "threads", "CPU ms"],
        [
            [
                m.source, m.env or "default", f"{m.startup * 1e3:.0f}", f"{m.rss_first / MIB:.1f} MiB",
                f"{m.rss / MIB:.1f} MiB", f"{m.hwm / MIB:.1f} MiB", m.threads, f"{m.cpu_per_scrape * 1e3:.1f}",
            ]
            for m in results
        ],
    )  # fmt: skip
    bare = scrape.interpreter_rss("pass")[0]
    client = scrape.interpreter_rss("import prometheus_client")[0]
    imported = scrape.interpreter_rss("import ebs_exporter.main")[0]
    print(
        f"\nFor scale, VmRSS of a fresh interpreter: bare {bare / MIB:.1f} MiB, after `import prometheus_client`"
        f" {client / MIB:.1f} MiB, after `import ebs_exporter.main` {imported / MIB:.1f} MiB."
    )
    return results


def per_volume(args: argparse.Namespace, results: list[scrape.ScrapeResult]) -> None:
    section("6. Cost per volume: least-squares line through the median scrape times of section 2")
    rows = []
    for source in args.sources:
        for bins in args.bins:
            points = sorted(
                ((r.volumes, r) for r in results if r.source == source and r.bins == bins), key=lambda p: p[0]
            )
            for label in ("plain", "prometheus"):
                fit = linear_fit([v for v, _ in points], [getattr(r, label).median for _, r in points])
                rows.append(
                    [source, bins, label, f"{fit.slope * 1e6:.1f}", f"{fit.intercept * 1e3:.2f}", f"{fit.r2:.4f}"]
                )
    table(["source", "bins", "headers", "µs per volume", "intercept ms", "R²"], rows)


def summary(
    args: argparse.Namespace,
    results: list[scrape.ScrapeResult],
    base: list[baseline.BaselineResult],
    mem: list[scrape.MemoryResult],
    refs: list[reference.ReferenceResult],
) -> None:
    """The largest configuration's figures from the sections above, gathered in one table."""
    volumes, bins = args.volumes[-1], args.bins[-1]
    section(f"Summary: {volumes} volumes, {bins}-bin histograms (medians)")
    rows: list[list[str]] = []
    top_base = next((b for b in base if (b.volumes, b.bins) == (volumes, bins)), None)
    for r in results:
        if (r.volumes, r.bins) != (volumes, bins):
            continue
        rows.append([f"plain scrape, wall ({r.source})", f"{r.plain.median * 1e3:.2f} ms"])
        rows.append([f"plain scrape, exporter CPU ({r.source})", f"{r.plain_cpu * 1e3:.1f} ms"])
        ref = next((m for m in refs if m.volumes == volumes), None)
        if r.source == "fake" and ref is not None:
            rows.append(["C reference, CPU per round (fake)", f"{ref.cpu * 1e3:.1f} ms"])
            rows.append(["exporter CPU / C reference (fake)", f"{r.plain_cpu / ref.cpu:.1f}x"])
        rows.append([f"Prometheus (OpenMetrics, gzip) scrape ({r.source})", f"{r.prometheus.median * 1e3:.2f} ms"])
        if top_base is not None:
            ratio = top_base.client_text.median / r.plain.median
            rows.append([f"generate_latest (text) / plain scrape ({r.source})", f"{ratio:.1f}x"])
    for r in results:
        if (r.volumes, r.bins) == (args.volumes[0], bins) and r.volumes != volumes:
            rows.append([f"plain scrape, wall, {r.volumes} volume(s) ({r.source})", f"{r.plain.median * 1e3:.2f} ms"])
    for m in mem:
        how = f"{m.source}, {m.env or 'default malloc'}"
        rows.append([f"steady / peak RSS ({how})", f"{m.rss / MIB:.1f} / {m.hwm / MIB:.1f} MiB"])
    table(["figure", "measured"], rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    shown = " ".join(["python", "benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
    print(f"## EBS exporter benchmarks\n\nCommand: `{shown}`\n")
    settings = [
        ("Run", f"{args.repeats} timed scrapes per configuration; {args.scrapes:,} scrapes before reading RSS"),
        ("Exporter", f"gzip level {app.GZIP_LEVEL}"),
    ]
    for key, value in [*machine_details(), *settings]:
        print(f"- {key}: {value}")
    decoding(args)
    with tempfile.TemporaryDirectory(prefix="ebs-bench-") as tmp:
        results = scrapes(args, Path(tmp))
        refs = references(args, results, Path(tmp)) if "fake" in args.sources else []
        base = baselines(args, results)
        breakdown(args)
        mem = memory(args, Path(tmp))
    per_volume(args, results)
    summary(args, results, base, mem, refs)
    print(f"\nBenchmark run took {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
