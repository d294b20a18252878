"""Runs INSIDE the QEMU guest: emulated EBS controllers (tests/nvmetcp) through the real driver.

Started from guest_checks.py after its own steps. It serves the volumes of
tests/nvmetcp/pages.py from a userspace NVMe/TCP target on the guest's 127.0.0.1, connects
the guest kernel's nvme-tcp driver to them through /dev/nvme-fabrics, and reports what the
project's code reads through that driver, and what the target saw the kernel deliver.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.nvmetcp import pages
from tests.nvmetcp.volume import nqn_for
from tests.qemu import guest_checks as gc

PAGES_DIR = Path("/tmp/ebs-pages")
RECORD = "/tmp/nvmetcp-commands.jsonl"
EMULATOR_LOG = "/tmp/nvmetcp.log"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-00000000e6e5"
CONNECTED_AT_START = (pages.EBS_A, pages.EBS_B, pages.INSTANCE)


def module_argv(config_path: str, module: str) -> list[str]:
    """``python -m module`` with the host's sys.path (see guest_checks.py --exec-module)."""
    return [sys.executable, "-I", "-B", gc.__file__, config_path, "--exec-module", module]


class EmulatorProcess:
    def __init__(self, config_path: str, pages_dir: Path, volumes: list[str]) -> None:
        argv = [*module_argv(config_path, "tests.nvmetcp"), "--pages", str(pages_dir), "--record", RECORD]
        argv += [f"--port={pages.FIRST_PORT}", *(f"--volume={v}" for v in volumes)]
        self.log = open(EMULATOR_LOG, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError(f"emulator did not start: {self.log_tail()}")
        self.ready = json.loads(line)["ready"]

    def log_tail(self) -> str:
        return (gc.read_text(EMULATOR_LOG) or "")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def connect(serial: str, port: int) -> dict[str, Any]:
    """The kernel's own connect: one write to /dev/nvme-fabrics; waits for the namespace."""
    options = (
        f"transport=tcp,traddr=127.0.0.1,trsvcid={port},nqn={nqn_for(serial)},"
        f"hostnqn={HOSTNQN},reconnect_delay=1,ctrl_loss_tmo=60"
    )
    started = time.monotonic()
    fd = os.open("/dev/nvme-fabrics", os.O_RDWR)
    try:
        os.write(fd, options.encode())
        reply = os.read(fd, 4096).decode(errors="replace").strip()
    finally:
        os.close(fd)
    fields = dict(item.split("=", 1) for item in reply.split(",") if "=" in item)
    controller = f"nvme{fields['instance']}"

    def namespaces() -> list[str]:
        found = gc.listdir(f"/sys/class/nvme/{controller}")
        return [n for n in found if n.startswith(f"{controller}n") and os.path.exists(f"/dev/{n}")]

    names = gc.wait_for(namespaces, attempts=200, interval=0.05)
    base = f"/sys/class/nvme/{controller}"
    return {
        "reply": reply,
        "controller": controller,
        "namespaces": names,
        "model": gc.read_text(f"{base}/model"),
        "serial": gc.read_text(f"{base}/serial"),
        "transport": gc.read_text(f"{base}/transport"),
        "state": gc.read_text(f"{base}/state"),
        "seconds": round(time.monotonic() - started, 3),
    }


def disconnect(controller: str) -> None:
    gc.write(f"/sys/class/nvme/{controller}/delete_controller", "1")
    gc.wait_for(lambda: not os.path.exists(f"/sys/class/nvme/{controller}"), attempts=200, interval=0.05)


def connect_all() -> dict[str, Any]:
    return {v.serial: connect(v.serial, pages.port_of(v)) for v in CONNECTED_AT_START}


def start_emulator(config_path: str) -> EmulatorProcess:
    PAGES_DIR.mkdir(parents=True, exist_ok=True)
    for volume in pages.VOLUMES:
        volume.write_files(PAGES_DIR)
    return EmulatorProcess(config_path, PAGES_DIR, [f"{v.serial}:{pages.port_of(v)}" for v in pages.VOLUMES])


def read_page(path: str, volume: pages.EmulatedVolume) -> dict[str, Any]:
    """What nvme_ebs reads through the driver, next to what the emulator served."""
    node = gc.api().DeviceNode(path)
    raw = node.read_stats_page()
    served = (PAGES_DIR / f"{volume.serial}.d0").read_bytes()
    return {
        "length": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "served_sha256": hashlib.sha256(served).hexdigest(),
        "identical": raw == served,
        "stats": gc.outcome(node.read_stats),
        "identity": gc.outcome(node.identify),
    }


def recorded_commands() -> list[dict[str, Any]]:
    with open(RECORD) as f:
        return [json.loads(line) for line in f if line.strip()]


def run(out: gc.Reporter, config_path: str) -> None:
    emulator = out.step("emulator_start", functools.partial(start_emulator, config_path))
    if emulator is None:
        return
    try:
        connected = out.step("emulated_connect", connect_all)
        if connected is None:
            out.emit({"event": "emulator_log", "tail": emulator.log_tail()})
            return
        for volume in CONNECTED_AT_START:
            entry = connected[volume.serial]
            for path in [f"/dev/{entry['controller']}"] + [f"/dev/{n}" for n in entry["namespaces"]]:
                out.step(f"emulated_read:{volume.serial}:{path}", functools.partial(read_page, path, volume))
        out.step("emulated_commands", recorded_commands)
        out.step("emulated_discover", gc.discover)
        exporter_run = importlib.import_module("tests.qemu.guest_exporter_run")
        out.step("emulated_exporter", functools.partial(exporter_run.run, config_path, connected))
        out.step("emulated_commands:after_faults", recorded_commands)
    finally:
        emulator.stop()
        out.emit({"event": "emulator_log", "tail": emulator.log_tail()})


def scrape_pages(out: gc.Reporter, config_path: str, pages_dir: str) -> None:
    """The page-dump tool: serve every SERIAL.d0 in pages_dir, connect them, scrape the exporter once."""
    serials = sorted(p.name[: -len(".d0")] for p in Path(pages_dir).glob("*.d0"))
    ports = {serial: pages.FIRST_PORT + i for i, serial in enumerate(serials)}
    emulator = out.step(
        "emulator",
        functools.partial(EmulatorProcess, config_path, Path(pages_dir), [f"{s}:{p}" for s, p in ports.items()]),
    )
    if emulator is None:
        return
    try:
        connected = out.step("connect", lambda: {s: connect(s, p) for s, p in ports.items()})
        if connected is not None:
            exporter_run = importlib.import_module("tests.qemu.guest_exporter_run")
            out.step("scrape", functools.partial(exporter_run.scrape_once, config_path))
    finally:
        emulator.stop()
        out.emit({"event": "emulator_log", "tail": emulator.log_tail()})
