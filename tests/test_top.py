"""nvme_ebs.top: the arithmetic of `nvme-ebs top`, on pages built by hand and decoded by the C decoder."""

from __future__ import annotations

import pytest

import nvme_ebs
from nvme_ebs import testing as pg
from nvme_ebs.model import EbsStats, LatencyBin
from nvme_ebs.top import CounterReset, Quantile, VolumeRates, quantile, volume_rates, worst_first_key

WRAP = 1 << 32
BOUNDS = pg.power_of_two_bounds(8)  # [0,1) [1,2) [2,4) ... [64, open)


def page(
    counters: dict[str, int] | None = None, reads: list[int] | None = None, writes: list[int] | None = None
) -> bytes:
    read_bins = [(lo, hi, n) for (lo, hi), n in zip(BOUNDS, reads or [0] * len(BOUNDS))]
    write_bins = [(lo, hi, n) for (lo, hi), n in zip(BOUNDS, writes or [0] * len(BOUNDS))]
    return pg.encode_stats_page(counters or {}, read_bins, write_bins)


def stats(
    counters: dict[str, int] | None = None, reads: list[int] | None = None, writes: list[int] | None = None
) -> EbsStats:
    return nvme_ebs.parse_log_page(page(counters, reads, writes))


def test_rates_over_two_seconds() -> None:
    before = stats({"total_read_ops": 1_000, "total_write_ops": 50, "total_read_bytes": 10**9, "total_read_time_us": 7})
    now = stats(
        {
            "total_read_ops": 5_000,  # +4000 in 2 s
            "total_write_ops": 650,  # +600
            "total_read_bytes": 10**9 + 8_000_000,  # +8 MB
            "total_write_bytes": 3_000_000,  # +3 MB
            "total_read_time_us": 7 + 2_000_000,  # 500 us per read
            "total_write_time_us": 1_200_000,  # 2 ms per write
            "volume_queue_length": 12,
            "ebs_volume_performance_exceeded_iops_us": 500_000,  # a quarter of 2 s
            "ebs_volume_performance_exceeded_tp_us": 2_000_000,  # all of it
            "ec2_instance_ebs_performance_exceeded_iops_us": 20_000,  # 1 %
            "ec2_instance_ebs_performance_exceeded_tp_us": 0,
        }
    )
    r = volume_rates(before, now, 2.0)
    assert r.read.iops == 2_000
    assert r.write.iops == 300
    assert r.read.bytes_per_second == 4_000_000
    assert r.write.bytes_per_second == 1_500_000
    assert r.read.average_us == 500
    assert r.write.average_us == 2_000
    assert r.queue_length == 12
    assert r.exceeded_percent == (25.0, 100.0, 1.0, 0.0)
    assert r.worst_exceeded_percent == 100.0


def test_an_idle_volume_has_no_latency() -> None:
    same = stats({"total_read_ops": 10, "total_read_time_us": 99}, reads=[1, 2, 3, 4, 5, 6, 7, 8])
    r = volume_rates(same, same, 1.0)
    assert (r.read.iops, r.read.average_us, r.read.p50, r.read.p99) == (0, None, None, None)


def test_quantiles_interpolate_within_the_bin() -> None:
    before = stats(reads=[0, 0, 5, 0, 0, 0, 0, 0])
    now = stats(reads=[0, 0, 15, 10, 0, 0, 0, 0])  # +10 in [2,4), +10 in [4,8)
    r = volume_rates(before, now, 1.0)
    # rank 10 of 20 ends bin [2,4): its upper bound; rank 19.8 is 9.8/10 into [4,8)
    assert r.read.p50 == Quantile(4.0)
    assert r.read.p99 == Quantile(4 + 4 * 9.8 / 10)


def test_quantile_as_histogram_quantile_computes_it() -> None:
    bins = [LatencyBin(0, 1, 0), LatencyBin(1, 2, 4), LatencyBin(2, 4, 0), LatencyBin(4, 8, 4)]
    assert quantile(0.25, bins, open_ended=False) == Quantile(1.5)  # rank 2: half-way through [1,2)
    assert quantile(0.5, bins, open_ended=False) == Quantile(2.0)  # rank 4: the end of [1,2); empty bins skipped
    assert quantile(0.75, bins, open_ended=False) == Quantile(6.0)
    assert quantile(0.5, [LatencyBin(0, 1, 0)], open_ended=False) is None


def test_a_quantile_in_the_open_last_bin_is_its_lower_bound() -> None:
    before = stats(writes=[0] * 8)
    now = stats(writes=[0, 0, 0, 0, 0, 0, 99, 1])  # one I/O in the last bin, [64, open)
    r = volume_rates(before, now, 1.0)
    assert r.write.p50 == Quantile(32 + 32 * 50 / 99)  # [32,64)
    assert r.write.p99 == Quantile(32 + 32 * 99 / 99)  # rank 99 is the end of [32,64)
    now = stats(writes=[0, 0, 0, 0, 0, 0, 90, 10])
    r = volume_rates(before, now, 1.0)
    assert r.write.p99 == Quantile(64.0, beyond=True)


def test_bin_counts_wrap_modulo_2_to_the_32() -> None:
    before = stats(reads=[0, WRAP - 10, 0, 0, 0, 0, 0, 0])
    now = stats(reads=[0, 5, 0, 0, 0, 0, 0, 0])  # 15 more, across the wrap
    r = volume_rates(before, now, 1.0)
    assert r.read.p50 == Quantile(1 + 7.5 / 15)
    before = stats(reads=[0, WRAP - 1, 0, 0, 0, 0, 0, 0])
    now = stats(reads=[0, WRAP - 1, 4, 0, 0, 0, 0, 0])  # unchanged bin: 0, not 2**32
    r = volume_rates(before, now, 1.0)
    assert r.read.p99 == Quantile(2 + 2 * 3.96 / 4)


def test_a_counter_going_back_is_a_restart() -> None:
    with pytest.raises(CounterReset, match="total_write_ops"):
        volume_rates(stats({"total_write_ops": 10}), stats({"total_write_ops": 9}), 1.0)


def test_histogram_bounds_that_change_are_a_restart() -> None:
    before = stats()
    other = pg.encode_stats_page({}, [(0, 10, 1), (10, 0, 1)], [])
    with pytest.raises(CounterReset, match="bins changed"):
        volume_rates(before, nvme_ebs.parse_log_page(other), 1.0)


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval"):
        volume_rates(stats(), stats(), 0.0)


def test_worst_first() -> None:
    base = stats()

    def rates(exceeded_us: int, queue: int, field: str = "ec2_instance_ebs_performance_exceeded_tp_us") -> VolumeRates:
        return volume_rates(base, stats({field: exceeded_us, "volume_queue_length": queue}), 1.0)

    volumes = {
        "idle": rates(0, 0),
        "deep queue": rates(0, 30),
        "throttled a bit": rates(10_000, 1),
        "throttled a lot": rates(900_000, 0, "ebs_volume_performance_exceeded_iops_us"),
        "throttled a bit, queued": rates(10_000, 5),
    }
    order = sorted(volumes, key=lambda name: worst_first_key(list(volumes).index(name), volumes[name]))
    assert order == ["throttled a lot", "throttled a bit, queued", "throttled a bit", "deep queue", "idle"]
