"""`nvme-ebs top` as a user runs it: a child process reading fake controllers (tests/fakenvme) found in a
fake sysfs, piped (plain lines) and on a terminal (under tmux, read back with capture-pane).

The fake answers each read from page files the test rewrites: page A before the first reading, page B
after it, so the first refresh shows the change A -> B, computed here with nvme_ebs.top.
"""

from __future__ import annotations

import errno
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ci import require_tool
from fakenvme import FakeNvme
from sysfs_fixture import SysfsTree

import nvme_ebs
from nvme_ebs import testing as pg
from nvme_ebs.top import Quantile, VolumeRates, volume_rates
from nvme_ebs.top_view import HEADER, Line, Top

INTERVAL = 1.0
# The time between a volume's two readings, around INTERVAL: the schedule is steady, but each
# reading is timed when its answer comes, which the machine's load moves a little either way.
EARLY, LATE = 0.2, 0.5
WRAP = 1 << 32
BOUNDS = pg.power_of_two_bounds(28)


def _page(counters: dict[str, int], reads: dict[int, int], writes: dict[int, int], magic: int = pg.MAGIC_EBS) -> bytes:
    return pg.encode_stats_page(
        counters,
        [(lo, hi, reads.get(i, 0)) for i, (lo, hi) in enumerate(BOUNDS)],
        [(lo, hi, writes.get(i, 0)) for i, (lo, hi) in enumerate(BOUNDS)],
        magic=magic,
    )


# controller -> (page A, page B). nvme3 fails (EIO), nvme5 never answers; nvme0 is not Amazon's.
PAGES = {
    "nvme1": (  # throttled by its IOPS limit a quarter of the time: the worst
        _page({"total_read_ops": 10, "volume_queue_length": 4}, {9: 100}, {}),
        _page(
            {
                "total_read_ops": 4_010,
                "total_write_ops": 1_000,
                "total_read_bytes": 64_000_000,
                "total_write_bytes": 16_000_000,
                "total_read_time_us": 2_000_000,
                "total_write_time_us": 3_000_000,
                "volume_queue_length": 1,
                "ebs_volume_performance_exceeded_iops_us": 250_000,
                "ec2_instance_ebs_performance_exceeded_tp_us": 50_000,
            },
            {9: 2_100, 10: 2_000},  # +2000 in [256,512) us, +2000 in [512,1024)
            {11: 980, 27: 20},  # 2% in the open last bin [2**26 us, ...): p99 is beyond its lower bound
        ),
    ),
    "nvme2": (  # instance store, not throttled, deep queue
        _page({"volume_queue_length": 0}, {}, {}, pg.MAGIC_INSTANCE_STORE),
        _page(
            {"total_write_ops": 3_000, "total_write_bytes": 300_000_000, "volume_queue_length": 9},
            {},
            {},
            pg.MAGIC_INSTANCE_STORE,
        ),
    ),
    "nvme4": (  # a read bin wraps past 2**32
        _page({"volume_queue_length": 2}, {5: WRAP - 100}, {}),
        _page({"total_read_ops": 300, "total_read_time_us": 9_000, "volume_queue_length": 2}, {5: 200}, {}),
    ),
}
VOLUMES = {"nvme1": "vol-0123456789abcdef0", "nvme2": "AWS1234567890ABCDEF", "nvme3": "vol-0333", "nvme4": "vol-0444"}


@dataclass
class Node:
    sysfs: SysfsTree
    fake: FakeNvme

    def argv(self, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "nvme_ebs",
            "top",
            f"--path.sysfs={self.sysfs.root}",
            f"--path.dev={self.fake.root / 'dev'}",
            *extra,
        ]

    def wait_for_first_reading(self) -> None:
        """Until every answering volume got its first command, then page B in place of page A."""
        deadline = time.monotonic() + 20
        while not all(self.fake.commands(name) for name in PAGES):
            assert time.monotonic() < deadline, "top never read the volumes"
            time.sleep(0.01)
        time.sleep(0.1)  # the fake logs a command before it reads the page file
        for name, (_, page_b) in PAGES.items():
            self.fake.set_log_page(name, page_b)
        assert all(len(self.fake.commands(name)) == 1 for name in PAGES), "the second reading came too soon"


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    sysfs = SysfsTree(tmp_path / "sys")
    fake = FakeNvme(tmp_path / "fake")
    monkeypatch.setenv("FAKENVME_ROOT", str(fake.root))
    sysfs.add_other("nvme0")
    fake.add("nvme0", pg.encode_identify("S6B0NL0T123456K", model="Samsung SSD 980 PRO 1TB"), None)
    for name, serial in (("nvme1", "vol0123456789abcdef0"), ("nvme3", "vol0333"), ("nvme4", "vol0444")):
        sysfs.add_ebs(name, serial)
    sysfs.add_instance_store("nvme2")
    sysfs.add_ebs("nvme5", "vol0555")
    for name in ("nvme1", "nvme2", "nvme3", "nvme4", "nvme5"):
        fake.add(name, pg.encode_identify("x"), PAGES[name][0] if name in PAGES else pg.encode_stats_page())
    fake.fail_errno("nvme3", errno.EIO)
    fake.set_delay_ms("nvme5", 600_000)
    yield Node(sysfs, fake)
    fake.set_delay_ms("nvme5", None)  # releases the read still waiting, if the child is alive


