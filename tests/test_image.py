"""The DaemonSet's pod, built and run by a real container engine (tests/image_pod.py).

`make image-local` builds the Dockerfile on a Debian 12 base; the pod template is read from
deploy/30_*.DaemonSet.yaml and played with only the changes POD_CHANGES names, against a
fake host: a sysfs tree, character device nodes and the fake NVMe controller (LD_PRELOAD).
The device nodes carry the number of a device the runtime's device cgroup does not admit by
default (as it admits no NVMe controller): privileged, the exporter opens them and the fake
answers the ioctl; unprivileged, the kernel refuses the open.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ci import unavailable
from exporter_harness import FakeHost, value
from fakenvme import DEFAULT_BUILD_DIR, build_preload
from image_pod import (
    LOCAL_IMAGE,
    Pod,
    build_local_image,
    container_port,
    daemonset_container,
    daemonset_path,
    get,
    played,
    pod_template,
    podman,
    promtool_check,
    require_engine,
)
from pagesource import stats_page
from reliability import capabilities

import nvme_ebs

CAP_SYS_ADMIN = 1 << 21
# /dev/fuse's number: a device outside the runtime's default allow-list, present on any Linux
# host; opening it read-only only creates a connection that closing ends.
NODE = (10, 229)
VOLUMES = {"nvme1": ("vol01111111111111111", 1), "nvme2": ("vol02222222222222222", 2)}
FAKE_ROOT = "/host"  # FAKENVME_ROOT in the pod: the fake answers nodes under /host/dev
LIBRARY_DIR = "/opt/fakenvme"
DEFAULT_GRACE_S = 30  # Kubernetes' terminationGracePeriodSeconds when the pod sets none

# Every difference between deploy/'s pod template and the pod played, and why.
_C = "spec.containers.ebs-metrics-exporter"
POD_CHANGES = {
    "kind": "a Pod around the template (podman's kube play runs pods, not this DaemonSet)",
    "apiVersion": "v1, a Pod's",
    "metadata.name": "the pod's own name, so it can be removed by name",
    f"{_C}.image": "the image just built instead of REPLACE_IMAGE",
    f"{_C}.ports": "podman refuses port mappings with --network=none",
    f"{_C}.readinessProbe": "podman would turn it into a curl healthcheck on systemd timers; the test probes",
    f"{_C}.livenessProbe": "as the readiness probe",
    f"{_C}.env": "LD_PRELOAD and FAKENVME_ROOT: the fake controller library",
    f"{_C}.volumeMounts.fakenvme-ctl": "the fake controller's answers (and its command log)",
    f"{_C}.volumeMounts.fakenvme-lib": "the fake controller's library",
    "spec.volumes.host-dev.hostPath.path": "the fake host's device nodes instead of /dev",
    "spec.volumes.host-sys.hostPath.path": "the fake host's sysfs tree instead of /sys",
    "spec.volumes.fakenvme-ctl": "the fake controller's answers, from this machine",
    "spec.volumes.fakenvme-lib": "the fake controller's library, from this machine",
}
UNPRIVILEGED_CHANGES = {
    f"{_C}.securityContext.privileged": "false: the device cgroup applies",
    f"{_C}.securityContext.capabilities": "add SYS_ADMIN, all the exporter keeps",
}


@pytest.fixture(scope="module")
def image() -> str:
    require_engine()
    build_local_image("amd64")
    return LOCAL_IMAGE


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> FakeHost:
    host = FakeHost(tmp_path_factory.mktemp("pod-host"))
    for controller, (serial, seed) in VOLUMES.items():
        host.attach(controller, serial, stats_page(seed))
        node = host.fake.dev_path(controller)
        node.unlink()
        try:
            os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(*NODE))
        except PermissionError:
            unavailable("mknod of the fake host's device nodes needs root")
    return host


def pod_spec(name: str, host: FakeHost, image: str, privileged: bool = True) -> dict[str, Any]:
    template = pod_template()
    spec: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": {**template["metadata"], "name": name}}
    spec["spec"] = template["spec"]
    container = daemonset_container(spec)
    container["image"] = image
    for field in ("ports", "readinessProbe", "livenessProbe"):
        del container[field]
    library = build_preload(DEFAULT_BUILD_DIR)
    container.setdefault("env", []).extend(
        [
            {"name": "LD_PRELOAD", "value": f"{LIBRARY_DIR}/{library.name}"},
            {"name": "FAKENVME_ROOT", "value": FAKE_ROOT},
        ]
    )
    container["volumeMounts"] += [
        {"name": "fakenvme-ctl", "mountPath": f"{FAKE_ROOT}/ctl"},  # writable: the fake logs each command
        {"name": "fakenvme-lib", "mountPath": LIBRARY_DIR, "readOnly": True},
    ]
    paths = {"host-dev": host.dev, "host-sys": host.sysfs.root}
    for volume in spec["spec"]["volumes"]:
        volume["hostPath"]["path"] = str(paths[volume["name"]])
    spec["spec"]["volumes"] += [
        {"name": "fakenvme-ctl", "hostPath": {"path": str(host.fake.root / "ctl"), "type": "Directory"}},
        {"name": "fakenvme-lib", "hostPath": {"path": str(library.parent), "type": "Directory"}},
    ]
    if not privileged:
        container["securityContext"]["privileged"] = False
        container["securityContext"]["capabilities"] = {"add": ["SYS_ADMIN"]}
    return spec


def leaves(node: Any, path: str = "") -> dict[str, Any]:
    """The values under node by dotted path; list items by their name when they have one."""
    if isinstance(node, dict):
        items = [(str(k), v) for k, v in node.items()]
    elif isinstance(node, list):
        items = [(v["name"] if isinstance(v, dict) and "name" in v else str(i), v) for i, v in enumerate(node)]
    else:
        return {path: node}
    out: dict[str, Any] = {} if items else {path: node}
    for key, child in items:
        out.update(leaves(child, f"{path}.{key}" if path else key))
    return out


def played_changes(spec: dict[str, Any]) -> set[str]:
    """Which named changes the differences between spec and deploy/'s template fall under."""
    daemonset = yaml.safe_load(daemonset_path().read_text(encoding="utf-8"))
    original = {"apiVersion": daemonset["apiVersion"], "kind": daemonset["kind"], **daemonset["spec"]["template"]}
    a, b = leaves(original), leaves(spec)
    named = {**POD_CHANGES, **UNPRIVILEGED_CHANGES}
    found = set()
    for path in {p for p in a.keys() | b.keys() if a.get(p, a) != b.get(p, b)}:
        under = [n for n in named if path == n or path.startswith(n + ".")]
        assert under, f"{path}: changed, and not one of the named changes"
        found.add(max(under, key=len))
    return found


