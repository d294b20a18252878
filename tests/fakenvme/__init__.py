"""A fake NVMe controller for tests: an LD_PRELOAD library answering real ioctls.

``fakenvme.c`` interposes ``ioctl()``. An ``NVME_IOCTL_ADMIN_CMD`` on a node under
``$FAKENVME_ROOT/dev/`` is answered from ``$FAKENVME_ROOT/ctl/<node>/``, re-read on
every call; :class:`FakeNvme` writes that tree. Control files:

``identify``, ``log_d0``
    bytes answered to Identify Controller (4096 bytes) and Get Log Page 0xD0
    (NUMD must match data_len; LPO is an offset into the file); zero-filled.
``errno`` / ``status``
    fail with -1 and that errno / return that NVMe status.
``eintr``
    fail with EINTR that many times, counting down.
``delay_ms``
    hold each command until that long after it came in; polled, so lowering
    or deleting it releases waiting calls.
``commands.log``
    one ``key=value`` line per command received (hex numbers).

Anything else is answered 0x4002 (Invalid Field, DNR), as is a missing answer
file; a node without a ctl dir fails ENOTTY, a removed node still open ENODEV.
"""

from __future__ import annotations

import ctypes
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CFLAGS",
    "NVME_IOCTL_ADMIN_CMD",
    "AdminResult",
    "FakeNvme",
    "PassthruCmd",
    "admin_cmd",
    "build_preload",
    "ensure_preloaded",
]

SOURCE = Path(__file__).with_name("fakenvme.c")
LIBRARY_NAME = "libfakenvme.so"
CFLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-Wextra")
DEFAULT_BUILD_DIR = Path(__file__).resolve().parents[2] / "build" / "fakenvme"
NVME_IOCTL_ADMIN_CMD = 0xC0484E41
_REEXEC_MARK = "FAKENVME_REEXECED"  # set across our own execv: detects a loop
_CONTROL_FILES = ("identify", "log_d0", "errno", "status", "eintr", "delay_ms")


def build_preload(build_dir: Path) -> Path:
    """Compile fakenvme.c into build_dir unless the library is up to date."""
    out = build_dir / LIBRARY_NAME
    if out.exists() and out.stat().st_mtime_ns >= SOURCE.stat().st_mtime_ns:
        return out
    build_dir.mkdir(parents=True, exist_ok=True)
    # Build beside and rename: a parallel build or a loaded copy stays whole.
    tmp = build_dir / f".{LIBRARY_NAME}.{os.getpid()}"
    cmd = [os.environ.get("CC", "cc"), *CFLAGS, "-o", str(tmp), str(SOURCE), "-ldl"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"building {LIBRARY_NAME} failed:\n{proc.stderr}")
    os.replace(tmp, out)
    return out


def _preload_mapped() -> bool:
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        return any(f"/{LIBRARY_NAME}" in line for line in maps)


def ensure_preloaded(build_dir: Path | None = None) -> None:
    """Re-exec this interpreter, same arguments, with the fake in LD_PRELOAD.

    Call it from ``pytest_configure`` in conftest.py, not at import time: pytest
    imports conftest.py with stdout and stderr redirected to capture files, and
    a process exec'd then would write its whole report into them. Does nothing
    when the library is already mapped or FAKENVME_NO_REEXEC is set.
    """
    if os.environ.get("FAKENVME_NO_REEXEC"):
        return
    if _preload_mapped():
        os.environ.pop(_REEXEC_MARK, None)
        return
    if os.environ.get(_REEXEC_MARK):
        raise RuntimeError(f"LD_PRELOAD={os.environ.get('LD_PRELOAD')} did not load")
    if type(sys.stdout).__module__.startswith("_pytest"):
        raise RuntimeError("ensure_preloaded() under pytest capture: call it from pytest_configure")
    lib = str(build_preload(build_dir or DEFAULT_BUILD_DIR).resolve())
    os.environ["LD_PRELOAD"] = " ".join(filter(None, [os.environ.get("LD_PRELOAD"), lib]))
    os.environ[_REEXEC_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *_orig_argv()[1:]])


def _orig_argv() -> list[str]:
    """The interpreter's own command line: sys.orig_argv (3.10+) or, on 3.9, /proc/self/cmdline."""
    orig_argv: list[str] | None = getattr(sys, "orig_argv", None)
    if orig_argv is not None:
        return orig_argv
    with open("/proc/self/cmdline", "rb") as f:
        return [os.fsdecode(arg) for arg in f.read().split(b"\0")[:-1]]


def _write_atomic(path: Path, data: bytes) -> None:
    # A running process re-reads control files: it must never see half of one.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _parse_value(text: str) -> int | str:
    if text.startswith("0x"):
        return int(text, 16)
    return int(text) if text.isdigit() else text


