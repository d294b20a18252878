"""The fault matrix through the real C path: an exporter process reads a fake host whose one
volume misbehaves in a given way, while three healthy volumes must be served untouched.

For each fault: every scrape answers 200 within a generous bound, the faulty device shows
ebs_device_up 0 and ebs_device_errors_total{reason} rising by one per scrape, the healthy
devices' series are exactly what they were before the fault, and the log names the faulty
device once when it starts failing and once when it recovers, however many scrapes happen.
"""

from __future__ import annotations

import errno
import http.client
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from exporter_harness import Exporter, FakeHost, samples, value, wait_for
from pagesource import stats_page
from reliability import series_of

import nvme_ebs
from nvme_ebs import VolumeKind
from nvme_ebs import testing as pg
from nvme_ebs.model import EBS_MODEL

BOUND = 30.0  # seconds: a generous bound on one scrape, far below the hung device's delay
HANG_MS = 120_000  # a hung command would hold a scrape this long if the exporter waited for it
FAULTY_SCRAPES = 4

TARGET, DEVICE = "nvme5", "nvme5n1"
SERIAL = "vol05555555555555555"
VOLUME_ID = "vol-05555555555555555"
HEALTHY = ("nvme1n1", "nvme2n1", "nvme3n1")
GOOD_PAGE = stats_page(5)
NAMES_DEVICE = re.compile(rf"\b{TARGET}(?:n1)?\b")


def make_host(root: Path) -> FakeHost:
    host = FakeHost(root)
    host.attach("nvme1", "vol01111111111111111", stats_page(1, 28))
    host.attach("nvme2", "vol02222222222222222", stats_page(2, 64), multipath_subsystem=2)
    host.attach("nvme3", "AWS33333333333333333", stats_page(3, 28, pg.MAGIC_INSTANCE_STORE), VolumeKind.INSTANCE_STORE)
    host.attach(TARGET, SERIAL, GOOD_PAGE)
    return host


def restore(host: FakeHost) -> None:
    """The target as it was: node back, good answers, no failure injected."""
    host.fake.add(TARGET, pg.encode_identify(SERIAL, EBS_MODEL, "2.0", "sdf"), GOOD_PAGE)


def scrape(exporter: Exporter) -> str:
    """One scrape that must answer 200 within BOUND seconds (the socket timeout)."""
    conn = http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=BOUND)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read().decode()
    finally:
        conn.close()
    assert response.status == 200, body
    return body


def device_log(exporter: Exporter) -> list[str]:
    """Stops the exporter, then its log lines that name the target device (all of them:
    the exporter's last line is written after every scrape's)."""
    assert exporter.stop() == 0
    wait_for(lambda: any("shutting down" in line for line in exporter.log), timeout=BOUND)
    return [line for line in exporter.log if NAMES_DEVICE.search(line)]


def healthy_series(text: str) -> dict[object, float]:
    parsed = samples(text)
    out: dict[object, float] = {}
    for device in HEALTHY:
        series = series_of(parsed, device)
        assert ("ebs_device_up", (("device", device),)) in series
        out.update(series)
    out.update({k: v for k, v in parsed.items() if k[0] == "ebs_devices"})
    return out


def target_page_values(text: str, page: bytes) -> None:
    stats = nvme_ebs.parse_log_page(page)
    labels = {"volume_id": VOLUME_ID, "device": DEVICE}
    assert value(text, "ebs_read_ops_total", **labels) == stats.total_read_ops
    assert value(text, "ebs_write_bytes_total", **labels) == stats.total_write_bytes
    hist = stats.read_io_latency_histogram
    assert value(text, "ebs_read_io_latency_seconds_bucket", le="+Inf", **labels) == sum(hist.counts)


@dataclass(frozen=True)
class Fault:
    name: str
    reason: str  # the label ebs_device_errors_total{reason} must carry
    detail: str  # what the log line must say about the cause
    inject: Callable[[FakeHost], None]


