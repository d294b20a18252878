"""Monotonic totals from a histogram's 32-bit bin counts, which wrap within hours on a busy volume."""

from __future__ import annotations

import operator

from nvme_ebs import LatencyHistogram
from nvme_ebs._nvme_ebs_c import ffi, lib

NVME_EBS_MAX_BINS: int = lib.NVME_EBS_MAX_BINS

U32 = 1 << 32


class WrapCounter:
    """Turns one histogram's 32-bit bin counts into monotonic totals.

    Each read adds (raw - previous raw) mod 2**32 per bin, which is right as long as a bin
    wraps at most once between two reads (at 1 s sampling, that is > 4 billion I/Os apart).
    Summed up, a bin's total is its raw count plus 2**32 for each time it wrapped: that offset
    is all that is kept, and while no bin has wrapped the totals are the raw counts themselves.
    """

    __slots__ = ("before", "bounds", "c_offsets", "offsets", "raw", "totals")

    def __init__(self) -> None:
        self.bounds: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        self.raw: tuple[int, ...] = ()
        self.offsets: list[int] | None = None  # None while no bin has wrapped
        self.totals: list[int] = []
        # The C path (pages that carry their decoded struct): the last page's struct, compared
        # with the next one in C, and the offsets as a C array the comparison adds to.
        self.before: object = None
        self.c_offsets = ffi.new("uint64_t[]", NVME_EBS_MAX_BINS)

    def update(self, hist: LatencyHistogram, decoded: object = None, offset: int = 0) -> list[int]:
        """`decoded` is the page's struct when it has one (EbsStats.decoded), `offset` where
        this histogram sits in it."""
        counts = hist.counts
        before, self.before = self.before, decoded
        if decoded is not None and before is not None and self.bounds is not None:
            wrapped = lib.nvme_ebs_unwrap(decoded, before, offset, self.c_offsets)
            if wrapped != 2:  # the same bins as the last read
                if wrapped:
                    self.offsets = ffi.unpack(self.c_offsets, len(counts))
                return self._totals(counts)
        last = self.bounds
        # The decoder hands out the same edge tuples while a device's bins stay the same.
        same = last is not None and hist.upper_us is last[1] and hist.lower_us is last[0]
        if not same and (hist.lower_us, hist.upper_us) != last:  # first read, or the bins changed
            self.bounds = (hist.lower_us, hist.upper_us)
            self.offsets = None
            ffi.memmove(self.c_offsets, bytes(8 * NVME_EBS_MAX_BINS), 8 * NVME_EBS_MAX_BINS)
            self.raw = counts
            self.totals = list(counts)
            return self.totals
        if counts == self.raw:
            return self.totals
        if not all(map(operator.ge, counts, self.raw)):  # some bin wrapped since the last read
            offsets = self.offsets or [0] * len(counts)
            self.offsets = [o + U32 if c < r else o for o, c, r in zip(offsets, counts, self.raw)]
            self.c_offsets[0 : len(counts)] = self.offsets
        return self._totals(counts)

    def _totals(self, counts: tuple[int, ...]) -> list[int]:
        self.raw = counts
        self.totals = list(counts) if self.offsets is None else list(map(operator.add, counts, self.offsets))
        return self.totals

    def reset(self) -> None:
        self.bounds = None
        self.before = None