def expected_rates(name: str, seconds: float) -> VolumeRates:
    page_a, page_b = PAGES[name]
    return volume_rates(nvme_ebs.parse_log_page(page_a), nvme_ebs.parse_log_page(page_b), seconds)


def _ms(q: Quantile | float | None) -> str:
    if q is None:
        return "-"
    if isinstance(q, Quantile):
        return (">" if q.beyond else "") + f"{q.us / 1000:.2f}"
    return f"{q / 1000:.2f}"


def check_line(fields: list[str], name: str) -> None:
    """One volume's line against the rates computed from its two pages.

    Latencies and the queue length do not depend on the interval and must match exactly; rates
    must lie between those for INTERVAL - EARLY and INTERVAL + LATE.
    """
    fast, slow = expected_rates(name, INTERVAL - EARLY), expected_rates(name, INTERVAL + LATE)
    assert fields[0] == f"{name}n1"
    assert fields[1] == VOLUMES[name]
    r = fast
    assert fields[6:13] == [
        _ms(r.read.average_us),
        _ms(r.write.average_us),
        _ms(r.read.p50),
        _ms(r.read.p99),
        _ms(r.write.p50),
        _ms(r.write.p99),
        str(r.queue_length),
    ], name
    shown = [float(f) for f in fields[2:6] + fields[13:17]]

    def rates(v: VolumeRates) -> list[float]:
        return [
            v.read.iops,
            v.write.iops,
            v.read.bytes_per_second / 1e6,
            v.write.bytes_per_second / 1e6,
            *v.exceeded_percent,
        ]

    for column, value, high, low in zip(HEADER.split()[2:6] + HEADER.split()[13:17], shown, rates(fast), rates(slow)):
        assert low - 0.5 <= value <= high + 0.5, f"{name} {column}: {value} not in [{low}, {high}]"


def check_table(lines: list[str]) -> None:
    """The first refresh: failures first, then worst first."""
    assert lines[0] == HEADER
    rows = [line.split() for line in lines[1:]]
    assert [row[0] for row in rows] == ["nvme3n1", "nvme5n1", "nvme1n1", "nvme2n1", "nvme4n1"]
    assert " ".join(rows[0][2:]) == "statistics page (log 0xD0) failed: Input/output error (errno EIO)"
    assert rows[1][2:5] == ["no", "answer", "for"] and rows[1][6] == "s"
    for row in rows[2:]:
        check_line(row, row[0][:-2])
    # exact where the interval cannot matter: nvme1's p99 write is in the open bin, nvme4's read bin wrapped
    assert rows[2][10:12] == ["1.55", ">67108.86"]  # p50: 500/980 of the way through [1024, 2048) us
    assert rows[4][6:10] == ["0.03", "-", "0.02", "0.03"]  # 300 reads of 30 us, counted in [16, 32) us


