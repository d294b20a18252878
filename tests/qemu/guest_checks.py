"""Runs INSIDE the QEMU guest, chrooted into an overlay of the host's root.

Started by tests/qemu/harness.py as ``python -I -B guest_checks.py CONFIG.json``; drives
the project's own code against the real Linux NVMe driver and reports facts (never
verdicts: the host-side tests assert) as JSON lines, each starting with the run's
prefix, on stdout (the serial console).

``guest_checks.py CONFIG.json --exec-module MODULE ARGS...`` runs ``python -m MODULE ARGS``
with the host's sys.path; used to start the exporter.

Standard library only at import time: the project is imported inside each step so that a
broken import is reported as that step's failure instead of silencing the whole run.
"""

from __future__ import annotations

import ctypes
import dataclasses
import enum
import fcntl
import functools
import importlib
import importlib.util
import json
import os
import platform
import runpy
import site
import struct
import sys
import time
import traceback
import urllib.request
from typing import Any, Callable

NVME_IOCTL_ADMIN_CMD = 0xC0484E41
# opcode flags rsvd1 nsid cdw2 cdw3 metadata addr metadata_len data_len cdw10-15 timeout_ms result
PASSTHRU = struct.Struct("<BBHIIIQQII6III")
IDENTIFY_CDW10 = 1  # CNS 1: Identify Controller
EBS_LOG_CDW10 = (1023 << 16) | 0xD0  # NUMDL zero-based: 1024 dwords of log 0xD0

FABRICS_NQN = "nqn.2024-01.io.example.ebs-exporter:loopback"
FABRICS_SERIAL = "vol0fedcba9876543210"
FABRICS_MODEL = "Amazon Elastic Block Store"

IDENTITY_FIELDS = ("vid", "ssvid", "serial", "model", "firmware", "volume_id", "block_device_mapping")
DEVICE_FIELDS = (
    "controller",
    "controller_path",
    "namespaces",
    "block_device",
    "model",
    "serial",
    "firmware",
    "kind",
    "volume_id",
)


# --------------------------------------------------------------------------- plumbing


def load_config(path: str) -> dict[str, Any]:
    with open(path) as f:
        config: dict[str, Any] = json.load(f)
    return config


def adopt_host_paths(config: dict[str, Any]) -> None:
    """Make this interpreter see what the host's pytest process saw (venv, editable install)."""
    own = [p for p in sys.path if p not in config["sys_path"]]
    sys.path[:] = list(config["sys_path"]) + own
    for site_dir in config["site_dirs"]:
        site.addsitedir(site_dir)  # runs .pth files (editable-install finders)
    if config["repo"] not in sys.path:
        sys.path.append(config["repo"])  # last resort: the checkout itself


def jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.name
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


