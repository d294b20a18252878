"""Builds raw pages in the device's byte layout: for tests, fixtures and the exporter's simulator.

Not part of the runtime path: nothing that reads a device imports it. Pure Python with `struct`
over `nvme_ebs.layout`, independent of the C decoder, so that each checks the other.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from .layout import (
    BDEV_MAPPING_OFFSET,
    BIN,
    COUNTER_FIELDS,
    HEADER,
    HISTOGRAM_HEADER,
    HISTOGRAM_SIZE,
    MAGIC_EBS,
    MAGIC_INSTANCE_STORE,
    MAX_BINS,
    PAGE_SIZE,
    READ_HISTOGRAM_OFFSET,
    WRITE_HISTOGRAM_OFFSET,
)

__all__ = [
    "COUNTER_FIELDS",
    "MAGIC_EBS",
    "MAGIC_INSTANCE_STORE",
    "MAX_BINS",
    "PAGE_SIZE",
    "READ_HISTOGRAM_OFFSET",
    "WRITE_HISTOGRAM_OFFSET",
    "Bins",
    "encode_histogram",
    "encode_identify",
    "encode_stats_page",
    "power_of_two_bounds",
]

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
    out = bytearray(HISTOGRAM_SIZE)
    HISTOGRAM_HEADER.pack_into(out, 0, len(bins) if num_bins is None else num_bins)
    for i, (lower, upper, count) in enumerate(bins[:MAX_BINS]):
        BIN.pack_into(out, HISTOGRAM_HEADER.size + i * BIN.size, lower, upper, count)
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
    HEADER.pack_into(page, 0, magic, version, *(counters.get(name, 0) for name in COUNTER_FIELDS))
    page[READ_HISTOGRAM_OFFSET:WRITE_HISTOGRAM_OFFSET] = encode_histogram(read_bins, read_num_bins)
    page[WRITE_HISTOGRAM_OFFSET : WRITE_HISTOGRAM_OFFSET + HISTOGRAM_SIZE] = encode_histogram(
        write_bins, write_num_bins
    )
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
