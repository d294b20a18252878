"""What `nvme-ebs top` shows, computed from two readings of a volume's statistics page.

Pure arithmetic on `EbsStats`: no device access, no output. Rates are per second of the time
between the two readings; latencies are in microseconds, as the page has them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .layout import COUNTER_FIELDS
from .model import EbsStats, LatencyBin, LatencyHistogram

BIN_COUNT_MODULUS = 1 << 32  # histogram bin counts are 32-bit on the page and wrap
EXCEEDED_FIELDS = tuple(name for name in COUNTER_FIELDS if "_performance_exceeded_" in name)
# Every counter of the page but the queue length, a gauge.
_MONOTONIC_FIELDS = tuple(name for name in COUNTER_FIELDS if name != "volume_queue_length")


class CounterReset(ValueError):
    """A 64-bit counter went back, or a histogram changed shape: the volume was re-attached."""


@dataclass(frozen=True)
class Quantile:
    """A latency quantile; `beyond` when it fell in the open-ended last bin (so `us` is a floor)."""

    us: float
    beyond: bool = False


@dataclass(frozen=True)
class IoRates:
    """One direction (reads or writes) over an interval."""

    iops: float
    bytes_per_second: float
    average_us: float | None  # None when no I/O completed
    p50: Quantile | None
    p99: Quantile | None


@dataclass(frozen=True)
class VolumeRates:
    read: IoRates
    write: IoRates
    queue_length: int
    # Share of the interval spent over each limit, in percent, in EXCEEDED_FIELDS's order.
    exceeded_percent: tuple[float, float, float, float]

    @property
    def worst_exceeded_percent(self) -> float:
        return max(self.exceeded_percent)


def histogram_delta(before: LatencyHistogram, now: LatencyHistogram) -> list[LatencyBin]:
    """The I/Os each bin gained between two readings, counting modulo 2**32 across a wrap."""
    if before.lower_us != now.lower_us or before.upper_us != now.upper_us:
        raise CounterReset("the latency histogram's bins changed")
    return [
        LatencyBin(lower, upper, (n - b) % BIN_COUNT_MODULUS)
        for lower, upper, n, b in zip(now.lower_us, now.upper_us, now.counts, before.counts)
    ]


def quantile(q: float, bins: Sequence[LatencyBin], open_ended: bool) -> Quantile | None:
    """The q-quantile (0 < q < 1) of a histogram, as Prometheus's histogram_quantile() computes it.

    Find the bin that holds the rank q * total and interpolate linearly between its bounds;
    in an open-ended last bin there is no upper bound to interpolate to, so the answer is
    that bin's lower bound, marked `beyond`. None when the histogram is empty.
    """
    total = sum(b.count for b in bins)
    if total == 0:
        return None
    rank = q * total
    below = 0
    for i, b in enumerate(bins):
        if b.count and below + b.count >= rank:
            if open_ended and i == len(bins) - 1:
                return Quantile(float(b.lower_us), beyond=True)
            return Quantile(b.lower_us + (b.upper_us - b.lower_us) * (rank - below) / b.count)
        below += b.count
    raise AssertionError("unreachable: the rank is at most the total")


def _io_rates(ops: int, nbytes: int, time_us: int, bins: list[LatencyBin], open_ended: bool, seconds: float) -> IoRates:
    return IoRates(
        iops=ops / seconds,
        bytes_per_second=nbytes / seconds,
        average_us=time_us / ops if ops else None,
        p50=quantile(0.5, bins, open_ended),
        p99=quantile(0.99, bins, open_ended),
    )


def volume_rates(before: EbsStats, now: EbsStats, seconds: float) -> VolumeRates:
    """Rates between two readings `seconds` apart. Raises CounterReset if a counter went back."""
    if seconds <= 0:
        raise ValueError(f"interval must be > 0 seconds, got {seconds}")
    delta = {name: getattr(now, name) - getattr(before, name) for name in _MONOTONIC_FIELDS}
    went_back = [name for name, value in delta.items() if value < 0]
    if went_back:
        raise CounterReset(f"{went_back[0]} went back")
    reads = histogram_delta(before.read_io_latency_histogram, now.read_io_latency_histogram)
    writes = histogram_delta(before.write_io_latency_histogram, now.write_io_latency_histogram)
    interval_us = seconds * 1e6
    e_vol_iops, e_vol_tp, e_inst_iops, e_inst_tp = (100 * delta[name] / interval_us for name in EXCEEDED_FIELDS)
    return VolumeRates(
        read=_io_rates(
            delta["total_read_ops"],
            delta["total_read_bytes"],
            delta["total_read_time_us"],
            reads,
            now.read_io_latency_histogram.open_ended,
            seconds,
        ),
        write=_io_rates(
            delta["total_write_ops"],
            delta["total_write_bytes"],
            delta["total_write_time_us"],
            writes,
            now.write_io_latency_histogram.open_ended,
            seconds,
        ),
        queue_length=now.volume_queue_length,
        exceeded_percent=(e_vol_iops, e_vol_tp, e_inst_iops, e_inst_tp),
    )


def worst_first_key(position: int, rates: VolumeRates) -> tuple[float, int, int]:
    """Sort key, worst first: the largest exceeded percentage, then the queue length (both
    descending), then discovery order (`position`)."""
    return (-rates.worst_exceeded_percent, -rates.queue_length, position)
