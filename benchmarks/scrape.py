"""Sections 2, 4 and 5: the real exporter process scraped over HTTP.

Two ways to give it volumes:
- `fake`: a fixture sysfs tree plus the fake NVMe controller (tests/fakenvme, loaded with
  LD_PRELOAD), so every scrape goes discovery -> open -> ioctl -> C decoder -> render -> HTTP;
- `simulate`: `--simulate N --simulate.bins B`, pages written by the simulator in-process.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from measure import Summary, cpu_seconds, proc_status

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from exporter_harness import FakeHost  # noqa: E402
from fakenvme import DEFAULT_BUILD_DIR, build_preload  # noqa: E402

from ebs_exporter.simulate import SimulatedVolume  # noqa: E402
from ebs_exporter.testing import Exporter  # noqa: E402

# What Prometheus 2.x/3.x sends to a target with the default scrape protocols.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}
PLAIN_HEADERS: dict[str, str] = {}
_UP = re.compile(rb"^ebs_device_up\{[^}]*\} 1$", re.M)
SIMULATED_CLOCK_START = 1_700_000_000.0


class ExporterProcess(Exporter):
    """The exporter (ebs_exporter.testing.Exporter), scraped over one kept-alive connection."""

    def __init__(self, args: list[str], env: Mapping[str, str], timeout: float = 60) -> None:
        started = time.perf_counter()
        super().__init__(args, env, timeout)
        self.conn = self.connection(timeout=60)
        try:
            self.scrape(PLAIN_HEADERS)
        except BaseException:
            self.stop()
            raise
        self.startup = time.perf_counter() - started  # to the end of the first scrape

    def scrape(self, headers: Mapping[str, str]) -> tuple[float, bytes]:
        """Seconds from sending the request to the last byte of the body, and the body."""
        start = time.perf_counter()
        self.conn.request("GET", "/metrics", headers=dict(headers))
        response = self.conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - start
        if response.status != 200:
            raise RuntimeError(f"scrape answered {response.status}: {body[:200]!r}")
        return elapsed, body

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def status(self) -> dict[str, int]:
        return proc_status(self.proc.pid)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        conn = getattr(self, "conn", None)  # None when the process never served
        if conn is not None:
            conn.close()
        return super().stop(sig, timeout)


def fake_host(volumes: int, bins: int, workdir: Path, env: Mapping[str, str]) -> tuple[FakeHost, dict[str, str]]:
    """A sysfs fixture with `volumes` simulated volumes behind the fake NVMe controller, and the
    environment (LD_PRELOAD) a process needs to read them."""
    host = FakeHost(Path(tempfile.mkdtemp(prefix=f"fake{volumes}x{bins}-", dir=workdir)))
    for i in range(volumes):
        volume = SimulatedVolume(i, bins)
        host.attach(volume.controller, volume.serial, volume.read_page(SIMULATED_CLOCK_START), mapping=volume.mapping)
    preload = str(build_preload(DEFAULT_BUILD_DIR).resolve())
    return host, {**env, **host.fake.env(), "LD_PRELOAD": " ".join(filter(None, [env.get("LD_PRELOAD"), preload]))}


@contextmanager
def exporter_for(
    source: str, volumes: int, bins: int, workdir: Path, extra_env: Mapping[str, str] | None = None
) -> Iterator[ExporterProcess]:
    """An exporter serving `volumes` volumes with `bins`-bin histograms from `source`."""
    env = {**os.environ, **(extra_env or {})}
    if source == "simulate":
        args = [f"--simulate={volumes}", f"--simulate.bins={bins}"]
    elif source == "fake":
        host, env = fake_host(volumes, bins, workdir, env)
        args = host.args()
    else:
        raise ValueError(source)
    process = ExporterProcess(args, env)
    try:
        yield process
    finally:
        process.stop()


@dataclass(frozen=True)
class ScrapeResult:
    source: str
    bins: int
    volumes: int
    samples: int
    plain_bytes: int
    gzip_bytes: int
    plain: Summary  # seconds per scrape, no Accept-Encoding
    prometheus: Summary  # seconds per scrape, Prometheus's Accept and Accept-Encoding: gzip
    plain_cpu: float  # exporter CPU seconds per plain scrape (clock-tick resolution)
    prometheus_cpu: float
    startup: float


def _timed(process: ExporterProcess, headers: Mapping[str, str], repeats: int, warmup: int) -> tuple[Summary, float]:
    for _ in range(warmup):
        process.scrape(headers)
    cpu = process.cpu()
    times = [process.scrape(headers)[0] for _ in range(repeats)]
    return Summary.of(times), (process.cpu() - cpu) / repeats


def scrape_one(source: str, volumes: int, bins: int, repeats: int, workdir: Path) -> ScrapeResult:
    with exporter_for(source, volumes, bins, workdir) as process:
        _, body = process.scrape(PLAIN_HEADERS)
        up = len(_UP.findall(body))
        if up != volumes:
            raise RuntimeError(f"{source}: {up} of {volumes} volumes read successfully:\n{body[-2000:]!r}")
        samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        _, gz = process.scrape(PROMETHEUS_HEADERS)
        warmup = max(2, repeats // 10)
        plain, plain_cpu = _timed(process, PLAIN_HEADERS, repeats, warmup)
        prometheus, prometheus_cpu = _timed(process, PROMETHEUS_HEADERS, repeats, warmup)
        return ScrapeResult(
            source, bins, volumes, samples, len(body), len(gz), plain, prometheus, plain_cpu, prometheus_cpu,
            process.startup,
        )  # fmt: skip


@dataclass(frozen=True)
class MemoryResult:
    source: str
    env: str  # extra environment of the exporter process, as NAME=value words
    volumes: int
    bins: int
    scrapes: int
    startup: float
    rss_first: int  # VmRSS after the first scrape
    rss: int  # VmRSS after all the scrapes
    hwm: int  # VmHWM: the peak
    threads: int
    cpu_per_scrape: float


def memory_one(
    source: str, volumes: int, bins: int, scrapes: int, workdir: Path, extra_env: Mapping[str, str] | None = None
) -> MemoryResult:
    """`scrapes` scrapes, alternating plain and Prometheus's headers, then the process's RSS."""
    env_words = " ".join(f"{k}={v}" for k, v in (extra_env or {}).items())
    with exporter_for(source, volumes, bins, workdir, extra_env) as process:
        rss_first = process.status()["VmRSS"]
        cpu = process.cpu()
        for i in range(scrapes):
            process.scrape(PROMETHEUS_HEADERS if i % 2 else PLAIN_HEADERS)
        cpu_per_scrape = (process.cpu() - cpu) / scrapes
        status = process.status()
        return MemoryResult(
            source, env_words, volumes, bins, scrapes, process.startup, rss_first, status["VmRSS"], status["VmHWM"],
            status["Threads"], cpu_per_scrape,
        )  # fmt: skip


def interpreter_rss(code: str) -> tuple[int, int]:
    """VmRSS and VmHWM of a fresh interpreter after running `code`."""
    probe = code + "\nimport sys\nsys.stdout.write(open('/proc/self/status').read())\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024
