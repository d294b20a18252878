"""The C reference: benchmarks/reference.c, built here, reading the same fake host as the exporter."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from scrape import ROOT, fake_host

BUILD = ROOT / "build" / "bench"


@dataclass(frozen=True)
class ReferenceResult:
    volumes: int
    bins: int
    bytes: int
    wall: float  # median seconds per round
    cpu: float  # CPU seconds per round


def build() -> Path:
    """Compiles the reference (with the C core it shares with the exporter) when it is out of date."""
    binary = BUILD / "reference"
    sources = [ROOT / "benchmarks" / "reference.c", ROOT / "csrc" / "nvme_ebs.c", ROOT / "csrc" / "nvme_ebs.h"]
    if not binary.exists() or any(s.stat().st_mtime > binary.stat().st_mtime for s in sources):
        BUILD.mkdir(parents=True, exist_ok=True)
        compiler = os.environ.get("CC", "cc")
        cmd = [compiler, "-O2", "-std=c99", "-D_GNU_SOURCE", "-I", str(ROOT / "csrc"), "-o", str(binary)]
        subprocess.run([*cmd, str(sources[0]), str(sources[1])], check=True)
    return binary


def run_one(volumes: int, bins: int, rounds: int, workdir: Path) -> ReferenceResult:
    host, env = fake_host(volumes, bins, workdir, os.environ)
    out = subprocess.run(
        [str(build()), str(host.sysfs.root), str(host.dev), str(rounds)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    fields = dict(zip(out[::2], out[1::2]))
    if int(fields["volumes"]) != volumes:
        raise RuntimeError(f"the reference read {fields['volumes']} of {volumes} volumes")
    return ReferenceResult(volumes, bins, int(fields["bytes"]), float(fields["wall"]), float(fields["cpu"]))
