"""Section 1: decoding one statistics page three ways."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import pydecode
from measure import Summary, per_call

import nvme_ebs
from ebs_exporter.simulate import SimulatedVolume
from nvme_ebs import _native


@dataclass(frozen=True)
class DecodeResult:
    name: str
    bins: int
    per_page: Summary


def sample_page(num_bins: int) -> bytes:
    """A realistic page: an hour of a simulated gp3 volume."""
    return SimulatedVolume(0, num_bins).read_page(1_700_000_000.0)


def run(bins: tuple[int, ...], number: int, repeats: int) -> list[DecodeResult]:
    results = []
    for num_bins in bins:
        page = sample_page(num_bins)
        if pydecode.parse_log_page(page) != nvme_ebs.parse_log_page(page):
            raise AssertionError("the struct decoder and the C decoder disagree")
        out = _native.ffi.new("struct nvme_ebs_stats *")
        buf = _native.ffi.from_buffer(page)
        decode = _native.lib.nvme_ebs_decode_stats
        size = len(page)
        if decode(buf, size, out) != 0:
            raise AssertionError("the C decoder refused the sample page")
        cases = (
            ("C decoder -> EbsStats (nvme_ebs.parse_log_page)", partial(nvme_ebs.parse_log_page, page)),
            ("C decoder alone (lib.nvme_ebs_decode_stats)", partial(decode, buf, size, out)),
            ("pure-Python struct decoder -> EbsStats", partial(pydecode.parse_log_page, page)),
        )
        for name, fn in cases:
            results.append(DecodeResult(name, num_bins, per_call(fn, number, repeats)))
    return results
