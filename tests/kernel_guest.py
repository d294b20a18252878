"""The one QEMU boot the kernel tests share (tests/qemu/harness.py), and how they read it.

A session fixture, so that the kernel tests in several modules cost a single boot.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ci import unavailable


def load_harness() -> ModuleType:
    path = Path(__file__).resolve().parent / "qemu" / "harness.py"
    spec = importlib.util.spec_from_file_location("_ebs_qemu_harness", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def guest(request: pytest.FixtureRequest) -> Any:
    """The one boot shared by every kernel test of the session."""
    harness = load_harness()
    timeout = float(os.environ.get("EBS_QEMU_TIMEOUT", harness.DEFAULT_TIMEOUT_S))
    try:
        image = harness.prepare_image()
        result = harness.boot(image, timeout=timeout)
    except harness.HarnessUnavailable as exc:
        unavailable(str(exc))
    line = f"[kernel {image.kernel_version}] {result.summary()}"
    if image.prepared_seconds:
        line += f"; one-off kernel/initramfs preparation {image.prepared_seconds:.1f} s"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # shown without -s
            reporter.write_line(line)
    else:
        print(line)
    return result


def check(guest: Any, name: str) -> Any:
    """The result of one guest step; fails with the guest's own words when it is missing."""
    record = guest.checks.get(name)
    if record is None:
        state = "timed out" if guest.timed_out else f"QEMU exit {guest.returncode}"
        pytest.fail(
            f"guest reported no {name!r} ({state}); console tail:\n{guest.tail()}",
            pytrace=False,
        )
    if not record["ok"]:
        pytest.fail(f"guest step {name!r} raised {record['error']}\n{record['traceback']}", pytrace=False)
    return record["result"]