@pytest.fixture(scope="module")
def pod(image: str, host: FakeHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    with played(pod_spec("ebs-exporter-image-test", host, image), tmp_path_factory.mktemp("pod")) as running:
        running.wait_serving(metrics_port())
        yield running


def metrics_port() -> int:
    return container_port(daemonset_container(pod_template()), "metrics")


def scrape(pod: Pod) -> str:
    status, body = get(pod.pid, metrics_port(), "/metrics")
    assert status == 200, body
    return body.decode()


def test_the_pod_played_differs_from_the_daemonsets_only_as_named(host: FakeHost) -> None:
    spec = pod_spec("x", host, LOCAL_IMAGE)
    assert played_changes(spec) == set(POD_CHANGES)
    unprivileged = pod_spec("x", host, LOCAL_IMAGE, privileged=False)
    assert played_changes(unprivileged) == set(POD_CHANGES) | set(UNPRIVILEGED_CHANGES)


def test_the_scrape_holds_the_fixture_pages(pod: Pod, host: FakeHost) -> None:
    text = scrape(pod)
    for controller, (serial, seed) in VOLUMES.items():
        page = nvme_ebs.parse_log_page(stats_page(seed))
        labels = {"volume_id": f"vol-{serial[3:]}", "device": f"{controller}n1"}
        assert value(text, "ebs_device_up", device=labels["device"]) == 1
        assert value(text, "ebs_read_ops_total", **labels) == page.total_read_ops
        assert value(text, "ebs_write_ops_total", **labels) == page.total_write_ops
        assert value(text, "ebs_read_bytes_total", **labels) == page.total_read_bytes
        assert value(text, "ebs_write_time_seconds_total", **labels) == page.total_write_time_us / 1e6
        assert value(text, "ebs_volume_queue_length", **labels) == page.volume_queue_length
        hist = page.write_io_latency_histogram
        assert value(text, "ebs_write_io_latency_seconds_count", **labels) == sum(hist.counts)
        # the ioctls came from inside the container, through the mounted node, to the fake
        assert {c["opcode"] for c in host.fake.commands(controller)} >= {0x02}
    promtool_check(text)


def test_pid_1_keeps_cap_sys_admin_only_with_no_new_privs(pod: Pod) -> None:
    caps = capabilities(pod.pid)
    assert (caps["CapEff"], caps["CapBnd"], caps["CapPrm"]) == (CAP_SYS_ADMIN,) * 3
    status = Path(f"/proc/{pod.pid}/status").read_text()
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.MULTILINE), status
    assert re.search(r"^NSpid:.*\s1$", status, re.MULTILINE), "the exporter is not the container's PID 1"


