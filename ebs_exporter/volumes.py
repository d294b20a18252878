"""What the exporter keeps per volume between collections, and how a read's outcome changes it.

State lives per device name and is replaced when the serial behind the name changes, so a
name reused for another volume never inherits the old volume's counters. Nothing read from a
device is kept across collections except what keeps the exported histograms monotonic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from nvme_ebs import (
    ControllerIdentity,
    DeviceGoneError,
    DeviceNotFoundError,
    DeviceOSError,
    DevicePermissionError,
    EbsStats,
    NotAnEbsVolumeError,
    NotNvmeDeviceError,
    NvmeController,
    NvmeStatusError,
    PageFormatError,
    VolumeKind,
)
from nvme_ebs._native import stats_offset

from .metrics import HISTOGRAMS
from .wrap import Offsets, WrapCounter

# Where each histogram sits in the decoded page's struct.
_OFFSETS = {h.field: stats_offset(h.field) for h in HISTOGRAMS}

log = logging.getLogger("ebs_exporter.volumes")

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
NOT_FOUND = "not_found"
# Every reason ebs_device_errors_total can carry, in the order the README lists them.
ALL_REASONS = (*dict.fromkeys(r for _, r in REASONS), TIMEOUT, COUNTER_RESET, INTERNAL)


def reason_for(error: BaseException) -> str:
    for cls, reason in REASONS:
        if isinstance(error, cls):
            return reason
    return INTERNAL


@dataclass(eq=False)  # compared and hashed by identity: the renderer keys its text on the state
class VolumeState:
    """What the exporter keeps about one device name while the same volume sits behind it."""

    device: NvmeController
    name: str
    serial: str
    volume_id: str
    identity: ControllerIdentity | None = None
    identify_attempts: int = 0
    reason: str | None = None
    # Every reason from 0, so that rate() and increase() see a device's first failure. Replaced
    # by a new dict at each count, never changed in place: a snapshot keeps the one it was given.
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ALL_REASONS, 0))
    wraps: dict[str, WrapCounter] = field(default_factory=lambda: {h.field: WrapCounter() for h in HISTOGRAMS})
    last_ops: tuple[int, int] = (0, 0)

    @classmethod
    def for_device(cls, device: NvmeController) -> VolumeState:
        name = device.name
        return cls(device=device, name=name, serial=device.serial, volume_id=device.volume_id or device.serial or name)

    def info_labels(self) -> dict[str, str]:
        """The volume info metric's labels: Identify's answer when there is one, sysfs (read
        without privilege) until then."""
        identity = self.identity
        return {
            "volume_id": self.volume_id,
            "device": self.name,
            "block_device_mapping": (identity.block_device_mapping if identity else None) or "",
            "model": identity.model if identity else self.device.model,
            "firmware": identity.firmware if identity else self.device.firmware,
            "kind": self.device.kind.value,
            "serial": self.serial,
        }

    def count_error(self, reason: str) -> None:
        self.errors = {**self.errors, reason: self.errors[reason] + 1}

    def accept(self, stats: EbsStats) -> None:
        """A successful read: the wrap bookkeeping follows its histograms (see wrap_offsets)."""
        ops = (stats.total_read_ops, stats.total_write_ops)
        if ops[0] < self.last_ops[0] or ops[1] < self.last_ops[1]:
            # Same serial, counters went back: the volume was re-attached. Start over.
            log.warning("%s: counters went backwards (volume re-attached?); starting over", self.name)
            self.count_error(COUNTER_RESET)
            for wrap in self.wraps.values():
                wrap.reset()
        self.last_ops = ops
        if self.reason is not None:
            log.info("%s: reading again after %s", self.name, self.reason)
            self.reason = None
        decoded = stats.decoded
        for name, wrap in self.wraps.items():
            wrap.update(getattr(stats, name), decoded, _OFFSETS[name])

    def wrap_offsets(self) -> dict[str, Offsets]:
        """What wrapping added to each bin, for the histograms with a bin that has wrapped."""
        return {name: wrap.offsets for name, wrap in self.wraps.items() if wrap.offsets is not None}

    def fail(self, reason: str, detail: str) -> None:
        """A failed read: counted each time, logged once per change of reason."""
        self.count_error(reason)
        if self.reason != reason:
            log.warning("%s: %s (%s)", self.name, detail, reason)
            self.reason = reason


class Volumes:
    """The states of the devices chosen at the last collection, and of the names that matched none."""

    def __init__(self) -> None:
        self.states: dict[str, VolumeState] = {}
        self.missing: dict[str, VolumeState] = {}

    def reconcile(self, chosen: list[NvmeController]) -> list[VolumeState]:
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

    def not_found(self, names: list[str]) -> list[VolumeState]:
        """States for names given in EBS_DEVICE that no discovered device has, each failed once more."""
        states = []
        for name in names:
            state = self.missing.get(name)
            if state is None:
                placeholder = NvmeController(name, "", (), None, "", "", "", VolumeKind.OTHER, "")
                state = self.missing[name] = VolumeState.for_device(placeholder)
            state.fail(NOT_FOUND, "named in EBS_DEVICE, but no such NVMe device was discovered")
            states.append(state)
        for found in self.missing.keys() - set(names):
            del self.missing[found]
        return states
