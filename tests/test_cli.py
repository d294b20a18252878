"""The nvme-ebs command line: nvme_ebs.cli.main() in process and `python -m nvme_ebs` as a child."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fakenvme import FakeNvme
from sysfs_fixture import EBS_MODEL, EBS_SERIAL, INSTANCE_STORE_SERIAL, OTHER_MODEL, SysfsTree

from nvme_ebs import testing
from nvme_ebs.cli import main

COUNTERS = {name: 1_000_000 * (k + 1) + k for k, name in enumerate(testing.COUNTER_FIELDS)}
READ_BINS = [(0, 1, 3), (1, 2, 0), (2, 4, 17), (4, 0, 9)]
WRITE_BINS = [(0, 100, 5), (100, 1000, 4_294_967_295)]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nvme_ebs", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
    )


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


@pytest.fixture
def stats_file(tmp_path: Path) -> Path:
    path = tmp_path / "stats.bin"
    path.write_bytes(testing.encode_stats_page(COUNTERS, READ_BINS, WRITE_BINS, version=1))
    return path


@pytest.fixture
def identify_file(tmp_path: Path) -> Path:
    path = tmp_path / "identify.bin"
    path.write_bytes(testing.encode_identify(EBS_SERIAL, firmware="2.0", block_device_mapping="/dev/xvdf"))
    return path


# --- decode ------------------------------------------------------------------------------------


def test_decode_text(stats_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", str(stats_file)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"{stats_file}: ebs statistics since attachment"
    values: dict[str, str] = {}
    for line in lines[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[0] in COUNTERS:
            values[parts[0]] = parts[1]
            assert (parts[-1] == "us") == parts[0].endswith("_us"), line
    assert values == {name: str(value) for name, value in COUNTERS.items()}
    assert "  read latency histogram (microseconds):" in lines
    assert "  write latency histogram (microseconds):" in lines
    bins = [line.split() for line in lines if line.startswith("    [")]
    # bins with a zero count are left out; the open last bin reads +inf
    assert bins == [
        ["[", "0", "-", "1)", "3"],
        ["[", "2", "-", "4)", "17"],
        ["[", "4", "-", "+inf)", "9"],
        ["[", "0", "-", "100)", "5"],
        ["[", "100", "-", "1000)", "4294967295"],
    ]


def test_decode_json(stats_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--json", str(stats_file)]) == 0
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert data["kind"] == "ebs"
    assert data["version"] == 1
    for name, value in COUNTERS.items():
        assert data[name] == value, name
    assert data["read_io_latency_histogram"] == [
        {"lower_us": lo, "upper_us": hi, "count": n} for lo, hi, n in READ_BINS
    ]
    assert data["write_io_latency_histogram"] == [
        {"lower_us": lo, "upper_us": hi, "count": n} for lo, hi, n in WRITE_BINS
    ]


def test_decode_json_instance_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "store.bin"
    path.write_bytes(testing.encode_stats_page({"total_write_ops": 8}, magic=testing.MAGIC_INSTANCE_STORE))
    assert main(["decode", "--json", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "instance_store"
    assert data["total_write_ops"] == 8
    assert data["read_io_latency_histogram"] == []


def test_decode_identify(identify_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--identify", str(identify_file)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == {
        "vid": 0x1D0F,
        "ssvid": 0x1D0F,
        "serial": EBS_SERIAL,
        "model": EBS_MODEL,
        "firmware": "2.0",
        "block_device_mapping": "xvdf",
        "volume_id": "vol-0123456789abcdef0",
    }


def test_decode_as_subprocess(stats_file: Path, identify_file: Path) -> None:
    result = run_cli("decode", "--json", str(stats_file))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert json.loads(result.stdout)["total_read_ops"] == COUNTERS["total_read_ops"]
    result = run_cli("decode", "--identify", str(identify_file))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["volume_id"] == "vol-0123456789abcdef0"


def _bad_pages() -> dict[str, tuple[bytes, list[str]]]:
    good = [(0, 1, 1), (1, 2, 1), (2, 4, 1)]
    return {
        "magic": (testing.encode_stats_page(magic=0xDEADBEEF), ["magic", "0xdeadbeef"]),
        "short": (testing.encode_stats_page()[:100], ["shorter than 4096"]),
        "num_bins": (testing.encode_stats_page(write_num_bins=65), ["write latency histogram", "num_bins 65"]),
        "bin_range": (
            testing.encode_stats_page({}, [(0, 1, 1), (5, 5, 1), (5, 9, 1)]),
            ["read latency histogram", "bin 1", "lower 5 >= upper 5"],
        ),
        "bin_order": (
            testing.encode_stats_page({}, good, [(0, 10, 1), (9, 20, 1)]),
            ["write latency histogram", "bin 1", "starts at 9", "ends at 10"],
        ),
    }


@pytest.mark.parametrize("check", sorted(_bad_pages()))
def test_decode_bad_page_one_line_exit_1(check: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, words = _bad_pages()[check]
    path = tmp_path / f"bad-{check}.bin"
    path.write_bytes(data)
    assert main(["decode", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    line = one_line(captured.err)
    assert line.startswith("nvme-ebs: ")
    assert str(path) in line
    for word in words:
        assert word in line


def test_decode_bad_page_as_subprocess(tmp_path: Path) -> None:
    path = tmp_path / "garbage.bin"
    path.write_bytes(b"\x01\x02\x03\x04" * 1024)
    result = run_cli("decode", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    line = one_line(result.stderr)
    assert str(path) in line
    assert "magic 0x04030201" in line


def test_decode_identify_of_a_short_file(tmp_path: Path) -> None:
    path = tmp_path / "short-identify.bin"
    path.write_bytes(b"\0" * 10)
    result = run_cli("decode", "--identify", str(path))
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert str(path) in line
    assert "shorter than 4096" in line


# --- list --------------------------------------------------------------------------------------


@pytest.fixture
def sysfs(tmp_path: Path) -> SysfsTree:
    tree = SysfsTree(tmp_path / "sys")
    tree.add_other("nvme0")
    tree.add_ebs("nvme1")
    tree.add_instance_store("nvme2")
    tree.add_ebs("nvme3", "vol0fedcba9876543210", multipath_subsystem=4)  # head nvme4n1
    tree.add_ebs("nvme10", "vol-0aaaabbbbccccdddd", namespaces=())
    return tree


def test_list_json(sysfs: SysfsTree, tmp_path: Path) -> None:
    dev = tmp_path / "dev"  # no device nodes: identify fails, so the mapping is "?" for Amazon kinds
    dev.mkdir()
    result = run_cli("list", "--path.sysfs", str(sysfs.root), "--path.dev", str(dev), "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["device"], r["controller"], r["kind"], r["volume_id"]) for r in rows] == [
        (f"{dev}/nvme0n1", f"{dev}/nvme0", "other", ""),
        (f"{dev}/nvme1n1", f"{dev}/nvme1", "ebs", "vol-0123456789abcdef0"),
        (f"{dev}/nvme2n1", f"{dev}/nvme2", "instance_store", ""),
        (f"{dev}/nvme4n1", f"{dev}/nvme3", "ebs", "vol-0fedcba9876543210"),
        (f"{dev}/nvme10", f"{dev}/nvme10", "ebs", "vol-0aaaabbbbccccdddd"),
    ]
    assert rows[0]["model"] == OTHER_MODEL
    assert rows[0]["mapping"] == ""
    assert rows[1]["model"] == EBS_MODEL
    assert rows[1]["serial"] == EBS_SERIAL
    assert rows[2]["serial"] == INSTANCE_STORE_SERIAL
    assert all(r["mapping"] == "?" for r in rows[1:])


def test_list_text(sysfs: SysfsTree, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    assert main(["list", "--path.sysfs", str(sysfs.root), "--path.dev", str(dev)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["DEVICE", "KIND", "VOLUME", "MAPPING", "MODEL"]
    assert len(lines) == 6
    assert lines[2].split()[:4] == [f"{dev}/nvme1n1", "ebs", "vol-0123456789abcdef0", "?"]
    assert lines[3].split()[:4] == [f"{dev}/nvme2n1", "instance_store", "-", "?"]
    assert lines[1].split()[:4] == [f"{dev}/nvme0n1", "other", "-", "-"]


def test_list_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--path.sysfs", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["list", "--path.sysfs", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"no NVMe controllers under {tmp_path}/class/nvme\n"


# --- stats -------------------------------------------------------------------------------------


def test_stats_missing_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "dev" / "nvme9n1"
    assert main(["stats", str(missing)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    line = one_line(captured.err)
    assert str(missing) in line
    assert "No such file or directory" in line


def test_stats_missing_device_as_subprocess(tmp_path: Path) -> None:
    missing = tmp_path / "nvme9n1"
    result = run_cli("stats", "--json", str(missing))
    assert result.returncode == 1
    assert result.stdout == ""
    line = one_line(result.stderr)
    assert line == f"nvme-ebs: {missing}: statistics page (log 0xD0) failed: No such file or directory (errno ENOENT)"


def test_stats_on_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "not-a-device"
    path.write_bytes(testing.encode_stats_page())
    result = run_cli("stats", str(path))
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert str(path) in line
    assert "not an NVMe device" in line


# --- closed pipes ------------------------------------------------------------------------------


def run_into_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """The command writing to a pipe whose reader, `head -c1`, has already taken its byte and gone."""
    read_end, write_end = os.pipe()
    with subprocess.Popen(["head", "-c1"], stdin=read_end, stdout=subprocess.PIPE) as head:
        os.close(read_end)
        os.write(write_end, b"x")
        assert head.communicate(timeout=10)[0] == b"x"
    try:
        return subprocess.run(
            [sys.executable, "-m", "nvme_ebs", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
            timeout=30,
        )
    finally:
        os.close(write_end)


def run_piped_to_head(*args: str) -> subprocess.CompletedProcess[str]:
    """`nvme-ebs ARGS | head -c1` in bash with pipefail: the status is nvme-ebs's unless head failed."""
    command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "nvme_ebs", *args])
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{command} | head -c1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def test_decode_into_a_closed_pipe_is_quiet(stats_file: Path) -> None:
    for args in (["decode", "--json", str(stats_file)], ["decode", str(stats_file)]):
        result = run_into_closed_pipe(*args)
        assert (result.returncode, result.stderr) == (0, ""), args
    result = run_piped_to_head("decode", "--json", str(stats_file))
    assert (result.returncode, result.stdout, result.stderr) == (0, "{", "")


