"""The page families' lines written by the C renderer (csrc/render.c) from the decoded structs.

Everything but the numbers comes from metrics.py's table, prepared here once: a family's line
names and headers, a volume's labels, a bin layout's `le` texts. Per scrape, C calls write every
page family of a page kind, for every volume, a buffer's worth at a time, reading the numbers
straight from each page's `struct nvme_ebs_stats` (EbsStats.decoded). render.py's
Python lines are the reference it is held to, byte for byte (tests/test_native_render.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from nvme_ebs import LatencyHistogram, PageKind
from nvme_ebs._native import stats_offset
from nvme_ebs._nvme_ebs_c import ffi, lib

from . import metrics
from .metrics import Family
from .snapshot import VolumeSample

# The pieces a body is written in: small enough to come from, and go back to, the heap (glibc
# maps blocks from 256 KiB on their own, and each fresh page costs a fault), large enough that a
# scrape of 128 volumes takes a few dozen.
CHUNK_BYTES = 64 * 1024


def _text(keep: list[object], data: bytes) -> Any:
    """A `struct nvme_ebs_text` over `data`, whose copy is kept alive in `keep`."""
    buf = ffi.new("char[]", data)
    keep.append(buf)
    return {"ptr": buf, "len": len(data)}


def _scale_digits(scale: int) -> int:
    digits = len(str(scale)) - 1
    if scale < 1 or 10**digits != scale:
        raise ValueError(f"the C renderer divides by powers of ten only, not {scale}")
    return digits


class FamilyText:
    """One page family's names for one page kind, as the C renderer takes them."""

    def __init__(self, family: Family, kind: PageKind, header: bytes, slot: int = 0) -> None:
        self.keep: list[object] = []
        self.struct = ffi.new("struct nvme_ebs_family_text *")
        s = self.struct
        s.header = _text(self.keep, header)
        s.value_offset = stats_offset(family.sum_field or family.field)
        if family.type == "histogram":
            name = family.full_name(kind)
            s.histogram, s.slot = 1, slot
            s.histogram_offset = stats_offset(family.field)
            s.bucket = _text(self.keep, f"{name}_bucket{{".encode())
            s.count = _text(self.keep, f"{name}_count{{".encode())
            s.sum = _text(self.keep, f"{name}_sum{{".encode())
            s.scale_digits = _scale_digits(family.scale)  # a sum is always a float (a division)
        else:
            s.name = _text(self.keep, f"{family.exposed_name(kind)}{{".encode())
            s.scale_digits = -1 if family.scale == 1 else _scale_digits(family.scale)
        s.scale = family.scale


class FamilyTexts:
    """The page families of one page kind and format, in the order served."""

    def __init__(self, texts: Sequence[FamilyText]) -> None:
        self.texts = list(texts)  # keeps every text the array points into
        self.array = ffi.new("struct nvme_ebs_family_text[]", len(self.texts))
        for i, text in enumerate(self.texts):
            self.array[i] = text.struct[0]


class LayoutText:
    """The `le` texts of one histogram's bin edges, under the --collector.latency-buckets choice."""

    def __init__(self, hist: LatencyHistogram, buckets: metrics.LatencyBuckets) -> None:
        self.bounds = hist.upper_us
        closed = hist.upper_us[:-1] if hist.open_ended else hist.upper_us
        kept = list(buckets.kept(len(closed)))
        les = [f',le="{metrics.le_label(closed[i])}"}} '.encode() for i in kept]
        if not buckets.as_summary:
            les.append(b',le="+Inf"} ')
        self.keep: list[object] = []
        self.index = ffi.new("uint32_t[]", kept or [0])
        self.le = ffi.new("struct nvme_ebs_text[]", [_text(self.keep, le) for le in les] or 1)
        self.struct = ffi.new("struct nvme_ebs_layout *", {"buckets": len(kept), "index": self.index, "le": self.le})
        self.struct.inf = 0 if buckets.as_summary else 1


class VolumeLabels:
    """A volume's labels, kept as C text for as long as the volume's other texts."""

    def __init__(self, labels: str) -> None:
        self.keep: list[object] = []
        self.text = _text(self.keep, labels.encode())
        self.layouts: list[LayoutText | None] = [None] * len(metrics.HISTOGRAMS)


def volumes(chosen: Sequence[tuple[VolumeSample, VolumeLabels]], layout: Any) -> Any:
    """The `struct nvme_ebs_volume_text` array of one scrape (never shared between scrapes).
    `layout(labels, slot, hist)` gives the LayoutText of a volume's histogram."""
    out = ffi.new("struct nvme_ebs_volume_text[]", len(chosen))
    for i, (sample, labels) in enumerate(chosen):
        vol = out[i]
        vol.stats = sample.stats.decoded
        vol.labels = labels.text
        for slot, family in enumerate(metrics.HISTOGRAMS):
            vol.layout[slot] = layout(labels, slot, getattr(sample.stats, family.field)).struct
            offsets = sample.offsets.get(family.field)
            if offsets is not None:  # the sample keeps its C array alive
                vol.offsets[slot] = offsets.c
    return out


def chunks(families: FamilyTexts, vols: Any, n: int, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Every family's text, for every volume, in pieces of at most `size` bytes (larger only if
    one volume's lines of a family are). Each piece is a copy: the one buffer is written again."""
    buf = ffi.new("char[]", size)
    pos = ffi.new("struct nvme_ebs_render_pos *")
    count = len(families.texts)
    while pos.family < count:
        written = lib.nvme_ebs_render_next(buf, len(buf), families.array, count, vols, n, pos)
        if written:
            yield ffi.buffer(buf, written)[:]
        elif pos.needed:
            buf = ffi.new("char[]", pos.needed)
        else:
            return
