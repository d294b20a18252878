"""Shared test set-up: the whole run goes under the fake NVMe controller's LD_PRELOAD."""

import pytest
from fakenvme import ensure_preloaded
from kernel_guest import guest  # noqa: F401 - the shared QEMU boot, as a fixture


def pytest_configure(config: pytest.Config) -> None:
    # Re-runs pytest with the preload in place: the compiled module's ioctl() calls must
    # reach the fake controller, which only a library loaded before libc's can intercept.
    ensure_preloaded()
