"""One collection: discover, choose, read every chosen device (bounded in time), keep per-volume state.

State lives per device name and is replaced when the serial behind the name changes, so a
name reused for another volume never inherits the old volume's counters. Nothing read from a
device is kept across collections except what keeps the exported histograms monotonic.
"""

from __future__ import annotations

import collections
import fnmatch
import logging
import operator
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from nvme_ebs import (
    ControllerIdentity,
    DeviceGoneError,
    DeviceNotFoundError,
    DeviceOSError,
    DevicePermissionError,
    EbsStats,
    LatencyHistogram,
    NotAnEbsVolumeError,
    NotNvmeDeviceError,
    NvmeController,
    NvmeStatusError,
    PageFormatError,
    VolumeKind,
)

from .sources import Source

log = logging.getLogger("ebs_exporter.collector")

U32 = 1 << 32
IDENTIFY_ATTEMPTS = 3

# The fixed set of reasons for ebs_device_errors_total, most specific first.
REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (DevicePermissionError, "permission"),
    (DeviceNotFoundError, "not_found"),
    (DeviceGoneError, "gone"),
    (NotNvmeDeviceError, "not_nvme"),
    (NotAnEbsVolumeError, "not_ebs"),
    (NvmeStatusError, "nvme_status"),
    (PageFormatError, "bad_page"),
    (DeviceOSError, "io_error"),
)
TIMEOUT = "timeout"
COUNTER_RESET = "counter_reset"
INTERNAL = "internal"


def reason_for(error: BaseException) -> str:
    for cls, reason in REASONS:
        if isinstance(error, cls):
            return reason
    return INTERNAL


def escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class WrapCounter:
    """Turns one histogram's 32-bit bin counts into monotonic totals.

    Each read adds (raw - previous raw) mod 2**32 per bin, which is right as long as a bin
    wraps at most once between two reads (at 1 s sampling, that is > 4 billion I/Os apart).
    Summed up, a bin's total is its raw count plus 2**32 for each time it wrapped: that offset
    is all that is kept, and while no bin has wrapped the totals are the raw counts themselves.
    """

    __slots__ = ("bounds", "offsets", "raw", "totals")

    def __init__(self) -> None:
        self.bounds: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        self.raw: tuple[int, ...] = ()
        self.offsets: list[int] | None = None  # None while no bin has wrapped
        self.totals: list[int] = []

    def update(self, hist: LatencyHistogram) -> list[int]:
        counts = hist.counts
        bounds = (hist.lower_us, hist.upper_us)
        if bounds != self.bounds:  # first read, or the bins changed: start from the page
            self.bounds = bounds
            self.offsets = None
            self.raw = counts
            self.totals = list(counts)
            return self.totals
        if counts == self.raw:
            return self.totals
        if not all(map(operator.ge, counts, self.raw)):  # some bin wrapped since the last read
            offsets = self.offsets or [0] * len(counts)
            self.offsets = [o + U32 if c < r else o for o, c, r in zip(offsets, counts, self.raw)]
        self.raw = counts
        self.totals = list(counts) if self.offsets is None else list(map(operator.add, counts, self.offsets))
        return self.totals

    def reset(self) -> None:
        self.bounds = None


@dataclass
class VolumeState:
    """What the exporter keeps about one device name while the same volume sits behind it."""

    device: NvmeController
    name: str
    serial: str
    volume_id: str
    labels: str  # pre-rendered volume_id="...",device="..."
    device_labels: str  # pre-rendered device="..."
    identity: ControllerIdentity | None = None
    identify_attempts: int = 0
    reason: str | None = None
    errors: dict[str, int] = field(default_factory=dict)
    reading: bool = False  # a read is in flight (maybe hung) in a worker thread
    read_hist: WrapCounter = field(default_factory=WrapCounter)
    write_hist: WrapCounter = field(default_factory=WrapCounter)
    last_ops: tuple[int, int] = (0, 0)
    render_cache: dict[object, object] = field(default_factory=dict)

    @classmethod
    def for_device(cls, device: NvmeController) -> VolumeState:
        name = device.name
        volume_id = device.volume_id or device.serial or name
        device_labels = f'device="{escape_label(name)}"'
        labels = f'volume_id="{escape_label(volume_id)}",{device_labels}'
        return cls(
            device=device,
            name=name,
            serial=device.serial,
            volume_id=volume_id,
            labels=labels,
            device_labels=device_labels,
        )

    def count_error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1


