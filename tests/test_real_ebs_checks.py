"""The checks of test_real_ebs.py against the fake controller, which answers from files: they
must fail when our reads never reach the device (a page that does not move, an all-zero page,
an identity unlike sysfs), and pass when the device counts them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import test_real_ebs as real
from fakenvme import FakeNvme
from pagesource import histogram_bins
from sysfs_fixture import SysfsTree

import nvme_ebs
from nvme_ebs import testing as pg

SERIAL = "vol0123456789abcdef0"
MODEL = "Amazon Elastic Block Store"
READ_BINS = histogram_bins(28)


def page(read_ops: int = 1000, read_bytes: int = 4_096_000, read_time_us: int = 500_000, extra: int = 0) -> bytes:
    counters = {"total_read_ops": read_ops, "total_read_bytes": read_bytes, "total_read_time_us": read_time_us}
    bins = [(lo, hi, count + (extra if i == 3 else 0)) for i, (lo, hi, count) in enumerate(READ_BINS)]
    return pg.encode_stats_page(counters, bins, READ_BINS)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeNvme:
    fake = FakeNvme(tmp_path / "fake")
    monkeypatch.setenv("FAKENVME_ROOT", str(fake.root))
    return fake


@pytest.fixture
def volume(tmp_path: Path) -> str:
    """What our reads go to: a file on a file system that takes O_DIRECT."""
    path = tmp_path / "volume"
    path.write_bytes(bytes(real.OUR_READS * real.READ_SIZE * 4))
    return str(path)


def test_counter_check_fails_when_the_page_does_not_move(fake: FakeNvme, volume: str) -> None:
    node = nvme_ebs.DeviceNode(str(fake.add("nvme1", pg.encode_identify(SERIAL), page())))
    with pytest.raises(AssertionError, match=r"counted 0 more read operations and 0 more bytes"):
        real.check_counters_follow_our_reads(node, volume, deadline_s=0.5)


def test_counter_check_fails_when_the_device_counts_fewer_reads_than_ours(fake: FakeNvme, volume: str) -> None:
    path = fake.add("nvme1", pg.encode_identify(SERIAL), page())
    node = nvme_ebs.DeviceNode(str(path))
    bump = threading.Thread(target=_count_reads_once, args=(fake, real.OUR_READS - 1))
    bump.start()
    with pytest.raises(AssertionError, match=rf"counted {real.OUR_READS - 1} more read operations"):
        real.check_counters_follow_our_reads(node, volume, deadline_s=1.0)
    bump.join()


def test_counter_check_fails_on_an_all_zero_page(fake: FakeNvme, volume: str) -> None:
    node = nvme_ebs.DeviceNode(str(fake.add("nvme1", pg.encode_identify(SERIAL), bytes(4096))))
    with pytest.raises(nvme_ebs.PageFormatError):
        real.check_counters_follow_our_reads(node, volume, deadline_s=0.5)
    with pytest.raises(AssertionError, match="page magic 0x00000000, not the EBS one"):
        real.check_raw_page(node, nvme_ebs.parse_log_page(page()))


def test_counter_check_passes_when_the_device_counts_our_reads(fake: FakeNvme, volume: str) -> None:
    node = nvme_ebs.DeviceNode(str(fake.add("nvme1", pg.encode_identify(SERIAL), page())))
    bump = threading.Thread(target=_count_reads_once, args=(fake, real.OUR_READS))
    bump.start()
    real.check_counters_follow_our_reads(node, volume, deadline_s=5.0)
    bump.join()
    real.check_raw_page(node, nvme_ebs.parse_log_page(page()))


def _count_reads_once(fake: FakeNvme, reads: int) -> None:
    """Plays a device that sees `reads` more reads once the first page has been read."""
    give_up = time.monotonic() + 5
    while not fake.commands("nvme1") and time.monotonic() < give_up:
        time.sleep(0.01)
    fake.set_log_page("nvme1", page(1000 + reads, 4_096_000 + reads * real.READ_SIZE, 600_000, extra=reads))


def test_raw_page_check_fails_on_another_magic(fake: FakeNvme) -> None:
    store = pg.encode_stats_page({"total_read_ops": 2000}, READ_BINS, READ_BINS, magic=pg.MAGIC_INSTANCE_STORE)
    node = nvme_ebs.DeviceNode(str(fake.add("nvme1", pg.encode_identify(SERIAL), store)))
    with pytest.raises(AssertionError, match="page magic 0xec2c0d7e, not the EBS one"):
        real.check_raw_page(node, nvme_ebs.parse_log_page(page()))


def test_identity_check_compares_with_sysfs(tmp_path: Path) -> None:
    sysfs = SysfsTree(tmp_path / "sys")
    sysfs.add_controller("nvme1", MODEL, SERIAL, firmware="2.0")
    controller_dir = Path(sysfs.controller_dir("nvme1"))
    answered = nvme_ebs.parse_identify(pg.encode_identify(SERIAL, MODEL, "2.0"))
    real.check_identity_matches_sysfs(answered, controller_dir)
    for wrong in (
        pg.encode_identify("vol0ffffffffffffffff", MODEL, "2.0"),  # another volume's answer
        pg.encode_identify(SERIAL, MODEL, "1.0"),
        bytes(4096),  # nothing answered
    ):
        with pytest.raises(AssertionError):
            real.check_identity_matches_sysfs(nvme_ebs.parse_identify(wrong), controller_dir)


def test_controller_of_takes_the_controller_or_a_namespace(tmp_path: Path) -> None:
    sysfs = SysfsTree(tmp_path / "sys")
    sysfs.add_controller("nvme1", MODEL, SERIAL)
    dev = str(tmp_path / "dev")
    for device in (f"{dev}/nvme1", f"{dev}/nvme1n1"):
        assert real.controller_of(device, str(sysfs.root), dev).controller == "nvme1"
    with pytest.raises(AssertionError, match="nvme7n1 is not an NVMe controller"):
        real.controller_of(f"{dev}/nvme7n1", str(sysfs.root), dev)
