"""The collector on in-memory pages: identity by serial, hot-plug, 32-bit wraps, failures, coalescing."""

from __future__ import annotations

import threading
import time

from pagesource import PageSource, stats_page

from ebs_exporter.collector import Collector
from ebs_exporter.selection import Selector
from ebs_exporter.snapshot import DeviceHealth, Snapshot
from ebs_exporter.volumes import ALL_REASONS
from nvme_ebs import DevicePermissionError, NvmeController, NvmeStatusError, PageFormatError, VolumeKind
from nvme_ebs import testing as pg


def _counted(health: DeviceHealth) -> dict[str, int]:
    """The reasons a device failed for; every reason is there from 0 on."""
    assert set(health.errors) == set(ALL_REASONS)
    return {reason: n for reason, n in health.errors.items() if n}


def _volumes(snapshot: Snapshot) -> dict[str, str]:
    return {s.state.name: s.state.volume_id for s in snapshot.samples}


def _page_with_bins(counts: list[int], read_ops: int = 10) -> bytes:
    bins = [(lo, hi, c) for (lo, hi), c in zip(pg.power_of_two_bounds(len(counts)), counts)]
    return pg.encode_stats_page({"total_read_ops": read_ops}, bins, bins)


def test_hot_plug_follows_the_serial_not_the_name() -> None:
    source = PageSource()
    source.add("nvme1", "vol0aaaaaaaaaaaaaaaa", _page_with_bins([5, 5]))
    source.add("nvme2", "vol0bbbbbbbbbbbbbbbb", _page_with_bins([1, 1]))
    collector = Collector(source)
    assert _volumes(collector.collect()) == {"nvme1n1": "vol-0aaaaaaaaaaaaaaaa", "nvme2n1": "vol-0bbbbbbbbbbbbbbbb"}

    # nvme2 detached, nvme3 attached, and nvme1's name reused by another volume with smaller counts
    source.volumes = [v for v in source.volumes if v.controller != "nvme2"]
    source.find("nvme1").serial = "vol0cccccccccccccccc"  # type: ignore[union-attr]
    source.find("nvme1").page = _page_with_bins([2, 0])  # type: ignore[union-attr]
    source.add("nvme3", "vol0dddddddddddddddd", _page_with_bins([7, 7]))
    snapshot = collector.collect()
    assert _volumes(snapshot) == {"nvme1n1": "vol-0cccccccccccccccc", "nvme3n1": "vol-0dddddddddddddddd"}
    fresh = next(s for s in snapshot.samples if s.state.name == "nvme1n1")
    assert fresh.histogram_counts["read_io_latency_histogram"] == [
        2,
        0,
    ]  # nothing inherited from the volume that had the name
    assert {h.name for h in snapshot.health} == {"nvme1n1", "nvme3n1"}
    assert all(not _counted(h) for h in snapshot.health)


def test_bin_counts_stay_monotonic_across_a_32_bit_wrap() -> None:
    source = PageSource()
    volume = source.add("nvme1", "vol0aaaaaaaaaaaaaaaa", _page_with_bins([2**32 - 10, 100, 5]))
    collector = Collector(source)
    assert collector.collect().samples[0].histogram_counts["read_io_latency_histogram"] == [2**32 - 10, 100, 5]
    volume.page = _page_with_bins([15, 100, 6], read_ops=20)  # bin 0 wrapped: +25
    assert collector.collect().samples[0].histogram_counts["read_io_latency_histogram"] == [2**32 + 15, 100, 6]
    volume.page = _page_with_bins([2**32 - 1, 101, 6], read_ops=30)  # +2**32-16 more
    assert collector.collect().samples[0].histogram_counts["read_io_latency_histogram"] == [2**33 - 1, 101, 6]


def test_counters_going_back_on_the_same_serial_start_over() -> None:
    source = PageSource()
    volume = source.add("nvme1", "vol0aaaaaaaaaaaaaaaa", _page_with_bins([50, 60], read_ops=1000))
    collector = Collector(source)
    collector.collect()
    volume.page = _page_with_bins([3, 4], read_ops=7)  # re-attached: counts since attachment
    snapshot = collector.collect()
    assert snapshot.samples[0].histogram_counts["read_io_latency_histogram"] == [3, 4]
    assert snapshot.health[0].up
    assert _counted(snapshot.health[0]) == {"counter_reset": 1}