def test_list_into_a_closed_pipe_is_quiet(sysfs: SysfsTree, tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    for json_flag in (["--json"], []):
        result = run_into_closed_pipe("list", f"--path.sysfs={sysfs.root}", f"--path.dev={dev}", *json_flag)
        assert (result.returncode, result.stderr) == (0, "")


def test_stats_interval_into_head_ends_quietly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvme(tmp_path / "fake")
    monkeypatch.setenv("FAKENVME_ROOT", str(fake.root))
    path = fake.add("nvme1", testing.encode_identify(EBS_SERIAL), testing.encode_stats_page(COUNTERS, READ_BINS))
    for json_flag in (["--json"], []):
        # Runs until a write fails: the first change goes to head, a later one finds the pipe closed.
        result = run_piped_to_head("stats", str(path), "--interval", "0.05", *json_flag)
        assert (result.returncode, result.stderr) == (0, "")
        assert len(result.stdout) == 1


# --- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        ([], ["required: COMMAND"]),
        (["bogus"], ["invalid choice: 'bogus'"]),
        (["decode"], ["required: file"]),
        (["stats"], ["required: device"]),
        (["stats", "/dev/nvme1n1", "--interval", "0"], ["--interval:", "'0'", "want a positive number of seconds"]),
        (["stats", "/dev/nvme1n1", "--interval", "-1"], ["--interval:", "'-1'", "want a positive number"]),
        (["stats", "/dev/nvme1n1", "--interval", "soon"], ["--interval:", "'soon'", "want a positive number"]),
        (["stats", "/dev/nvme1n1", "--interval", "nan"], ["--interval:", "'nan'", "want a positive number"]),
        (["stats", "/dev/nvme1n1", "--count", "many"], ["--count:", "'many'", "want a whole number, 1 or more"]),
        (["top", "--count", "0"], ["--count:", "'0'", "want a whole number, 1 or more"]),
        (["top", "--count", "²"], ["--count:", "'²'", "want a whole number"]),
        (["top", "--interval", "inf"], ["--interval:", "'inf'", "want a positive number"]),
        (["list", "--no-such-flag"], ["unrecognized arguments: --no-such-flag"]),
        (["list", "--sysfs", "/sys"], ["unrecognized arguments: --sysfs"]),
    ],
)
def test_bad_arguments_one_line_exit_2(argv: list[str], words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert line.startswith("nvme-ebs: ")
    assert "see nvme-ebs" in line and "--help" in line
    for word in words:
        assert word in line


@pytest.mark.parametrize("command", ["list", "top"])
@pytest.mark.parametrize("flag", ["--path.sysfs", "--path.dev"])
@pytest.mark.parametrize("kind", ["missing", "file"])
def test_path_flags_must_be_directories(command: str, flag: str, kind: str, tmp_path: Path) -> None:
    path = tmp_path / "not-a-dir"
    if kind == "file":
        path.write_text("x")
    result = run_cli(command, f"{flag}={path}")
    assert result.returncode == 2
    assert result.stdout == ""
    line = one_line(result.stderr)
    cause = "no such directory" if kind == "missing" else "not a directory"
    want = f"({cause}; want an existing directory); see nvme-ebs {command} --help"
    assert line == f"nvme-ebs: {flag}: invalid value '{path}' {want}"


def test_path_flags_default_to_the_exporters(sysfs: SysfsTree, tmp_path: Path) -> None:
    from nvme_ebs.cli import build_parser

    for command in ("list", "top"):
        args = build_parser().parse_args([command])
        assert (args.sysfs, args.dev) == ("/sys", "/dev")
    dev = tmp_path / "dev"
    dev.mkdir()
    args = build_parser().parse_args(["top", f"--path.sysfs={sysfs.root}", "--path.dev", str(dev)])
    assert (args.sysfs, args.dev) == (str(sysfs.root), str(dev))


def test_bad_interval_as_subprocess() -> None:
    result = run_cli("stats", "/dev/nvme1n1", "--interval", "0")
    assert result.returncode == 2
    assert one_line(result.stderr) == (
        "nvme-ebs: --interval: invalid value '0' (want a positive number of seconds); see nvme-ebs stats --help"
    )


def _all_actions(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    found = []
    for action in parser._actions:
        found.append((parser.prog, action))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found.extend(_all_actions(sub))
    return found


def test_every_argument_has_help() -> None:
    from nvme_ebs.cli import build_parser

    actions = _all_actions(build_parser())
    assert {prog for prog, _ in actions} == {"nvme-ebs", *(f"nvme-ebs {c}" for c in ("list", "stats", "decode", "top"))}
    for prog, action in actions:
        assert action.help and action.help != argparse.SUPPRESS, f"{prog} {action.option_strings or action.dest}"


@pytest.mark.parametrize("command", [[], ["list"], ["stats"], ["decode"], ["top"]])
def test_help_is_plain_text(command: list[str]) -> None:
    result = run_cli(*command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: nvme-ebs")
    for markup in ("`", "**", "](", "\n#"):
        assert markup not in result.stdout, markup


def test_help_exits_0() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("list", "stats", "decode", "top"):
        assert command in result.stdout
