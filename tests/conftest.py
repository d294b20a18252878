"""Shared test set-up: the whole run goes under the fake NVMe controller's LD_PRELOAD; and the
fixtures more than one test file uses."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable

import pytest
from ci import require_tool
from exporter_harness import FakeHost
from fakenvme import ensure_preloaded
from kernel_guest import guest  # noqa: F401 - the shared QEMU boot, as a fixture


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="tests/test_golden.py writes what the exporter serves into tests/golden/ instead of comparing",
    )


def pytest_configure(config: pytest.Config) -> None:
    # Re-runs pytest with the preload in place: the compiled module's ioctl() calls must
    # reach the fake controller, which only a library loaded before libc's can intercept.
    ensure_preloaded()


@pytest.fixture
def fake_host(tmp_path: Path) -> FakeHost:
    """An empty fake host (sysfs tree plus fake controllers) under tmp_path."""
    return FakeHost(tmp_path)


@pytest.fixture(scope="session")
def check_metrics() -> Callable[[str], None]:
    """`promtool check metrics` on an exposition; a failure shows promtool's findings."""
    promtool = require_tool("promtool", "prometheus")

    def check(text: str) -> None:
        result = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr

    return check
