"""A real Prometheus server scrapes the exporter; PromQL answers what the pages say it should."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from exporter_harness import Exporter, FakeHost, wait_for
from prometheus_server import PrometheusServer

from nvme_ebs import testing as pg

VOLUME = "vol-0aaaaaaaaaaaaaaaa"
EXCEEDED_SHARE = 0.25  # the IOPS limit is exceeded a quarter of the time
IOPS = 1000
# Half the reads in [256, 512) us, half in [512, 1024) us.
BOUNDS = pg.power_of_two_bounds(28)
SLOW_BINS = (9, 10)


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
def prometheus(tmp_path: Path) -> Iterator[PrometheusServer]:
    host = FakeHost(tmp_path / "host")
    host.attach("nvme1", "vol0aaaaaaaaaaaaaaaa", _page(0))
    workload = _Workload(host)
    workload.start()
    exporter = Exporter(host.args(), host.env())
    try:
        with PrometheusServer(tmp_path, [f"127.0.0.1:{exporter.port}"]) as server:
            yield server
    finally:
        exporter.stop()
        workload.stopping.set()


def test_prometheus_scrapes_and_promql_agrees(prometheus: PrometheusServer) -> None:
    q = prometheus.scalar
    exceeded = f'ebs_volume_performance_exceeded_iops_seconds_total{{volume_id="{VOLUME}"}}'
    # Until the 10 s window is full, rate() extrapolates from a few samples: wait for it to fill.
    samples = wait_for(lambda: (q(f"count_over_time({exceeded}[10s])") or 0) >= 10, timeout=90)
    assert samples
    # rate() of the exceeded counter is the share of time the limit was exceeded
    share = q(f"rate({exceeded}[10s])")
    assert share == pytest.approx(EXCEEDED_SHARE, rel=0.15)
    # the latency histogram: half below 512 us, so the 25th percentile sits mid-bucket at 384 us
    quantile = f'histogram_quantile(0.25, rate(ebs_read_io_latency_seconds_bucket{{volume_id="{VOLUME}"}}[10s]))'
    p25 = wait_for(lambda: q(quantile), timeout=60, interval=0.5)
    assert p25 == pytest.approx(384e-6, rel=0.05)
    assert q(quantile.replace("0.25", "0.5")) == pytest.approx(512e-6, rel=0.05)
    # the seed's queue-length query has its counterpart (node comes from the ServiceMonitor in a cluster)
    assert prometheus.query(f'ebs_volume_queue_length{{volume_id="{VOLUME}"}}')
    assert q('ebs_device_up{device="nvme1n1"}') == 1
