"""Loaded into an exporter process by the soak test only (see reliability.PROBED_EXPORTER): on
SIGUSR1 it writes one line to stderr with what /proc cannot tell apart from allocator noise:

    heap-probe blocks=<n> malloc_in_use=<bytes> threads=<name>,<name>,...

`blocks` is sys.getallocatedblocks() after a full collection (every live Python allocation,
small or large), `malloc_in_use` glibc's bytes in use over all arenas (mallinfo2: heap chunks
in use plus mmapped chunks; -1 elsewhere), `threads` the names of the Python threads. The line
is written from the main thread, which the signal interrupts in its wait for SIGTERM.
"""

from __future__ import annotations

import ctypes
import gc
import signal
import sys
import threading
from types import FrameType

PREFIX = "heap-probe "


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def _malloc_in_use() -> int:
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallinfo2"):
        return -1
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def _report(signum: int, frame: FrameType | None) -> None:
    gc.collect()
    names = ",".join(sorted(t.name for t in threading.enumerate()))
    line = f"{PREFIX}blocks={sys.getallocatedblocks()} malloc_in_use={_malloc_in_use()} threads={names}\n"
    sys.stderr.write(line)
    sys.stderr.flush()


def install() -> None:
    signal.signal(signal.SIGUSR1, _report)
