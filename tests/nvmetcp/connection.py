"""One NVMe/TCP connection (one queue) from the Linux host, served on its own thread.

The sequence is the host driver's: ICReq, then a Fabrics Connect (queue 0 creates a
controller, the I/O queues name it by its controller id), then commands. Data the host
sends comes in the capsule or, when it does not fit, after an R2T as H2CData PDUs; data
the host reads goes back in one C2HData PDU before the response capsule. Answers may be
sent later (held commands, asynchronous events) from other threads, hence the send lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import struct
import threading
import time
from typing import Any, Callable

from . import commands, pdu
from .commands import Answer, Command, Controller
from .volume import Volume

log = logging.getLogger("nvmetcp")

COMMAND_SEQUENCE_ERROR = 0x0C


class Recorder:
    """Appends one JSON line per admin command, as delivered, to a file (or nowhere)."""

    def __init__(self, path: str | None) -> None:
        self._file = open(path, "a", buffering=1) if path else None  # noqa: SIM115 - lives as long as the process
        self._lock = threading.Lock()

    def write(self, entry: dict[str, Any]) -> None:
        if self._file is None:
            return
        line = json.dumps({"t": round(time.time(), 3), **entry}, sort_keys=True)
        with self._lock:
            self._file.write(line + "\n")


class Connection:
    def __init__(
        self,
        sock: socket.socket,
        volume: Volume,
        controllers: dict[int, Controller],
        recorder: Recorder,
    ) -> None:
        self.sock = sock
        self.volume = volume
        self.controllers = controllers  # shared by the volume's connections: cntlid -> controller
        self.recorder = recorder
        self.ctrl: Controller | None = None
        self.qid = -1
        self.sq_size = 1
        self.sq_head = 0
        self.send_lock = threading.Lock()
        self.pending: dict[int, tuple[Command, bytearray]] = {}  # ttag -> command awaiting H2CData
        self.next_ttag = 0
        self.closed = threading.Event()

    # ------------------------------------------------------------------ wire

    def send(self, data: bytes) -> None:
        with self.send_lock:
            if self.closed.is_set():
                return
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed.set()

    def close(self) -> None:
        self.closed.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def linger(self) -> None:
        """Half-close and drain what the host still sends, so the Term Req is not lost to a reset."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(1.0)
            while self.sock.recv(65536):
                pass

    def serve(self) -> None:
        peer = f"{self.volume.serial} port {self.volume.port}"
        try:
            first = pdu.read_pdu(self.sock)
            if first.type != pdu.ICREQ:
                raise pdu.MalformedPdu(f"first PDU is type {first.type:#x}, not ICReq", pdu.FES_SEQUENCE)
            self.send(pdu.icresp())
            while not self.closed.is_set():
                self.dispatch(pdu.read_pdu(self.sock))
        except pdu.MalformedPdu as exc:
            log.warning("%s: malformed PDU, closing the connection: %s", peer, exc)
            self.recorder.write({"serial": self.volume.serial, "event": "malformed", "reason": str(exc)})
            self.send(pdu.c2h_term(exc.fes))
            self.linger()
        except pdu.ConnectionClosed:
            log.debug("%s: queue %d closed by the host", peer, self.qid)
        finally:
            self.close()

    def dispatch(self, unit: pdu.Pdu) -> None:
        if unit.type == pdu.CMD:
            cmd = Command.parse(unit.header[8:72])
            if cmd.host_to_controller() and cmd.sgl_length and not unit.data:
                self.request_data(cmd)
            elif unit.data and len(unit.data) != cmd.sgl_length:
                raise pdu.MalformedPdu(f"{len(unit.data)} bytes in a capsule whose SGL says {cmd.sgl_length}")
            else:
                self.run(cmd, unit.data)
        elif unit.type == pdu.H2C_DATA:
            self.receive_data(unit)
        elif unit.type == pdu.H2C_TERM:
            raise pdu.ConnectionClosed("host sent H2CTermReq")
        else:
            raise pdu.MalformedPdu(f"PDU type {unit.type:#x} after the connection was initialised", pdu.FES_SEQUENCE)

    def request_data(self, cmd: Command) -> None:
        ttag = self.next_ttag
        self.next_ttag = (self.next_ttag + 1) & 0xFFFF
        self.pending[ttag] = (cmd, bytearray())
        self.send(pdu.r2t(cmd.cid, ttag, 0, cmd.sgl_length))

    def receive_data(self, unit: pdu.Pdu) -> None:
        cid, ttag, offset, length = pdu.DATA_BODY.unpack_from(unit.header, pdu.COMMON.size)
        entry = self.pending.get(ttag)
        if entry is None or entry[0].cid != cid:
            raise pdu.MalformedPdu(f"H2CData for unknown transfer tag {ttag} / command {cid:#x}")
        cmd, buf = entry
        if offset != len(buf) or length != len(unit.data) or offset + length > cmd.sgl_length:
            raise pdu.MalformedPdu(f"H2CData at {offset}+{length} for a {cmd.sgl_length}-byte transfer")
        buf += unit.data
        if len(buf) == cmd.sgl_length:
            del self.pending[ttag]
            self.run(cmd, bytes(buf))

    # ------------------------------------------------------------------ commands

    def run(self, cmd: Command, data: bytes) -> None:
        is_connect = cmd.opcode == commands.FABRICS and cmd.fctype == commands.FCTYPE_CONNECT
        qid = struct.unpack_from("<H", cmd.raw, 42)[0] if is_connect and self.qid < 0 else self.qid
        if qid == 0:  # the admin queue's commands, Connect included
            self.recorder.write({"serial": self.volume.serial, "qid": 0, **cmd.record()})
        if is_connect:
            answer = self.connect(cmd, data)
        elif self.ctrl is None:
            answer = Answer(commands.DNR | COMMAND_SEQUENCE_ERROR)
        elif self.qid == 0:
            answer = commands.admin(self.ctrl, cmd)
        else:
            answer = commands.io(self.ctrl, cmd, data)
        self.answer(cmd, answer)

    def answer(self, cmd: Command, answer: Answer) -> None:
        if answer.drop:
            log.info("%s: dropping the connection in the middle of command %#x", self.volume.serial, cmd.opcode)
            self.close()
            return
        self.sq_head = (self.sq_head + 1) % self.sq_size
        reply = b""
        if answer.data and not cmd.host_to_controller():
            reply = pdu.c2h_data(cmd.cid, answer.data[: cmd.sgl_length])
        reply += pdu.response(cmd.cid, answer.status, answer.result, self.sq_head, max(self.qid, 0))
        if answer.hold is None:
            self.send(reply)
        elif math.isfinite(answer.hold):
            self.later(answer.hold, lambda: self.send(reply))
        # an infinite hold (an event that never happens) is dropped with the connection

    def later(self, seconds: float, action: Callable[[], None]) -> None:
        timer = threading.Timer(seconds, action)
        timer.daemon = True
        timer.start()

    def connect(self, cmd: Command, data: bytes) -> Answer:
        qid, sqsize = struct.unpack_from("<HH", cmd.raw, 42)
        if len(data) < 1024 or self.ctrl is not None:
            return Answer(commands.CONNECT_INVALID_PARAMETERS)
        cntlid = struct.unpack_from("<H", data, 16)[0]
        subnqn = data[256:512].split(b"\0", 1)[0].decode("ascii", "replace")
        if subnqn != self.volume.nqn:
            log.warning("%s: connect to %r refused", self.volume.serial, subnqn)
            return Answer(commands.CONNECT_INVALID_PARAMETERS, result=(256 << 16) | 1)  # IATTR data, IPO subnqn
        if qid == 0:
            ctrl = Controller(self.volume)
            self.controllers[ctrl.cntlid] = ctrl
        elif cntlid in self.controllers:
            ctrl = self.controllers[cntlid]
        else:
            return Answer(commands.CONNECT_INVALID_PARAMETERS, result=(16 << 16) | 1)
        self.ctrl, self.qid, self.sq_size = ctrl, qid, sqsize + 1
        log.info("%s: queue %d connected to controller %d", self.volume.serial, qid, ctrl.cntlid)
        return Answer(result=ctrl.cntlid)
