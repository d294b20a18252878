"""`ebs-exporter`: serve the node's EBS and instance-store statistics until SIGTERM."""

from __future__ import annotations

import argparse
import errno
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from . import __version__, build_info, logs
from .app import App
from .collector import Collector
from .config import EXIT_USAGE, PROG, parse_args
from .http_server import HttpServer
from .privileges import keep_only_sys_admin
from .selection import Selector
from .sources import HostSource, Source

log = logging.getLogger("ebs_exporter")
# glibc's malloc, unless the environment says otherwise: two arenas for the few threads, and
# blocks larger than a body's pieces mapped on their own, so they go back to the system when
# freed instead of staying in some thread's arena.
MALLOC_ARENAS = 2
MALLOC_MMAP_THRESHOLD = 256 * 1024


# A scrape of 128 volumes makes some ten thousand short-lived containers, freed by reference
# counting: at the default 700, the collector would run over the young ones a dozen times a scrape.
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """What is loaded at start lives as long as the process: out of the collector's sight."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def tune_malloc() -> None:
    if not {"MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_"} & os.environ.keys():
        from nvme_ebs._native import tune_malloc as tune

        if not tune(MALLOC_ARENAS, MALLOC_MMAP_THRESHOLD):
            log.debug("the C library kept its own malloc settings")


def make_source(args: argparse.Namespace) -> Source:
    if args.simulate:
        from .simulate import SimulatedSource

        return SimulatedSource(args.simulate, args.simulate_bins)
    if args.kernel_timeout:  # off by default: the kernel resets a controller whose command it aborts
        from nvme_ebs import set_command_timeout

        set_command_timeout(args.kernel_timeout)
    return HostSource(args.sysfs, args.dev)


def _listen_error(host: str, port: int, e: OSError) -> str:
    where = f"{host or '*'}:{port}"
    # asyncio's messages carry the address as a Python tuple: the errno's own text says it plainly.
    cause = os.strerror(e.errno) if e.errno else str(e) or type(e).__name__
    if e.errno == errno.EADDRINUSE:
        cause += " (another process listens there: choose another --web.listen-address)"
    return f"{PROG}: cannot listen on {where} (--web.listen-address): {cause}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    tune_malloc()  # before the first thread starts
    log.info("privileges: %s", keep_only_sys_admin())  # first, while this is the only thread
    collector = Collector(make_source(args), Selector(args.device), device_timeout=args.timeout)
    app = App(collector, args.path, build_info(), buckets=args.latency_buckets)
    host, port = args.listen
    server = HttpServer(app, host, port, tls=args.tls)
    try:
        server.start()
    except OSError as e:
        print(_listen_error(host, port, e), file=sys.stderr)
        collector.close()
        return EXIT_USAGE

    tune_gc()  # once everything is set up: the server, the collector, prometheus_client's registry
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    what = f"{args.simulate} simulated volumes" if args.simulate else f"devices under {args.sysfs}"
    scheme = "https" if args.tls else "http"
    log.info("serving %s on %s:%d%s (%s, version %s)", what, host or "*", server.port, args.path, scheme, __version__)
    # With a timeout: a signal delivered to another thread only runs its Python handler here,
    # in the main thread, once this wait returns.
    while not stop.wait(1.0):
        pass
    log.info("shutting down")
    server.stop()
    collector.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
