"""A pure-Python decoder of the statistics page, written with `struct` for comparison only.

It makes the same checks as the C decoder (magic, num_bins, bin ranges and order) and returns
the same EbsStats, so the benchmark compares like with like; the benchmark checks that both
decoders agree on the page it times.
"""

from __future__ import annotations

import struct

from nvme_ebs import EbsStats, LatencyHistogram, PageFormatError, PageKind
from nvme_ebs import layout as pg

_HEADER = pg.HEADER
_NUM_BINS = struct.Struct("<Q")
_KINDS = {pg.MAGIC_EBS: PageKind.EBS, pg.MAGIC_INSTANCE_STORE: PageKind.INSTANCE_STORE}
_OPEN_UPPER = (0, (1 << 64) - 1)
_bins_structs: dict[int, struct.Struct] = {}


def _bins_struct(n: int) -> struct.Struct:
    s = _bins_structs.get(n)
    if s is None:
        s = _bins_structs[n] = struct.Struct("<" + "QQI4x" * n)
    return s


def _histogram(page: bytes, offset: int, name: str) -> LatencyHistogram:
    (n,) = _NUM_BINS.unpack_from(page, offset)
    if n > pg.MAX_BINS:
        raise PageFormatError("num_bins", f"{name}: num_bins {n} exceeds {pg.MAX_BINS}")
    flat = _bins_struct(n).unpack_from(page, offset + 8)
    lower, upper, counts = flat[0::3], flat[1::3], flat[2::3]
    previous_upper = 0
    for i, (lo, hi) in enumerate(zip(lower, upper)):
        if lo >= hi and not (i == n - 1 and hi in _OPEN_UPPER):
            raise PageFormatError("bin_range", f"{name}: bin {i} has lower {lo} >= upper {hi}")
        if i and lo < previous_upper:
            raise PageFormatError("bin_order", f"{name}: bin {i} starts at {lo}, before bin {i - 1} ends")
        previous_upper = hi
    return LatencyHistogram(lower, upper, counts)


def parse_log_page(page: bytes) -> EbsStats:
    if len(page) < pg.PAGE_SIZE:
        raise PageFormatError("short", f"shorter than {pg.PAGE_SIZE} bytes")
    magic, version, *counters = _HEADER.unpack_from(page, 0)
    kind = _KINDS.get(magic)
    if kind is None:
        raise PageFormatError("magic", f"unknown magic {magic:#010x}")
    return EbsStats(
        kind,
        version,
        *counters,
        read_io_latency_histogram=_histogram(page, pg.READ_HISTOGRAM_OFFSET, "read latency histogram"),
        write_io_latency_histogram=_histogram(page, pg.WRITE_HISTOGRAM_OFFSET, "write latency histogram"),
    )