class FakeNvme:
    """Fake controllers under root: device nodes in root/dev, answers in root/ctl."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "dev").mkdir(parents=True, exist_ok=True)
        (root / "ctl").mkdir(exist_ok=True)

    def env(self) -> dict[str, str]:
        return {"FAKENVME_ROOT": str(self.root)}

    def dev_path(self, name: str) -> Path:
        return self.root / "dev" / name

    def ctl_dir(self, name: str) -> Path:
        return self.root / "ctl" / name

    def add(self, name: str, identify: bytes, log_page: bytes | None) -> Path:
        """A fresh controller: new answers, no failures; commands.log is kept."""
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad device name {name!r}")
        ctl = self.ctl_dir(name)
        ctl.mkdir(exist_ok=True)
        for control in _CONTROL_FILES:
            (ctl / control).unlink(missing_ok=True)
        self.set_identify(name, identify)
        self.set_log_page(name, log_page)
        return self.make_node(name)

    def make_node(self, name: str) -> Path:
        """The device node of controller `name`, made unless it exists."""
        path = self.dev_path(name)
        if not path.exists():
            _make_node(path)
        return path

    def remove(self, name: str) -> None:
        """Unplug: opening fails ENOENT, an fd still open gets ENODEV."""
        self.dev_path(name).unlink()

    def set_identify(self, name: str, data: bytes | None) -> None:
        self._set(name, "identify", data)

    def set_log_page(self, name: str, data: bytes | None) -> None:
        self._set(name, "log_d0", data)

    def fail_errno(self, name: str, err: int | None) -> None:
        self._set(name, "errno", None if err is None else f"{err}\n".encode())

    def fail_status(self, name: str, status: int | None) -> None:
        self._set(name, "status", None if status is None else f"{status:#x}\n".encode())

    def set_eintr(self, name: str, n: int) -> None:
        self._set(name, "eintr", f"{n}\n".encode() if n > 0 else None)

    def set_delay_ms(self, name: str, ms: int | None) -> None:
        self._set(name, "delay_ms", None if ms is None else f"{ms}\n".encode())

    def commands(self, name: str) -> list[dict[str, int | str]]:
        try:
            text = (self.ctl_dir(name) / "commands.log").read_text()
        except FileNotFoundError:
            return []
        return [
            {key: _parse_value(value) for key, value in (f.split("=", 1) for f in line.split())}
            for line in text.splitlines()
        ]

    def clear_commands(self, name: str) -> None:
        (self.ctl_dir(name) / "commands.log").unlink(missing_ok=True)

    def _set(self, name: str, control: str, data: bytes | None) -> None:
        path = self.ctl_dir(name) / control
        if data is None:
            path.unlink(missing_ok=True)
        else:
            _write_atomic(path, data)


def _make_node(path: Path) -> None:
    """A character device (the null device, 1:3) if we may, else a plain file."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        os.close(os.open(path, os.O_RDONLY))  # fails on a nodev mount
        return
    except PermissionError:
        path.unlink(missing_ok=True)
    path.touch(0o600)


class PassthruCmd(ctypes.Structure):
    """struct nvme_passthru_cmd from <linux/nvme_ioctl.h> (72 bytes)."""

    _fields_ = [
        ("opcode", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("rsvd1", ctypes.c_uint16),
        ("nsid", ctypes.c_uint32),
        ("cdw2", ctypes.c_uint32),
        ("cdw3", ctypes.c_uint32),
        ("metadata", ctypes.c_uint64),
        ("addr", ctypes.c_uint64),
        ("metadata_len", ctypes.c_uint32),
        ("data_len", ctypes.c_uint32),
        *((f"cdw{i}", ctypes.c_uint32) for i in range(10, 16)),
        ("timeout_ms", ctypes.c_uint32),
        ("result", ctypes.c_uint32),
    ]


@dataclass(frozen=True)  # not slots=True: that is 3.10+, and cibuildwheel tests on 3.9
class AdminResult:
    ret: int  # ioctl return value: 0, -1 or an NVMe status
    errno: int  # errno after the call (meaningful when ret == -1)
    data: bytes  # the data buffer (data_len bytes, pre-filled with GUARD_BYTE)
    tail: bytes  # guard bytes after the buffer: must come back untouched
    result: int  # the command's result field


GUARD_BYTE = 0xA5
_libc = ctypes.CDLL(None, use_errno=True)
_ioctl = _libc.ioctl
_ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_ioctl.restype = ctypes.c_int


def admin_cmd(
    fd: int, opcode: int, *, data_len: int = 4096, guard: int = 64, with_buffer: bool = True, **fields: int
) -> AdminResult:
    """Issue NVME_IOCTL_ADMIN_CMD through libc's ioctl (so LD_PRELOAD sees it)."""
    buf = ctypes.create_string_buffer(bytes([GUARD_BYTE]) * (data_len + guard))
    cmd = PassthruCmd(opcode=opcode, data_len=data_len, **fields)
    if with_buffer:
        cmd.addr = ctypes.addressof(buf)
    ctypes.set_errno(0)
    ret = _ioctl(fd, NVME_IOCTL_ADMIN_CMD, ctypes.byref(cmd))
    err = ctypes.get_errno() if ret == -1 else 0
    raw = buf.raw
    return AdminResult(ret, err, raw[:data_len], raw[data_len : data_len + guard], cmd.result)
