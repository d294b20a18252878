"""Simulated EBS volumes for the demo and benchmarks (`ebs-exporter --simulate N`).

Each volume runs a gp3- or io2-like workload whose demand swings above its IOPS and
throughput limits now and then. It writes a real 4096-byte statistics page (the device's byte
layout, 32-bit bin counts wrapping like the real ones) that goes through the same C decoder
and collector as a device's answer. Deterministic for a given volume index.
"""

from __future__ import annotations

import array
import functools
import math
import random
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import nvme_ebs
from nvme_ebs import ControllerIdentity, EbsStats, NvmeController, VolumeKind, layout
from nvme_ebs import testing as pg
from nvme_ebs.model import EBS_MODEL

U32 = 1 << 32
# Where the count of bin 0 of each histogram sits, in 32-bit words; the next bin's is 6 words on.
_COUNTERS = struct.Struct(f"<{len(layout.COUNTER_FIELDS)}Q")
_READ_COUNT_WORD = (pg.READ_HISTOGRAM_OFFSET + 8 + 16) // 4
_WRITE_COUNT_WORD = (pg.WRITE_HISTOGRAM_OFFSET + 8 + 16) // 4
MAX_STEPS = 60  # sub-steps per read: limits are judged per second, like AWS samples them


@dataclass(frozen=True)
class Profile:
    name: str
    iops_limit: float
    throughput_limit: float  # bytes per second
    median_latency_us: float


PROFILES = (
    Profile("gp3", 3000, 125 * 2**20, 600),
    Profile("io2", 16000, 1000 * 2**20, 250),
)
# The instance's own EBS limit, shared by its volumes: modelled as a rarer per-volume event.
INSTANCE_HEADROOM = 1.35


def _latency_weights(bounds: Sequence[tuple[int, int]], median_us: float, sigma: float = 0.8) -> list[float]:
    """Share of I/Os per bin for a log-normal latency around `median_us`."""

    def cdf(x: float) -> float:
        if x <= 0:
            return 0.0
        return 0.5 * (1 + math.erf((math.log(x) - math.log(median_us)) / (sigma * math.sqrt(2))))

    last = len(bounds) - 1
    return [1.0 - cdf(lo) if i == last else cdf(hi) - cdf(lo) for i, (lo, hi) in enumerate(bounds)]


# What volumes with the same bins and latency profile share, computed once.
@functools.cache
def _bounds(num_bins: int) -> tuple[tuple[int, int], ...]:
    return tuple(pg.power_of_two_bounds(num_bins))


@functools.cache
def _weights(num_bins: int, median_us: float) -> tuple[float, ...]:
    return tuple(_latency_weights(_bounds(num_bins), median_us))


@functools.cache
def _live_bins(num_bins: int, median_us: float) -> tuple[slice, tuple[tuple[float, float], ...]]:
    """The bins a volume of this profile ever counts in (the others' share is too small to ever
    reach one I/O, so they stay zero), with their weights when normal and when throttled."""
    normal, throttled = _weights(num_bins, median_us), _weights(num_bins, median_us * 4)
    live = [i for i, (a, b) in enumerate(zip(normal, throttled)) if max(a, b) > 1e-15]
    chosen = slice(live[0], live[-1] + 1) if live else slice(0, 0)
    return chosen, tuple(zip(normal[chosen], throttled[chosen]))


@functools.cache
def _empty_page(num_bins: int) -> bytes:
    empty = [(lo, hi, 0) for lo, hi in _bounds(num_bins)]
    return pg.encode_stats_page(None, empty, empty)


