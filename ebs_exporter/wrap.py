"""Monotonic totals from a histogram's 32-bit bin counts, which wrap within hours on a busy volume."""

from __future__ import annotations

import operator

from nvme_ebs import LatencyHistogram
from nvme_ebs._nvme_ebs_c import ffi, lib

NVME_EBS_MAX_BINS: int = lib.NVME_EBS_MAX_BINS

U32 = 1 << 32


class Offsets(list):  # type: ignore[type-arg]  # list[int] cannot be a base on Python 3.9
    """What wrapping added to each bin of a histogram, with the same numbers as a C array for the
    C renderer: made once, when a bin wraps, not at every scrape. Never changed once made."""

    __slots__ = ("c",)

    def __init__(self, values: list[int]) -> None:
        super().__init__(values)
        self.c = ffi.new("uint64_t[]", values)


class WrapCounter:
    """Follows one histogram's 32-bit bin counts, so that their totals stay monotonic.

    Each read adds (raw - previous raw) mod 2**32 per bin, which is right as long as a bin
    wraps at most once between two reads (at 1 s sampling, that is > 4 billion I/Os apart).
    Summed up, a bin's total is its raw count plus 2**32 for each time it wrapped: that offset
    is all that is kept, and while no bin has wrapped the totals are the raw counts themselves.
    """

    __slots__ = ("bounds", "c_last", "c_offsets", "c_ready", "offsets", "raw")

    def __init__(self) -> None:
        self.bounds: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        self.raw: tuple[int, ...] = ()
        # What wrapping added to each bin; None while no bin has wrapped. A change makes a new
        # list, so a snapshot may keep the one it was given.
        self.offsets: Offsets | None = None
        # The C path (pages that carry their decoded struct): the last counts and the offsets as
        # C arrays, which nvme_ebs_unwrap compares with a page's and adds to.
        self.c_last = ffi.new("uint32_t[]", NVME_EBS_MAX_BINS)
        self.c_offsets = ffi.new("uint64_t[]", NVME_EBS_MAX_BINS)
        self.c_ready = False  # c_last holds the last read's counts

    def update(self, hist: LatencyHistogram, decoded: object = None, offset: int = 0) -> None:
        """Takes a read's counts. `decoded` is the page's struct when it has one
        (EbsStats.decoded), `offset` where this histogram sits in it."""
        counts = hist.counts
        last = self.bounds
        # The decoder hands out the same edge tuples while a device's bins stay the same.
        same = last is not None and hist.upper_us is last[1] and hist.lower_us is last[0]
        if not same and (hist.lower_us, hist.upper_us) != last:  # first read, or the bins changed
            self.bounds = (hist.lower_us, hist.upper_us)
            self.offsets = None
            ffi.memmove(self.c_offsets, bytes(8 * NVME_EBS_MAX_BINS), 8 * NVME_EBS_MAX_BINS)
            self._remember(counts)
            return
        if decoded is not None and self.c_ready:
            if lib.nvme_ebs_unwrap(decoded, offset, self.c_last, self.c_offsets):
                self.offsets = Offsets(ffi.unpack(self.c_offsets, len(counts)))
            self.raw = counts
            return
        if counts == self.raw:
            return
        if not all(map(operator.ge, counts, self.raw)):  # some bin wrapped since the last read
            offsets = self.offsets or [0] * len(counts)
            self.offsets = Offsets([o + U32 if c < r else o for o, c, r in zip(offsets, counts, self.raw)])
            if len(counts) <= NVME_EBS_MAX_BINS:
                self.c_offsets[0 : len(counts)] = self.offsets
        self._remember(counts)

    def _remember(self, counts: tuple[int, ...]) -> None:
        self.raw = counts
        self.c_ready = len(counts) <= NVME_EBS_MAX_BINS  # a page's never has more; one built by hand may
        if self.c_ready:
            self.c_last[0 : len(counts)] = counts

    def reset(self) -> None:
        self.bounds = None


def totals(counts: tuple[int, ...], offsets: list[int] | None) -> list[int]:
    """A histogram's monotonic bin totals: its counts plus what wrapping added."""
    return list(counts) if offsets is None else list(map(operator.add, counts, offsets))
