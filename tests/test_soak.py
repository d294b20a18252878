"""Churn soak: thousands of scrapes while volumes appear, vanish, are replaced under the same name
and fail; afterwards the exporter holds no more descriptors, threads or memory than before and
serves nothing of a volume or device that is gone.

SOAK_SCRAPES sets the number of scrapes (default 10,000, the CI run); `make soak` runs longer.

What is compared, before (after a warm-up with churn) and after (on the same layout of volumes):
- open descriptors (/proc/PID/fd): equal;
- threads (/proc/PID/task): no thread but a thread-pool worker may appear, every thread is one
  Python knows of, and no new pool shows up (pools start their workers lazily, up to their
  bound, so a pool may have grown);
- memory, where a leak would show without the allocator's noise: live Python allocations after
  a full collection (sys.getallocatedblocks) within HEAP_BLOCKS_TOLERANCE, malloc's bytes in use
  within MALLOC_TOLERANCE; and the resident set within RSS_TOLERANCE, which is looser because
  glibc keeps freed memory of every thread's arena mapped (measured: +5 to +9 MiB at 10,000
  scrapes with an unchanged Python heap).
"""

from __future__ import annotations

import errno
import http.client
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from exporter_harness import FakeHost, samples
from pagesource import stats_page
from reliability import (
    PROBED_EXPORTER,
    TESTS_DIR,
    HeapReading,
    ProcessFigures,
    WrappedExporter,
    label_values,
    process_figures,
    read_heap,
)

import nvme_ebs
from nvme_ebs import VolumeKind
from nvme_ebs import testing as pg
from nvme_ebs.model import EBS_MODEL, INSTANCE_STORE_MODEL

SCRAPES = int(os.environ.get("SOAK_SCRAPES", "10000"))
WARM_UP = 300  # scrapes with churn before the baseline: imports, caches and pools settle
SETTLE = 20  # scrapes on the canonical layout before each measurement
CHURN_EVERY = 3  # scrapes between two changes of the host
CHECK_EVERY = 500  # scrapes between two full consistency checks
HEAP_BLOCKS_TOLERANCE = 2_000  # a leak of one block per scrape, or of a few per volume, exceeds it
MALLOC_TOLERANCE = 4 << 20  # bytes
RSS_TOLERANCE_KIB = 16 * 1024
POOL_WORKER = re.compile(r"(.+)_[0-9]+")  # how ThreadPoolExecutor names its threads
SLOTS = [f"nvme{i}" for i in range(2, 10)]  # nvme1 is a fixed multipath volume that never changes
CANONICAL = SLOTS[:5]
FIXED = ("nvme1", "vol01000000000000001")


@dataclass
class Volume:
    serial: str
    kind: VolumeKind
    page: bytes
    failure: str | None = None  # the reason the exporter must report, when failing

    @property
    def volume_id(self) -> str:
        return nvme_ebs.volume_id_from_serial(self.serial) or self.serial


def _fail_errno(err: int) -> Callable[[FakeHost, str], None]:
    return lambda host, name: host.fake.fail_errno(name, err)


FAILURES: dict[str, Callable[[FakeHost, str], None]] = {
    "permission": _fail_errno(errno.EACCES),
    "io_error": _fail_errno(errno.EIO),
    "gone": _fail_errno(errno.ENODEV),
    "not_found": lambda host, name: host.fake.remove(name),
    "nvme_status": lambda host, name: host.fake.fail_status(name, 0x2109),
    "bad_page": lambda host, name: host.fake.set_log_page(name, stats_page(9, magic=0x12345678)),
}


