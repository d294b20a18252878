"""`nvme-ebs top`: every EBS and instance-store volume of the node, one line each, refreshed.

Plain lines when stdout is not a terminal (a header, a line per volume, a blank line per
refresh); on a terminal, the same table redrawn in place with ANSI escapes. Each read runs on
a thread of its own, so a device that does not answer holds up only its own line.
"""

from __future__ import annotations

import enum
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import TextIO

from .device import DeviceNode
from .discovery import Discovery
from .model import EbsStats, NvmeController, VolumeKind
from .top import CounterReset, IoRates, Quantile, VolumeRates, volume_rates, worst_first_key

# (title, width); the first two are left-aligned, the numbers right-aligned.
COLUMNS = (
    ("DEVICE", 12),
    ("VOLUME", 21),
    ("r/s", 8),
    ("w/s", 8),
    ("rMB/s", 8),
    ("wMB/s", 8),
    ("r_avg", 8),
    ("w_avg", 8),
    ("r_p50", 8),
    ("r_p99", 8),
    ("w_p50", 8),
    ("w_p99", 8),
    ("queue", 6),
    ("vol_iops%", 10),
    ("vol_tp%", 8),
    ("inst_iops%", 11),
    ("inst_tp%", 9),
)
KINDS = (VolumeKind.EBS, VolumeKind.INSTANCE_STORE)

HELP = """\
Every EBS and instance-store volume of the node, one line each, refreshed every --interval
seconds, worst first: failed reads, then by the largest exceeded percentage, then by queue
length. Columns: reads and writes per second (r/s, w/s), megabytes per second (rMB/s, wMB/s;
1 MB = 10^6 bytes), average latency (r_avg, w_avg) and the 50th and 99th percentiles
(r_p50 ... w_p99) in milliseconds, the queue length at the time of the read, and the share of
the interval each limit was exceeded: the volume's IOPS and throughput limits (vol_iops%,
vol_tp%) and the EC2 instance's (inst_iops%, inst_tp%). Percentiles come from the change of
the latency histogram over the interval, interpolated linearly within the bin that holds them
(as Prometheus's histogram_quantile does); in the open-ended last bin the bin's lower bound is
shown with a leading '>'. On a terminal the screen is redrawn; otherwise each refresh prints a
header, a line per volume and a blank line. Reads need CAP_SYS_ADMIN."""


class _Group(enum.IntEnum):
    """Where a line sorts: failures on top, then volumes worst first, then those still starting."""

    FAILED = 0
    RATES = 1
    WAITING = 2


class _Read:
    """One statistics read on a daemon thread; `at` is when its answer came."""

    def __init__(self, path: str) -> None:
        self.started = time.monotonic()
        self.done = threading.Event()
        self.stats: EbsStats | None = None
        self.error: Exception | None = None
        self.at = 0.0
        threading.Thread(target=self._run, args=(path,), name=f"read {path}", daemon=True).start()

    def _run(self, path: str) -> None:
        try:
            self.stats = DeviceNode(path).read_stats()
        except Exception as e:  # whatever it is, it belongs on the device's line
            self.error = e
        self.at = time.monotonic()
        self.done.set()


@dataclass
class _Volume:
    device: NvmeController
    last: tuple[EbsStats, float] | None = None  # the previous reading and when it came
    pending: _Read | None = None


@dataclass(frozen=True)
class Line:
    device: NvmeController
    group: _Group
    rates: VolumeRates | None = None
    message: str = ""
    position: int = 0

    def sort_key(self) -> tuple[int, tuple[float, int, int]]:
        if self.rates is None:
            return (self.group, (0.0, 0, self.position))
        return (self.group, worst_first_key(self.position, self.rates))


def error_text(error: Exception, device: str) -> str:
    """The error without the device's path in front: the line already names the device."""
    text = str(error) or type(error).__name__
    return text[len(device) + 2 :] if text.startswith(f"{device}: ") else text