def _errno_fault(err: int, reason: str) -> Fault:
    name = errno.errorcode[err]
    return Fault(name, reason, f"errno {name}", lambda host: host.fake.fail_errno(TARGET, err))


def _page_fault(name: str, detail: str, page: bytes) -> Fault:
    return Fault(name, "bad_page", detail, lambda host: host.fake.set_log_page(TARGET, page))


UNORDERED_BINS = [(0, 1, 5), (4, 8, 5), (2, 4, 5)]  # bin 2 starts before bin 1 ends
FOUR_BINS = [(lower, upper, 1) for lower, upper in pg.power_of_two_bounds(4)]

FAULTS = [
    _errno_fault(errno.EACCES, "permission"),
    _errno_fault(errno.EPERM, "permission"),
    # The node is unplugged while sysfs still lists the controller: open() fails ENOENT.
    Fault("ENOENT", "not_found", "errno ENOENT", lambda host: host.fake.remove(TARGET)),
    _errno_fault(errno.ENODEV, "gone"),
    _errno_fault(errno.ENXIO, "gone"),
    _errno_fault(errno.ENOTTY, "not_nvme"),
    _errno_fault(errno.EIO, "io_error"),
    Fault("status_0x2109", "nvme_status", "NVMe status 0x2109", lambda host: host.fake.fail_status(TARGET, 0x2109)),
    _page_fault("bad_magic", "unknown magic 0xdeadbeef", stats_page(5, magic=0xDEADBEEF)),
    _page_fault(
        "num_bins_65",
        "num_bins 65 exceeds 64",
        pg.encode_stats_page({"total_read_ops": 1}, FOUR_BINS, FOUR_BINS, read_num_bins=65),
    ),
    _page_fault(
        "unordered_bins",
        "bin 2 starts at 2, before bin 1 ends at 8",
        pg.encode_stats_page({"total_read_ops": 1}, UNORDERED_BINS, UNORDERED_BINS),
    ),
]


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return make_host(tmp_path)


@pytest.fixture
def exporter(host: FakeHost) -> Iterator[Exporter]:
    with Exporter([*host.args(), "--device.timeout=10"], host.env()) as running:
        yield running


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault_is_isolated_counted_and_logged_once(
    host: FakeHost, exporter: Exporter, fault: Fault, check_metrics: Callable[[str], None]
) -> None:
    before = scrape(exporter)
    baseline = healthy_series(before)
    assert value(before, "ebs_device_up", device=DEVICE) == 1
    target_page_values(before, GOOD_PAGE)

    fault.inject(host)
    for i in range(1, FAULTY_SCRAPES + 1):
        text = scrape(exporter)
        assert healthy_series(text) == baseline
        # the faulty device: down, counted under its reason, and nothing else of it is served
        assert series_of(samples(text), DEVICE) == {
            ("ebs_device_up", (("device", DEVICE),)): 0,
            ("ebs_device_errors_total", (("device", DEVICE), ("reason", fault.reason))): i,
        }
        assert VOLUME_ID not in text
    check_metrics(text)

    restore(host)
    text = scrape(exporter)
    assert value(text, "ebs_device_up", device=DEVICE) == 1
    assert value(text, "ebs_device_errors_total", device=DEVICE, reason=fault.reason) == FAULTY_SCRAPES
    target_page_values(text, GOOD_PAGE)
    assert healthy_series(text) == baseline
    scrape(exporter)

    lines = device_log(exporter)
    assert len(lines) == 2, lines
    assert "level=warn" in lines[0] and f"({fault.reason})" in lines[0] and fault.detail in lines[0]
    assert f"reading again after {fault.reason}" in lines[1]


