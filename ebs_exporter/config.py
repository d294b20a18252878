"""`ebs-exporter`'s flags, in the Prometheus style, each also read from an environment variable.

Every value is checked at start, wherever it came from: a bad one is a single line on stderr
naming the flag or the variable it was read from, the value and what is wanted, and exit 2.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from nvme_ebs import __version__

from .logs import FORMATS, LEVELS
from .metrics import LatencyBuckets

EXIT_USAGE = 2
PROG = "ebs-exporter"
# A device name of the kernel's shape, or a glob over such names: nvme1n1, nvme2, nvme[1-3]n1, nvme*.
_DEVICE_PATTERN = re.compile(r"nvme[0-9n*?\[\]!-]*")
RESERVED_PATHS = ("/", "/healthz", "/readyz")


class ConfigError(ValueError):
    pass


def parse_listen_address(text: str) -> tuple[str, int]:
    """':8090', '0.0.0.0:8090', '[::1]:8090', 'localhost:0'."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError("want [HOST]:PORT, e.g. :8090")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 3600:
        raise ConfigError("want a number of seconds above 0 (and at most 3600)")
    return value


def _kernel_seconds(text: str) -> float:
    return 0.0 if text.strip() in ("0", "0.0") else _seconds(text)


def _one_of(choices: Sequence[str]) -> Callable[[str], str]:
    def check(text: str) -> str:
        if text not in choices:
            raise ConfigError(f"want one of {', '.join(choices)}")
        return text

    return check


def _directory(text: str) -> str:
    if not os.path.isdir(text):
        raise ConfigError("want an existing directory" if not os.path.exists(text) else "not a directory")
    return text


def _telemetry_path(text: str) -> str:
    if not text.startswith("/") or text in RESERVED_PATHS:
        raise ConfigError(f"want an absolute path other than {', '.join(RESERVED_PATHS)}")
    return text


def device_patterns(text: str) -> list[str]:
    """EBS_DEVICE: device names, paths or globs, comma separated; empty means every volume."""
    patterns = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        name = os.path.basename(entry.rstrip("/"))
        if not _DEVICE_PATTERN.fullmatch(name) or name.count("[") != name.count("]"):
            raise ConfigError(f"{entry!r} is not an NVMe device name or glob (e.g. nvme1n1, /dev/nvme[1-3]n1)")
        patterns.append(entry)
    return patterns


def _volume_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1024:
        raise ConfigError("want a volume count from 1 to 1024")
    return int(text)


def _bins(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise ConfigError("want 1 to 64")
    return int(text)


def _latency_buckets(text: str) -> LatencyBuckets:
    try:
        return LatencyBuckets.parse(text)
    except ValueError as e:
        raise ConfigError(str(e)) from None


@dataclass(frozen=True)
class Option:
    flag: str
    dest: str
    default: str | None
    check: Callable[[str], Any]
    help: str
    env: str | None = ""  # "" = derived from the flag; None = no variable

    @property
    def variable(self) -> str | None:
        if self.env is None:
            return None
        return self.env or "EBS_EXPORTER_" + re.sub(r"[.-]", "_", self.flag.lstrip("-")).upper()


OPTIONS = (
    Option("--web.listen-address", "listen", ":8090", parse_listen_address, "address to listen on"),
    Option("--web.telemetry-path", "path", "/metrics", _telemetry_path, "path of the metrics"),
    Option("--web.config.file", "web_config", "", str, "TLS settings (exporter-toolkit format); off when empty"),
    Option("--path.sysfs", "sysfs", "/sys", _directory, "sysfs mount point, e.g. /host/sys in a container"),
    Option("--path.dev", "dev", "/dev", _directory, "device directory, e.g. /host/dev in a container"),
    Option("--device.timeout", "timeout", "3", _seconds, "seconds a scrape waits for one device"),
    Option(
        "--device.kernel-timeout",
        "kernel_timeout",
        "0",
        _kernel_seconds,
        "seconds after which the kernel aborts a command the device holds, and resets or reconnects "
        "its controller; 0 leaves the kernel's admin timeout",
    ),
    Option(
        "--device",
        "device",
        "",
        device_patterns,
        "only these devices: names, paths or globs, comma separated (default: every EBS and instance-store volume)",
        env="EBS_DEVICE",
    ),
    Option(
        "--collector.latency-buckets",
        "latency_buckets",
        "all",
        _latency_buckets,
        "histogram buckets served: all (one per device bin), coarse (4 bins to a bucket), "
        "none (_sum and _count only), or N adjacent bins to a bucket",
    ),
    Option("--log.level", "log_level", "info", _one_of(tuple(LEVELS)), "debug, info, warn or error"),
    Option("--log.format", "log_format", "logfmt", _one_of(FORMATS), "logfmt or json"),
    Option(
        "--simulate",
        "simulate",
        None,
        _volume_count,
        "serve N simulated volumes instead of reading devices (demo, benchmarks)",
        env=None,
    ),
    Option("--simulate.bins", "simulate_bins", "28", _bins, argparse.SUPPRESS, env=None),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line and exit 2, instead of argparse's usage block."""
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Prometheus exporter for EBS and instance-store NVMe statistics (log page 0xD0). "
        "Every flag can also be set through the environment variable shown; a flag given wins.",
        epilog="Exit status: 0 after SIGTERM or SIGINT, 2 for bad configuration (a flag, a variable, "
        "or an address that cannot be listened on), 1 for any other failure to start.",
    )
    for o in OPTIONS:
        shown = o.help
        if o.help != argparse.SUPPRESS:
            if o.default:
                shown += f" (default {o.default})"
            if o.variable:
                shown += f" [env {o.variable}]"
        metavar = "N" if o.dest == "simulate" else None
        p.add_argument(o.flag, dest=o.dest, default=None, help=shown, metavar=metavar)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str] = os.environ) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    sources: dict[str, str] = {}
    for o in OPTIONS:
        given = getattr(args, o.dest)
        if given is not None:
            text, source = given, o.flag
        elif o.variable and o.variable in environ:
            text, source = environ[o.variable], f"{o.variable} (environment)"
        elif o.default is None:
            continue
        else:
            text, source = o.default, f"{o.flag} (default)"
        sources[o.dest] = source
        try:
            setattr(args, o.dest, o.check(text))
        except ConfigError as e:
            parser.error(f"invalid value {text!r} for {source}: {e}")
    args.tls = None
    if args.web_config:  # imported only when asked for: YAML and its parser cost memory
        from .webconfig import WebConfigError, load_web_config

        try:
            args.tls = load_web_config(args.web_config)
        except WebConfigError as e:
            parser.error(f"{sources['web_config']}: {e}")
    return args
