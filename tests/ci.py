"""What a test does when something it needs is missing: under CI=true (where `make deps` and
`make venv` install everything) it fails with the reason; elsewhere it is skipped with it."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI") == "true"


def unavailable(reason: str, *, allow_module_level: bool = False) -> NoReturn:
    """Fails the test under CI=true, skips it elsewhere; `reason` says what is missing and why."""
    if IN_CI:
        pytest.fail(f"{reason} (required when CI=true)", pytrace=False)
    pytest.skip(reason, allow_module_level=allow_module_level)


def require_tool(name: str, package: str) -> str:
    """The path of command `name`, from the Debian package `package` (see APT_PACKAGES)."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is missing: apt-get install {package}")
    return path
