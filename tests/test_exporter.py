"""The exporter process end to end against the fake host, over real HTTP, checked with promtool."""

from __future__ import annotations

import errno
import gzip
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from exporter_harness import Exporter, FakeHost, samples, value
from pagesource import stats_page
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse

import nvme_ebs
from nvme_ebs import VolumeKind
from nvme_ebs import testing as pg

VOL_A, VOL_B, VOL_C = "vol0aaaaaaaaaaaaaaaa", "vol0bbbbbbbbbbbbbbbb", "vol0cccccccccccccccc"


@pytest.fixture
def host(fake_host: FakeHost) -> FakeHost:
    host = fake_host
    host.attach("nvme1", VOL_A, stats_page(1, 28), mapping="/dev/sdf")
    host.attach("nvme2", VOL_B, stats_page(2, 64), mapping="xvdg", multipath_subsystem=2)
    host.attach("nvme3", "AWS22222222222222222", stats_page(3, 28, pg.MAGIC_INSTANCE_STORE), VolumeKind.INSTANCE_STORE)
    host.attach("nvme4", VOL_C, stats_page(4))
    host.fake.fail_errno("nvme4", errno.EACCES)
    host.attach("nvme0", "QM0001", None, VolumeKind.OTHER)
    return host


@pytest.fixture
def exporter(host: FakeHost) -> Iterator[Exporter]:
    with Exporter(host.args(), host.env()) as running:
        yield running


def test_values_are_the_pages_values(host: FakeHost, exporter: Exporter, check_metrics: Callable[[str], None]) -> None:
    text = exporter.metrics()
    page = nvme_ebs.parse_log_page(stats_page(1, 28))
    a = {"volume_id": "vol-0aaaaaaaaaaaaaaaa", "device": "nvme1n1"}
    assert value(text, "ebs_read_ops_total", **a) == page.total_read_ops
    assert value(text, "ebs_write_bytes_total", **a) == page.total_write_bytes
    assert value(text, "ebs_read_time_seconds_total", **a) == page.total_read_time_us / 1e6
    assert value(text, "ebs_volume_performance_exceeded_iops_seconds_total", **a) == (
        page.ebs_volume_performance_exceeded_iops_us / 1e6
    )
    assert value(text, "ebs_instance_performance_exceeded_throughput_seconds_total", **a) == (
        page.ec2_instance_ebs_performance_exceeded_tp_us / 1e6
    )
    assert value(text, "ebs_volume_queue_length", **a) == page.volume_queue_length
    # histogram: cumulative buckets at the bins' upper bounds, the open last bin only in +Inf
    hist = page.read_io_latency_histogram
    total = sum(hist.counts)
    assert value(text, "ebs_read_io_latency_seconds_bucket", **a, le="1e-06") == hist.counts[0]
    assert value(text, "ebs_read_io_latency_seconds_bucket", **a, le="4e-06") == sum(hist.counts[:3])
    assert value(text, "ebs_read_io_latency_seconds_bucket", **a, le="+Inf") == total
    assert value(text, "ebs_read_io_latency_seconds_count", **a) == total
    assert value(text, "ebs_read_io_latency_seconds_sum", **a) == page.total_read_time_us / 1e6
    buckets = [
        k for k in samples(text) if k[0] == "ebs_read_io_latency_seconds_bucket" and ("device", "nvme1n1") in k[1]
    ]
    assert len(buckets) == 28  # 27 closed bins + +Inf
    # the multipath volume (64 bins) and the instance store under their own names
    b = {"volume_id": "vol-0bbbbbbbbbbbbbbbb", "device": "nvme2n1"}
    assert value(text, "ebs_write_ops_total", **b) == nvme_ebs.parse_log_page(stats_page(2, 64)).total_write_ops
    store = {"volume_id": "AWS22222222222222222", "device": "nvme3n1"}
    assert value(text, "ec2_instance_store_read_ops_total", **store) > 0
    assert ("ebs_read_ops_total", tuple(sorted(store.items()))) not in samples(text)
    info = value(
        text,
        "ebs_volume_info",
        volume_id="vol-0aaaaaaaaaaaaaaaa",
        device="nvme1n1",
        block_device_mapping="sdf",
        model="Amazon Elastic Block Store",
        firmware="2.0",
        kind="ebs",
        serial=VOL_A,
    )
    assert info == 1
    # health: the unreadable volume is left out, counted and down; the QEMU controller is not read
    assert value(text, "ebs_device_up", device="nvme1n1") == 1
    assert value(text, "ebs_device_up", device="nvme4n1") == 0
    assert value(text, "ebs_device_errors_total", device="nvme4n1", reason="permission") == 1
    assert not any(k[0].startswith("ebs_read") and ("device", "nvme4n1") in k[1] for k in samples(text))
    assert value(text, "ebs_devices", kind="ebs") == 3
    assert value(text, "ebs_devices", kind="instance_store") == 1
    assert value(text, "ebs_devices", kind="other") == 1
    assert host.fake.commands("nvme0") == []
    check_metrics(text)


