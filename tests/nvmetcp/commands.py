"""The NVMe commands this target executes: Fabrics, admin and NVM I/O.

:func:`execute` turns one submission queue entry (and the data the host sent with it) into
an :class:`Answer`: the NVMe status, the completion's result dword and the data to return.
What is not implemented is answered, never left hanging: Invalid Command Opcode or
Invalid Field in Command, with Do Not Retry.
"""

from __future__ import annotations

import dataclasses
import itertools
import struct
import threading
from typing import Any

from .volume import BLOCK_SIZE, MAX_QUEUE_ENTRIES, NAMESPACE_BLOCKS, NVME_VERSION, SMART_LOG_SIZE, Volume

SQE = struct.Struct("<BBHIIIQQIxxxB6I")  # opcode flags cid nsid cdw2 cdw3 mptr sgl.addr sgl.len sgl.type cdw10-15

DNR = 0x4000
SUCCESS = 0x0
INVALID_OPCODE = DNR | 0x01
INVALID_FIELD = DNR | 0x02
INVALID_NAMESPACE = DNR | 0x0B
LBA_OUT_OF_RANGE = DNR | 0x80
CONNECT_INVALID_PARAMETERS = DNR | 0x100 | 0x82

FABRICS = 0x7F
FCTYPE_PROPERTY_SET, FCTYPE_CONNECT, FCTYPE_PROPERTY_GET = 0x00, 0x01, 0x04
ADMIN_GET_LOG_PAGE, ADMIN_IDENTIFY, ADMIN_SET_FEATURES, ADMIN_GET_FEATURES = 0x02, 0x06, 0x09, 0x0A
ADMIN_ASYNC_EVENT, ADMIN_KEEP_ALIVE = 0x0C, 0x18
IO_FLUSH, IO_WRITE, IO_READ = 0x00, 0x01, 0x02
FEATURE_NUM_QUEUES, FEATURE_ASYNC_EVENT_CONFIG, FEATURE_KEEP_ALIVE = 0x07, 0x0B, 0x0F
PROP_CAP, PROP_VS, PROP_CC, PROP_CSTS = 0x00, 0x08, 0x14, 0x1C
LOG_ERROR, LOG_SMART, LOG_FIRMWARE, LOG_EBS = 0x01, 0x02, 0x03, 0xD0
MAX_IO_QUEUES = 4
# CAP: MQES (0's based), CQR, TO = 15 s in 500 ms units, CSS: the NVM command set
CAP = (MAX_QUEUE_ENTRIES - 1) | (1 << 16) | (30 << 24) | (1 << 37)


@dataclasses.dataclass(frozen=True)
class Command:
    opcode: int
    flags: int
    cid: int
    nsid: int
    sgl_length: int
    sgl_type: int
    cdw: tuple[int, ...]  # cdw10..cdw15
    raw: bytes

    @classmethod
    def parse(cls, sqe: bytes) -> Command:
        opcode, flags, cid, nsid, _c2, _c3, _mptr, _addr, length, sgl_type, *cdw = SQE.unpack(sqe)
        return cls(opcode, flags, cid, nsid, length, sgl_type, tuple(cdw), sqe)

    @property
    def fctype(self) -> int:
        return self.raw[4]

    def host_to_controller(self) -> bool:
        """Whether this command's data flows from the host (the opcode's low bits, or Connect)."""
        if self.opcode == FABRICS:
            return self.fctype == FCTYPE_CONNECT
        return self.opcode & 0x3 == 0x1

    def record(self) -> dict[str, Any]:
        """The command as the host delivered it, for the emulator's command log."""
        out: dict[str, Any] = {
            "opcode": self.opcode,
            "cid": self.cid,
            "nsid": self.nsid,
            "data_len": self.sgl_length,
            "sgl_type": self.sgl_type,
        }
        out.update({f"cdw{10 + i}": v for i, v in enumerate(self.cdw)})
        if self.opcode == FABRICS:
            out["fctype"] = self.fctype
        return out


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int = SUCCESS
    result: int = 0
    data: bytes = b""
    hold: float | None = None  # seconds to wait before answering; inf: never (AER)
    drop: bool = False  # close the connection instead of answering


class Controller:
    """The state of one controller (one admin queue and its I/O queues), from Connect on."""

    _ids = itertools.count(1)

    def __init__(self, volume: Volume) -> None:
        self.volume = volume
        self.cntlid = (next(self._ids) - 1) % 0xFFEF + 1  # 1..0xFFEF: 0xFFF0 and up are reserved
        self.cc = 0
        self.features = {FEATURE_NUM_QUEUES: 0, FEATURE_ASYNC_EVENT_CONFIG: 0, FEATURE_KEEP_ALIVE: 0}
        self.lock = threading.Lock()

    @property
    def csts(self) -> int:
        ready = self.cc & 0x1
        shutdown = 0x2 << 2 if (self.cc >> 14) & 0x3 else 0  # SHST: shutdown complete
        return ready | shutdown


