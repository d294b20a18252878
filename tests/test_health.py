"""Logs, probes and the metrics that tell an operator what is wrong: read back the way tools read them."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
from pathlib import Path

import logfmt
import pytest
from exporter_harness import Exporter, FakeHost
from pagesource import stats_page
from prometheus_client.parser import text_string_to_metric_families as text_parse

from ebs_exporter.logs import JsonFormatter, LogfmtFormatter
from ebs_exporter.volumes import ALL_REASONS

KEYS = ["ts", "level", "logger", "caller", "msg"]
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
LEVELS = {"debug", "info", "warn", "error"}


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    host = FakeHost(tmp_path)
    host.attach("nvme1", "vol0aaaaaaaaaaaaaaaa", stats_page(1, 28))
    host.attach("nvme2", "vol0bbbbbbbbbbbbbbbb", stats_page(2, 28))
    host.fake.fail_errno("nvme2", errno.EACCES)
    return host


def _record(msg: str, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("ebs_exporter.volumes", level, "/x/volumes.py", 42, msg, (), None)


@pytest.mark.parametrize(
    "msg",
    ['nvme2n1: /dev/nvme2: open failed: Permission denied (errno EACCES); hint "privileged" a=b', "plain", ""],
)
def test_a_logfmt_parser_reads_back_every_field(msg: str) -> None:
    line = LogfmtFormatter().format(_record(msg))
    parsed = logfmt.parse_line(line)
    assert list(parsed) == KEYS
    assert parsed["msg"] == msg
    assert parsed["level"] == "warn" and parsed["logger"] == "ebs_exporter.volumes"
    assert parsed["caller"] == "volumes.py:42" and TS.fullmatch(parsed["ts"])


def test_logfmt_escapes_control_characters_onto_one_line() -> None:
    line = LogfmtFormatter().format(_record("two\nlines\tand \\ a backslash"))
    assert "\n" not in line and "\t" not in line
    assert line.endswith(r'msg="two\nlines\tand \\ a backslash"')


def test_json_has_the_same_keys() -> None:
    parsed = json.loads(JsonFormatter().format(_record('a "quoted" msg', logging.ERROR)))
    assert list(parsed) == KEYS and parsed["level"] == "error" and parsed["msg"] == 'a "quoted" msg'


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_the_exporter_logs_in_the_chosen_format(host: FakeHost, fmt: str) -> None:
    with Exporter([*host.args(), f"--log.format={fmt}", "--log.level=debug"], host.env()) as running:
        running.metrics()
        running.stop()
    lines = [line for line in running.log if line.strip()]
    assert len(lines) >= 4
    parse = json.loads if fmt == "json" else logfmt.parse_line
    records = [parse(line) for line in lines]
    for record in records:
        assert list(record)[:5] == KEYS, record
        assert record["level"] in LEVELS and TS.fullmatch(record["ts"])
    denied = [r for r in records if "nvme2n1" in r["msg"] and r["level"] == "warn"]
    assert len(denied) == 1 and "Permission denied" in denied[0]["msg"] and "privileged" in denied[0]["msg"]
    assert any(r["msg"] == "shutting down" for r in records)


def test_liveness_and_readiness(host: FakeHost) -> None:
    with Exporter(host.args(), host.env()) as running:
        assert running.get("/healthz")[0] == 200
        status, _, body = running.get("/readyz")
        assert status == 200 and body.decode().startswith("ok: 2 ebs (2 NVMe controllers)"), body
        # sysfs goes away under the exporter (an unmounted or unreadable hostPath; a mode-0
        # directory would not do: the tests may run as root, who reads it anyway)
        os.rename(host.sysfs.root / "class", host.sysfs.root / "class.gone")
        try:
            status, _, body = running.get("/readyz")
            assert running.metrics()  # a scrape still answers, with no volumes
        finally:
            os.rename(host.sysfs.root / "class.gone", host.sysfs.root / "class")
        assert status == 503 and body.decode().startswith("not ready: cannot read "), body
        assert str(host.sysfs.root / "class") in body.decode()
        assert running.get("/healthz")[0] == 200  # still alive: liveness does not follow readiness
        assert running.get("/readyz")[0] == 200  # and ready again once sysfs is back


def test_a_node_without_volumes_is_ready_and_says_so_once(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    (host.sysfs.root / "class" / "nvme").mkdir(parents=True, exist_ok=True)
    with Exporter(host.args(), host.env()) as running:
        for _ in range(3):
            assert running.metrics()
        status, _, body = running.get("/readyz")
        running.stop()
    assert status == 200 and b"no volumes to read" in body
    assert sum("no EBS or instance-store volume" in line for line in running.log) == 1


def test_errors_are_counted_from_zero_for_every_reason(host: FakeHost) -> None:
    with Exporter(host.args(), host.env()) as running:
        text = running.metrics()
    errors = {
        (s.labels["device"], s.labels["reason"]): s.value
        for f in text_parse(text)
        if f.name == "ebs_device_errors"
        for s in f.samples
        if s.name == "ebs_device_errors_total"
    }
    assert {r for d, r in errors if d == "nvme1n1"} == set(ALL_REASONS)  # a healthy device: all at 0
    assert all(v == 0 for (d, _), v in errors.items() if d == "nvme1n1")
    assert errors["nvme2n1", "permission"] == 1
    assert sum(v for (d, _), v in errors.items() if d == "nvme2n1") == 1
