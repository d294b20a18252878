"""The golden contract: a full scrape of the exporter process against the checked-in fixture host
(tests/fixture_host.py), in both formats, must equal tests/golden/ line for line.

The golden files hold every metric name, type, help, label and value the exporter serves, but
for process_* and python_* (the client library's, not ours) and the values that differ from run
to run (kept as 0; their HELP and TYPE lines stay). A change to them is a change of the contract:

    make update-golden      # rewrites the fixture host and tests/golden/; review the diff
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import fixture_host
import pytest
from ci import unavailable
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families as text_parse

from ebs_exporter import build_info
from ebs_exporter.testing import Exporter

GOLDEN = Path(__file__).resolve().parent / "golden"
FORMATS = {
    "metrics.prom": ("text/plain", "text/plain;version=0.0.4"),
    "metrics.openmetrics": ("application/openmetrics-text", "application/openmetrics-text;version=1.0.0"),
}
DROPPED_PREFIXES = ("process_", "python_")
VOLATILE = {"ebs_collect_duration_seconds"}  # how long the scrape took
# The build's own labels: the package's version, the commit, the interpreter.
BUILD_INFO = re.compile(r'^ebs_exporter_build_info\{version="[^"]*",revision="[^"]*",python_version="[^"]*"\}')
BUILD_INFO_NORMAL = 'ebs_exporter_build_info{version="VERSION",revision="REVISION",python_version="PYTHON"}'


def family_name(line: str) -> str:
    """The metric named by an exposition line: '# HELP name ...', '# TYPE name ...', 'name{...} v'."""
    if line.startswith("#"):
        words = line.split(" ", 3)
        return words[2] if len(words) > 2 else ""
    return re.split(r"[{ ]", line, maxsplit=1)[0]


def normalise(text: str) -> str:
    out = []
    for line in text.splitlines():
        name = family_name(line)
        if name.startswith(DROPPED_PREFIXES):
            continue
        if not line.startswith("#"):
            if name in VOLATILE:
                line = line.rsplit(" ", 1)[0] + " 0"
            line = BUILD_INFO.sub(BUILD_INFO_NORMAL, line)
        out.append(line)
    return "\n".join(out) + "\n"


def scrape_fixture_host(tmp_path: Path, accept: str) -> tuple[str, str]:
    """The first scrape of a fresh exporter against a copy of the fixture host: (Content-Type, body)."""
    root = tmp_path / "host"
    fake = fixture_host.install(root)
    # Nothing from the caller's environment may steer the exporter (EBS_DEVICE, EBS_EXPORTER_*).
    env = {k: v for k, v in os.environ.items() if not k.startswith("EBS_")}
    with Exporter(fixture_host.exporter_args(root), {**env, **fake.env()}) as running:
        status, headers, body = running.get("/metrics", {"Accept": accept})
    assert status == 200, body[:500]
    return headers["content-type"], body.decode()


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_scrape_matches_the_golden_file(tmp_path: Path, request: pytest.FixtureRequest, name: str) -> None:
    content_type, accept = FORMATS[name]
    served_type, body = scrape_fixture_host(tmp_path, accept)
    assert served_type.startswith(content_type), served_type
    labels = ",".join(f'{k}="{v}"' for k, v in build_info().items())
    assert f"ebs_exporter_build_info{{{labels}}} 1" in body
    got = normalise(body)
    golden = GOLDEN / name
    if request.config.getoption("update_golden"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(got, encoding="utf-8")
    want = golden.read_text(encoding="utf-8") if golden.exists() else ""
    if got != want:
        diff = difflib.unified_diff(
            want.splitlines(keepends=True), got.splitlines(keepends=True), f"tests/golden/{name}", "scraped"
        )
        pytest.fail(
            "the exporter no longer serves tests/golden/" + name + " (if that is meant: make update-golden, "
            "and review the diff):\n" + "".join(diff),
            pytrace=False,
        )


def test_text_golden_file_passes_promtool(check_metrics: Callable[[str], None]) -> None:
    check_metrics((GOLDEN / "metrics.prom").read_text(encoding="utf-8"))


def test_openmetrics_golden_file_parses_and_holds_the_text_files_samples() -> None:
    """promtool check metrics reads the text format only (OpenMetrics' `info` type is unknown to it):
    the OpenMetrics file goes through prometheus_client's strict parser and must say what the text
    file says, sample for sample."""

    def samples(families: Iterable[Metric]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}

    openmetrics = samples(om_parse((GOLDEN / "metrics.openmetrics").read_text(encoding="utf-8")))
    text = samples(text_parse((GOLDEN / "metrics.prom").read_text(encoding="utf-8")))
    assert openmetrics == text


def test_golden_files_cover_the_fixture_host() -> None:
    """Every kind of controller the fixture holds shows in the contract as what it is."""
    text = (GOLDEN / "metrics.prom").read_text(encoding="utf-8")
    for line in (
        'ebs_devices{kind="ebs"} 4',
        'ebs_devices{kind="instance_store"} 1',
        'ebs_devices{kind="other"} 1',
        'ebs_device_up{device="nvme5n1"} 0',
        "ebs_collect_duration_seconds 0",
    ):
        assert line in text.splitlines(), line
    assert 'le="+Inf"' in text and "nvme2n1" in text and "ec2_instance_store_read_ops_total{" in text
    assert not any(family_name(line).startswith(DROPPED_PREFIXES) for line in text.splitlines())


def test_normalise_drops_client_metrics_and_zeroes_durations_only() -> None:
    text = (
        "# HELP process_open_fds Open fds.\n# TYPE process_open_fds gauge\nprocess_open_fds 9.0\n"
        'python_info{version="3.11.7"} 1.0\n'
        "# HELP ebs_collect_duration_seconds Time.\nebs_collect_duration_seconds 0.00224\n"
        'ebs_exporter_build_info{version="1.2.3",revision="0123abc",python_version="3.11.7"} 1\n'
        'ebs_read_ops_total{device="nvme1n1"} 0.00224\n'
    )
    assert normalise(text) == (
        "# HELP ebs_collect_duration_seconds Time.\nebs_collect_duration_seconds 0\n"
        + BUILD_INFO_NORMAL
        + " 1\n"
        + 'ebs_read_ops_total{device="nvme1n1"} 0.00224\n'
    )


def test_fixture_host_is_what_its_generator_writes(tmp_path: Path) -> None:
    if not any(path.is_symlink() for path in (fixture_host.FIXTURE_HOST / "sys" / "class" / "nvme").iterdir()):
        # setuptools stores a linked directory once, under one of its names: the scrape is the
        # same (test_scrape_matches_the_golden_file), the tree is not the generator's.
        unavailable("tests/fixtures/host lost its symlinks (unpacked from an sdist?): compare in a git checkout")
    fixture_host.write(tmp_path / "host")
    want, got = fixture_host.snapshot(tmp_path / "host"), fixture_host.snapshot(fixture_host.FIXTURE_HOST)
    changed = sorted(path for path in want.keys() | got.keys() if want.get(path) != got.get(path))
    assert not changed, f"tests/fixtures/host differs from what tests/fixture_host.py writes: {changed[:20]}"