def _mount_points(pid: int) -> list[tuple[str, set[str]]]:
    with open(f"/proc/{pid}/mountinfo", encoding="utf-8") as f:
        return [(line.split()[4], set(line.split()[5].split(","))) for line in f]


def test_the_root_is_read_only_and_nothing_is_written(pod: Pod) -> None:
    scrape(pod)
    mounts = _mount_points(pod.pid)
    [root_options] = [options for point, options in mounts if point == "/"]
    assert "ro" in root_options
    # The engine makes the mount points of the pod's volumes (and /etc/hosts and friends)
    # before the root turns read-only: those, and the directories above them, are all
    # `podman diff` may list.
    points = {point for point, _ in mounts}
    scaffolding = points | {str(Path(p).parent) for p in points}
    changes = [line.split(" ", 1) for line in podman("diff", pod.container).stdout.splitlines()]
    assert changes, "podman diff lists no mount point at all: the check below would see nothing"
    assert [c for c in changes if c[1] not in scaffolding or c[0] not in ("A", "C")] == []
    # No tmpfs over /tmp or /run, as under Kubernetes: a write there would be a write to the root.
    assert not {"/tmp", "/var/tmp", "/run"} & points


@pytest.mark.parametrize("probe", ["readinessProbe", "livenessProbe"])
def test_the_manifests_probes_answer(pod: Pod, probe: str) -> None:
    container = daemonset_container(pod_template())
    http_get = container[probe]["httpGet"]
    status, body = get(pod.pid, container_port(container, http_get["port"]), http_get["path"])
    assert 200 <= status < 400, (status, body)  # what the kubelet counts as success


def test_sigterm_stops_it_cleanly_well_within_the_grace_period(image: str, host: FakeHost, tmp_path: Path) -> None:
    grace = int(pod_template()["spec"].get("terminationGracePeriodSeconds", DEFAULT_GRACE_S))
    with played(pod_spec("ebs-exporter-image-stop", host, image), tmp_path) as running:
        running.wait_serving(metrics_port())
        start = time.monotonic()
        podman("pod", "stop", "--time", str(grace), running.name, timeout=grace + 30)
        took = time.monotonic() - start
        assert running.inspect("{{.State.ExitCode}}") == "0", running.logs()
        assert "shutting down" in running.logs()
    assert took < grace / 3, f"stopping took {took:.1f} s of a {grace} s grace period"


def test_unprivileged_the_device_cgroup_refuses_and_the_log_says_why(
    image: str, host: FakeHost, tmp_path: Path
) -> None:
    spec = pod_spec("ebs-exporter-image-unprivileged", host, image, privileged=False)
    before = {c: len(host.fake.commands(c)) for c in VOLUMES}
    with played(spec, tmp_path) as running:
        running.wait_serving(metrics_port())
        text = scrape(running)  # 200, asserted by scrape()
        caps = capabilities(running.pid)
        assert (caps["CapEff"], caps["CapBnd"]) == (CAP_SYS_ADMIN, CAP_SYS_ADMIN)
        allowed = _device_cgroup_allows(running.pid)
        logs = running.logs()
    for controller in VOLUMES:
        device = f"{controller}n1"
        assert value(text, "ebs_device_up", device=device) == 0
        assert value(text, "ebs_device_errors_total", device=device, reason="permission") == 1
        assert len(host.fake.commands(controller)) == before[controller], "an ioctl got through"
        [line] = [line for line in logs.splitlines() if f"{FAKE_ROOT}/dev/{controller}:" in line]
        assert "Operation not permitted" in line and "privileged: true" in line, line
    if allowed is not None:  # cgroup v1: the allow-list itself
        assert not {f"c {NODE[0]}:{NODE[1]} r", "a *:* rwm"} & {e.rsplit("w", 1)[0] for e in allowed}, allowed
        assert "c 1:3 rwm" in allowed  # the list is the runtime's default one


def _device_cgroup_allows(pid: int) -> list[str] | None:
    """The devices.list of the process's cgroup v1 devices controller, None on cgroup v2."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "devices" in controllers.split(","):
            return Path(f"/sys/fs/cgroup/devices{path}/devices.list").read_text().splitlines()
    return None
