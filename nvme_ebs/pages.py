"""Builds raw pages in the device's byte layout: for tests, fixtures and the exporter's simulator.

Pure Python with `struct`, written from the layout table, independent of the C decoder so
each checks the other.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

PAGE_SIZE = 4096
MAGIC_EBS = 0x3C23B510
MAGIC_INSTANCE_STORE = 0xEC2C0D7E
MAX_BINS = 64
READ_HISTOGRAM_OFFSET = 512
WRITE_HISTOGRAM_OFFSET = 2056
BDEV_MAPPING_OFFSET = 3072

COUNTER_FIELDS = (
    "total_read_ops",
    "total_write_ops",
    "total_read_bytes",
    "total_write_bytes",
    "total_read_time_us",
    "total_write_time_us",
    "ebs_volume_performance_exceeded_iops_us",
    "ebs_volume_performance_exceeded_tp_us",
    "ec2_instance_ebs_performance_exceeded_iops_us",
    "ec2_instance_ebs_performance_exceeded_tp_us",
    "volume_queue_length",
)

Bins = Sequence[tuple[int, int, int]]


def power_of_two_bounds(num_bins: int = 28, open_last: bool = True) -> list[tuple[int, int]]:
    """Bin edges as AWS reports them: [0,1), [1,2), [2,4), ..., and an open-ended last bin."""
    edges = [(0, 1)] + [(1 << i, 1 << (i + 1)) for i in range(num_bins - 1)]
    edges = edges[:num_bins]
    if open_last and edges:
        edges[-1] = (edges[-1][0], 0)
    return edges


def encode_histogram(bins: Bins, num_bins: int | None = None) -> bytes:
    """num_bins may be given apart from the bins, to build pages that lie about it."""
    out = bytearray(8 + MAX_BINS * 24)
    struct.pack_into("<Q", out, 0, len(bins) if num_bins is None else num_bins)
    for i, (lower, upper, count) in enumerate(bins[:MAX_BINS]):
        struct.pack_into("<QQI", out, 8 + i * 24, lower, upper, count)
    return bytes(out)


def encode_stats_page(
    counters: Mapping[str, int] | None = None,
    read_bins: Bins = (),
    write_bins: Bins = (),
    *,
    magic: int = MAGIC_EBS,
    version: int = 0,
    read_num_bins: int | None = None,
    write_num_bins: int | None = None,
) -> bytes:
    """A 4096-byte log page 0xD0. Unnamed counters are zero."""
    counters = dict(counters or {})
    unknown = set(counters) - set(COUNTER_FIELDS)
    if unknown:
        raise KeyError(f"unknown counters: {sorted(unknown)}")
    page = bytearray(PAGE_SIZE)
    struct.pack_into("<II", page, 0, magic, version)
    struct.pack_into("<11Q", page, 8, *(counters.get(name, 0) for name in COUNTER_FIELDS))
    page[READ_HISTOGRAM_OFFSET:WRITE_HISTOGRAM_OFFSET] = encode_histogram(read_bins, read_num_bins)
    page[WRITE_HISTOGRAM_OFFSET : WRITE_HISTOGRAM_OFFSET + 1544] = encode_histogram(write_bins, write_num_bins)
    return bytes(page)


def _ascii_field(text: str, width: int, pad: bytes = b" ") -> bytes:
    raw = text.encode("ascii")
    if len(raw) > width:
        raise ValueError(f"{text!r} is longer than {width} bytes")
    return raw.ljust(width, pad)


def encode_identify(
    serial: str,
    model: str = "Amazon Elastic Block Store",
    firmware: str = "2.0",
    block_device_mapping: str = "",
    vid: int = 0x1D0F,
    ssvid: int = 0x1D0F,
) -> bytes:
    """A 4096-byte Identify Controller answer with the fields nvme_ebs reads."""
    page = bytearray(PAGE_SIZE)
    struct.pack_into("<HH", page, 0, vid, ssvid)
    page[4:24] = _ascii_field(serial, 20)
    page[24:64] = _ascii_field(model, 40)
    page[64:72] = _ascii_field(firmware, 8)
    page[BDEV_MAPPING_OFFSET : BDEV_MAPPING_OFFSET + 32] = _ascii_field(block_device_mapping, 32)
    return bytes(page)
