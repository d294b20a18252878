"""The NVMe/TCP emulator (tests/nvmetcp) against a host written here, on the host's loopback.

The kernel tests connect the real Linux driver to it inside QEMU; these check, quickly and
without a guest, what the kernel never sends: unimplemented commands, malformed PDUs, data
through R2T, and the page files being re-read.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.nvmetcp import commands, pdu, server, volume
from tests.nvmetcp.pages import EBS_A

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:host"


class Host:
    """One queue, spoken to PDU by PDU."""

    def __init__(self, port: int, nqn: str, qid: int = 0, cntlid: int = 0xFFFF) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.cid = 0
        self.sock.sendall(pdu.COMMON.pack(pdu.ICREQ, 0, 128, 0, 128) + pdu.ICREQ_BODY.pack(0, 0, 0, 0) + bytes(112))
        kind, header, _ = self.receive()
        assert kind == pdu.ICRESP and pdu.ICRESP_BODY.unpack_from(header, 8) == (0, 0, 0, pdu.MAX_H2C_DATA)
        if nqn:
            data = bytearray(1024)
            struct.pack_into("<H", data, 16, cntlid)
            data[256 : 256 + len(nqn)] = nqn.encode()
            data[512 : 512 + len(HOSTNQN)] = HOSTNQN.encode()
            connect = bytearray(self.sqe(commands.FABRICS, 0, length=1024, sgl_type=0x01))
            connect[4] = commands.FCTYPE_CONNECT
            struct.pack_into("<HH", connect, 42, qid, 31)
            status, result, _ = self.command(bytes(connect), bytes(data))
            assert status == 0
            self.cntlid = result & 0xFFFF

    def sqe(self, opcode: int, nsid: int, *cdw: int, length: int = 0, sgl_type: int = 0x5A) -> bytes:
        self.cid += 1
        dwords = (list(cdw) + [0] * 6)[:6]
        return commands.SQE.pack(opcode, 0, self.cid, nsid, 0, 0, 0, 0, length, sgl_type, *dwords)

    def send_capsule(self, sqe: bytes, data: bytes = b"") -> None:
        pdo = pdu.CMD_HLEN if data else 0
        self.sock.sendall(pdu.COMMON.pack(pdu.CMD, 0, pdu.CMD_HLEN, pdo, pdu.CMD_HLEN + len(data)) + sqe + data)

    def receive(self) -> tuple[int, bytes, bytes]:
        common = self._exactly(8)
        kind, _flags, hlen, _pdo, plen = pdu.COMMON.unpack(common)
        rest = self._exactly(plen - 8)
        return kind, common + rest[: hlen - 8], rest[hlen - 8 :]

    def _exactly(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
        return out

    def command(self, sqe: bytes, data: bytes = b"") -> tuple[int, int, bytes]:
        """Sends one command; returns (status, result, data read)."""
        self.send_capsule(sqe, data)
        read = b""
        while True:
            kind, header, payload = self.receive()
            if kind == pdu.C2H_DATA:
                read += payload
                continue
            assert kind == pdu.RSP, kind
            result, _head, _sqid, cid, status = pdu.CQE.unpack_from(header, 8)
            assert cid == struct.unpack_from("<H", sqe, 2)[0]
            return status >> 1, result, read

    def admin(self, opcode: int, nsid: int, *cdw: int, length: int = 0) -> tuple[int, int, bytes]:
        return self.command(self.sqe(opcode, nsid, *cdw, length=length))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[volume.Volume, Path, Path]]:
    EBS_A.write_files(tmp_path)
    vol = volume.Volume(EBS_A.serial, tmp_path, 0)
    record = tmp_path / "commands.jsonl"
    emulator = server.Emulator("127.0.0.1", [vol], str(record))
    emulator.start()
    yield vol, tmp_path, record
    emulator.stop()


def test_identify_and_the_stats_page(served: tuple[volume.Volume, Path, Path]) -> None:
    vol, pages_dir, record = served
    host = Host(vol.port, vol.nqn)
    status, _, ident = host.admin(commands.ADMIN_IDENTIFY, 0, 1, length=4096)
    assert status == 0 and ident[24:50] == b"Amazon Elastic Block Store"
    assert struct.unpack_from("<H", ident, 78)[0] == host.cntlid
    status, _, page = host.admin(commands.ADMIN_GET_LOG_PAGE, 1, 0x03FF00D0, length=4096)
    assert (status, page) == (0, EBS_A.stats_page())
    changed = EBS_A.stats_page(magic=0x12345678)
    (pages_dir / f"{EBS_A.serial}.d0").write_bytes(changed)
    assert host.admin(commands.ADMIN_GET_LOG_PAGE, 1, 0x03FF00D0, length=4096)[2] == changed  # re-read
    logged = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(c["opcode"], c.get("fctype")) for c in logged][:2] == [(0x7F, 1), (0x06, None)]
    assert {(c["nsid"], c["cdw10"], c["data_len"]) for c in logged if c["opcode"] == 2} == {(1, 0x03FF00D0, 4096)}


@pytest.mark.parametrize(
    ("opcode", "cdw10", "status"),
    [
        (0x80, 0, commands.INVALID_OPCODE),  # Format NVM
        (0x10, 0, commands.INVALID_OPCODE),  # Firmware Commit
        (commands.ADMIN_IDENTIFY, 0x10, commands.INVALID_FIELD),  # CNS not served
        (commands.ADMIN_GET_LOG_PAGE, (127 << 16) | 0x05, commands.INVALID_FIELD),  # log page not served
        (commands.ADMIN_SET_FEATURES, 0x06, commands.INVALID_FIELD),  # volatile write cache
    ],
)
def test_what_is_not_implemented_is_answered(
    served: tuple[volume.Volume, Path, Path], opcode: int, cdw10: int, status: int
) -> None:
    vol, _, _ = served
    host = Host(vol.port, vol.nqn)
    started = time.monotonic()
    assert host.admin(opcode, 0, cdw10, length=512 if opcode == commands.ADMIN_GET_LOG_PAGE else 0)[0] == status
    assert time.monotonic() - started < 1


def test_write_through_r2t_then_read_back(served: tuple[volume.Volume, Path, Path]) -> None:
    vol, _, _ = served
    admin = Host(vol.port, vol.nqn)
    io = Host(vol.port, vol.nqn, qid=1, cntlid=admin.cntlid)
    data = bytes(range(256)) * 32  # 8 KiB, sent after an R2T in two H2CData PDUs
    sqe = io.sqe(commands.IO_WRITE, 1, 8, 0, 15, length=len(data))
    io.send_capsule(sqe)
    kind, header, _ = io.receive()
    assert kind == pdu.R2T
    cid, ttag, offset, length = pdu.DATA_BODY.unpack_from(header, 8)
    assert (cid, offset, length) == (io.cid, 0, len(data))
    for at in (0, 4096):
        body = pdu.DATA_BODY.pack(cid, ttag, at, 4096)
        flags = pdu.FLAG_DATA_LAST if at else 0
        io.sock.sendall(pdu.COMMON.pack(pdu.H2C_DATA, flags, 24, 24, 24 + 4096) + body + data[at : at + 4096])
    kind, header, _ = io.receive()
    assert kind == pdu.RSP and pdu.CQE.unpack_from(header, 8)[4] >> 1 == 0
    assert io.command(io.sqe(commands.IO_READ, 1, 8, 0, 15, length=len(data))) == (0, 0, data)
    assert io.command(io.sqe(commands.IO_READ, 1, volume.NAMESPACE_BLOCKS, 0, 0, length=512))[0] == (
        commands.LBA_OUT_OF_RANGE
    )


def test_a_malformed_pdu_closes_only_its_connection(
    served: tuple[volume.Volume, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    vol, _, record = served
    host = Host(vol.port, vol.nqn)
    host.sock.sendall(pdu.COMMON.pack(pdu.CMD, 0, 40, 0, 40) + bytes(32))  # a capsule with hlen 40
    kind, header, _ = host.receive()
    assert kind == pdu.C2H_TERM and pdu.TERM_BODY.unpack_from(header, 8)[0] == pdu.FES_INVALID_HEADER
    with pytest.raises(ConnectionError):
        host.receive()
    assert any("malformed PDU" in r.getMessage() and "hlen 40" in r.getMessage() for r in caplog.records)
    assert '"event": "malformed"' in record.read_text()
    assert Host(vol.port, vol.nqn).admin(commands.ADMIN_KEEP_ALIVE, 0)[0] == 0  # others still served


def test_commands_before_connect_and_to_another_nqn_are_refused(served: tuple[volume.Volume, Path, Path]) -> None:
    vol, _, _ = served
    host = Host(vol.port, "")
    assert host.admin(commands.ADMIN_IDENTIFY, 0, 1, length=4096)[0] == commands.DNR | 0x0C
    with pytest.raises(AssertionError):
        Host(vol.port, volume.nqn_for("vol0000000000000000"))


def test_faults_from_the_fault_file(served: tuple[volume.Volume, Path, Path]) -> None:
    vol, pages_dir, _ = served
    fault = pages_dir / f"{EBS_A.serial}.fault"
    host = Host(vol.port, vol.nqn)
    fault.write_text("status 0x4002\n")
    assert host.admin(commands.ADMIN_GET_LOG_PAGE, 1, 0x03FF00D0, length=4096)[0] == 0x4002
    fault.write_text("hold 0.5\n")
    started = time.monotonic()
    assert host.admin(commands.ADMIN_GET_LOG_PAGE, 1, 0x03FF00D0, length=4096)[0] == 0
    assert time.monotonic() - started >= 0.5
    fault.write_text("drop\n")
    with pytest.raises(ConnectionError):
        host.admin(commands.ADMIN_GET_LOG_PAGE, 1, 0x03FF00D0, length=4096)


def test_a_bad_fault_file_is_ignored_with_a_warning(
    served: tuple[volume.Volume, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    vol, pages_dir, _ = served
    (pages_dir / f"{EBS_A.serial}.fault").write_text("status nonsense\n")
    host = Host(vol.port, vol.nqn)
    assert host.admin(commands.ADMIN_GET_LOG_PAGE, 1, 0x03FF00D0, length=4096)[0] == 0
    assert any("ignoring" in r.getMessage() and ".fault" in r.getMessage() for r in caplog.records)
