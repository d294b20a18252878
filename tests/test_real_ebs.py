"""On an EC2 node only: the real thing. Set EBS_TEST_DEVICE=/dev/nvme1n1 (an EBS volume) and run as root.

Every check is one that a read which never reached the device fails: the identity must be
the one the kernel read when it probed the controller (sysfs), the page must carry the EBS
magic, and the read counters must count reads of our own that bypass the page cache
(O_DIRECT) between two reads of the page. tests/test_real_ebs_checks.py runs these checks
against the fake controller, where they must fail.
"""

from __future__ import annotations

import mmap
import os
import time
from pathlib import Path

import pytest

import nvme_ebs
from nvme_ebs.layout import MAGIC_EBS, MAX_BINS, PAGE_SIZE

DEVICE = os.environ.get("EBS_TEST_DEVICE")
pytestmark = [
    pytest.mark.ebs,
    pytest.mark.skipif(not DEVICE, reason="needs a real EBS volume: set EBS_TEST_DEVICE on an EC2 node"),
]

OUR_READS = 64
READ_SIZE = 4096  # a multiple of any logical block size O_DIRECT may require
# The page may be sampled once a second and answered from a queue: allow a few samples.
COUNTER_DEADLINE_S = 15.0


def controller_of(device: str, sysfs: str = "/sys", dev: str = "/dev") -> nvme_ebs.NvmeController:
    """The controller that `device` (a controller node or one of its namespaces) belongs to."""
    device = os.path.realpath(device)  # /dev/disk/by-id/... names too
    for controller in nvme_ebs.discover(sysfs, dev):
        if device in {controller.controller_path, *(os.path.join(dev, n) for n in controller.namespaces)}:
            return controller
    raise AssertionError(f"{device} is not an NVMe controller or namespace listed in {sysfs}/class/nvme")


def check_identity_matches_sysfs(identity: nvme_ebs.ControllerIdentity, controller_dir: Path) -> None:
    """The kernel read these with its own Identify at probe time: an invented answer differs."""
    sysfs = {name: (controller_dir / name).read_text().strip() for name in ("serial", "model", "firmware_rev")}
    assert (identity.serial, identity.model, identity.firmware) == (
        sysfs["serial"],
        sysfs["model"],
        sysfs["firmware_rev"],
    )
    assert identity.vid == 0x1D0F
    assert identity.kind is nvme_ebs.VolumeKind.EBS
    assert identity.volume_id == "vol-" + sysfs["serial"][len("vol") :]


def direct_reads(block_device: str, count: int = OUR_READS) -> int:
    """`count` reads of READ_SIZE bytes spread over the device, around the page cache; the bytes read."""
    fd = os.open(block_device, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    buf = mmap.mmap(-1, READ_SIZE)  # page-aligned, as O_DIRECT wants
    try:
        size = os.lseek(fd, 0, os.SEEK_END)  # st_size is 0 for a block device
        assert size >= count * READ_SIZE, f"{block_device}: {size} bytes, too small for {count} reads"
        stride = size // count // READ_SIZE * READ_SIZE
        for i in range(count):
            got = os.preadv(fd, [buf], i * stride)
            assert got == READ_SIZE, f"{block_device}: short O_DIRECT read at {i * stride} ({got} bytes)"
        return count * READ_SIZE
    finally:
        buf.close()
        os.close(fd)


def read_stats_after(
    node: nvme_ebs.DeviceNode, before: nvme_ebs.EbsStats, reads: int, read_bytes: int, deadline_s: float
) -> nvme_ebs.EbsStats:
    """The page once it counts `reads` more read operations and `read_bytes` more bytes than `before`."""
    give_up = time.monotonic() + deadline_s
    while True:
        after = node.read_stats()
        ops = after.total_read_ops - before.total_read_ops
        got = after.total_read_bytes - before.total_read_bytes
        if ops >= reads and got >= read_bytes:
            return after
        if time.monotonic() > give_up:
            raise AssertionError(
                f"{node.path}: {reads} reads of {read_bytes} bytes in all went to the device, but in"
                f" {deadline_s:.0f} s its page counted {ops} more read operations and {got} more bytes"
            )
        time.sleep(0.25)


def check_counters_follow_our_reads(node: nvme_ebs.DeviceNode, block_device: str, deadline_s: float) -> None:
    before = node.read_stats()
    assert before.kind is nvme_ebs.PageKind.EBS
    read_bytes = direct_reads(block_device)
    after = read_stats_after(node, before, OUR_READS, read_bytes, deadline_s)
    assert after.total_read_time_us > before.total_read_time_us  # reads take time
    # The 32-bit bin counts may wrap; the change modulo 2**32 must show reads too.
    moved = sum(
        (a.count - b.count) % 2**32 for a, b in zip(after.read_io_latency_histogram, before.read_io_latency_histogram)
    )
    assert moved > 0
    assert 0 < len(after.read_io_latency_histogram) <= MAX_BINS


def check_raw_page(node: nvme_ebs.DeviceNode, not_before: nvme_ebs.EbsStats) -> None:
    raw = node.read_stats_page()
    assert len(raw) == PAGE_SIZE
    magic = int.from_bytes(raw[:4], "little")  # an all-zero or absent page has none
    assert magic == MAGIC_EBS, f"{node.path}: page magic {magic:#010x}, not the EBS one {MAGIC_EBS:#010x}"
    assert nvme_ebs.parse_log_page(raw).total_read_ops >= not_before.total_read_ops


def _node() -> tuple[nvme_ebs.DeviceNode, nvme_ebs.NvmeController]:
    return nvme_ebs.DeviceNode(str(DEVICE)), controller_of(str(DEVICE))


def test_identity_is_the_one_the_kernel_read() -> None:
    node, controller = _node()
    identity = node.identify()
    check_identity_matches_sysfs(identity, Path("/sys/class/nvme") / controller.controller)
    assert (controller.kind, controller.volume_id) == (nvme_ebs.VolumeKind.EBS, identity.volume_id)


def test_read_counters_count_reads_that_bypass_the_page_cache() -> None:
    node, controller = _node()
    assert controller.block_device is not None, f"{DEVICE}: the controller has no namespace to read"
    check_counters_follow_our_reads(node, controller.block_device, COUNTER_DEADLINE_S)


def test_raw_page_is_an_ebs_page() -> None:
    node, _ = _node()
    check_raw_page(node, node.read_stats())