def property_command(ctrl: Controller, cmd: Command) -> Answer:
    size8 = cmd.raw[40] & 0x1
    offset = struct.unpack_from("<I", cmd.raw, 44)[0]
    if cmd.fctype == FCTYPE_PROPERTY_GET:
        values = {PROP_CAP: CAP, PROP_VS: NVME_VERSION, PROP_CC: ctrl.cc, PROP_CSTS: ctrl.csts}
        if offset not in values or (offset == PROP_CAP) != bool(size8):
            return Answer(INVALID_FIELD)
        return Answer(result=values[offset])
    if offset != PROP_CC or size8:
        return Answer(INVALID_FIELD)
    ctrl.cc = struct.unpack_from("<I", cmd.raw, 48)[0]
    return Answer()


def identify(ctrl: Controller, cmd: Command) -> Answer:
    cns = cmd.cdw[0] & 0xFF
    volume = ctrl.volume
    if cns == 0x01:
        return Answer(data=volume.identify_controller(ctrl.cntlid))
    if cns == 0x02:  # active namespaces above NSID
        return Answer(data=struct.pack("<I", 1).ljust(4096, b"\0") if cmd.nsid < 1 else bytes(4096))
    if cns == 0x06:  # I/O command set specific controller data (NVM: no extra limits)
        return Answer(data=bytes(4096)) if cmd.cdw[1] >> 24 == 0 else Answer(INVALID_FIELD)
    if cns in (0x00, 0x03):
        if cmd.nsid != 1:
            return Answer(INVALID_NAMESPACE)
        return Answer(data=volume.identify_namespace() if cns == 0 else volume.namespace_descriptors())
    return Answer(INVALID_FIELD)


def get_log_page(ctrl: Controller, cmd: Command) -> Answer:
    lid = cmd.cdw[0] & 0xFF
    length = (((cmd.cdw[0] >> 16) | ((cmd.cdw[1] & 0xFFFF) << 16)) + 1) * 4
    offset = cmd.cdw[2] | cmd.cdw[3] << 32
    if lid == LOG_EBS:
        fault = ctrl.volume.fault()
        page = ctrl.volume.stats_page()
        if fault is not None and fault.kind == "drop":
            return Answer(drop=True)
        if fault is not None and fault.kind == "status":
            return Answer(int(fault.value))
        hold = fault.value if fault is not None and fault.kind == "hold" else None
        return Answer(data=page[offset : offset + length].ljust(length, b"\0"), hold=hold)
    sizes = {LOG_ERROR: 64, LOG_SMART: SMART_LOG_SIZE, LOG_FIRMWARE: 512}
    if lid not in sizes:
        return Answer(INVALID_FIELD)
    return Answer(data=bytes(length))  # no errors, a cool idle drive, one firmware slot


def features(ctrl: Controller, cmd: Command) -> Answer:
    fid = cmd.cdw[0] & 0xFF
    if fid not in ctrl.features:
        return Answer(INVALID_FIELD)
    if cmd.opcode == ADMIN_GET_FEATURES:
        return Answer(result=ctrl.features[fid])
    value = cmd.cdw[1]
    if fid == FEATURE_NUM_QUEUES:
        granted = min(value & 0xFFFF, (value >> 16) & 0xFFFF, MAX_IO_QUEUES - 1)
        value = granted | granted << 16
    ctrl.features[fid] = value
    return Answer(result=value)


def admin(ctrl: Controller, cmd: Command) -> Answer:
    if cmd.opcode == FABRICS and cmd.fctype in (FCTYPE_PROPERTY_GET, FCTYPE_PROPERTY_SET):
        with ctrl.lock:
            return property_command(ctrl, cmd)
    if cmd.opcode == ADMIN_IDENTIFY:
        return identify(ctrl, cmd)
    if cmd.opcode == ADMIN_GET_LOG_PAGE:
        return get_log_page(ctrl, cmd)
    if cmd.opcode in (ADMIN_SET_FEATURES, ADMIN_GET_FEATURES):
        with ctrl.lock:
            return features(ctrl, cmd)
    if cmd.opcode == ADMIN_KEEP_ALIVE:
        return Answer()
    if cmd.opcode == ADMIN_ASYNC_EVENT:
        return Answer(hold=float("inf"))  # no event ever happens here
    if cmd.opcode == FABRICS:
        return Answer(INVALID_FIELD)
    return Answer(INVALID_OPCODE)


def io(ctrl: Controller, cmd: Command, data: bytes) -> Answer:
    volume = ctrl.volume
    if cmd.opcode == IO_FLUSH:
        return Answer()
    if cmd.opcode not in (IO_READ, IO_WRITE):
        return Answer(INVALID_OPCODE)
    if cmd.nsid != 1:
        return Answer(INVALID_NAMESPACE)
    slba = cmd.cdw[0] | cmd.cdw[1] << 32
    blocks = (cmd.cdw[2] & 0xFFFF) + 1
    if slba + blocks > NAMESPACE_BLOCKS:
        return Answer(LBA_OUT_OF_RANGE)
    start, end = slba * BLOCK_SIZE, (slba + blocks) * BLOCK_SIZE
    if cmd.sgl_length != end - start:
        return Answer(INVALID_FIELD)
    with volume.namespace_lock:
        if cmd.opcode == IO_READ:
            return Answer(data=bytes(volume.namespace[start:end]))
        volume.namespace[start:end] = data
    return Answer()