def test_errors_are_counted_and_logged_once(host: FakeHost, exporter: Exporter) -> None:
    for _ in range(4):
        text = exporter.metrics()
    assert value(text, "ebs_device_errors_total", device="nvme4n1", reason="permission") == 4
    assert sum("nvme4n1" in line and "CAP_SYS_ADMIN" in line for line in exporter.log) == 1


def test_hot_plug_between_scrapes(host: FakeHost, exporter: Exporter) -> None:
    exporter.metrics()
    host.detach("nvme1")
    host.detach("nvme2")
    host.attach("nvme2", "vol0dddddddddddddddd", stats_page(7))  # the name comes back with another volume
    host.attach("nvme5", "vol0eeeeeeeeeeeeeeee", stats_page(8))
    text = exporter.metrics()
    read_ops = {dict(k[1])["volume_id"]: v for k, v in samples(text).items() if k[0] == "ebs_read_ops_total"}
    assert set(read_ops) == {"vol-0dddddddddddddddd", "vol-0eeeeeeeeeeeeeeee"}
    assert read_ops["vol-0dddddddddddddddd"] == nvme_ebs.parse_log_page(stats_page(7)).total_read_ops
    assert "vol-0aaaaaaaaaaaaaaaa" not in text and 'device="nvme1n1"' not in text


def test_histogram_stays_monotonic_across_a_u32_wrap(host: FakeHost, exporter: Exporter) -> None:
    bounds = pg.power_of_two_bounds(4)
    before = [(lo, hi, c) for (lo, hi), c in zip(bounds, [2**32 - 5, 10, 10, 1])]
    after = [(lo, hi, c) for (lo, hi), c in zip(bounds, [20, 10, 10, 1])]
    host.fake.set_log_page("nvme1", pg.encode_stats_page({"total_read_ops": 10}, before, before))
    a = {"volume_id": "vol-0aaaaaaaaaaaaaaaa", "device": "nvme1n1"}
    assert value(exporter.metrics(), "ebs_read_io_latency_seconds_bucket", **a, le="1e-06") == 2**32 - 5
    host.fake.set_log_page("nvme1", pg.encode_stats_page({"total_read_ops": 40}, after, after))
    text = exporter.metrics()
    assert value(text, "ebs_read_io_latency_seconds_bucket", **a, le="1e-06") == 2**32 + 20
    assert value(text, "ebs_read_io_latency_seconds_count", **a) == 2**32 + 20 + 10 + 10 + 1


