"""Configuration that cannot work stops the exporter at start, with one line naming where it came from."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ebs_exporter.config import OPTIONS, parse_args


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EBS_")}
    return subprocess.run(
        [sys.executable, "-m", "ebs_exporter", *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=30,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], *wanted: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("ebs-exporter: ")
    for text in wanted:
        assert text in result.stderr
    assert "Traceback" not in result.stderr and "(" + "'" not in result.stderr.replace("(environment)", "")


@pytest.mark.parametrize(
    ("flag", "value", "wanted"),
    [
        ("--web.listen-address", "nonsense", "[HOST]:PORT"),
        ("--web.telemetry-path", "metrics", "absolute path"),
        ("--web.telemetry-path", "/readyz", "other than"),
        ("--path.sysfs", "/nonexistent", "existing directory"),
        ("--path.sysfs", "/etc/hostname", "not a directory"),
        ("--path.dev", "/nonexistent", "existing directory"),
        ("--device.timeout", "0", "seconds above 0"),
        ("--device.timeout", "soon", "seconds above 0"),
        ("--device", "nvme1n1,/etc/passwd", "not an NVMe device name or glob"),
        ("--device", "nvme[1-3n1", "not an NVMe device name or glob"),
        ("--log.level", "loud", "debug, info, warn, error"),
        ("--log.format", "xml", "logfmt, json"),
        ("--web.config.file", "/nonexistent.yml", "/nonexistent.yml"),
    ],
)
def test_a_bad_flag_is_named_with_its_value(flag: str, value: str, wanted: str) -> None:
    _one_line_error(_run([f"{flag}={value}"]), flag, repr(value) if flag != "--web.config.file" else "", wanted)


@pytest.mark.parametrize(
    ("variable", "value", "wanted"),
    [
        ("EBS_EXPORTER_DEVICE_TIMEOUT", "-1", "seconds above 0"),
        ("EBS_EXPORTER_PATH_SYSFS", "/nonexistent", "existing directory"),
        ("EBS_EXPORTER_LOG_LEVEL", "loud", "debug, info, warn, error"),
        ("EBS_EXPORTER_WEB_LISTEN_ADDRESS", "8090", "[HOST]:PORT"),
        ("EBS_DEVICE", "sda", "not an NVMe device name or glob"),
        ("EBS_EXPORTER_WEB_CONFIG_FILE", "/nonexistent.yml", "/nonexistent.yml"),
    ],
)
def test_a_bad_variable_is_named_not_the_flag(variable: str, value: str, wanted: str) -> None:
    result = _run([], {variable: value})
    _one_line_error(result, variable, wanted)


def test_a_flag_wins_over_its_variable() -> None:
    args = parse_args(["--device.timeout=2"], {"EBS_EXPORTER_DEVICE_TIMEOUT": "nonsense"})
    assert args.timeout == 2.0


def test_every_flag_has_a_variable_and_help() -> None:
    for o in OPTIONS:
        assert o.help
        if o.flag.startswith("--simulate"):
            continue
        assert o.variable and o.variable.startswith("EBS_")
    result = _run(["--help"])
    assert result.returncode == 0
    for o in OPTIONS:
        if not o.flag.startswith("--simulate."):
            assert o.flag in result.stdout and (o.variable is None or o.variable in result.stdout)


def test_unknown_flag() -> None:
    _one_line_error(_run(["--no-such-flag"]), "unrecognized arguments")


def test_simulate_count() -> None:
    _one_line_error(_run(["--simulate", "0"]), "--simulate", "1 to 1024")


def test_an_address_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run([f"--web.listen-address=127.0.0.1:{port}", "--simulate", "1"])
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f"ebs-exporter: cannot listen on 127.0.0.1:{port} (--web.listen-address): Address already in use "
        "(another process listens there: choose another --web.listen-address)"
    )
    assert "Traceback" not in result.stderr


def test_good_paths_and_globs_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "sys" / "class").mkdir(parents=True)
    (tmp_path / "dev").mkdir()
    args = parse_args(
        [f"--path.sysfs={tmp_path / 'sys'}", f"--path.dev={tmp_path / 'dev'}"],
        {"EBS_DEVICE": "/dev/nvme1n1, nvme[2-4]n1,nvme*"},
    )
    assert args.device == ["/dev/nvme1n1", "nvme[2-4]n1", "nvme*"]
