"""Which discovered devices to read (EBS_DEVICE / --device)."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence

from nvme_ebs import NvmeController, VolumeKind

GLOB_CHARACTERS = "*?["


class Selector:
    """Every EBS and instance-store volume, or those named.

    Names come from EBS_DEVICE: paths or globs, comma separated (`/dev/nvme1n1`,
    `/dev/nvme[1-3]n1`, `nvme2`). Only discovered devices are ever read; a plain name that
    matches none is reported as not found without touching the path.
    """

    def __init__(self, patterns: Sequence[str] = ()) -> None:
        # Deduplicated: /dev/nvme1n1 and nvme1n1 name one device, reported once.
        names = (os.path.basename(p.strip().rstrip("/")) for p in patterns if p.strip())
        self.patterns = list(dict.fromkeys(names))

    def choose(self, devices: Sequence[NvmeController]) -> tuple[list[NvmeController], list[str]]:
        """The devices to read, and the plain names (not globs) that matched none."""
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
        missing = [p for p in self.patterns if p not in matched and not any(c in p for c in GLOB_CHARACTERS)]
        return chosen, missing
