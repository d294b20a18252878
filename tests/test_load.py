"""Load: wrk with 64 connections on /metrics (32 volumes) plus 200 slowloris connections, while a
real Prometheus keeps scraping. No non-2xx, scrapes keep succeeding, RSS bounded, recovery after.

LOAD_SECONDS (default 30) sets the length of the wrk run.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

from ci import require_tool
from exporter_harness import Exporter, FakeHost, wait_for
from pagesource import stats_page
from prometheus_server import PrometheusServer

LOAD_SECONDS = int(os.environ.get("LOAD_SECONDS", "30"))
CONNECTIONS = 64
IDLE_CONNECTIONS = 200
VOLUMES = 32
RSS_LIMIT = 128 << 20  # the DaemonSet's memory limit


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        match = re.search(r"VmRSS:\s+(\d+) kB", f.read())
    assert match
    return int(match.group(1)) * 1024


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class _Slowloris(threading.Thread):
    """Holds IDLE_CONNECTIONS open, each trickling a header byte now and then, and reopens the
    ones the server closes, so the pressure lasts as long as the test wants."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stopping = threading.Event()
        self.reopened = 0
        self.socks: list[socket.socket] = []

    def _open(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        return s

    def run(self) -> None:
        self.socks = [self._open() for _ in range(IDLE_CONNECTIONS)]
        while not self.stopping.wait(1.0):
            for i, s in enumerate(self.socks):
                try:
                    s.sendall(b"X")
                except OSError:
                    s.close()
                    self.socks[i] = self._open()
                    self.reopened += 1

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)
        for s in self.socks:
            s.close()


def _wrk_latency(output: str, percentile: str) -> float:
    match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    assert match, output
    return float(match.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[match.group(2)]


def test_wrk_and_slowloris_with_prometheus_scraping(tmp_path: Path, record_property, request) -> None:  # type: ignore[no-untyped-def]
    wrk = require_tool("wrk", "wrk")
    host = FakeHost(tmp_path / "host")
    for i in range(VOLUMES):
        host.attach(f"nvme{i + 1}", f"vol0{i:016x}", stats_page(i + 1, 28))
    with (
        Exporter(host.args(), host.env()) as exporter,
        PrometheusServer(tmp_path, [f"127.0.0.1:{exporter.port}"]) as prometheus,
    ):
        pid = exporter.proc.pid
        wait_for(lambda: prometheus.query('up{job="ebs"} == 1'), timeout=60, interval=0.5)
        fds_before = _fds(pid)
        slowloris = _Slowloris(exporter.port)
        slowloris.start()
        peak = [0]
        sampling = threading.Event()

        def sample_rss() -> None:
            while not sampling.wait(0.5):
                peak[0] = max(peak[0], _rss(pid))

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        started = time.time()
        result = subprocess.run(
            [wrk, "-t2", f"-c{CONNECTIONS}", f"-d{LOAD_SECONDS}s", "--latency", "--timeout", "10s",
             f"http://127.0.0.1:{exporter.port}/metrics"],
            capture_output=True, text=True, timeout=LOAD_SECONDS + 60,
        )  # fmt: skip
        window = int(time.time() - started)
        sampling.set()
        slowloris.stop()
        out = result.stdout
        assert result.returncode == 0, out + result.stderr
        requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        assert requests > 0
        assert "Non-2xx" not in out, out
        assert not re.search(r"Socket errors:.*(read|write|timeout) [1-9]", out), out
        p50, p99 = _wrk_latency(out, "50"), _wrk_latency(out, "99")
        for name, value in (("requests", requests), ("p50_s", p50), ("p99_s", p99), ("peak_rss", peak[0])):
            record_property(name, value)
        summary = (f"wrk {LOAD_SECONDS}s x{CONNECTIONS} + {IDLE_CONNECTIONS} idle: {requests} requests, "
                   f"p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, peak RSS {peak[0] >> 20} MiB, "
                   f"{slowloris.reopened} slowloris reconnects")  # fmt: skip
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():  # in the test log without -s
                reporter.write_line("\n" + summary)

        # Prometheus kept scraping through the load: up stayed 1 and samples kept coming
        time.sleep(2)
        assert prometheus.scalar(f'min_over_time(up{{job="ebs"}}[{window}s])') == 1
        assert (prometheus.scalar(f'count_over_time(up{{job="ebs"}}[{window}s])') or 0) >= window // 2
        assert peak[0] < RSS_LIMIT

        # and it recovers: the idle sockets are gone and a scrape answers at once
        assert exporter.metrics().count("ebs_device_up{") == VOLUMES
        wait_for(lambda: _fds(pid) <= fds_before + 4, timeout=30)
