"""Helpers shared by the reliability suites (faults, soak, privilege): reading exposition text,
looking at a process from /proc, and running the exporter behind a command prefix (strace,
unshare + setpriv) with the same log handling as exporter_harness.Exporter."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from exporter_harness import Exporter
from prometheus_client.parser import text_string_to_metric_families

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def require_tool(name: str, package: str) -> str:
    """The tool's path; a missing tool fails under CI=true and skips (saying so) elsewhere."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is missing: apt-get install {package}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def samples(text: str) -> dict[SampleKey, float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


def series_of(parsed: dict[SampleKey, float], device: str) -> dict[SampleKey, float]:
    """Every sample labelled with this device (volume series, info, health)."""
    return {k: v for k, v in parsed.items() if ("device", device) in k[1]}


def label_values(parsed: dict[SampleKey, float], label: str, prefix: str = "") -> set[str]:
    return {dict(k[1])[label] for k in parsed if k[0].startswith(prefix) and label in dict(k[1])}


@dataclass(frozen=True)
class ProcessFigures:
    fds: int
    threads: int
    rss_kib: int


@dataclass(frozen=True)
class HeapReading:
    blocks: int
    malloc_in_use: int
    threads: tuple[str, ...]


def read_heap(exporter: Exporter, timeout: float = 30) -> HeapReading:
    """Asks an exporter started with PROBED_EXPORTER for a heap_probe line and parses it."""
    seen = sum(line.startswith("heap-probe ") for line in exporter.log)
    os.kill(exporter.proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in exporter.log if line.startswith("heap-probe ")]
        if len(lines) > seen:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"no heap-probe answer within {timeout} s")
        time.sleep(0.01)
    fields = dict(field.split("=", 1) for field in lines[seen].split()[1:])
    return HeapReading(int(fields["blocks"]), int(fields["malloc_in_use"]), tuple(fields["threads"].split(",")))


def process_figures(pid: int) -> ProcessFigures:
    """Open descriptors, threads and resident memory of a running process, from /proc."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    threads = len(os.listdir(f"/proc/{pid}/task"))
    rss = 0
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return ProcessFigures(fds, threads, rss)


def capabilities(pid: int) -> dict[str, int]:
    """CapInh, CapPrm, CapEff, CapBnd and CapAmb of a process, as integers."""
    caps = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            m = re.match(r"(Cap[A-Za-z]+):\s+([0-9a-f]+)$", line.strip())
            if m:
                caps[m.group(1)] = int(m.group(2), 16)
    return caps


# Runs the exporter exactly as `python -m ebs_exporter` does, with tests/heap_probe.py installed first.
PROBED_EXPORTER = (
    "-c",
    "import heap_probe, runpy; heap_probe.install(); "
    "runpy.run_module('ebs_exporter', run_name='__main__', alter_sys=True)",
)
TESTS_DIR = str(Path(__file__).resolve().parent)


class WrappedExporter(Exporter):
    """Exporter under a wrapper (strace, unshare, setpriv), signalled and measured through the
    exporter's own pid rather than the wrapper's."""

    def __init__(
        self,
        prefix: Sequence[str],
        args: Sequence[str],
        env: dict[str, str] | None = None,
        timeout: float = 60,
        python_args: Sequence[str] = ("-m", "ebs_exporter"),
    ) -> None:
        super().__init__(args, env, timeout, prefix, python_args)

    @property
    def pid(self) -> int:
        """The exporter's own pid: the started process or, under strace, its child running Python."""
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop(0)
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv0 = f.read().split(b"\0", 1)[0].decode()
                with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
                    todo += [int(child) for child in f.read().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
            if os.path.basename(argv0).startswith("python"):
                return pid
        raise ProcessLookupError(f"no Python process under pid {self.proc.pid}")

    def send_signal(self, sig: int) -> None:
        """Signals the exporter itself (strace, on SIGTERM, would detach and leave it running)."""
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            self.proc.send_signal(sig)