def test_a_broken_device_is_left_out_and_counted_others_intact() -> None:
    source = PageSource()
    source.add("nvme1", "vol0aaaaaaaaaaaaaaaa", stats_page(1))
    bad = source.add("nvme2", "vol0bbbbbbbbbbbbbbbb", DevicePermissionError(13, "/dev/nvme2", "read"))
    source.add("nvme3", "vol0cccccccccccccccc", PageFormatError("magic", "unknown magic"))
    collector = Collector(source)
    for _ in range(3):
        snapshot = collector.collect()
    assert _volumes(snapshot) == {"nvme1n1": "vol-0aaaaaaaaaaaaaaaa"}
    health = {h.name: h for h in snapshot.health}
    assert health["nvme1n1"].up and not _counted(health["nvme1n1"])
    assert not health["nvme2n1"].up and _counted(health["nvme2n1"]) == {"permission": 3}
    assert not health["nvme3n1"].up and _counted(health["nvme3n1"]) == {"bad_page": 3}
    bad.page = NvmeStatusError("/dev/nvme2", 2, 0x2109, "log")
    health = {h.name: h for h in collector.collect().health}
    assert _counted(health["nvme2n1"]) == {"permission": 3, "nvme_status": 1}


def test_failures_are_logged_once_per_change_of_state(caplog) -> None:  # type: ignore[no-untyped-def]
    source = PageSource()
    volume = source.add("nvme1", "vol0aaaaaaaaaaaaaaaa", DevicePermissionError(13, "/dev/nvme1", "read"))
    collector = Collector(source)
    with caplog.at_level("INFO", logger="ebs_exporter"):
        for _ in range(5):
            collector.collect()
        volume.page = stats_page(1)
        for _ in range(3):
            collector.collect()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("CAP_SYS_ADMIN" in m for m in messages) == 1
    assert sum("reading again" in m for m in messages) == 1


def test_selection_by_ebs_device_patterns() -> None:
    source = PageSource()
    for i in range(1, 5):
        source.add(f"nvme{i}", f"vol0{i:016x}", stats_page(i))
    source.add("nvme9", "S123", stats_page(9), kind=VolumeKind.OTHER)
    assert len(Collector(source).collect().samples) == 4  # default: no OTHER
    chosen = Collector(source, Selector(["/dev/nvme[12]n1", "nvme4", "/dev/nvme7n1"])).collect()
    assert sorted(_volumes(chosen)) == ["nvme1n1", "nvme2n1", "nvme4n1"]
    missing = [h for h in chosen.health if h.name == "nvme7n1"]
    assert missing and not missing[0].up and _counted(missing[0]) == {"not_found": 1}


def test_devices_are_counted_by_kind() -> None:
    source = PageSource()
    source.add("nvme1", "vol0aaaaaaaaaaaaaaaa", stats_page(1))
    source.add("nvme2", "AWS1", stats_page(2, magic=pg.MAGIC_INSTANCE_STORE), VolumeKind.INSTANCE_STORE)
    source.add("nvme3", "X", stats_page(3), VolumeKind.OTHER)
    assert Collector(source).collect().devices_by_kind == {"ebs": 1, "instance_store": 1, "other": 1}


class _SlowSource(PageSource):
    """Reads block until released: a hung device, or a slow one shared by two scrapes."""

    def __init__(self) -> None:
        super().__init__(parallel_reads=True)
        self.release = threading.Event()
        self.hang = {"nvme2"}

    def read_stats(self, device: NvmeController):  # type: ignore[no-untyped-def]
        if device.controller in self.hang:
            self.release.wait(30)
        return super().read_stats(device)


def test_a_hung_device_does_not_stall_the_scrape() -> None:
    source = _SlowSource()
    source.add("nvme1", "vol0aaaaaaaaaaaaaaaa", stats_page(1))
    source.add("nvme2", "vol0bbbbbbbbbbbbbbbb", stats_page(2))
    collector = Collector(source, device_timeout=0.3)
    try:
        for _ in range(3):  # the hung read is not asked again while it is stuck
            snapshot = collector.collect()
            assert _volumes(snapshot) == {"nvme1n1": "vol-0aaaaaaaaaaaaaaaa"}
        health = {h.name: h for h in snapshot.health}
        assert _counted(health["nvme2n1"]) == {"timeout": 3} and not health["nvme2n1"].up
        assert source.reads == 3  # nvme1 three times; nvme2's only read has not returned yet
        source.release.set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(collector.collect().samples) < 2:
            time.sleep(0.05)
        assert len(collector.collect().samples) == 2
    finally:
        source.release.set()
        collector.close()


def test_concurrent_scrapes_share_one_read_per_device() -> None:
    source = _SlowSource()
    source.hang = {"nvme1"}
    source.add("nvme1", "vol0aaaaaaaaaaaaaaaa", stats_page(1))
    collector = Collector(source, device_timeout=10)
    results: list[Snapshot] = []
    arrived = threading.Semaphore(0)

    def scrape() -> None:
        arrived.release()
        results.append(collector.collect())

    threads = [threading.Thread(target=scrape) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in threads:  # all four are in collect() while the one read is blocked
        assert arrived.acquire(timeout=10)
    time.sleep(0.1)
    source.release.set()
    for t in threads:
        t.join(10)
    assert len(results) == 4 and all(len(r.samples) == 1 for r in results)
    assert source.reads == 1
    collector.close()
