"""Listeners: one TCP port per emulated volume (one subsystem NQN each), one thread per connection."""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

from .commands import Controller
from .connection import Connection, Recorder
from .volume import Volume

log = logging.getLogger("nvmetcp")


class Emulator:
    """Serves ``volumes`` on ``address`` until :meth:`stop`."""

    def __init__(self, address: str, volumes: list[Volume], record: str | None = None) -> None:
        self.address = address
        self.volumes = volumes
        self.recorder = Recorder(record)
        self._listeners: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    def start(self) -> None:
        for volume in self.volumes:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.address, volume.port))
            sock.listen(16)
            volume.port = sock.getsockname()[1]  # the one chosen when asked for port 0
            self._listeners.append(sock)
            thread = threading.Thread(target=self._accept, args=(sock, volume), name=f"accept-{volume.serial}")
            thread.daemon = True
            thread.start()
            self._threads.append(thread)

    def _accept(self, listener: socket.socket, volume: Volume) -> None:
        controllers: dict[int, Controller] = {}
        while not self._stopping.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(sock, volume, controllers, self.recorder)
            threading.Thread(target=conn.serve, name=f"queue-{volume.serial}", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        for sock in self._listeners:
            sock.close()


def volumes_from_pages(pages: Path, first_port: int) -> list[Volume]:
    """One volume per ``SERIAL.d0`` file in ``pages``, on consecutive ports."""
    serials = sorted(p.name[: -len(".d0")] for p in pages.glob("*.d0"))
    return [Volume(serial, pages, first_port + i) for i, serial in enumerate(serials)]