class SimulatedVolume:
    def __init__(self, index: int, num_bins: int = 28) -> None:
        rng = random.Random(index)
        self.rng = rng
        self.profile = PROFILES[index % len(PROFILES)]
        self.serial = f"vol{rng.getrandbits(68):017x}"
        self.controller = f"nvme{index + 1}"
        self.mapping = f"sd{chr(ord('f') + index % 21)}" if index < 21 else f"xvd{index}"
        self.period = rng.uniform(120, 600)  # seconds per swing of demand
        self.phase = rng.uniform(0, 2 * math.pi)
        self.io_size = rng.choice((16384, 32768, 65536))
        self.counters = dict.fromkeys(pg.COUNTER_FIELDS, 0.0)
        # I/Os so far under each latency profile: a bin's count is their weighted sum, so a step
        # costs the same whatever the number of bins.
        self.ops = {(write, throttled): 0.0 for write in (False, True) for throttled in (False, True)}
        self._live, self._live_weights = _live_bins(num_bins, self.profile.median_latency_us)
        self._empty_page = _empty_page(num_bins)  # shared: each read writes a fresh copy
        self.last: float | None = None
        self._device = NvmeController(
            controller=self.controller,
            controller_path=f"simulated:{self.controller}",
            namespaces=(f"{self.controller}n1",),
            block_device=None,
            model=EBS_MODEL,
            serial=self.serial,
            firmware="2.0",
            kind=VolumeKind.EBS,
            transport="simulated",
        )

    def _demand(self, t: float) -> float:
        """Demand as a share of the IOPS limit: mostly below 1, peaks above it."""
        swing = math.sin(2 * math.pi * t / self.period + self.phase)
        return max(0.05, 0.55 + 0.6 * swing + self.rng.gauss(0, 0.05))

    def _step(self, t: float, dt: float) -> None:
        p = self.profile
        c = self.counters
        demand = self._demand(t)
        iops = min(demand, 1.0) * p.iops_limit
        tp_demand = demand * p.iops_limit * self.io_size
        throttled = demand > 1.0 or tp_demand > p.throughput_limit
        if throttled:
            iops = min(iops, p.throughput_limit / self.io_size)
        ops = iops * dt
        reads, writes = ops * 0.7, ops * 0.3
        mean_us = p.median_latency_us * (4 if throttled else 1) * 1.38  # log-normal mean, sigma 0.8
        c["total_read_ops"] += reads
        c["total_write_ops"] += writes
        c["total_read_bytes"] += reads * self.io_size
        c["total_write_bytes"] += writes * self.io_size
        c["total_read_time_us"] += reads * mean_us
        c["total_write_time_us"] += writes * mean_us * 1.2
        if demand > 1.0:
            c["ebs_volume_performance_exceeded_iops_us"] += dt * 1e6
        if tp_demand > p.throughput_limit:
            c["ebs_volume_performance_exceeded_tp_us"] += dt * 1e6
        if demand > INSTANCE_HEADROOM:
            c["ec2_instance_ebs_performance_exceeded_iops_us"] += dt * 1e6
        if tp_demand > p.throughput_limit * INSTANCE_HEADROOM:
            c["ec2_instance_ebs_performance_exceeded_tp_us"] += dt * 1e6
        c["volume_queue_length"] = iops * mean_us / 1e6  # Little's law
        self.ops[False, throttled] += reads
        self.ops[True, throttled] += writes

    def read_page(self, now: float) -> bytes:
        if self.last is None:  # attached a while ago: start with some history
            self.last = now - 3600
        dt = now - self.last
        steps = max(1, min(MAX_STEPS, math.ceil(dt)))
        for k in range(steps):
            self._step(self.last + dt * (k + 1) / steps, dt / steps)
        self.last = now
        values = [int(self.counters[name]) for name in pg.COUNTER_FIELDS]
        page = bytearray(self._empty_page)
        _COUNTERS.pack_into(page, layout.COUNTERS_OFFSET, *values)
        words = memoryview(page).cast("I")
        live = self._live
        for write, first in ((False, _READ_COUNT_WORD), (True, _WRITE_COUNT_WORD)):
            counts = self._counts(self.ops[write, False], self.ops[write, True])
            words[first + 6 * live.start : first + 6 * live.stop : 6] = counts
        words.release()
        return bytes(page)

    def _counts(self, normal_ops: float, throttled_ops: float) -> array.array[int]:
        """The live bins' counts, 32 bits wide and wrapping as on a real device, in page byte order."""
        counts = array.array("I", [int(normal_ops * a + throttled_ops * b) % U32 for a, b in self._live_weights])
        if sys.byteorder != "little":
            counts.byteswap()
        return counts

    @property
    def identity_page(self) -> bytes:
        return pg.encode_identify(self.serial, block_device_mapping=self.mapping)

    def device(self) -> NvmeController:
        return self._device


class SimulatedSource:
    """A Source of N simulated volumes; pages are decoded by the C decoder like a device's."""

    parallel_reads = False  # pure Python: threads would only add overhead

    def __init__(self, count: int, num_bins: int = 28, clock: Callable[[], float] = time.time) -> None:
        self.volumes = {v.controller: v for v in (SimulatedVolume(i, num_bins) for i in range(count))}
        self.clock = clock

    def check(self) -> None:
        pass  # nothing outside the process to depend on

    def discover(self) -> list[NvmeController]:
        return [v.device() for v in self.volumes.values()]

    def read_stats(self, device: NvmeController) -> EbsStats:
        volume = self.volumes[device.controller]
        return nvme_ebs.parse_log_page(volume.read_page(self.clock()), device.controller_path)

    def identify(self, device: NvmeController) -> ControllerIdentity:
        return nvme_ebs.parse_identify(self.volumes[device.controller].identity_page, device.controller_path)
