"""One emulated volume: its identity, its page files and its small namespace.

A volume named by SERIAL reads, from its page directory:

* ``SERIAL.d0``: the log page 0xD0 it answers (re-read whenever the file changes);
* ``SERIAL.id`` (optional): its Identify Controller page; otherwise one is built from the
  serial with model "Amazon Elastic Block Store" and mapping "sdf";
* ``SERIAL.fault`` (optional): how to misbehave on the next 0xD0 reads, one word and an
  argument: ``hold SECONDS``, ``drop`` (close the connection, no answer) or
  ``status 0xSTATUS`` (answer that NVMe status). Removing the file ends the fault.

The identify page gets the fields a Linux fabrics host needs on top of the identity
(controller id, version, queue and capsule sizes, keep-alive, SGL support, subsystem NQN),
outside the bytes nvme_ebs reads (VID, serial, model, firmware, offset 3072).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import struct
import threading
from pathlib import Path

from nvme_ebs.testing import PAGE_SIZE, encode_identify

log = logging.getLogger("nvmetcp")

NQN_PREFIX = "nqn.2024-01.io.example.ebs-emulator:"
BLOCK_SIZE = 512
NAMESPACE_BLOCKS = 8 * 1024 * 1024 // BLOCK_SIZE
NVME_VERSION = 0x00010400  # 1.4.0
MAX_QUEUE_ENTRIES = 128
IO_CAPSULE_UNITS = (64 + 8192) // 16  # IOCCSZ: the command plus 8 KiB of in-capsule data
MDTS = 5  # 2^5 pages of 4 KiB: 128 KiB per command

SMART_LOG_SIZE = 512


@dataclasses.dataclass(frozen=True)
class Fault:
    kind: str  # "hold", "drop" or "status"
    value: float = 0.0


class _CachedFile:
    """A file's bytes, read again only when its size or mtime changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: tuple[int, int] | None = None
        self._data: bytes | None = None
        self._lock = threading.Lock()

    def read(self) -> bytes | None:
        with self._lock:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                self._key, self._data = None, None
                return None
            key = (st.st_mtime_ns, st.st_size)
            if key != self._key:
                self._data = self.path.read_bytes()
                self._key = key
            return self._data


def nqn_for(serial: str) -> str:
    return NQN_PREFIX + serial


class Volume:
    """What one subsystem serves; shared by every connection to it."""

    def __init__(self, serial: str, pages: Path, port: int) -> None:
        self.serial = serial
        self.nqn = nqn_for(serial)
        self.port = port
        self._log = _CachedFile(pages / f"{serial}.d0")
        self._identify = _CachedFile(pages / f"{serial}.id")
        self._fault = _CachedFile(pages / f"{serial}.fault")
        self.namespace = bytearray(NAMESPACE_BLOCKS * BLOCK_SIZE)
        self.namespace_lock = threading.Lock()

    def stats_page(self) -> bytes:
        """The 0xD0 page as served: the file, padded or cut to a page (empty without a file)."""
        data = self._log.read() or b""
        return data[:PAGE_SIZE].ljust(PAGE_SIZE, b"\0")

    def fault(self) -> Fault | None:
        raw = self._fault.read()
        if not raw:
            return None
        words = raw.decode("ascii", "replace").split()
        try:
            kind, value = words[0], (words[1:] or ["0"])[0]
            if kind not in ("hold", "drop", "status"):
                raise ValueError(f"unknown fault {kind!r}")
            return Fault(kind, float(int(value, 0) if kind == "status" else value))
        except ValueError as exc:
            log.warning("%s: ignoring %s: %s", self.serial, self._fault.path, exc)
            return None

    def identify_controller(self, cntlid: int) -> bytes:
        page = bytearray(self._identify.read() or encode_identify(self.serial, block_device_mapping="sdf"))
        page = page[:PAGE_SIZE].ljust(PAGE_SIZE, b"\0")
        page[77] = MDTS
        struct.pack_into("<HI", page, 78, cntlid, NVME_VERSION)
        page[76] = 0  # CMIC: one controller per subsystem, so no multipath head
        struct.pack_into("<I", page, 92, 1 << 8)  # OAES: namespace attribute notices (the host then sends an AER)
        page[258], page[259], page[261] = 3, 3, 0  # ACL, AERL (0's based); LPA: no optional logs
        struct.pack_into("<H", page, 320, 10)  # KAS: keep-alive granularity 100 ms units, required
        page[512], page[513] = 0x66, 0x44  # SQES, CQES
        struct.pack_into("<HI", page, 514, MAX_QUEUE_ENTRIES, 1)  # MAXCMD, NN
        struct.pack_into("<I", page, 536, 0x1 | (1 << 20))  # SGLS: supported; offset (in-capsule) data
        nqn = self.nqn.encode()
        page[768:1024] = nqn.ljust(256, b"\0")
        struct.pack_into("<IIHBB", page, 1792, IO_CAPSULE_UNITS, 1, 0, 0, 1)  # IOCCSZ IORCSZ ICDOFF FCATT MSDBD
        return bytes(page)

    def identify_namespace(self) -> bytes:
        page = bytearray(PAGE_SIZE)
        struct.pack_into("<QQQ", page, 0, NAMESPACE_BLOCKS, NAMESPACE_BLOCKS, NAMESPACE_BLOCKS)
        page[104:120] = self.nguid()
        struct.pack_into("<HBB", page, 128, 0, BLOCK_SIZE.bit_length() - 1, 0)  # LBAF0: 512-byte blocks
        return bytes(page)

    def nguid(self) -> bytes:
        return self.serial.encode("ascii").ljust(16, b"\0")[-16:]

    def namespace_descriptors(self) -> bytes:
        page = bytearray(PAGE_SIZE)
        page[0:4] = bytes([2, 16, 0, 0])  # NIDT 2: NGUID, 16 bytes
        page[4:20] = self.nguid()
        page[20:25] = bytes([4, 1, 0, 0, 0])  # NIDT 4: command set identifier, NVM
        return bytes(page)
