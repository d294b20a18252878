"""The image for Graviton nodes: the same Dockerfile built for linux/arm64 on the Debian 12
base (`make image-local-arm64`), run under qemu-user-static through binfmt_misc on another
machine, and its smoke: `ebs-exporter --simulate 2`, scraped, checked with promtool, stopped.

The emulated build takes minutes: `make test` leaves these out (marker arm64), and
`make test-image-arm64` runs them, as CI does in a step of its own."""

from __future__ import annotations

import platform
import subprocess
import time

import pytest
from exporter_harness import samples
from image_pod import (
    ARM64_IMAGE,
    REPO,
    build_local_image,
    container,
    get,
    podman,
    promtool_check,
    require_engine,
    wait_serving,
)

import ebs_exporter

pytestmark = pytest.mark.arm64
PORT = 8090  # the image's default listen address (EXPOSE)
SMOKE = "ebs-exporter-arm64-smoke"


@pytest.fixture(scope="module")
def image() -> str:
    require_engine()
    if platform.machine() != "aarch64":
        proc = subprocess.run(
            [str(REPO / "scripts" / "image-base.sh"), "binfmt"], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stderr  # names what is missing: qemu-user-static, binfmt_misc
    took = build_local_image("arm64")
    print(f"make image-local-arm64: {took:.0f} s")
    return ARM64_IMAGE


def test_the_image_is_arm64_and_its_python_runs_as_aarch64(image: str) -> None:
    assert podman("image", "inspect", "--format", "{{.Os}}/{{.Architecture}}", image).stdout.strip() == "linux/arm64"
    code = "import platform, nvme_ebs._nvme_ebs_c as c; print(platform.machine(), c.__file__)"
    out = podman("run", "--rm", "--network=none", "--entrypoint", "/opt/ebs-exporter/bin/python", image, "-c", code)
    machine, module = out.stdout.split()
    assert machine == "aarch64" and module.endswith(".abi3.so"), out.stdout  # the compiled module loads


def test_the_simulated_smoke_scrapes_and_stops_cleanly(image: str) -> None:
    start = time.monotonic()
    with container(SMOKE, image, "--simulate", "2") as pid:

        def logs() -> str:
            proc = podman("logs", SMOKE, check=False)
            return proc.stdout + proc.stderr

        wait_serving(lambda: pid, PORT, logs)
        status, body = get(pid, PORT, "/metrics")
        assert status == 200
        text = body.decode()
        up = {k: v for k, v in samples(text).items() if k[0] == "ebs_device_up"}
        assert len(up) == 2 and set(up.values()) == {1.0}, up
        [build] = [dict(labels) for name, labels in samples(text) if name == "ebs_exporter_build_info"]
        assert build["version"] == ebs_exporter.__version__
        assert build["revision"] not in ("", "unknown"), build  # the image's wheel knows its commit
        promtool_check(text)
        podman("stop", "--time", "30", SMOKE, timeout=60)
        assert podman("inspect", "--format", "{{.State.ExitCode}}", SMOKE).stdout.strip() == "0", logs()
        assert "shutting down" in logs()
    print(f"arm64 smoke, emulated: {time.monotonic() - start:.1f} s")
