"""NVMe/TCP PDUs as the controller side reads and writes them (NVMe/TCP transport 1.0).

Every PDU starts with an 8-byte common header (type, flags, hlen, pdo, plen). This target
negotiates no header or data digests and a controller PDU data alignment (CPDA) of 0, so
data always starts right after the header: ``pdo == hlen``. Anything else from the host is
a :class:`MalformedPdu`, which closes the connection.
"""

from __future__ import annotations

import dataclasses
import socket
import struct

ICREQ, ICRESP, H2C_TERM, C2H_TERM, CMD, RSP, H2C_DATA, C2H_DATA, R2T = 0, 1, 2, 3, 4, 5, 6, 7, 9
FLAG_HDGST, FLAG_DDGST, FLAG_DATA_LAST = 0x01, 0x02, 0x04

COMMON = struct.Struct("<BBBBI")  # type flags hlen pdo plen
ICREQ_BODY = struct.Struct("<HBBI")  # pfv hpda digest maxr2t (then 112 reserved bytes)
ICRESP_BODY = struct.Struct("<HBBI112x")  # pfv cpda digest maxdata
DATA_BODY = struct.Struct("<HHII4x")  # command_id ttag offset length (C2HData, H2CData, R2T)
CQE = struct.Struct("<QHHHH")  # result sq_head sq_id command_id status(<<1 | phase)
TERM_BODY = struct.Struct("<HI10x")  # fes fei (then reserved up to the 24-byte header)

ICREQ_LEN = 128
CMD_HLEN = 8 + 64
DATA_HLEN = COMMON.size + DATA_BODY.size
RSP_LEN = COMMON.size + CQE.size

MAX_H2C_DATA = 128 * 1024  # MAXH2CDATA in ICResp: the largest H2CData PDU the host may send
MAX_IN_CAPSULE = 8192  # admin capsules (NVME_TCP_ADMIN_CCSZ) and our IOCCSZ allow this much inline
FES_INVALID_HEADER = 0x01
FES_SEQUENCE = 0x02

_HEADER_LENGTHS = {ICREQ: ICREQ_LEN, CMD: CMD_HLEN, H2C_DATA: DATA_HLEN, H2C_TERM: 24}
_MAX_DATA = {ICREQ: 0, CMD: MAX_IN_CAPSULE, H2C_DATA: MAX_H2C_DATA, H2C_TERM: 128}


class MalformedPdu(Exception):
    """The host sent something that is not a valid PDU here; ``fes`` is the Term Req code."""

    def __init__(self, reason: str, fes: int = FES_INVALID_HEADER) -> None:
        super().__init__(reason)
        self.fes = fes


class ConnectionClosed(Exception):
    """The host closed the connection (or it broke) at a PDU boundary or inside one."""


@dataclasses.dataclass(frozen=True)
class Pdu:
    type: int
    flags: int
    header: bytes  # the whole header, common part included
    data: bytes


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        try:
            chunk = sock.recv(min(n, 1 << 20))
        except OSError as exc:
            raise ConnectionClosed(str(exc)) from exc
        if not chunk:
            raise ConnectionClosed("end of stream")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_pdu(sock: socket.socket) -> Pdu:
    """One whole PDU from the host, checked against what this target negotiated."""
    common = _recv_exactly(sock, COMMON.size)
    pdu_type, flags, hlen, pdo, plen = COMMON.unpack(common)
    expected = _HEADER_LENGTHS.get(pdu_type)
    if expected is None:
        raise MalformedPdu(f"PDU type {pdu_type:#x} is not one a host sends")
    if hlen != expected:
        raise MalformedPdu(f"PDU type {pdu_type:#x} with hlen {hlen} (expected {expected})")
    if flags & (FLAG_HDGST | FLAG_DDGST):
        raise MalformedPdu(f"PDU type {pdu_type:#x} carries a digest that was not negotiated")
    if plen < hlen or plen - hlen > _MAX_DATA[pdu_type]:
        raise MalformedPdu(f"PDU type {pdu_type:#x} with plen {plen} (hlen {hlen})")
    if plen > hlen and pdo != hlen and pdu_type != H2C_TERM:
        raise MalformedPdu(f"PDU type {pdu_type:#x} with data offset {pdo} (expected {hlen})")
    rest = _recv_exactly(sock, plen - COMMON.size)
    header = common + rest[: hlen - COMMON.size]
    return Pdu(pdu_type, flags, header, rest[hlen - COMMON.size :])


def icresp() -> bytes:
    return COMMON.pack(ICRESP, 0, ICREQ_LEN, 0, ICREQ_LEN) + ICRESP_BODY.pack(0, 0, 0, MAX_H2C_DATA)


def response(command_id: int, status: int, result: int = 0, sq_head: int = 0, sq_id: int = 0) -> bytes:
    """A response capsule; ``status`` is the NVMe status field without the phase bit."""
    return COMMON.pack(RSP, 0, RSP_LEN, 0, RSP_LEN) + CQE.pack(result, sq_head, sq_id, command_id, status << 1)


def c2h_data(command_id: int, data: bytes) -> bytes:
    return (
        COMMON.pack(C2H_DATA, FLAG_DATA_LAST, DATA_HLEN, DATA_HLEN, DATA_HLEN + len(data))
        + DATA_BODY.pack(command_id, 0, 0, len(data))
        + data
    )


def r2t(command_id: int, ttag: int, offset: int, length: int) -> bytes:
    return COMMON.pack(R2T, 0, DATA_HLEN, 0, DATA_HLEN) + DATA_BODY.pack(command_id, ttag, offset, length)


def c2h_term(fes: int) -> bytes:
    return COMMON.pack(C2H_TERM, 0, 24, 0, 24) + TERM_BODY.pack(fes, 0)
