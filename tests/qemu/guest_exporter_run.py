"""Runs INSIDE the QEMU guest: the exporter against emulated volumes, through hot-plug and faults.

Called by guest_emulated.py with the volumes already connected. One exporter process is
scraped on the guest's loopback after each change: a volume disconnected and another
connected under the freed name, then four faults on one volume (a held answer, a dropped
connection, an NVMe error status, a page with a bad magic), each followed by recovery.
Reports the scrape texts, their durations and the exporter's thread and fd counts; the
host side asserts.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from typing import Any

from tests.nvmetcp import pages
from tests.qemu import guest_checks as gc
from tests.qemu import guest_emulated as ge

ADDRESS = ("127.0.0.1", 8091)
DEVICE_TIMEOUT_S = 2.0
HOLD_S = 30  # well past --device.timeout; the kernel aborts it after DEVICE_TIMEOUT_S
FAULTED = pages.EBS_B
FAULTS = {"hold": f"hold {HOLD_S}", "drop": "drop", "status": "status 0x4002", "bad_magic": None}
RECOVERY_S = 30.0


class Exporter:
    def __init__(self, config_path: str) -> None:
        argv = [
            *ge.module_argv(config_path, "ebs_exporter"),
            f"--web.listen-address={ADDRESS[0]}:{ADDRESS[1]}",
            f"--device.timeout={DEVICE_TIMEOUT_S:g}",
            # the kernel aborts the held command too (off by default: it resets the controller)
            f"--device.kernel-timeout={DEVICE_TIMEOUT_S:g}",
        ]
        self.log_path = "/tmp/exporter-emulated.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

        def listening() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exporter exited: {self.log_tail()}")
            try:
                socket.create_connection(ADDRESS, timeout=1).close()
            except OSError:
                return False
            return True

        if not gc.wait_for(listening, attempts=600, interval=0.1):
            raise RuntimeError(f"exporter not listening: {self.log_tail()}")

    def scrape(self) -> dict[str, Any]:
        started = time.monotonic()
        with urllib.request.urlopen(f"http://{ADDRESS[0]}:{ADDRESS[1]}/metrics", timeout=60) as response:
            text = response.read().decode()
        return {"text": text, "seconds": round(time.monotonic() - started, 3)}

    def _resources_now(self) -> dict[str, int]:
        status = gc.read_text(f"/proc/{self.proc.pid}/status") or ""
        threads = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("Threads:"))
        return {"threads": threads, "fds": len(os.listdir(f"/proc/{self.proc.pid}/fd"))}

    def resources(self) -> dict[str, int]:
        """Threads and fds, the least seen over a second: the server closes its side of the last
        scrape's connection only once it sees the client's close, a moment after the scrape."""
        readings = []
        for _ in range(10):
            readings.append(self._resources_now())
            time.sleep(0.1)
        return {key: min(r[key] for r in readings) for key in readings[0]}

    def log_tail(self) -> str:
        return (gc.read_text(self.log_path) or "")[-4000:]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _up(text: str, device: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(f'ebs_device_up{{device="{device}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return None


def _wait_live(controller: str) -> float:
    started = time.monotonic()
    gc.wait_for(lambda: gc.read_text(f"/sys/class/nvme/{controller}/state") == "live", attempts=300, interval=0.1)
    return round(time.monotonic() - started, 3)


def _recover(exporter: Exporter, controller: str, device: str) -> dict[str, Any]:
    """Scrapes until the volume reads again (or RECOVERY_S passes)."""
    started = time.monotonic()
    live_after = _wait_live(controller)
    attempts = 0
    while True:
        attempts += 1
        got = exporter.scrape()
        if _up(got["text"], device) == 1.0 or time.monotonic() - started > RECOVERY_S:
            break
        time.sleep(0.5)
    got.update(attempts=attempts, live_after=live_after, recovered_after=round(time.monotonic() - started, 3))
    return got


def _set_fault(name: str) -> None:
    fault_file = ge.PAGES_DIR / f"{FAULTED.serial}.fault"
    page_file = ge.PAGES_DIR / f"{FAULTED.serial}.d0"
    if name == "bad_magic":
        page_file.write_bytes(FAULTED.stats_page(magic=0xBAD0BAD0))
    else:
        fault_file.write_text(f"{FAULTS[name]}\n")


def _clear_faults() -> None:
    (ge.PAGES_DIR / f"{FAULTED.serial}.fault").unlink(missing_ok=True)
    (ge.PAGES_DIR / f"{FAULTED.serial}.d0").write_bytes(FAULTED.stats_page())


def run(config_path: str, connected: dict[str, Any]) -> dict[str, Any]:
    exporter = Exporter(config_path)
    result: dict[str, Any] = {"device_timeout": DEVICE_TIMEOUT_S, "faulted": FAULTED.serial}
    try:
        exporter.scrape()  # the first scrape starts the read threads
        result["baseline"] = exporter.scrape()
        result["resources_before"] = exporter.resources()

        gone = connected[pages.EBS_A.serial]["controller"]
        ge.disconnect(gone)
        result["after_disconnect"] = exporter.scrape()
        result["hotplug"] = ge.connect(pages.HOTPLUG.serial, pages.port_of(pages.HOTPLUG))
        result["hotplug"]["reused"] = gone
        result["after_hotplug"] = exporter.scrape()

        controller = connected[FAULTED.serial]["controller"]
        device = connected[FAULTED.serial]["namespaces"][0]
        for name in FAULTS:
            _set_fault(name)
            result[f"fault:{name}"] = exporter.scrape()
            _clear_faults()
            result[f"recovered:{name}"] = _recover(exporter, controller, device)
        time.sleep(DEVICE_TIMEOUT_S)  # let aborted reads finish their threads
        result["final"] = exporter.scrape()
        result["resources_after"] = exporter.resources()
    finally:
        result["returncode"] = exporter.stop()
        result["log_tail"] = exporter.log_tail()
    return result


def scrape_once(config_path: str) -> dict[str, Any]:
    exporter = Exporter(config_path)
    try:
        return exporter.scrape()
    finally:
        exporter.stop()
