"""`ebs-exporter`: flags in the Prometheus style, each also read from an environment variable."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from . import __version__
from .app import App
from .collector import Collector, Selector
from .http_server import HttpServer
from .privileges import keep_only_sys_admin
from .sources import HostSource, Source

log = logging.getLogger("ebs_exporter")
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line and exit 2, instead of argparse's usage block."""
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def env_name(flag: str) -> str:
    """--web.listen-address -> EBS_EXPORTER_WEB_LISTEN_ADDRESS"""
    return "EBS_EXPORTER_" + flag.lstrip("-").replace(".", "_").replace("-", "_").upper()


def parse_listen_address(text: str) -> tuple[str, int]:
    """':8090', '0.0.0.0:8090', '[::1]:8090', 'localhost:0'."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid listen address {text!r}: want [HOST]:PORT, e.g. :8090")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: want a positive number of seconds")
    return value


def _volume_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1024:
        raise argparse.ArgumentTypeError(f"invalid volume count {text!r}: want 1 to 1024")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ebs-exporter",
        description="Prometheus exporter for EBS and instance-store NVMe statistics (log page 0xD0). "
        "Every flag can also be set through the environment variable shown.",
    )

    def flag(name: str, help_text: str, **kw: object) -> None:
        env = env_name(name)
        default = os.environ.get(env, kw.pop("default", None))
        p.add_argument(name, default=default, help=f"{help_text} [env {env}]", **kw)  # type: ignore[arg-type]

    flag("--web.listen-address", "address to listen on (default :8090)", default=":8090", dest="listen")
    flag("--web.telemetry-path", "path of the metrics (default /metrics)", default="/metrics", dest="path")
    flag("--path.sysfs", "sysfs mount point, e.g. /host/sys in a container", default="/sys", dest="sysfs")
    flag("--path.dev", "device directory, e.g. /host/dev in a container", default="/dev", dest="dev")
    flag("--log.level", "debug, info, warn or error (default info)", default="info", dest="log_level")
    flag("--web.config.file", "TLS settings (exporter-toolkit format); off when empty", default="", dest="web_config")
    flag("--device.timeout", "seconds a scrape waits for one device (default 3)", default="3", dest="timeout")
    p.add_argument(
        "--device",
        default=os.environ.get("EBS_DEVICE", ""),
        help="only these devices: paths or globs, comma separated (default: every EBS and "
        "instance-store volume found) [env EBS_DEVICE]",
    )
    p.add_argument(
        "--simulate",
        metavar="N",
        type=_volume_count,
        help="serve N simulated volumes instead of reading devices (demo, benchmarks)",
    )
    p.add_argument("--simulate.bins", dest="simulate_bins", type=int, default=28, help=argparse.SUPPRESS)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:  # defaults from the environment bypass argparse's type checks: check them here
        args.listen = parse_listen_address(args.listen)
        args.timeout = _positive_float(args.timeout)
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    if args.log_level not in LOG_LEVELS:
        parser.error(f"invalid log level {args.log_level!r}: want one of {', '.join(LOG_LEVELS)}")
    if not args.path.startswith("/") or args.path in ("/", "/healthz"):
        parser.error(f"invalid telemetry path {args.path!r}: want an absolute path other than / and /healthz")
    if not 1 <= args.simulate_bins <= 64:
        parser.error("--simulate.bins must be 1 to 64")
    args.tls = None
    if args.web_config:  # imported only when asked for: YAML and its parser cost memory
        from .webconfig import WebConfigError, load_web_config

        try:
            args.tls = load_web_config(args.web_config)
        except WebConfigError as e:
            parser.error(f"--web.config.file: {e}")
    return args


def make_source(args: argparse.Namespace) -> Source:
    if args.simulate:
        from .simulate import SimulatedSource

        return SimulatedSource(args.simulate, args.simulate_bins)
    from nvme_ebs import set_command_timeout

    # The kernel aborts a command the device holds, so a read thread is not parked for 60 s.
    set_command_timeout(args.timeout)
    return HostSource(args.sysfs, args.dev)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=LOG_LEVELS[args.log_level],
        format="time=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s",
        stream=sys.stderr,
    )
    log.info("privileges: %s", keep_only_sys_admin())  # first, while this is the only thread
    selector = Selector(args.device.split(",")) if args.device else Selector()
    collector = Collector(make_source(args), selector, device_timeout=args.timeout)
    app = App(collector, args.path, __version__)
    host, port = args.listen
    server = HttpServer(app, host, port, tls=args.tls)
    try:
        server.start()
    except OSError as e:
        print(f"ebs-exporter: cannot listen on {host or '*'}:{port}: {e.strerror or e}", file=sys.stderr)
        return 1

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
