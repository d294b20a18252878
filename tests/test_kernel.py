"""The project against the real Linux NVMe driver, booted once under QEMU (TCG).

One boot per module (see tests/qemu/harness.py) runs tests/qemu/guest_checks.py inside
the guest; each test below asserts one part of what the guest reported. Without QEMU or
a Debian kernel package the tests are skipped, except with CI=true where they fail.

    make test-kernel        # pytest -m kernel tests/test_kernel.py
    EBS_QEMU_TIMEOUT=300    # hard QEMU timeout in seconds (default 240)
    EBS_QEMU_KEEP_RUN=1     # keep build/qemu/runs/run-*/ (config, guest.sh, console)
    python tests/qemu/harness.py   # one boot by hand, the guest's JSON records on stdout

The console of the last boot is kept in build/qemu/last-console.log.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from typing import Any

import pytest
from ci import unavailable
from kernel_guest import check as _check

pytestmark = pytest.mark.kernel

QEMU_SERIAL = "vol0123456789abcdef0"
QEMU_VOLUME_ID = "vol-0123456789abcdef0"
QEMU_MODEL = "QEMU NVMe Ctrl"
QEMU_VID = 0x1B36  # Red Hat, Inc.: QEMU's emulated devices
FABRICS_SERIAL = "vol0fedcba9876543210"
FABRICS_VOLUME_ID = "vol-0fedcba9876543210"
FABRICS_MODEL = "Amazon Elastic Block Store"
GET_LOG_PAGE = 0x02
STATUS_DNR = 0x4000


def _assert_status_error(outcome: dict[str, Any], path: str) -> dict[str, Any]:
    """read_stats must have raised NvmeStatusError (not OSError, not a crash); returns it."""
    assert outcome["raised"], f"read_stats({path}) returned {outcome.get('value')!r}"
    exc = outcome["exception"]
    assert exc.get("is_nvme_status_error") is True, f"{path}: {exc['mro']}: {exc['message']}"
    assert exc["is_os_error"] is False, f"{path}: an errno instead of a status: {exc}"
    status = exc["status"]
    assert status > 0
    # The attributes must be the decoding of the raw status word.
    assert exc["sc"] == status & 0xFF
    assert exc["sct"] == (status >> 8) & 0x7
    assert exc["dnr"] is bool(status & STATUS_DNR)
    assert exc["opcode"] == GET_LOG_PAGE
    return dict(exc)


def _device(discovered: dict[str, Any], controller: str) -> dict[str, Any]:
    by_name = {d["controller"]: d for d in discovered["devices"]}
    assert controller in by_name, f"{controller} not discovered; sysfs: {discovered['sysfs']}"
    return dict(by_name[controller])


def test_guest_boots_and_runs_every_step(guest: Any, record_property: Any) -> None:
    record_property("boot_wall_seconds", round(guest.wall_seconds, 2))
    assert not guest.timed_out, f"QEMU killed after the timeout; console tail:\n{guest.tail()}"
    assert guest.finished, f"the guest script did not finish; console tail:\n{guest.tail()}"
    assert guest.returncode == 0
    assert guest.garbled == ()
    events = {e["event"]: e for e in guest.events}
    assert events["modules"]["failed"] == ""
    assert events["nvme"]["state"] == "present"
    assert events["guest-exit"]["rc"] == 0


def test_real_driver_answers_the_raw_ioctl_as_recorded(guest: Any) -> None:
    """The harness's own ctypes ioctl: the facts the project is tested against below."""
    baseline = _check(guest, "raw_baseline")
    for path in ("/dev/nvme0", "/dev/nvme0n1"):
        ident = baseline[path]["identify"]
        assert ident["ret"] == 0
        assert (ident["vid"], ident["serial"], ident["model"]) == (QEMU_VID, QEMU_SERIAL, QEMU_MODEL)
        # A positive return value: the NVMe status, errno untouched.
        assert baseline[path]["log_d0"] == {"ret": 0x4002, "result": 0}


@pytest.mark.parametrize("path", ["/dev/nvme0", "/dev/nvme0n1"])
def test_identify_on_controller_and_namespace(guest: Any, path: str) -> None:
    ident = _check(guest, f"identify:{path}")
    assert ident["type"] == "ControllerIdentity"
    assert ident["is_dataclass"] and ident["frozen"]
    fields = ident["fields"]
    assert fields["vid"] == QEMU_VID
    assert fields["serial"] == QEMU_SERIAL
    assert fields["model"] == QEMU_MODEL
    assert fields["volume_id"] == QEMU_VOLUME_ID
    assert isinstance(fields["firmware"], str) and fields["firmware"]
    assert isinstance(fields["ssvid"], int)


@pytest.mark.parametrize("path", ["/dev/nvme0", "/dev/nvme0n1"])
def test_read_stats_is_refused_with_invalid_field(guest: Any, path: str, record_property: Any) -> None:
    exc = _assert_status_error(_check(guest, f"read_stats:{path}"), path)
    record_property("status", hex(exc["status"]))
    assert exc["status"] == 0x4002
    assert (exc["sct"], exc["sc"], exc["dnr"]) == (0, 0x02, True)


