"""The fake host the real exporter process runs against: a fixture sysfs tree plus the fake NVMe
controller, so every scrape goes discovery -> open -> ioctl -> C decoder -> HTTP; and reading
what it serves. The process itself is started by ebs_exporter.testing.Exporter."""

from __future__ import annotations

import os
import time
from pathlib import Path

from fakenvme import FakeNvme
from pagesource import MODELS
from prometheus_client.parser import text_string_to_metric_families
from sysfs_fixture import SysfsTree

from ebs_exporter.testing import Exporter
from nvme_ebs import VolumeKind
from nvme_ebs import testing as pg

__all__ = ["Exporter", "FakeHost", "samples", "value", "wait_for"]


class FakeHost:
    def __init__(self, root: Path) -> None:
        self.sysfs = SysfsTree(root / "sys")
        self.fake = FakeNvme(root / "fake")
        self.dev = self.fake.root / "dev"
        self.dev.mkdir(parents=True, exist_ok=True)

    def attach(
        self,
        controller: str,
        serial: str,
        page: bytes | None,
        kind: VolumeKind = VolumeKind.EBS,
        mapping: str = "sdf",
        multipath_subsystem: int | None = None,
    ) -> None:
        model = MODELS[kind]
        self.sysfs.add_controller(controller, model, serial, multipath_subsystem=multipath_subsystem)
        self.fake.add(controller, pg.encode_identify(serial, model, "2.0", mapping), page)

    def detach(self, controller: str) -> None:
        os.unlink(self.sysfs.controller_dir(controller))
        self.fake.remove(controller)

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.fake.env()}

    def args(self) -> list[str]:
        return [f"--path.sysfs={self.sysfs.root}", f"--path.dev={self.dev}"]


SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def samples(text: str) -> dict[SampleKey, float]:
    """Every sample of a text exposition by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.1):  # type: ignore[no-untyped-def]
    """Polls until predicate() is truthy; returns its value or raises after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            if not value:
                raise AssertionError(f"condition not met within {timeout} s")
            return value
        time.sleep(interval)