@dataclass
class Top:
    """The state between refreshes: the volumes seen and their last readings."""

    sysfs: str
    dev: str
    interval: float
    volumes: dict[tuple[str, str], _Volume] = field(default_factory=dict)
    # One discovery for all refreshes: a steady controller is not read again each time.
    discovery: Discovery = field(init=False)

    def __post_init__(self) -> None:
        self.discovery = Discovery(self.sysfs, self.dev)

    def refresh(self) -> list[Line]:
        """Discover, read every volume (waiting at most half an interval for the reads started
        now, not at all for one still out from an earlier refresh), and compute the lines."""
        volumes: dict[tuple[str, str], _Volume] = {}
        for device in self.discovery.scan():
            if device.kind in KINDS:  # keyed by serial too: another volume on the same node is new
                key = (device.controller_path, device.serial)
                volumes[key] = self.volumes.get(key) or _Volume(device)
                volumes[key].device = device
        self.volumes = volumes
        started = []
        for volume in self.volumes.values():
            if volume.pending is None:  # else a read from an earlier refresh has not come back yet
                volume.pending = _Read(volume.device.controller_path)
                started.append(volume.pending)
        deadline = time.monotonic() + self.interval / 2
        for read in started:
            read.done.wait(max(0.0, deadline - time.monotonic()))
        lines = [self._line(v, i) for i, v in enumerate(self.volumes.values())]
        return sorted(lines, key=Line.sort_key)

    def _line(self, volume: _Volume, position: int) -> Line:
        read, device = volume.pending, volume.device
        assert read is not None
        if not read.done.is_set():
            waited = time.monotonic() - read.started
            return Line(device, _Group.FAILED, message=f"no answer for {waited:.1f} s", position=position)
        volume.pending = None
        if read.error is not None:
            return Line(
                device, _Group.FAILED, message=error_text(read.error, device.controller_path), position=position
            )
        assert read.stats is not None
        before, volume.last = volume.last, (read.stats, read.at)
        if before is None:
            return Line(device, _Group.WAITING, message="first reading: rates at the next refresh", position=position)
        try:
            rates = volume_rates(before[0], read.stats, read.at - before[1])
        except CounterReset as e:
            return Line(
                device,
                _Group.WAITING,
                message=f"counters restarted ({e}): rates at the next refresh",
                position=position,
            )
        return Line(device, _Group.RATES, rates, position=position)


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.2f}"


def _quantile(q: Quantile | None) -> str:
    if q is None:
        return "-"
    return (">" if q.beyond else "") + _ms(q.us)


def _io(r: IoRates) -> tuple[str, str, str, str, str]:
    return (f"{r.iops:.0f}", f"{r.bytes_per_second / 1e6:.1f}", _ms(r.average_us), _quantile(r.p50), _quantile(r.p99))


def _cells(line: Line) -> list[str]:
    d = line.device
    head = [d.name, d.volume_id or d.serial or "-"]
    if line.rates is None:
        return [*head, line.message]
    r = line.rates
    (r_iops, r_mbs, r_avg, r_p50, r_p99), (w_iops, w_mbs, w_avg, w_p50, w_p99) = _io(r.read), _io(r.write)
    pct = [f"{p:.1f}" for p in r.exceeded_percent]
    return [*head, r_iops, w_iops, r_mbs, w_mbs, r_avg, w_avg, r_p50, r_p99, w_p50, w_p99, str(r.queue_length), *pct]


def format_row(cells: list[str]) -> str:
    out = []
    for i, cell in enumerate(cells):
        if i >= len(COLUMNS):  # a message: the rest of the line
            out.append(cell)
            continue
        width = COLUMNS[i][1]
        out.append(cell.ljust(width) if i < 2 else cell.rjust(width))
    return " ".join(out).rstrip()


HEADER = format_row([title for title, _ in COLUMNS])


def table(lines: list[Line]) -> list[str]:
    return [HEADER, *(format_row(_cells(line)) for line in lines)]


class Screen:
    """A terminal redrawn in place: the alternate screen, no cursor, lines cut to the width."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __enter__(self) -> Screen:
        self.out.write("\x1b[?1049h\x1b[?25l")
        return self

    def __exit__(self, *exc: object) -> None:
        self.out.write("\x1b[?25h\x1b[?1049l")
        self.out.flush()

    def draw(self, lines: list[str]) -> None:
        try:  # the terminal's own size: $COLUMNS and $LINES go stale when it is resized
            width, height = os.get_terminal_size(self.out.fileno())
        except OSError:
            width, height = shutil.get_terminal_size()
        shown = [line[:width] + "\x1b[K" for line in lines[:height]]
        self.out.write("\x1b[H" + "\n".join(shown) + "\x1b[J")
        self.out.flush()


def run(sysfs: str, dev: str, interval: float, count: int | None, out: TextIO) -> int:
    """Refresh every `interval` seconds until `count` refreshes were shown or Ctrl-C."""
    top = Top(sysfs, dev, interval)
    screen = Screen(out) if out.isatty() else None
    try:
        if screen is None:
            return _loop(top, count, None, out)
        with screen:
            return _loop(top, count, screen, out)
    except KeyboardInterrupt:
        return 0
    finally:
        top.discovery.close()


def _loop(top: Top, count: int | None, screen: Screen | None, out: TextIO) -> int:
    shown = 0
    next_at = time.monotonic()
    baseline = True
    while True:
        lines = top.refresh()
        if screen is not None:
            title = (
                f"nvme-ebs top: {len(lines)} volumes, every {top.interval:g} s, {time.strftime('%H:%M:%S')}; "
                "latencies in ms; Ctrl-C quits"
            )
            if not lines:
                title += f"; no EBS or instance-store volume under {top.sysfs}/class/nvme"
            screen.draw([title, "", *table(lines)])
        elif not baseline:
            out.write("\n".join(table(lines)) + "\n\n")
            out.flush()
        if not baseline:
            shown += 1
            if count is not None and shown >= count:
                return 0
        baseline = False
        # A steady cadence: the next refresh is due one interval after the last was due.
        next_at += top.interval
        now = time.monotonic()
        if next_at < now:
            next_at = now
        time.sleep(next_at - now)