class Churn:
    """The fake host and a model of what the exporter must be serving."""

    def __init__(self, host: FakeHost, seed: int) -> None:
        self.host = host
        self.rng = random.Random(seed)
        self.volumes: dict[str, Volume] = {}
        self.serials = 0
        self.gone_serials: set[str] = set()

    def new_volume(self) -> Volume:
        self.serials += 1
        if self.rng.random() < 0.2:
            return Volume(f"AWS{self.serials:017X}", VolumeKind.INSTANCE_STORE, self._page(pg.MAGIC_INSTANCE_STORE))
        return Volume(f"vol0{self.serials:016x}", VolumeKind.EBS, self._page(pg.MAGIC_EBS))

    def _page(self, magic: int) -> bytes:
        return stats_page(self.rng.randrange(1, 1000), self.rng.choice((4, 28, 64)), magic)

    def attach(self, name: str) -> None:
        volume = self.new_volume()
        self.host.attach(name, volume.serial, volume.page, volume.kind)
        self.volumes[name] = volume

    def detach(self, name: str) -> None:
        os.unlink(self.host.sysfs.controller_dir(name))
        self.host.fake.dev_path(name).unlink(missing_ok=True)  # a "not_found" failure removed it already
        self.gone_serials.add(self.volumes.pop(name).serial)

    def fail(self, name: str) -> None:
        reason = self.rng.choice(sorted(FAILURES))
        FAILURES[reason](self.host, name)
        self.volumes[name].failure = reason

    def heal(self, name: str) -> None:
        volume = self.volumes[name]
        model = EBS_MODEL if volume.kind is VolumeKind.EBS else INSTANCE_STORE_MODEL
        self.host.fake.add(name, pg.encode_identify(volume.serial, model, "2.0", "sdf"), volume.page)
        volume.failure = None

    def step(self) -> None:
        """One change: attach, detach, replace (same name, new serial), fail or heal."""
        free = [s for s in SLOTS if s not in self.volumes]
        used = sorted(self.volumes)
        failing = [s for s in used if self.volumes[s].failure]
        actions: list[Callable[[], None]] = []
        if free and len(used) < 7:
            actions.append(lambda: self.attach(self.rng.choice(free)))
        if len(used) > 2:
            actions.append(lambda: self.detach(self.rng.choice(used)))
        if used:
            actions.append(lambda: self.replace(self.rng.choice(used)))
        if len(failing) < 2 and len(used) > len(failing):
            actions.append(lambda: self.fail(self.rng.choice([s for s in used if s not in failing])))
        if failing:
            actions.append(lambda: self.heal(self.rng.choice(failing)))
        self.rng.choice(actions)()

    def replace(self, name: str) -> None:
        self.detach(name)
        self.attach(name)

    def canonical(self) -> None:
        """The same layout every time (CANONICAL slots, healthy), with fresh volumes."""
        for name in sorted(self.volumes):
            self.detach(name)
        for name in CANONICAL:
            self.attach(name)


def pool_of(thread_name: str) -> str | None:
    m = POOL_WORKER.fullmatch(thread_name)
    return m.group(1) if m else None


def check(text: str, churn: Churn) -> None:
    """The scrape serves exactly the volumes and devices the host has now."""
    parsed = samples(text)
    healthy = {v.volume_id for v in churn.volumes.values() if v.failure is None} | {"vol-01000000000000001"}
    assert label_values(parsed, "volume_id") == healthy
    devices = {f"{name}n1" for name in churn.volumes} | {"nvme1n1"}
    assert label_values(parsed, "device") == devices
    for name, volume in churn.volumes.items():
        up = parsed[("ebs_device_up", (("device", f"{name}n1"),))]
        assert up == (volume.failure is None), (name, volume)
        if volume.failure:
            key = ("ebs_device_errors_total", (("device", f"{name}n1"), ("reason", volume.failure)))
            assert parsed.get(key, 0) >= 1, (name, volume)
    for serial in churn.gone_serials - {v.serial for v in churn.volumes.values()}:
        assert serial[3:] not in text, serial


def test_churn_soak(fake_host: FakeHost) -> None:
    host = fake_host
    host.attach(*FIXED, stats_page(1, 28), multipath_subsystem=1)
    churn = Churn(host, seed=7)
    churn.canonical()
    env = host.env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [TESTS_DIR, env.get("PYTHONPATH")]))
    with WrappedExporter((), host.args(), env, python_args=PROBED_EXPORTER) as running:
        conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=60)  # kept alive throughout

        def scrape() -> str:
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            body = response.read().decode()
            assert response.status == 200, body
            return body

        def settle_and_measure() -> tuple[ProcessFigures, HeapReading]:
            churn.canonical()
            for _ in range(SETTLE):
                text = scrape()
            check(text, churn)
            return process_figures(running.proc.pid), read_heap(running)

        for i in range(WARM_UP):
            scrape()
            if i % CHURN_EVERY == 0:
                churn.step()
        before, heap_before = settle_and_measure()

        for i in range(SCRAPES):
            text = scrape()
            if i % CHECK_EVERY == 0:
                check(text, churn)
            if i % CHURN_EVERY == 0:
                churn.step()
        check(scrape(), churn)
        after, heap_after = settle_and_measure()
        conn.close()
    print(
        f"\nsoak: {SCRAPES} scrapes, {churn.serials} volumes attached in all\n"
        f"  before: {before} {heap_before}\n  after:  {after} {heap_after}"
    )

    assert after.fds == before.fds
    assert (before.threads, after.threads) == (len(heap_before.threads), len(heap_after.threads))
    assert set(heap_before.threads) <= set(heap_after.threads)
    new_threads = set(heap_after.threads) - set(heap_before.threads)
    # only workers of pools that existed before: lazily started, never a thread per scrape or volume
    assert {pool_of(name) for name in new_threads} <= {pool_of(name) for name in heap_before.threads} - {None}
    assert heap_after.blocks <= heap_before.blocks + HEAP_BLOCKS_TOLERANCE
    assert heap_after.malloc_in_use <= heap_before.malloc_in_use + MALLOC_TOLERANCE
    assert after.rss_kib <= before.rss_kib + RSS_TOLERANCE_KIB
    assert not [line for line in running.log if "Traceback" in line or "level=error" in line]
