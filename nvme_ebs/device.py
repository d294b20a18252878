"""A device node to send the two admin commands to: identify and read statistics by path."""

from __future__ import annotations

from . import _native
from .errors import NotAnEbsVolumeError, NvmeEbsError, NvmeStatusError
from .model import ControllerIdentity, EbsStats, VolumeKind


class DeviceNode:
    """An NVMe device node (controller /dev/nvmeX or namespace /dev/nvmeXnY), by path.

    Nothing is held open: every call opens the node read-only, sends one admin
    command and closes it, so a detached volume leaves no file descriptor behind.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._identity: ControllerIdentity | None = None

    def __repr__(self) -> str:
        return f"DeviceNode({self.path!r})"

    def identify(self) -> ControllerIdentity:
        """Identify Controller, asked of the device each time."""
        self._identity = _native.identify(self.path)
        return self._identity

    def read_stats(self) -> EbsStats:
        """The statistics page (log 0xD0), decoded.

        Raises NotAnEbsVolumeError when the device refuses the page and its model is not
        an Amazon one, NvmeStatusError for any other refusal.
        """
        try:
            return _native.read_stats(self.path)
        except NvmeStatusError as refused:
            model = self._model_if_not_amazon()
            if model is not None:
                raise NotAnEbsVolumeError(self.path, refused.opcode, refused.status, model) from refused
            raise

    def read_stats_page(self) -> bytes:
        """The raw page, for dumps that `nvme_ebs.parse_log_page` or `nvme-ebs decode` read back."""
        return _native.read_stats_page(self.path)

    def _model_if_not_amazon(self) -> str | None:
        try:
            identity = self._identity or self.identify()
        except NvmeEbsError:
            return None
        return identity.model if identity.kind is VolumeKind.OTHER else None
