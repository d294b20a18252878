"""One collection: discover, choose, read every chosen device (bounded in time), update each volume.

The concerns live apart: which devices (selection.py), reading within deadlines (reads.py),
what is kept per volume (volumes.py), the 32-bit wrap (wrap.py). None of them writes text:
the renderers turn the Snapshot returned here into an exposition.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future

from nvme_ebs import EbsStats, NvmeController, VolumeKind

from .reads import ReadScheduler
from .selection import Selector
from .snapshot import DeviceHealth, Snapshot, VolumeSample
from .sources import Source
from .volumes import TIMEOUT, Volumes, VolumeState, reason_for

log = logging.getLogger("ebs_exporter.collector")

IDENTIFY_ATTEMPTS = 3


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
        self.volumes = Volumes()
        self.reads = ReadScheduler(device_timeout, workers)
        self._lock = threading.Lock()
        self._inflight: Future[Snapshot] | None = None
        self._had_volumes: bool | None = None  # for logging a change between none and some, once

    def close(self) -> None:
        self.reads.close()

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

    def discover(self) -> list[NvmeController]:
        try:
            return self.source.discover()
        except OSError as e:  # sysfs unreadable: report no devices rather than fail the scrape
            log.error("discovery failed: %s", e)
            return []

    def readiness(self) -> tuple[bool, str]:
        """Whether the exporter can do its job: its source readable and discovery working."""
        try:
            self.source.check()
            devices = self.source.discover()
        except OSError as e:
            where = f" {e.filename}" if e.filename else ""
            return False, f"cannot read{where}: {e.strerror or e}"
        chosen, missing = self.selector.choose(devices)
        kinds = collections.Counter(d.kind.value for d in chosen)
        found = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "no volumes to read"
        return True, f"{found} ({len(devices)} NVMe controllers)" + (
            f"; not found: {', '.join(missing)}" if missing else ""
        )

    def _note_volumes(self, chosen: list[NvmeController]) -> None:
        has = bool(chosen)
        if has != self._had_volumes:
            if not has:  # not an error: a node may have no EBS volume (yet)
                log.info("no EBS or instance-store volume to read on this node")
            elif self._had_volumes is not None:
                log.info("volumes to read: %d", len(chosen))
            self._had_volumes = has

    def _collect(self) -> Snapshot:
        started = time.perf_counter()
        devices = self.discover()
        kinds = collections.Counter(d.kind.value for d in devices)
        chosen, missing = self.selector.choose(devices)
        self._note_volumes(chosen)
        states = self.volumes.reconcile(chosen)
        outcomes = self.reads.run(states, self._read, self.source.parallel_reads)

        samples = []
        for state in states:
            stats, error = outcomes.get(id(state), (None, None))
            if stats is not None:
                state.accept(stats)
                samples.append(VolumeSample(state, stats, state.wrap_offsets()))
            elif error is not None:
                state.fail(reason_for(error), str(error))
            else:
                state.fail(TIMEOUT, f"no answer within {self.device_timeout:g} s")
        health = [DeviceHealth(s.name, s.reason is None, s.errors) for s in states]
        health += [DeviceHealth(s.name, False, s.errors) for s in self.volumes.not_found(missing)]
        return Snapshot(
            samples=samples,
            health=health,
            devices_by_kind={k.value: kinds.get(k.value, 0) for k in VolumeKind},
            duration_seconds=time.perf_counter() - started,
        )

    def _read(self, state: VolumeState) -> EbsStats:
        stats = self.source.read_stats(state.device)
        if state.identity is None and state.identify_attempts < IDENTIFY_ATTEMPTS:
            state.identify_attempts += 1
            try:  # only for the info metric's mapping name: a failure here is not a failed read
                state.identity = self.source.identify(state.device)
            except Exception as e:
                log.debug("%s: identify failed: %s", state.name, e)
        return stats