def test_plain_lines_when_piped(node: Node) -> None:
    with subprocess.Popen(node.argv("--count", "2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        node.wait_for_first_reading()
        out, err = proc.communicate(timeout=30)
    assert (proc.returncode, err) == (0, "")
    assert out.endswith("\n\n")
    first, second = (block.splitlines() for block in out[:-2].split("\n\n"))
    check_table(first)
    # The second refresh: no change, so no rates; the queue lengths of page B sort the lines.
    assert second[0] == HEADER
    rows = [line.split() for line in second[1:]]
    assert [row[0] for row in rows] == ["nvme3n1", "nvme5n1", "nvme2n1", "nvme4n1", "nvme1n1"]
    for row in rows[2:]:
        assert row[2:12] == ["0", "0", "0.0", "0.0", "-", "-", "-", "-", "-", "-"]
        assert row[13:] == ["0.0"] * 4


def test_into_head_ends_quietly(node: Node) -> None:
    command = " ".join(shlex.quote(a) for a in node.argv("--interval", "0.1"))
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{command} | head -c1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "D", "")


def test_ctrl_c_ends_quietly(node: Node) -> None:
    with subprocess.Popen(node.argv(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        node.wait_for_first_reading()
        assert proc.stdout is not None
        first = list(iter(proc.stdout.readline, "\n"))  # the first refresh, up to its blank line
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert (proc.returncode, err) == (0, "")
    check_table([line.rstrip("\n") for line in first])


def test_no_volumes(tmp_path: Path) -> None:
    (tmp_path / "sys").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "nvme_ebs", "top", f"--path.sysfs={tmp_path}/sys", "--interval", "0.05", "--count", "2"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"{HEADER}\n\n{HEADER}\n\n"


class Tmux:
    """A tmux server of our own (its own socket), one window of 200 x 30."""

    def __init__(self, tmux: str, socket: Path) -> None:
        self.base = [tmux, "-S", str(socket), "-f", "/dev/null"]

    def __call__(self, *args: str) -> str:
        return subprocess.run([*self.base, *args], capture_output=True, text=True, check=True, timeout=10).stdout

    def screen(self) -> list[str]:
        return self("capture-pane", "-p", "-t", "top").splitlines()


def test_redrawn_screen_on_a_terminal(node: Node, tmp_path: Path) -> None:
    tmux = Tmux(require_tool("tmux", "tmux"), tmp_path / "tmux.sock")
    status = tmp_path / "status"
    env = {k: os.environ[k] for k in ("FAKENVME_ROOT", "LD_PRELOAD")}
    command = " ".join(shlex.quote(a) for a in ["env", *(f"{k}={v}" for k, v in env.items()), *node.argv()])
    script = f"{command}; echo $? > {shlex.quote(str(status))}; sleep 600"
    # the server itself without the fake controller: it only needs a terminal
    server_env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    subprocess.run(
        [*tmux.base, "new-session", "-d", "-s", "top", "-x", "200", "-y", "30", "bash", "-c", script],
        env=server_env,
        check=True,
        timeout=10,
    )
    try:
        node.wait_for_first_reading()
        deadline = time.monotonic() + 20
        while True:
            screen = tmux.screen()
            rows = [line for line in screen if line.startswith("nvme1n1") and "first reading" not in line]
            if rows:
                break
            assert time.monotonic() < deadline, "\n".join(screen)
            time.sleep(0.05)
        assert screen[0].startswith("nvme-ebs top: 5 volumes, every 1 s, ")
        assert screen[0].endswith("latencies in ms; Ctrl-C quits")
        assert screen[1] == ""
        check_table([line for line in screen[2:] if line])
        tmux("send-keys", "-t", "top", "C-c")
        deadline = time.monotonic() + 20
        while not status.exists() or not status.read_text():
            assert time.monotonic() < deadline, "top did not end on Ctrl-C"
            time.sleep(0.05)
        assert status.read_text() == "0\n"
        # the alternate screen is left: what was there before comes back, without the table
        assert not any(line.startswith("DEVICE") for line in tmux.screen())
    finally:
        subprocess.run([*tmux.base, "kill-server"], check=False, timeout=10)


def test_volumes_that_come_go_and_restart(node: Node) -> None:
    """In process, refresh by refresh: a new volume waits for its second reading, a page whose
    counters went back starts over, a detached volume leaves the table."""

    def refresh() -> dict[str, Line]:
        return {line.device.controller: line for line in top.refresh()}

    top = Top(str(node.sysfs.root), str(node.fake.root / "dev"), 0.2)
    first = refresh()
    assert set(first) == {"nvme1", "nvme2", "nvme3", "nvme4", "nvme5"}  # not nvme0, not Amazon's
    assert first["nvme1"].message == first["nvme4"].message == "first reading: rates at the next refresh"
    for name in ("nvme1", "nvme4"):
        node.fake.set_log_page(name, PAGES[name][1])
    node.sysfs.add_ebs("nvme6", "vol0666")
    node.fake.add("nvme6", pg.encode_identify("x"), PAGES["nvme1"][0])
    second = refresh()
    assert second["nvme1"].rates is not None and second["nvme1"].rates.queue_length == 1
    assert second["nvme4"].rates is not None and second["nvme4"].rates.read.p50 == Quantile(24.0)
    assert second["nvme6"].message == "first reading: rates at the next refresh"
    assert second["nvme3"].message == "statistics page (log 0xD0) failed: Input/output error (errno EIO)"
    assert second["nvme5"].message.startswith("no answer for ")
    node.fake.set_log_page("nvme4", PAGES["nvme4"][0])  # total_read_ops 300 -> 0: re-attached
    os.unlink(node.sysfs.class_dir / "nvme6")
    third = refresh()
    assert "nvme6" not in third
    assert third["nvme4"].message == "counters restarted (total_read_ops went back): rates at the next refresh"
    assert refresh()["nvme4"].rates is not None
