"""``python -m tests.nvmetcp --pages DIR [--volume SERIAL:PORT ...]``: serve emulated EBS controllers.

Prints one JSON line, ``{"ready": [{"serial", "nqn", "port"}, ...]}``, once every port
listens, then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from .server import Emulator, volumes_from_pages
from .volume import Volume


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.nvmetcp", description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--pages", type=Path, required=True, help="directory of SERIAL.d0 / .id / .fault files")
    parser.add_argument("--volume", action="append", default=[], metavar="SERIAL:PORT", help="a volume to serve")
    parser.add_argument("--port", type=int, default=4430, help="first port when no --volume is given")
    parser.add_argument("--record", help="append every admin command, as delivered, to this JSON-lines file")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="nvmetcp %(levelname)s %(message)s")

    volumes = []
    for spec in args.volume:
        serial, sep, port = spec.rpartition(":")
        if not sep or not port.isdigit():
            parser.error(f"--volume {spec!r}: expected SERIAL:PORT")
        volumes.append(Volume(serial, args.pages, int(port)))
    volumes = volumes or volumes_from_pages(args.pages, args.port)
    if not volumes:
        parser.error(f"--pages {args.pages}: no SERIAL.d0 file and no --volume")

    emulator = Emulator(args.address, volumes, args.record)
    try:
        emulator.start()
    except OSError as exc:
        print(f"nvmetcp: cannot listen on {args.address}: {exc}", file=sys.stderr)
        return 1
    ready = [{"serial": v.serial, "nqn": v.nqn, "port": v.port} for v in volumes]
    print(json.dumps({"ready": ready}), flush=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