def test_discovery_classifies_the_qemu_controller_as_other(guest: Any) -> None:
    discovered = _check(guest, "discover:before_fabrics")
    assert [d["controller"] for d in discovered["devices"]] == ["nvme0"]
    dev = _device(discovered, "nvme0")
    assert dev["kind"] == "OTHER" and dev["kind_is_other"]
    assert dev["controller_path"] == "/dev/nvme0"
    assert dev["namespaces"] == ["nvme0n1"]
    assert dev["block_device"] == "/dev/nvme0n1" and dev["block_device_exists"]
    assert (dev["serial"], dev["model"]) == (QEMU_SERIAL, QEMU_MODEL)


def test_fabrics_target_is_discovered_as_ebs(guest: Any) -> None:
    target = _check(guest, "fabrics_target")
    assert (target["model"], target["serial"], target["transport"]) == (FABRICS_MODEL, FABRICS_SERIAL, "tcp")
    assert target["namespaces"], f"no namespace block device appeared: {target['sysfs']}"
    discovered = _check(guest, "discover:after_fabrics")
    assert sorted(d["controller"] for d in discovered["devices"]) == sorted(["nvme0", target["controller"]])
    dev = _device(discovered, target["controller"])
    assert dev["kind"] == "EBS" and dev["kind_is_ebs"]
    assert dev["volume_id"] == FABRICS_VOLUME_ID
    assert (dev["serial"], dev["model"]) == (FABRICS_SERIAL, FABRICS_MODEL)
    assert dev["controller_path"] == target["controller_path"]
    # With native multipath the namespace hangs under nvme-subsystem, not the controller.
    assert dev["namespaces"] == target["namespaces"]
    assert dev["block_device"] == f"/dev/{target['namespaces'][0]}" and dev["block_device_exists"]
    assert _device(discovered, "nvme0")["kind"] == "OTHER"


def test_fabrics_ebs_identify_and_read_stats(guest: Any, record_property: Any) -> None:
    target = _check(guest, "fabrics_target")
    paths = [target["controller_path"]] + [f"/dev/{n}" for n in target["namespaces"]]
    for path in paths:
        fields = _check(guest, f"fabrics_identify:{path}")["fields"]
        assert (fields["serial"], fields["model"]) == (FABRICS_SERIAL, FABRICS_MODEL)
        assert fields["volume_id"] == FABRICS_VOLUME_ID
        assert fields["vid"] == 0  # Linux's nvmet reports no PCI vendor
        exc = _assert_status_error(_check(guest, f"fabrics_read_stats:{path}"), path)
        record_property(f"status {path}", hex(exc["status"]))
        print(f"read_stats({path}) on the nvmet 'EBS' target: status {exc['status']:#06x}")
        # Invalid Field in Command with DNR (the kernel's nvmet also sets More: 0x6002).
        assert (exc["status"] & 0x7FF, exc["dnr"]) == (0x002, True)


def _exporter_written() -> bool:
    try:
        return importlib.util.find_spec("ebs_exporter.__main__") is not None
    except ImportError:
        return False


def _device_labels(target: dict[str, Any]) -> set[str]:
    names = [target["controller"], *target["namespaces"]]
    return {FABRICS_VOLUME_ID, *names, *(f"/dev/{n}" for n in names)}


def test_exporter_keeps_serving_a_refusing_ebs_device(guest: Any) -> None:
    if not _exporter_written():
        unavailable("the exporter package (ebs_exporter/__main__.py) is not written yet")
    from prometheus_client.parser import text_string_to_metric_families

    target = _check(guest, "fabrics_target")
    run = _check(guest, "ebs_exporter")
    assert run["available"], "exporter importable on the host but not in the guest"
    assert len(run["scrapes"]) == 2, f"exporter died; its log:\n{run['log_tail']}"
    assert run["alive_after_scrapes"], f"exporter died; its log:\n{run['log_tail']}"
    ours = _device_labels(target)
    errors = []
    for scrape in run["scrapes"]:
        assert scrape.get("status") == 200, scrape.get("error")
        assert scrape["parsed"], scrape.get("error")
        # Parse again here, with the host's client library, from the text itself.
        samples = [s for f in text_string_to_metric_families(scrape["text"]) for s in f.samples]
        up = [s.value for s in samples if s.name == "ebs_device_up" and s.labels.get("device") in ours]
        assert up == [0.0], f"ebs_device_up for {sorted(ours)}: {up}"
        errors.append(
            sum(
                s.value
                for s in samples
                if s.name == "ebs_device_errors_total"
                and s.labels.get("device") in ours
                and s.labels.get("reason") == "nvme_status"
            )
        )
    assert errors[1] > 0
    assert errors[1] >= errors[0]  # a counter
    promtool = shutil.which("promtool")
    if promtool is not None:
        lint = subprocess.run(
            [promtool, "check", "metrics"],
            input=run["scrapes"][-1]["text"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