@dataclass(frozen=True)
class VolumeSample:
    """One successful read, with the histogram totals made monotonic."""

    state: VolumeState
    stats: EbsStats
    read_counts: list[int]
    write_counts: list[int]


@dataclass(frozen=True)
class DeviceHealth:
    name: str
    up: bool
    errors: dict[str, int]
    labels: str = ""  # pre-rendered device="...", when the state it comes from has it


@dataclass(frozen=True)
class Snapshot:
    samples: list[VolumeSample]
    health: list[DeviceHealth]
    devices_by_kind: dict[str, int]
    duration_seconds: float


class Selector:
    """Which discovered devices to read: every EBS and instance-store volume, or those named.

    Names come from EBS_DEVICE: paths or globs, comma separated (`/dev/nvme1n1`,
    `/dev/nvme[1-3]n1`, `nvme2`). Only discovered devices are ever read; a plain name that
    matches none is reported as not found without touching the path.
    """

    def __init__(self, patterns: Sequence[str] = ()) -> None:
        # Deduplicated: /dev/nvme1n1 and nvme1n1 name one device, reported once.
        names = (os.path.basename(p.strip().rstrip("/")) for p in patterns if p.strip())
        self.patterns = list(dict.fromkeys(names))

    def choose(self, devices: Sequence[NvmeController]) -> tuple[list[NvmeController], list[str]]:
        if not self.patterns:
            return [d for d in devices if d.kind is not VolumeKind.OTHER], []
        chosen = []
        matched: set[str] = set()
        for d in devices:
            names = (d.controller, *d.namespaces)
            hits = {p for p in self.patterns if any(fnmatch.fnmatchcase(n, p) for n in names)}
            if hits:
                chosen.append(d)
                matched |= hits
        missing = [p for p in self.patterns if p not in matched and not any(c in p for c in "*?[")]
        return chosen, missing


class _Round:
    """The reads of one collection; late answers from hung devices land nowhere."""

    def __init__(self, states: list[VolumeState]) -> None:
        self.queue = collections.deque(states)
        self.results: dict[int, tuple[EbsStats | None, BaseException | None]] = {}
        self.pending = len(states)
        self.done = threading.Condition()


