"""The container image under a real engine: podman (with runc, as containers.conf says) builds
it with scripts/image-local.sh and runs the DaemonSet's own pod template with `podman kube
play --network=none`. Requests go into the pod's network namespace through nsenter, so no
bridge is made and nothing leaves this machine.

Every pod and container is named by the test, and removed by that name when it ends."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from ci import unavailable

REPO = Path(__file__).resolve().parents[1]
CONTAINERS_CONF = REPO / "containers.conf"
LOCAL_IMAGE = "localhost/ebs-metrics-exporter:local"
ARM64_IMAGE = "localhost/ebs-metrics-exporter:local-arm64"
BUILD_TIMEOUT = 40 * 60  # the emulated arm64 build, cold, on two shared cores
WAIT = 60.0  # a start or a request on a loaded machine; waits end as soon as the answer comes

# A GET from inside a network namespace, by this interpreter (standard library only):
# prints the status on the first line, then the body.
_GET = """import http.client, sys
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=30)
conn.request("GET", sys.argv[2])
response = conn.getresponse()
sys.stdout.write("%d\\n" % response.status)
sys.stdout.flush()
sys.stdout.buffer.write(response.read())
"""


def engine_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["podman", *args], env=engine_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {proc.returncode}\n{proc.stderr.strip()}")
    return proc


def require_engine() -> None:
    """podman and nsenter on PATH, and the engine answering `podman info`."""
    for tool, package in (("podman", "podman"), ("runc", "runc"), ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is missing: make deps (apt-get install {package})")
    if os.geteuid() != 0:
        unavailable("the pod tests run rootful podman (device nodes, nsenter): run them as root")
    proc = podman("info", check=False, timeout=60)
    if proc.returncode != 0:
        unavailable(f"the container engine does not start (podman info): {proc.stderr.strip()}")


def build_local_image(arch: str) -> float:
    """scripts/image-local.sh ARCH (cached layers make a second run quick); its time in seconds."""
    start = time.monotonic()
    proc = subprocess.run(
        [str(REPO / "scripts" / "image-local.sh"), arch],
        env=engine_env(),
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-25:])
        pytest.fail(f"make image-local ({arch}) failed:\n{tail}", pytrace=False)
    return time.monotonic() - start


def daemonset_path() -> Path:
    [path] = sorted((REPO / "deploy").glob("30_*.DaemonSet.yaml"))
    return path


def daemonset_container(template: dict[str, Any]) -> dict[str, Any]:
    [container] = template["spec"]["containers"]
    return container


def pod_template() -> dict[str, Any]:
    """The DaemonSet's spec.template, read from deploy/ every time."""
    template: dict[str, Any] = yaml.safe_load(daemonset_path().read_text(encoding="utf-8"))["spec"]["template"]
    return template


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def exec_in_netns(pid: int, *argv: str, timeout: float = WAIT) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["nsenter", "-t", str(pid), "-n", *argv], capture_output=True, timeout=timeout, check=False)


def get(pid: int, port: int, path: str) -> tuple[int, bytes]:
    """GET 127.0.0.1:port/path inside the network namespace of process pid."""
    proc = exec_in_netns(pid, sys.executable, "-I", "-c", _GET, str(port), path)
    if proc.returncode != 0:
        raise ConnectionError(proc.stderr.decode(errors="replace").strip().splitlines()[-1:])
    status, _, body = proc.stdout.partition(b"\n")
    return int(status), body


def wait_serving(pid: Callable[[], int], port: int, logs: Callable[[], str]) -> None:
    """Until GET /healthz answers 200 in the namespace of pid() (which fails once it exits)."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            if get(pid(), port, "/healthz")[0] == 200:
                return
        except ConnectionError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing served on :{port} within {WAIT:.0f} s:\n{logs()}") from None
        time.sleep(0.2)


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool is missing: make deps (apt-get install prometheus)")
    assert promtool is not None
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


class Pod:
    """A pod played from `spec` (a Pod manifest); `container` names its one container."""

    def __init__(self, spec: dict[str, Any], workdir: Path) -> None:
        self.spec = copy.deepcopy(spec)
        self.name = spec["metadata"]["name"]
        self.container = f"{self.name}-{daemonset_container(spec)['name']}"
        self.manifest = workdir / f"{self.name}.yaml"
        self.manifest.write_text(yaml.safe_dump(self.spec), encoding="utf-8")

    def play(self) -> None:
        podman("kube", "play", "--network=none", str(self.manifest))

    def inspect(self, template: str) -> str:
        return podman("inspect", "--format", template, self.container).stdout.strip()

    @property
    def pid(self) -> int:
        pid = int(self.inspect("{{.State.Pid}}"))
        assert pid > 0, f"{self.container} is not running:\n{self.logs()}"
        return pid

    def logs(self) -> str:
        proc = podman("logs", self.container, check=False)
        return proc.stdout + proc.stderr

    def wait_serving(self, port: int) -> None:
        wait_serving(lambda: self.pid, port, self.logs)

    def remove(self) -> None:
        podman("pod", "rm", "--force", "--ignore", "--time", "0", self.name, check=False)


@contextmanager
def played(spec: dict[str, Any], workdir: Path) -> Iterator[Pod]:
    """Plays the pod and removes it (by name) whatever happens; a pod that does not start
    fails with the engine's message."""
    pod = Pod(spec, workdir)
    pod.remove()  # a leftover of an interrupted run
    try:
        pod.play()
        yield pod
    finally:
        pod.remove()


@contextmanager
def container(name: str, *args: str) -> Iterator[int]:
    """`podman run -d --name NAME --network=none ARGS`; yields the container's host PID."""
    podman("rm", "--force", "--ignore", "--time", "0", name, check=False)
    try:
        podman("run", "-d", "--name", name, "--network=none", *args, timeout=WAIT)
        yield int(podman("inspect", "--format", "{{.State.Pid}}", name).stdout)
    finally:
        podman("rm", "--force", "--ignore", "--time", "0", name, check=False)