class Reporter:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def emit(self, record: dict[str, Any]) -> None:
        line = self.prefix + json.dumps(jsonable(record), sort_keys=True) + "\n"
        os.write(1, line.encode())  # one write per record, to keep lines whole

    def step(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run one check; report its result or the exception that escaped it."""
        started = time.monotonic()
        record: dict[str, Any] = {"check": name}
        try:
            result = fn()
        except BaseException as exc:  # report everything, including SystemExit from the API
            record.update(ok=False, error=describe_exception(exc), traceback=traceback.format_exc()[-3000:])
            result = None
        else:
            record.update(ok=True, result=result)
        record["seconds"] = round(time.monotonic() - started, 3)
        self.emit(record)
        return result


def describe_exception(exc: BaseException) -> dict[str, Any]:
    described: dict[str, Any] = {
        "type": type(exc).__name__,
        "module": type(exc).__module__,
        "mro": [cls.__name__ for cls in type(exc).__mro__],
        "message": str(exc),
        "is_os_error": isinstance(exc, OSError),
    }
    for attr in ("errno", "status", "sct", "sc", "dnr", "opcode"):
        if hasattr(exc, attr):
            described[attr] = getattr(exc, attr)
    nvme_ebs = sys.modules.get("nvme_ebs")
    status_error = getattr(nvme_ebs, "NvmeStatusError", None)
    if isinstance(status_error, type):
        described["is_nvme_status_error"] = isinstance(exc, status_error)
    return described


def outcome(fn: Callable[[], Any]) -> dict[str, Any]:
    """What a call did: its value, or the exception it raised (an expected outcome here)."""
    try:
        value = fn()
    except Exception as exc:
        return {"raised": True, "exception": describe_exception(exc)}
    return {"raised": False, "value": jsonable(value)}


def wait_for(predicate: Callable[[], Any], attempts: int, interval: float) -> Any:
    for _ in range(attempts):
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def sysfs_snapshot() -> dict[str, Any]:
    """Where the kernel hung the NVMe objects (native multipath moves namespaces)."""
    return {
        "class_nvme": {c: listdir(f"/sys/class/nvme/{c}") for c in listdir("/sys/class/nvme")},
        "class_nvme_subsystem": {
            s: [e for e in listdir(f"/sys/class/nvme-subsystem/{s}") if e.startswith("nvme")]
            for s in listdir("/sys/class/nvme-subsystem")
        },
        "block": [b for b in listdir("/sys/block") if b.startswith("nvme")],
        "dev": [d for d in listdir("/dev") if d.startswith("nvme")],
        "multipath": read_text("/sys/module/nvme_core/parameters/multipath"),
        # Discovery takes a controller directory's link count as 2 + its subdirectories.
        "links": {c: directory_links(f"/sys/class/nvme/{c}") for c in listdir("/sys/class/nvme")},
    }


def directory_links(path: str) -> dict[str, Any]:
    """A directory's link count, and the subdirectories a listing shows (symlinks not followed);
    and its serial read, then read again at offset 0 through the same descriptor, as discovery
    does for a steady controller."""
    subdirs = sum(1 for e in os.scandir(path) if e.is_dir(follow_symlinks=False))
    fd = os.open(f"{path}/serial", os.O_RDONLY)
    try:
        serials = [os.read(fd, 256).decode(), os.pread(fd, 256, 0).decode(), os.pread(fd, 256, 0).decode()]
    finally:
        os.close(fd)
    return {"nlink": os.stat(path).st_nlink, "subdirs": subdirs, "serials": serials}


# --------------------------------------------------------------------------- raw baseline


def raw_admin(path: str, opcode: int, nsid: int, cdw10: int, length: int = 4096) -> dict[str, Any]:
    """One admin passthrough command with ctypes/fcntl only: the harness's own baseline."""
    buf = ctypes.create_string_buffer(length)
    cmd = bytearray(
        PASSTHRU.pack(opcode, 0, 0, nsid, 0, 0, 0, ctypes.addressof(buf), 0, length, cdw10, 0, 0, 0, 0, 0, 0, 0)
    )
    fd = os.open(path, os.O_RDONLY)
    try:
        ret = fcntl.ioctl(fd, NVME_IOCTL_ADMIN_CMD, cmd, True)
    except OSError as exc:
        return {"errno": exc.errno, "strerror": exc.strerror}
    finally:
        os.close(fd)
    data = buf.raw
    return {"ret": ret, "result": PASSTHRU.unpack(bytes(cmd))[-1], "data": data}


def raw_baseline() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in ("/dev/nvme0", "/dev/nvme0n1"):
        ident = raw_admin(path, 0x06, 0, IDENTIFY_CDW10)
        data = ident.pop("data", b"")
        if data:
            ident.update(
                vid=int.from_bytes(data[0:2], "little"),
                serial=data[4:24].decode("ascii", "replace").strip(),
                model=data[24:64].decode("ascii", "replace").strip(),
            )
        log = raw_admin(path, 0x02, 1, EBS_LOG_CDW10)
        log.pop("data", None)
        out[path] = {"identify": ident, "log_d0": log}
    return out


# --------------------------------------------------------------------------- project API


def api() -> Any:
    return importlib.import_module("nvme_ebs")


def identify(path: str) -> dict[str, Any]:
    nvme_ebs = api()
    dev = nvme_ebs.DeviceNode(path)
    ident = dev.identify()
    frozen = False
    try:
        setattr(ident, "serial", "changed")  # noqa: B010 - checking immutability
    except (AttributeError, dataclasses.FrozenInstanceError):
        frozen = True
    return {
        "type": type(ident).__name__,
        "is_dataclass": dataclasses.is_dataclass(ident),
        "frozen": frozen,
        "fields": {name: jsonable(getattr(ident, name, "<missing>")) for name in IDENTITY_FIELDS},
    }


def read_stats(path: str) -> dict[str, Any]:
    nvme_ebs = api()
    return outcome(lambda: nvme_ebs.DeviceNode(path).read_stats())


def discover() -> dict[str, Any]:
    nvme_ebs = api()
    devices = nvme_ebs.discover(sysfs="/sys", dev="/dev")
    described = []
    for d in devices:
        entry = {name: jsonable(getattr(d, name, "<missing>")) for name in DEVICE_FIELDS}
        entry["kind_is_ebs"] = d.kind is nvme_ebs.VolumeKind.EBS
        entry["kind_is_other"] = d.kind is nvme_ebs.VolumeKind.OTHER
        entry["block_device_exists"] = bool(d.block_device) and os.path.exists(d.block_device)
        described.append(entry)
    return {"devices": described, "sysfs": sysfs_snapshot()}


# --------------------------------------------------------------------------- NVMe-oF loopback


def write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def setup_fabrics_target() -> dict[str, Any]:
    """An 'EBS' volume: nvmet over loopback TCP, connected with the kernel's nvme-tcp."""
    before = set(listdir("/sys/class/nvme"))
    root = "/sys/kernel/config/nvmet"
    subsys = f"{root}/subsystems/{FABRICS_NQN}"
    os.mkdir(subsys)
    write(f"{subsys}/attr_allow_any_host", "1")
    write(f"{subsys}/attr_model", FABRICS_MODEL)  # only settable before the first connect
    write(f"{subsys}/attr_serial", FABRICS_SERIAL)
    backing = "/tmp/ebs-fabrics-ns1.img"
    with open(backing, "wb") as f:
        f.truncate(16 * 1024 * 1024)
    ns = f"{subsys}/namespaces/1"
    os.mkdir(ns)
    write(f"{ns}/device_path", backing)
    write(f"{ns}/buffered_io", "1")  # tmpfs has no O_DIRECT
    write(f"{ns}/enable", "1")
    port = f"{root}/ports/1"
    os.mkdir(port)
    write(f"{port}/addr_trtype", "tcp")
    write(f"{port}/addr_adrfam", "ipv4")
    write(f"{port}/addr_traddr", "127.0.0.1")
    write(f"{port}/addr_trsvcid", "4420")
    os.symlink(subsys, f"{port}/subsystems/{FABRICS_NQN}")

    fd = os.open("/dev/nvme-fabrics", os.O_RDWR)
    try:
        os.write(fd, f"transport=tcp,traddr=127.0.0.1,trsvcid=4420,nqn={FABRICS_NQN}".encode())
        reply = os.read(fd, 4096).decode(errors="replace").strip()
    finally:
        os.close(fd)

    def new_controller() -> str | None:
        for name in set(listdir("/sys/class/nvme")) - before:
            if read_text(f"/sys/class/nvme/{name}/serial") == FABRICS_SERIAL:
                return name
        return None

    controller = wait_for(new_controller, attempts=100, interval=0.1)
    if controller is None:
        raise RuntimeError(f"no controller with serial {FABRICS_SERIAL} after connect ({reply})")

    def namespace_nodes() -> list[str]:
        # nvmeXnY (no multipath) or the multipath head nvmeZnY beside nvmeXcZnY
        blocks = [b for b in listdir("/sys/block") if b.startswith("nvme")]
        mine = []
        for b in blocks:
            link = os.path.realpath(f"/sys/block/{b}/device")
            if read_text(f"{link}/serial") == FABRICS_SERIAL and os.path.exists(f"/dev/{b}"):
                mine.append(b)
        return mine

    namespaces = wait_for(namespace_nodes, attempts=100, interval=0.1)
    return {
        "reply": reply,
        "controller": controller,
        "controller_path": f"/dev/{controller}",
        "namespaces": namespaces,
        "model": read_text(f"/sys/class/nvme/{controller}/model"),
        "serial": read_text(f"/sys/class/nvme/{controller}/serial"),
        "transport": read_text(f"/sys/class/nvme/{controller}/transport"),
        "sysfs": sysfs_snapshot(),
    }


# --------------------------------------------------------------------------- exporter


def exporter_available() -> bool:
    try:
        return importlib.util.find_spec("ebs_exporter.__main__") is not None
    except ImportError:
        return False


def scrape(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            body = response.read().decode("utf-8", "replace")
            return {"status": response.status, "content_type": response.headers.get("Content-Type"), "text": body}
    except OSError as exc:
        return {"error": repr(exc)}


def parse_exposition(text: str) -> dict[str, Any]:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        samples = [
            {"name": s.name, "labels": dict(s.labels), "value": s.value}
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]
    except Exception as exc:
        return {"parsed": False, "error": repr(exc)}
    return {"parsed": True, "samples": samples}


def run_exporter(config_path: str) -> dict[str, Any]:
    if not exporter_available():
        return {"available": False}
    from ebs_exporter.testing import Exporter

    command = [sys.executable, "-I", "-B", os.path.abspath(__file__), config_path, "--exec-module", "ebs_exporter"]
    args = ["--path.sysfs=/sys", "--path.dev=/dev"]
    result: dict[str, Any] = {"available": True, "argv": args}
    try:
        running = Exporter(args, timeout=60, command=command)
    except RuntimeError as exc:  # it never served: the log is in the message
        return {**result, "scrapes": [], "alive_after_scrapes": False, "log_tail": str(exc)[-4000:]}
    try:
        scrapes = []
        for _ in range(2):
            if running.proc.poll() is not None:
                break
            got = scrape(f"http://{running.host}:{running.port}{running.path}")
            if "text" in got:
                got.update(parse_exposition(got["text"]))
            scrapes.append(got)
            time.sleep(0.5)
        result["scrapes"] = scrapes
        result["alive_after_scrapes"] = running.proc.poll() is None
    finally:
        result["returncode"] = running.stop(timeout=20)
        result["log_tail"] = running.log_text()[-4000:]
    return result


# --------------------------------------------------------------------------- main


def run_checks(config_path: str, config: dict[str, Any]) -> None:
    out = Reporter(config["prefix"])
    if config.get("ebs_pages"):  # harness.py --ebs-pages: only serve the dump and scrape
        importlib.import_module("tests.qemu.guest_emulated").scrape_pages(out, config_path, config["ebs_pages"])
        out.emit({"event": "done"})
        return
    out.step(
        "environment",
        lambda: {
            "kernel": platform.release(),
            "python": sys.version,
            "executable": sys.executable,
            "nvme_ebs_spec": str(importlib.util.find_spec("nvme_ebs")),
            "sysfs": sysfs_snapshot(),
        },
    )
    out.step("raw_baseline", raw_baseline)
    for path in ("/dev/nvme0", "/dev/nvme0n1"):
        out.step(f"identify:{path}", functools.partial(identify, path))
        out.step(f"read_stats:{path}", functools.partial(read_stats, path))
    out.step("discover:before_fabrics", discover)
    target = out.step("fabrics_target", setup_fabrics_target)
    if target is not None:
        out.step("discover:after_fabrics", discover)
        paths = [target["controller_path"]] + [f"/dev/{n}" for n in target["namespaces"]]
        for path in paths:
            out.step(f"fabrics_identify:{path}", functools.partial(identify, path))
            out.step(f"fabrics_read_stats:{path}", functools.partial(read_stats, path))
        out.step("ebs_exporter", functools.partial(run_exporter, config_path))
    emulated = out.step("emulated_import", lambda: importlib.import_module("tests.qemu.guest_emulated") and True)
    if emulated:
        importlib.import_module("tests.qemu.guest_emulated").run(out, config_path)
    out.emit({"event": "done"})


def main(argv: list[str]) -> int:
    config_path = argv[1]
    config = load_config(config_path)
    adopt_host_paths(config)
    if len(argv) > 3 and argv[2] == "--exec-module":
        module = argv[3]
        sys.argv = [module, *argv[4:]]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0
    run_checks(config_path, config)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