class Collector:
    def __init__(
        self,
        source: Source,
        selector: Selector | None = None,
        device_timeout: float = 3.0,
        workers: int = 4,
    ) -> None:
        self.source = source
        self.selector = selector or Selector()
        self.device_timeout = device_timeout
        self.workers = workers
        self.states: dict[str, VolumeState] = {}
        self.missing: dict[str, VolumeState] = {}
        # Room for a worker per hung device on top of the ones doing the work.
        self._pool = ThreadPoolExecutor(max_workers=workers * 4, thread_name_prefix="ebs-read")
        self._lock = threading.Lock()
        self._inflight: Future[Snapshot] | None = None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def collect(self) -> Snapshot:
        """A fresh snapshot. Callers arriving while one is being taken share it, so two
        Prometheus replicas scraping at once cost one read per device, not two."""
        with self._lock:
            shared = self._inflight
            if shared is None:
                mine: Future[Snapshot] = Future()
                self._inflight = mine
        if shared is not None:
            return shared.result()
        try:
            snapshot = self._collect()
        except BaseException as e:
            mine.set_exception(e)
            raise
        finally:
            with self._lock:
                self._inflight = None
        mine.set_result(snapshot)
        return snapshot

    def _collect(self) -> Snapshot:
        started = time.perf_counter()
        try:
            devices = self.source.discover()
        except OSError as e:  # sysfs unreadable: report no devices rather than fail the scrape
            log.error("discovery failed: %s", e)
            devices = []
        kinds = collections.Counter(d.kind.value for d in devices)
        chosen, missing = self.selector.choose(devices)
        states = self._reconcile(chosen)
        results = self._read_all(states)

        samples = []
        for state in states:
            stats, error = results.get(id(state), (None, None))
            if stats is not None:
                samples.append(self._accept(state, stats))
            elif error is not None:
                self._fail(state, reason_for(error), str(error))
            else:
                self._fail(state, TIMEOUT, f"no answer within {self.device_timeout:g} s")
        health = [DeviceHealth(s.name, s.reason is None, dict(s.errors), s.device_labels) for s in states]
        health += self._missing_health(missing)
        return Snapshot(
            samples=samples,
            health=health,
            devices_by_kind={k.value: kinds.get(k.value, 0) for k in VolumeKind},
            duration_seconds=time.perf_counter() - started,
        )

    def _reconcile(self, chosen: list[NvmeController]) -> list[VolumeState]:
        fresh: dict[str, VolumeState] = {}
        for device in chosen:
            state = self.states.get(device.name)
            if state is None or state.serial != device.serial or state.device.controller != device.controller:
                if state is not None:
                    log.info("%s: now volume %s (was %s)", device.name, device.serial, state.serial)
                state = VolumeState.for_device(device)
            fresh[device.name] = state
        for gone in self.states.keys() - fresh.keys():
            log.info("%s: no longer present", gone)
        self.states = fresh
        return list(fresh.values())

    def _read_all(self, states: list[VolumeState]) -> dict[int, tuple[EbsStats | None, BaseException | None]]:
        # A device still stuck in an earlier read is not asked again: it stays timed out.
        ready = [s for s in states if not s.reading]
        if not ready:
            return {}
        rnd = _Round(ready)
        if not self.source.parallel_reads:
            self._drain(rnd)
            return rnd.results
        for _ in range(min(self.workers, len(ready))):
            self._pool.submit(self._drain, rnd)
        deadline = time.monotonic() + self.device_timeout
        with rnd.done:
            while rnd.pending and rnd.done.wait(max(0.0, deadline - time.monotonic())):
                pass
            rnd.queue.clear()  # out of time: start no further reads for this round
            return dict(rnd.results)

    def _drain(self, rnd: _Round) -> None:
        while True:
            try:
                state = rnd.queue.popleft()
            except IndexError:
                return
            state.reading = True
            try:
                result: tuple[EbsStats | None, BaseException | None] = (self._read(state), None)
            except Exception as e:  # every failure becomes a reason, never a failed scrape
                result = (None, e)
            finally:
                state.reading = False
            with rnd.done:
                rnd.results[id(state)] = result
                rnd.pending -= 1
                if not rnd.pending:
                    rnd.done.notify_all()

    def _read(self, state: VolumeState) -> EbsStats:
        stats = self.source.read_stats(state.device)
        if state.identity is None and state.identify_attempts < IDENTIFY_ATTEMPTS:
            state.identify_attempts += 1
            try:  # only for the info metric's mapping name: a failure here is not a failed read
                state.identity = self.source.identify(state.device)
            except Exception as e:
                log.debug("%s: identify failed: %s", state.name, e)
        return stats

    def _accept(self, state: VolumeState, stats: EbsStats) -> VolumeSample:
        ops = (stats.total_read_ops, stats.total_write_ops)
        if ops[0] < state.last_ops[0] or ops[1] < state.last_ops[1]:
            # Same serial, counters went back: the volume was re-attached. Start over.
            log.warning("%s: counters went backwards (volume re-attached?); starting over", state.name)
            state.count_error(COUNTER_RESET)
            state.read_hist.reset()
            state.write_hist.reset()
        state.last_ops = ops
        if state.reason is not None:
            log.info("%s: reading again after %s", state.name, state.reason)
            state.reason = None
        return VolumeSample(
            state,
            stats,
            state.read_hist.update(stats.read_io_latency_histogram),
            state.write_hist.update(stats.write_io_latency_histogram),
        )

    def _fail(self, state: VolumeState, reason: str, detail: str) -> None:
        state.count_error(reason)
        if state.reason != reason:
            log.warning("%s: %s (%s)", state.name, detail, reason)
            state.reason = reason

    def _missing_health(self, missing: list[str]) -> list[DeviceHealth]:
        health = []
        for name in missing:
            state = self.missing.get(name)
            if state is None:
                placeholder = NvmeController(name, "", (), None, "", "", "", VolumeKind.OTHER, "")
                state = self.missing[name] = VolumeState.for_device(placeholder)
            self._fail(state, "not_found", "named in EBS_DEVICE, but no such NVMe device was discovered")
            health.append(DeviceHealth(name, False, dict(state.errors), state.device_labels))
        for found in self.missing.keys() - set(missing):
            del self.missing[found]
        return health
