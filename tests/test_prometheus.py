"""A real Prometheus server scrapes the exporter; PromQL answers what the pages say it should."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from exporter_harness import Exporter, FakeHost, wait_for

from nvme_ebs import pages as pg

PROMETHEUS = shutil.which("prometheus")
VOLUME = "vol-0aaaaaaaaaaaaaaaa"
EXCEEDED_SHARE = 0.25  # the IOPS limit is exceeded a quarter of the time
IOPS = 1000
# Half the reads in [256, 512) us, half in [512, 1024) us.
BOUNDS = pg.power_of_two_bounds(28)
SLOW_BINS = (9, 10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _page(elapsed: float) -> bytes:
    """The page a steadily loaded volume would show `elapsed` seconds after attachment."""
    ops = int(IOPS * elapsed)
    counts = [0] * len(BOUNDS)
    for i in SLOW_BINS:
        counts[i] = ops // 2
    bins = [(lo, hi, c) for (lo, hi), c in zip(BOUNDS, counts)]
    counters = {
        "total_read_ops": ops,
        "total_read_time_us": ops * 512,
        "ebs_volume_performance_exceeded_iops_us": int(elapsed * EXCEEDED_SHARE * 1e6),
    }
    return pg.encode_stats_page(counters, bins, bins)


class _Workload(threading.Thread):
    """Keeps the fake volume's page moving with wall time, like a device under load."""

    def __init__(self, host: FakeHost) -> None:
        super().__init__(daemon=True)
        self.host = host
        self.started = time.monotonic()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.05):
            self.host.fake.set_log_page("nvme1", _page(time.monotonic() - self.started))


@pytest.fixture
def prometheus_url(tmp_path: Path) -> Iterator[tuple[str, FakeHost]]:
    if PROMETHEUS is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus is missing: apt-get install prometheus")
        pytest.skip("no prometheus server installed")
    host = FakeHost(tmp_path / "host")
    host.attach("nvme1", "vol0aaaaaaaaaaaaaaaa", _page(0))
    workload = _Workload(host)
    workload.start()
    exporter = Exporter(host.args(), host.env())
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: ebs\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{exporter.port}']}}]\n"
    )
    server = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"},
    )
    try:
        yield f"http://127.0.0.1:{port}", host
    finally:
        server.terminate()
        server.wait(30)
        exporter.stop()
        workload.stopping.set()


def _query(base: str, promql: str) -> list[dict[str, object]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
    except OSError:
        return []
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def _scalar(base: str, promql: str) -> float | None:
    result = _query(base, promql)
    if not result:
        return None
    value = float(result[0]["value"][1])  # type: ignore[index]
    return None if value != value else value  # NaN: not enough samples yet


def test_prometheus_scrapes_and_promql_agrees(prometheus_url: tuple[str, FakeHost]) -> None:
    base, _ = prometheus_url
    exceeded = f'ebs_volume_performance_exceeded_iops_seconds_total{{volume_id="{VOLUME}"}}'
    # Until the 10 s window is full, rate() extrapolates from a few samples: wait for it to fill.
    samples = wait_for(lambda: (_scalar(base, f"count_over_time({exceeded}[10s])") or 0) >= 10, timeout=90)
    assert samples
    # rate() of the exceeded counter is the share of time the limit was exceeded
    share = _scalar(base, f"rate({exceeded}[10s])")
    assert share == pytest.approx(EXCEEDED_SHARE, rel=0.15)
    # the latency histogram: half below 512 us, so the 25th percentile sits mid-bucket at 384 us
    quantile = f'histogram_quantile(0.25, rate(ebs_read_io_latency_seconds_bucket{{volume_id="{VOLUME}"}}[10s]))'
    p25 = wait_for(lambda: _scalar(base, quantile), timeout=60, interval=0.5)
    assert p25 == pytest.approx(384e-6, rel=0.05)
    median = _scalar(base, quantile.replace("0.25", "0.5"))
    assert median == pytest.approx(512e-6, rel=0.05)
    # the seed's queue-length query has its counterpart (node comes from the ServiceMonitor in a cluster)
    assert _query(base, f'ebs_volume_queue_length{{volume_id="{VOLUME}"}}')
    assert _scalar(base, 'ebs_device_up{device="nvme1n1"}') == 1
