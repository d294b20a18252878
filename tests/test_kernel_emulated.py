"""Log page 0xD0 through the real Linux NVMe driver: emulated EBS controllers over NVMe/TCP.

Inside the same QEMU boot as tests/test_kernel.py, tests/qemu/guest_emulated.py serves the
volumes of tests/nvmetcp/pages.py from a userspace NVMe/TCP target on the guest's loopback
and connects the guest kernel's nvme-tcp driver to them. Each test asserts one part of what
the guest reported; the expected bytes are built here from the same definitions.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ci import unavailable
from kernel_guest import check
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.nvmetcp import pages
from tests.qemu import guest_exporter_run as run

pytestmark = pytest.mark.kernel

STARTED = (pages.EBS_A, pages.EBS_B, pages.INSTANCE)
GET_LOG_PAGE, IDENTIFY, FABRICS, ASYNC_EVENT, KEEP_ALIVE = 0x02, 0x06, 0x7F, 0x0C, 0x18
U32_MAX = 0xFFFFFFFF
# What each fault must be counted as (a dropped connection: the kernel's path error status).
FAULT_REASONS = {"hold": "timeout", "drop": "nvme_status", "status": "nvme_status", "bad_magic": "bad_page"}


def volume_id(volume: pages.EmulatedVolume) -> str:
    return volume.serial if volume.serial.startswith("AWS") else f"vol-{volume.serial[3:]}"


def prefix(volume: pages.EmulatedVolume) -> str:
    return "ec2_instance_store_" if volume is pages.INSTANCE else "ebs_"


def samples(text: str) -> list[Any]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(text: str, name: str, **labels: str) -> float | None:
    found = [s.value for s in samples(text) if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def device_of(text: str, volume: pages.EmulatedVolume) -> str | None:
    for s in samples(text):
        if s.name == "ebs_volume_info" and s.labels["volume_id"] == volume_id(volume):
            return str(s.labels["device"])
    return None


def errors(text: str, device: str) -> dict[str, float]:
    return {
        s.labels["reason"]: s.value
        for s in samples(text)
        if s.name == "ebs_device_errors_total" and s.labels["device"] == device
    }


def test_kernel_connects_to_every_emulated_controller(guest: Any) -> None:
    connected = check(guest, "emulated_connect")
    assert sorted(connected) == sorted(v.serial for v in STARTED)
    for volume in STARTED:
        entry = connected[volume.serial]
        assert (entry["serial"], entry["model"], entry["transport"], entry["state"]) == (
            volume.serial,
            volume.model,
            "tcp",
            "live",
        )
        assert entry["namespaces"] == [f"{entry['controller']}n1"], entry


@pytest.mark.parametrize("volume", STARTED, ids=lambda v: v.serial)
def test_nvme_ebs_reads_exactly_the_served_page(guest: Any, volume: pages.EmulatedVolume) -> None:
    entry = check(guest, "emulated_connect")[volume.serial]
    page = volume.stats_page()
    for path in [f"/dev/{entry['controller']}", f"/dev/{entry['namespaces'][0]}"]:
        read = check(guest, f"emulated_read:{volume.serial}:{path}")
        assert read["identical"] and read["length"] == 4096, path
        assert read["sha256"] == hashlib.sha256(page).hexdigest()
        stats = read["stats"]["value"]
        assert stats["version"] == volume.version != 0
        assert len(stats["read_io_latency_histogram"]["counts"]) == 28
        assert len(stats["write_io_latency_histogram"]["counts"]) == 64
        assert U32_MAX in stats["read_io_latency_histogram"]["counts"]
        assert U32_MAX in stats["write_io_latency_histogram"]["counts"]
        assert stats["total_read_ops"] == volume.counters()["total_read_ops"]
        identity = read["identity"]["value"]
        assert (identity["serial"], identity["model"]) == (volume.serial, volume.model)
        assert identity["block_device_mapping"] == volume.mapping


def test_emulator_saw_the_stats_command_as_the_kernel_delivered_it(guest: Any) -> None:
    commands = [c for c in check(guest, "emulated_commands") if c["serial"] == pages.EBS_A.serial]
    logs = [c for c in commands if c["opcode"] == GET_LOG_PAGE and c["cdw10"] & 0xFF == 0xD0]
    assert len(logs) == 4  # read_stats_page and read_stats, on the controller node and the namespace node
    for cmd in logs:
        assert (cmd["qid"], cmd["nsid"], cmd["cdw10"], cmd["data_len"]) == (0, 1, 0x03FF00D0, 4096)
        assert [cmd[f"cdw{i}"] for i in range(11, 16)] == [0] * 5
    # The host's own connect sequence came first: Connect, properties, Identify Controller.
    assert (commands[0]["opcode"], commands[0]["fctype"], commands[0]["data_len"]) == (FABRICS, 0x01, 1024)
    assert any(c["opcode"] == IDENTIFY and c["cdw10"] == 1 for c in commands)
    assert any(c["opcode"] == ASYNC_EVENT for c in commands)  # held: no event is ever sent


def test_keep_alive_reaches_the_emulator(guest: Any) -> None:
    commands = check(guest, "emulated_commands:after_faults")
    assert any(c["opcode"] == KEEP_ALIVE and c["serial"] == pages.EBS_B.serial for c in commands)


def test_discovery_finds_the_emulated_volumes(guest: Any) -> None:
    connected = check(guest, "emulated_connect")
    found = check(guest, "emulated_discover")
    by_controller = {d["controller"]: d for d in found["devices"]}
    # What discovery takes for a steady controller: sysfs counts its subdirectories (a
    # namespace, or a multipath path node, is one) in the directory's link count.
    links = found["sysfs"]["links"]
    assert links and all(c["nlink"] == 2 + c["subdirs"] and c["subdirs"] >= 1 for c in links.values()), links
    # And a serial read again at offset 0 through the descriptor discovery keeps is the serial.
    assert all(c["serials"][0].strip() and len(set(c["serials"])) == 1 for c in links.values()), links
    for volume in STARTED:
        entry = connected[volume.serial]
        dev = by_controller[entry["controller"]]
        assert dev["kind"] == ("INSTANCE_STORE" if volume is pages.INSTANCE else "EBS")
        ebs_id = None if volume is pages.INSTANCE else volume_id(volume)  # instance store: the serial names it
        assert (dev["serial"], dev["model"], dev["volume_id"]) == (volume.serial, volume.model, ebs_id)
        assert dev["namespaces"] == entry["namespaces"]
        assert dev["block_device"] == f"/dev/{entry['namespaces'][0]}" and dev["block_device_exists"]


def exporter(guest: Any) -> dict[str, Any]:
    result: dict[str, Any] = check(guest, "emulated_exporter")
    assert result["returncode"] == 0, result["log_tail"]
    return result


@pytest.mark.parametrize("volume", STARTED, ids=lambda v: v.serial)
def test_exporter_values_equal_the_pages(guest: Any, volume: pages.EmulatedVolume) -> None:
    text = exporter(guest)["baseline"]["text"]
    labels = {"volume_id": volume_id(volume)}
    counters = volume.counters()
    p = prefix(volume)
    assert value(text, f"{p}read_ops_total", **labels) == counters["total_read_ops"]
    assert value(text, f"{p}write_bytes_total", **labels) == counters["total_write_bytes"]
    assert value(text, f"{p}read_time_seconds_total", **labels) == pytest.approx(counters["total_read_time_us"] / 1e6)
    assert value(text, f"{p}volume_queue_length", **labels) == counters["volume_queue_length"]
    assert value(text, f"{p}read_io_latency_seconds_count", **labels) == sum(c for *_, c in volume.read_bins())
    write_inf = value(text, f"{p}write_io_latency_seconds_bucket", le="+Inf", **labels)
    assert write_inf == sum(c for *_, c in volume.write_bins())
    assert value(text, "ebs_device_up", device=device_of(text, volume) or "?") == 1


def test_exporter_output_passes_promtool(guest: Any) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool not found (apt-get install prometheus)")
    for phase in ("baseline", "after_hotplug", "fault:hold", "final"):
        lint = subprocess.run(
            [promtool, "check", "metrics"], input=exporter(guest)[phase]["text"], capture_output=True, text=True
        )
        assert lint.returncode == 0, phase + ": " + lint.stdout + lint.stderr


def test_hotplug_reuses_the_name_and_starts_from_the_new_counters(guest: Any) -> None:
    result = exporter(guest)
    hotplug = result["hotplug"]
    assert hotplug["controller"] == hotplug["reused"]  # the kernel handed out the freed name
    gone = result["after_disconnect"]["text"]
    assert volume_id(pages.EBS_A) not in gone and device_of(gone, pages.EBS_A) is None
    text = result["after_hotplug"]["text"]
    present = {s.labels["volume_id"] for s in samples(text) if s.name == "ebs_volume_info"}
    expected = {volume_id(v) for v in (pages.EBS_B, pages.INSTANCE, pages.HOTPLUG)}
    assert present - {"vol-0fedcba9876543210"} == expected  # minus the kernel nvmet target of test_kernel.py
    assert device_of(text, pages.HOTPLUG) == hotplug["namespaces"][0]
    labels = {"volume_id": volume_id(pages.HOTPLUG)}
    assert value(text, "ebs_read_ops_total", **labels) == pages.HOTPLUG.counters()["total_read_ops"]
    assert value(text, "ebs_read_io_latency_seconds_count", **labels) == sum(c for *_, c in pages.HOTPLUG.read_bins())


@pytest.mark.parametrize("fault", list(FAULT_REASONS))
def test_fault_is_counted_and_the_volume_recovers(guest: Any, fault: str) -> None:
    result = exporter(guest)
    device = device_of(result["baseline"]["text"], run.FAULTED)
    assert device is not None
    during = result[f"fault:{fault}"]
    # The scrape answers within its bound (the device timeout, plus rendering).
    assert during["seconds"] < run.DEVICE_TIMEOUT_S + 1.5, during["seconds"]
    before = errors(result["baseline"]["text"], device)
    counted = errors(during["text"], device)
    reason = FAULT_REASONS[fault]
    assert counted.get(reason, 0) > before.get(reason, 0), (fault, counted)
    assert value(during["text"], "ebs_device_up", device=device) == 0
    for other in (pages.INSTANCE, pages.HOTPLUG):  # the others keep reading
        assert value(during["text"], "ebs_device_up", device=device_of(during["text"], other) or "?") == 1
    recovered = result[f"recovered:{fault}"]
    assert value(recovered["text"], "ebs_device_up", device=device) == 1, recovered
    assert recovered["recovered_after"] < 20, recovered
    if fault == "hold":
        # The kernel aborted the command after --device.timeout: long before the held answer.
        assert recovered["recovered_after"] < run.HOLD_S / 2, recovered


def test_threads_and_fds_come_back(guest: Any) -> None:
    result = exporter(guest)
    assert result["resources_after"] == result["resources_before"]


def _tool(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("FAKENVME")}
    harness = Path(__file__).resolve().parent / "qemu" / "harness.py"
    return subprocess.run([sys.executable, str(harness), *args], env=env, capture_output=True, text=True, timeout=600)


def test_page_dump_tool_scrapes_each_dump(tmp_path: Path) -> None:
    """harness.py --ebs-pages DIR --scrape OUT: a dump alone, and one with its own identify page."""
    dump = tmp_path / "dump"
    dump.mkdir()
    (dump / f"{pages.EBS_B.serial}.d0").write_bytes(pages.EBS_B.stats_page())  # identify built from the serial
    pages.INSTANCE.write_files(dump)
    out = tmp_path / "scrape.txt"
    done = _tool("--ebs-pages", str(dump), "--scrape", str(out))
    if done.returncode == 2 and done.stderr.startswith("unavailable:"):
        unavailable(done.stderr.strip())
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    info = {s.labels["volume_id"]: s.labels for s in samples(text) if s.name == "ebs_volume_info"}
    assert info[volume_id(pages.EBS_B)]["block_device_mapping"] == "sdf"  # the default mapping
    assert info[volume_id(pages.INSTANCE)]["kind"] == "instance_store"
    for volume in (pages.EBS_B, pages.INSTANCE):
        read_ops = value(text, f"{prefix(volume)}read_ops_total", volume_id=volume_id(volume))
        assert read_ops == volume.counters()["total_read_ops"]


def test_page_dump_tool_names_what_is_wrong(tmp_path: Path) -> None:
    done = _tool("--ebs-pages", str(tmp_path), "--scrape", str(tmp_path / "out.txt"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == f"harness: --ebs-pages {tmp_path}: no SERIAL.d0 file"
