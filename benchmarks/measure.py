"""Small measuring tools shared by the benchmarks: timing summaries, a linear fit, machine details."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata


@dataclass(frozen=True)
class Summary:
    """Median, min and max of repeated measurements (seconds unless said otherwise)."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            raise ValueError("no measurements")
        return cls(statistics.median(values), min(values), max(values))

    def scaled(self, factor: float) -> Summary:
        return Summary(self.median * factor, self.low * factor, self.high * factor)

    def text(self, factor: float = 1e3, digits: int = 2) -> str:
        """`median (min-max)` in the unit `factor` converts to (ms by default)."""
        return f"{self.median * factor:.{digits}f} ({self.low * factor:.{digits}f}-{self.high * factor:.{digits}f})"


def per_call(fn: Callable[[], object], number: int, repeats: int) -> Summary:
    """Seconds per call of fn: `repeats` timings of `number` calls each (after one warm-up round)."""
    for _ in range(max(1, number // 10)):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return Summary.of(times)


@dataclass(frozen=True)
class LinearFit:
    slope: float
    intercept: float
    r2: float


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> LinearFit:
    """Least squares y = slope * x + intercept, with the coefficient of determination."""
    n = len(xs)
    if n < 2:
        return LinearFit(0.0, ys[0] if ys else 0.0, 1.0)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx if sxx else 0.0
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys))
    return LinearFit(slope, intercept, 1.0 - ss_res / ss_tot if ss_tot else 1.0)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_details() -> list[tuple[str, str]]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        ("CPU", f"{_cpu_model()}, {os.cpu_count()} logical CPUs ({usable} usable)"),
        ("Load average at start", load),
        ("Kernel", f"{platform.system()} {platform.release()} ({platform.machine()})"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})"),
        ("prometheus_client", _version("prometheus_client")),
        ("cffi", _version("cffi")),
    ]


def proc_status(pid: int) -> dict[str, int]:
    """The kB fields of /proc/PID/status (VmRSS, VmHWM, ...), in bytes; Threads as a count."""
    fields = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            parts = value.split()
            if key == "Threads":
                fields[key] = int(parts[0])
            elif len(parts) == 2 and parts[1] == "kB":
                fields[key] = int(parts[0]) * 1024
    return fields


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far, at clock-tick resolution."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK
