"""On an EC2 node only: the real thing. Set EBS_TEST_DEVICE=/dev/nvme1n1 (an EBS volume) and run as root."""

from __future__ import annotations

import os

import pytest

import nvme_ebs

DEVICE = os.environ.get("EBS_TEST_DEVICE")
pytestmark = [
    pytest.mark.ebs,
    pytest.mark.skipif(not DEVICE, reason="needs a real EBS volume: set EBS_TEST_DEVICE on an EC2 node"),
]


def test_identify_names_an_ebs_volume() -> None:
    identity = nvme_ebs.DeviceNode(str(DEVICE)).identify()
    assert identity.vid == 0x1D0F
    assert identity.kind is nvme_ebs.VolumeKind.EBS
    assert identity.volume_id is not None and identity.volume_id.startswith("vol-")


def test_statistics_page_decodes_and_moves_forward() -> None:
    device = nvme_ebs.DeviceNode(str(DEVICE))
    first = device.read_stats()
    with open(str(DEVICE), "rb") as f:  # one read of our own, so the counters must move
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        f.read(4096)
    second = device.read_stats()
    assert first.kind is nvme_ebs.PageKind.EBS
    assert second.total_read_ops >= first.total_read_ops
    assert len(second.read_io_latency_histogram) <= 64


def test_discovery_finds_it() -> None:
    names = {d.block_device for d in nvme_ebs.discover()} | {d.controller_path for d in nvme_ebs.discover()}
    assert DEVICE in names
