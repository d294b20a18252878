"""Keeps only CAP_SYS_ADMIN: the one capability the NVMe admin passthrough needs.

The DaemonSet must run privileged (the device cgroup allows no other way to open the host's
NVMe nodes), which hands the process every capability. Right at start-up, before any thread
exists (capabilities are per thread), the exporter drops every other one from its bounding,
permitted, effective and inheritable sets and sets no_new_privs, so that a compromise of the
process gains far less than root. Linux only; where it cannot (not root, or no CAP_SETPCAP),
it says so and goes on with what it has.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

CAP_SYS_ADMIN = 21
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
LINUX_CAPABILITY_VERSION_3 = 0x20080522
SYS_CAPSET = {"x86_64": 126, "aarch64": 91}


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32))


def _last_cap() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def effective_capabilities(pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def keep_only_sys_admin() -> str:
    """Drops every capability but CAP_SYS_ADMIN. Returns what happened, for the log."""
    if threading.active_count() != 1:
        raise RuntimeError("capabilities must be dropped before any thread starts")
    keep = 1 << CAP_SYS_ADMIN
    if effective_capabilities() & ~keep == 0:
        return "no capability beyond CAP_SYS_ADMIN to drop"
    machine = os.uname().machine
    if machine not in SYS_CAPSET:
        return f"capabilities not dropped: capset syscall number unknown on {machine}"
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    for cap in range(_last_cap() + 1):
        if cap != CAP_SYS_ADMIN and libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            return f"capabilities not dropped: prctl(PR_CAPBSET_DROP): {os.strerror(ctypes.get_errno())}"
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    has_admin = effective_capabilities() & keep
    low = _CapData(has_admin, has_admin, 0)  # capabilities 0-31
    data = (_CapData * 2)(low, _CapData(0, 0, 0))  # 32-63: none
    if libc.syscall(SYS_CAPSET[machine], ctypes.byref(header), data) != 0:
        return f"capabilities not dropped: capset: {os.strerror(ctypes.get_errno())}"
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    return "kept only CAP_SYS_ADMIN" if has_admin else "dropped every capability (CAP_SYS_ADMIN was not there)"
