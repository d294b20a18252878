"""The checked-in fixture host under tests/fixtures/host/, and the code that writes it.

    .venv/bin/python tests/fixture_host.py      # rewrites tests/fixtures/host/ (make update-golden)

The directory is a whole host as the exporter sees it, in files: `sys/` a sysfs tree (what
nvme_ebs.discovery reads) and `ctl/<controller>/` the fake NVMe controller's answers
(tests/fakenvme): `identify` and `log_d0` are the raw 4096-byte Identify Controller and log
page 0xD0 dumps, `errno` makes every command fail. git holds no device nodes, so install()
copies the tree elsewhere (the fake also appends commands.log to ctl/) and makes `dev/` there.

Everything here is fixed: the same code writes the same bytes, and a test checks that the
checked-in tree is exactly what this module writes.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fakenvme import FakeNvme
from pagesource import MODELS
from sysfs_fixture import OTHER_MODEL, SysfsTree

from nvme_ebs import VolumeKind
from nvme_ebs import testing as pg

FIXTURE_HOST = Path(__file__).resolve().parent / "fixtures" / "host"
U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1


@dataclass(frozen=True)
class Controller:
    name: str
    serial: str
    kind: VolumeKind
    identify: bytes
    page: bytes | None = None  # no file: the controller answers Invalid Field
    fail_errno: int | None = None  # every admin command fails with this errno
    multipath_subsystem: int | None = None
    model: str = ""  # default: the kind's model string
    firmware: str = "2.0"

    @property
    def model_name(self) -> str:
        return self.model or MODELS[self.kind]


def _counters(scale: int) -> dict[str, int]:
    """Distinct, readable counters: the n-th field is n * scale."""
    return {name: (i + 1) * scale for i, name in enumerate(pg.COUNTER_FIELDS)}


def _bins(num_bins: int, count: Callable[[int], int]) -> list[tuple[int, int, int]]:
    """Power-of-two bins, the i-th holding count(i)."""
    return [(lo, hi, count(i)) for i, (lo, hi) in enumerate(pg.power_of_two_bounds(num_bins))]


def _page(counters: dict[str, int], read_bins: pg.Bins, write_bins: pg.Bins, magic: int = pg.MAGIC_EBS) -> bytes:
    return pg.encode_stats_page(counters, read_bins, write_bins, magic=magic)


def _identify(serial: str, kind: VolumeKind, mapping: str = "") -> bytes:
    return pg.encode_identify(serial, MODELS[kind], "2.0", mapping)


def controllers() -> list[Controller]:
    ebs, store = VolumeKind.EBS, VolumeKind.INSTANCE_STORE
    return [
        # A non-Amazon NVMe: discovered and counted, never read.
        Controller(
            "nvme0", "S6B0NL0T123456K", VolumeKind.OTHER,
            pg.encode_identify("S6B0NL0T123456K", OTHER_MODEL, "3B2QGXA7", vid=0x144D, ssvid=0x144D),
            model=OTHER_MODEL, firmware="3B2QGXA7",
        ),
        # EBS, 28 bins (what AWS reports today), no block device mapping in its identify page.
        Controller(
            "nvme1", "vol01111111111111111", ebs, _identify("vol01111111111111111", ebs),
            _page(_counters(1000), _bins(28, lambda i: 100 + i), _bins(28, lambda i: 200 + i)),
        ),
        # EBS, all 64 bins, with a block device mapping name, behind native multipath.
        Controller(
            "nvme2", "vol02222222222222222", ebs, _identify("vol02222222222222222", ebs, "/dev/sdf"),
            _page(_counters(2_000_000), _bins(64, lambda i: i), _bins(64, lambda i: 64 - i)),
            multipath_subsystem=2,
        ),
        # EBS with counters at the top of their range: u32 bins, u64 counters.
        Controller(
            "nvme3", "vol03333333333333333", ebs, _identify("vol03333333333333333", ebs, "xvdh"),
            _page(
                {name: U64_MAX - i for i, name in enumerate(pg.COUNTER_FIELDS)},
                _bins(28, lambda i: U32_MAX - i),
                _bins(28, lambda i: U32_MAX),
            ),
        ),
        # An instance-store volume: its own magic and metric prefix.
        Controller(
            "nvme4", "AWS14444444444444444", store, _identify("AWS14444444444444444", store, "ephemeral0"),
            _page(_counters(7), _bins(28, lambda i: 3 * i), _bins(28, lambda i: 5 * i), pg.MAGIC_INSTANCE_STORE),
        ),
        # An EBS volume whose every ioctl fails: up 0, an error counted, the scrape unharmed.
        Controller(
            "nvme5", "vol05555555555555555", ebs, _identify("vol05555555555555555", ebs),
            _page(_counters(5), (), ()),
            fail_errno=errno.EIO,
        ),
    ]  # fmt: skip


def write(root: Path) -> None:
    """Writes the fixture host (sys/ and ctl/) into `root`, which must not exist yet."""
    root.mkdir(parents=True)
    sysfs = SysfsTree(root / "sys")
    fake = FakeNvme(root)
    for c in controllers():
        sysfs.add_controller(
            c.name, c.model_name, c.serial, multipath_subsystem=c.multipath_subsystem, firmware=c.firmware
        )
        fake.add(c.name, c.identify, c.page)
        fake.fail_errno(c.name, c.fail_errno)
    shutil.rmtree(fake.root / "dev")


def install(dest: Path, source: Path = FIXTURE_HOST) -> FakeNvme:
    """A working copy of the fixture host at `dest`, with a device node for every controller."""
    shutil.copytree(source, dest, symlinks=True)
    fake = FakeNvme(dest)
    for ctl in sorted(p.name for p in (dest / "ctl").iterdir()):
        fake.make_node(ctl)
    return fake


def exporter_args(root: Path) -> list[str]:
    return [f"--path.sysfs={root / 'sys'}", f"--path.dev={root / 'dev'}"]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """What a reader of the tree sees, by relative path: a file's bytes, None for a directory.

    Links are followed: an sdist (MANIFEST.in grafts tests/) stores them as copies."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        base = Path(dirpath)
        out.update((str((base / d).relative_to(root)), None) for d in dirnames)
        out.update((str((base / f).relative_to(root)), (base / f).read_bytes()) for f in filenames)
    return out


def main() -> int:
    if FIXTURE_HOST.exists():
        shutil.rmtree(FIXTURE_HOST)
    write(FIXTURE_HOST)
    print(f"wrote {FIXTURE_HOST}: {len(snapshot(FIXTURE_HOST))} entries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