def test_hung_device_costs_the_timeout_not_the_scrape(host: FakeHost) -> None:
    with Exporter([*host.args(), "--device.timeout=1"], host.env()) as running:
        try:
            before = scrape(running)
            baseline = healthy_series(before)
            host.fake.clear_commands(TARGET)
            host.fake.set_delay_ms(TARGET, HANG_MS)
            for i in range(1, FAULTY_SCRAPES + 1):
                text = scrape(running)  # within BOUND although the device holds its answer for HANG_MS
                assert healthy_series(text) == baseline
                assert series_of(samples(text), DEVICE) == {
                    ("ebs_device_up", (("device", DEVICE),)): 0,
                    ("ebs_device_errors_total", (("device", DEVICE), ("reason", "timeout"))): i,
                }
            # the device was asked once; while that read is stuck, later scrapes do not ask again
            assert len(host.fake.commands(TARGET)) == 1
        finally:
            host.fake.set_delay_ms(TARGET, None)  # releases the stuck read
        text = wait_for(lambda: (t := scrape(running)) and value(t, "ebs_device_up", device=DEVICE) == 1 and t)
        assert value(text, "ebs_device_errors_total", device=DEVICE, reason="timeout") >= FAULTY_SCRAPES
        target_page_values(text, GOOD_PAGE)
        lines = device_log(running)
    assert len(lines) == 2, lines
    assert "no answer within 1 s (timeout)" in lines[0]
    assert "reading again after timeout" in lines[1]


def test_eintr_is_retried_and_the_device_stays_up(host: FakeHost, exporter: Exporter) -> None:
    scrape(exporter)  # the first read also identifies the controller; later ones only read
    for interruptions in (1, 3, 5):
        host.fake.clear_commands(TARGET)
        host.fake.set_eintr(TARGET, interruptions)
        text = scrape(exporter)
        assert value(text, "ebs_device_up", device=DEVICE) == 1
        assert not any(k[0] == "ebs_device_errors_total" for k in series_of(samples(text), DEVICE))
        target_page_values(text, GOOD_PAGE)
        commands = host.fake.commands(TARGET)
        # each interrupted ioctl was sent again, unchanged, until one went through
        assert len(commands) == interruptions + 1
        assert all(c == commands[0] for c in commands) and commands[0]["opcode"] == 0x02
        assert (host.fake.ctl_dir(TARGET) / "eintr").read_text().strip() == "0"
    assert device_log(exporter) == []


def test_counters_going_back_on_the_same_serial_count_a_reset(host: FakeHost, exporter: Exporter) -> None:
    pages = [stats_page(3), stats_page(2), stats_page(2), stats_page(1)]
    expected_resets = [0, 1, 1, 2]
    for page, resets in zip(pages, expected_resets):
        host.fake.set_log_page(TARGET, page)
        text = scrape(exporter)
        assert value(text, "ebs_device_up", device=DEVICE) == 1
        # after a reset the histogram starts over from the page instead of adding a wrapped delta
        target_page_values(text, page)
        errors = {dict(k[1])["reason"]: v for k, v in series_of(samples(text), DEVICE).items() if "errors" in k[0]}
        assert errors == ({"counter_reset": resets} if resets else {})
    lines = device_log(exporter)
    assert len(lines) == 2, lines
    assert all("counters went backwards" in line for line in lines)


def test_another_volume_under_the_same_name_is_no_reset(host: FakeHost, exporter: Exporter) -> None:
    host.fake.set_log_page(TARGET, stats_page(3))
    assert value(scrape(exporter), "ebs_read_ops_total", volume_id=VOLUME_ID, device=DEVICE) > 0
    host.detach(TARGET)
    new_page = stats_page(1)  # lower counters than the old volume's, as a fresh attachment has
    host.attach(TARGET, "vol0aaaaaaaaaaaaaaaa", new_page)
    text = scrape(exporter)
    stats = nvme_ebs.parse_log_page(new_page)
    assert value(text, "ebs_read_ops_total", volume_id="vol-0aaaaaaaaaaaaaaaa", device=DEVICE) == stats.total_read_ops
    assert VOLUME_ID not in text and SERIAL not in text
    assert value(text, "ebs_device_up", device=DEVICE) == 1
    assert not any(k[0] == "ebs_device_errors_total" for k in series_of(samples(text), DEVICE))
    lines = device_log(exporter)
    assert len(lines) == 1 and f"now volume vol0aaaaaaaaaaaaaaaa (was {SERIAL})" in lines[0], lines