def test_concurrent_scrapes_all_succeed(host: FakeHost, exporter: Exporter) -> None:
    results: list[tuple[int, str]] = []

    def scrape() -> None:
        status, _, body = exporter.get()
        results.append((status, body.decode()))

    threads = [threading.Thread(target=scrape) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [status for status, _ in results] == [200] * 8
    for _, text in results:
        assert value(text, "ebs_device_up", device="nvme1n1") == 1
    assert len(host.fake.commands("nvme1")) <= 8 + 1  # at most one read per scrape (+ one identify)


def test_openmetrics_and_gzip_negotiation(exporter: Exporter) -> None:
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    status, headers, body = exporter.get(headers={"Accept": accept, "Accept-Encoding": "gzip"})
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert headers["content-encoding"] == "gzip"
    text = gzip.decompress(body).decode()
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    families = {f.name: f for f in om_parse(text)}
    assert families["ebs_read_ops"].type == "counter"
    assert families["ebs_volume"].type == "info"
    assert "process_cpu_seconds" in families  # prometheus_client's own process metrics are kept
    status, headers, body = exporter.get()
    assert headers["content-type"].startswith("text/plain") and "content-encoding" not in headers


def test_landing_page_health_and_unknown_paths(exporter: Exporter) -> None:
    status, headers, body = exporter.get("/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"vol-0aaaaaaaaaaaaaaaa" in body and b'href="/metrics"' in body
    assert exporter.get("/healthz")[:1] == (200,)
    assert exporter.get("/metrics/../etc/passwd")[0] == 404
    assert exporter.get("/favicon.ico")[0] == 404


def test_sigterm_shuts_down_cleanly(host: FakeHost) -> None:
    running = Exporter(host.args(), host.env())
    assert running.metrics()
    assert running.stop() == 0
    assert any("shutting down" in line for line in running.log)


def test_ebs_device_narrows_the_volumes(host: FakeHost) -> None:
    env = {**host.env(), "EBS_DEVICE": f"{host.dev}/nvme2n1,/dev/nvme9n1"}
    with Exporter(host.args(), env) as running:
        text = running.metrics()
    volumes = {dict(k[1])["device"] for k in samples(text) if k[0] == "ebs_read_ops_total"}
    assert volumes == {"nvme2n1"}
    assert value(text, "ebs_device_up", device="nvme9n1") == 0
    assert value(text, "ebs_device_errors_total", device="nvme9n1", reason="not_found") == 1
    assert host.fake.commands("nvme1") == []


def test_simulated_volumes_pass_promtool(check_metrics: Callable[[str], None]) -> None:
    with Exporter(["--simulate", "3"]) as running:
        first = running.metrics()
        second = running.metrics()
    check_metrics(second)
    ops = [
        value(t, "ebs_read_ops_total", volume_id=v, device="nvme1n1")
        for t in (first, second)
        for v in [dict(k[1])["volume_id"] for k in samples(first) if k[0] == "ebs_read_ops_total"][:1]
    ]
    assert ops[1] >= ops[0] > 0
    assert sum(1 for k in samples(second) if k[0] == "ebs_read_ops_total") == 3


def test_only_cap_sys_admin_is_kept(host: FakeHost) -> None:
    from ebs_exporter.privileges import effective_capabilities

    if effective_capabilities() & ~(1 << 21) == 0:
        pytest.skip("the test runner holds no capability beyond CAP_SYS_ADMIN: nothing to drop")
    with Exporter(host.args(), host.env()) as running:
        assert value(running.metrics(), "ebs_device_up", device="nvme1n1") == 1  # still reads devices
        with open(f"/proc/{running.proc.pid}/status") as f:
            status = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
    for field in ("CapEff", "CapPrm", "CapBnd"):
        assert int(status[field], 16) == 1 << 21, (field, status[field])
    assert int(status["CapInh"], 16) == 0 and int(status["CapAmb"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    assert any("kept only CAP_SYS_ADMIN" in line for line in running.log)


def test_launcher_reports_an_exporter_that_never_serves_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"(?s)exit status 2\).*unrecognized arguments: --no-such-flag"):
        Exporter(["--no-such-flag"], timeout=30)
    assert time.monotonic() - started < 15  # its exit ends the wait, not the timeout
