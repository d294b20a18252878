"""One exception hierarchy for everything nvme_ebs raises; each names the device and the cause."""

from __future__ import annotations

import errno
import os
from typing import Any

_CAP_HINT = (
    "the NVMe admin passthrough needs root with CAP_SYS_ADMIN and, in a container, access to the "
    "device node (privileged: true)"
)


class NvmeEbsError(Exception):
    """Base class: `device` is the path involved, when there is one.

    Pickling calls the constructor again with the arguments `_init_args` gives back, then
    restores the attributes: an error raised in a worker process arrives whole.
    """

    def __init__(self, message: str, device: str | None = None) -> None:
        super().__init__(message)
        self.device = device

    def _init_args(self) -> tuple[object, ...]:
        return (self.args[0], self.device)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._init_args(), self.__dict__.copy())


class DeviceOSError(NvmeEbsError, OSError):
    """The kernel refused the open or the ioctl with an errno.

    An OSError like any other (`errno`, `strerror`, `filename` is the device, `args` is
    `(errno, strerror)`), whose str() is one line naming the device, the command and the cause.
    """

    hint = ""  # appended to the message; subclasses with a hint of their own set it here

    def __init__(self, err: int, device: str, what: str, hint: str | None = None) -> None:
        strerror = os.strerror(err)
        OSError.__init__(self, err, strerror, device)
        self.device = device
        self.what = what
        self.hint = type(self).hint if hint is None else hint
        message = f"{device}: {what} failed: {strerror} (errno {errno.errorcode.get(err, err)})"
        self.message = f"{message}; {self.hint}" if self.hint else message

    def __str__(self) -> str:
        return self.message

    def _init_args(self) -> tuple[object, ...]:
        return (self.errno, self.device, self.what, self.hint)


class DeviceNotFoundError(DeviceOSError, FileNotFoundError):
    """ENOENT: the device node is not there (never was, or the volume was detached)."""


class DevicePermissionError(DeviceOSError, PermissionError):
    """EACCES / EPERM: not allowed to open the device or send the admin command."""

    hint = _CAP_HINT


class NotNvmeDeviceError(DeviceOSError):
    """ENOTTY: the path is not an NVMe device node."""

    hint = "not an NVMe device"


class DeviceGoneError(DeviceOSError):
    """ENODEV / ENXIO: the device went away between open and ioctl."""


class NvmeStatusError(NvmeEbsError):
    """The controller completed the command with a non-zero NVMe status."""

    def __init__(self, device: str, opcode: int, status: int, what: str) -> None:
        self.opcode = opcode
        self.status = status
        self.what = what
        self.sc = status & 0xFF
        self.sct = (status >> 8) & 0x7
        self.crd = (status >> 11) & 0x3
        self.more = bool(status & (1 << 13))
        self.dnr = bool(status & (1 << 14))
        super().__init__(
            f"{device}: {what} refused by the controller: NVMe status {status:#06x} "
            f"(SCT {self.sct:#x}, SC {self.sc:#04x}{', DNR' if self.dnr else ''}, opcode {opcode:#04x})",
            device,
        )

    def _init_args(self) -> tuple[object, ...]:
        return (self.device, self.opcode, self.status, self.what)


class NotAnEbsVolumeError(NvmeStatusError):
    """The device refused the statistics page and its model is not an Amazon one."""

    def __init__(self, device: str, opcode: int, status: int, model: str) -> None:
        super().__init__(device, opcode, status, "statistics page (log 0xD0)")
        self.model = model
        self.args = (f"{device}: not an EBS or instance-store volume (model {model!r}); {self.args[0]}",)

    def _init_args(self) -> tuple[object, ...]:
        return (self.device, self.opcode, self.status, self.model)


class PageFormatError(NvmeEbsError, ValueError):
    """A page did not pass a decoder check; `check` names which one."""

    def __init__(self, check: str, detail: str, device: str | None = None) -> None:
        prefix = f"{device}: " if device else ""
        super().__init__(f"{prefix}malformed page: {detail}", device)
        self.check = check
        self.detail = detail

    def _init_args(self) -> tuple[object, ...]:
        return (self.check, self.detail, self.device)


def error_from_errno(err: int, device: str, what: str) -> DeviceOSError:
    """The exception class that fits a (positive) errno."""
    if err == errno.ENOENT:
        return DeviceNotFoundError(err, device, what)
    if err in (errno.EACCES, errno.EPERM):
        return DevicePermissionError(err, device, what)
    if err == errno.ENOTTY:
        return NotNvmeDeviceError(err, device, what)
    if err in (errno.ENODEV, errno.ENXIO):
        return DeviceGoneError(err, device, what)
    return DeviceOSError(err, device, what)
