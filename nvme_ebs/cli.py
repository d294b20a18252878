"""nvme-ebs: list the NVMe volumes of a node, show their statistics live, decode page dumps."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import _native, top_view
from ._version import __version__
from .device import DeviceNode
from .discovery import discover
from .errors import NvmeEbsError, PageFormatError
from .layout import MAGIC_EBS, MAGIC_INSTANCE_STORE
from .model import EbsStats, LatencyHistogram, VolumeKind

_US = 1e-6


def _stats_dict(stats: EbsStats) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in dataclasses.fields(stats):
        value = getattr(stats, field.name)
        if isinstance(value, LatencyHistogram):
            value = [dataclasses.asdict(b) for b in value]
        elif field.name == "kind":
            value = value.value
        out[field.name] = value
    return out


def _delta(now: EbsStats, before: EbsStats | None) -> dict[str, int]:
    """Counter values, or their increase since `before` (the queue length stays a gauge)."""
    values: dict[str, int] = {}
    for field in dataclasses.fields(now):
        value = getattr(now, field.name)
        if not isinstance(value, int) or field.name in ("version",):
            continue
        if before is not None and field.name != "volume_queue_length":
            value -= getattr(before, field.name)
        values[field.name] = value
    return values


def _print_histogram(title: str, now: LatencyHistogram, before: LatencyHistogram | None) -> None:
    print(f"  {title} latency histogram (microseconds):")
    previous = before.counts if before is not None and len(before) == len(now) else None
    for i, b in enumerate(now):
        count = b.count if previous is None else (b.count - previous[i]) % (1 << 32)
        upper = "+inf" if i == len(now) - 1 and now.open_ended else str(b.upper_us)
        if count:
            print(f"    [{b.lower_us:>10} - {upper:>10}) {count:>12}")


def _print_stats(device: str, now: EbsStats, before: EbsStats | None, interval: float) -> None:
    heading = f"{device}: {now.kind.value} statistics"
    print(heading + (f", change over {interval:g} s" if before is not None else " since attachment"))
    for name, value in _delta(now, before).items():
        unit = " us" if name.endswith("_us") else ""
        print(f"  {name:<48} {value:>20}{unit}")
    ops = now.total_read_ops + now.total_write_ops
    if before is not None:
        ops -= before.total_read_ops + before.total_write_ops
        print(f"  {'iops':<48} {ops / interval:>20.1f}")
    _print_histogram("read", now.read_io_latency_histogram, before.read_io_latency_histogram if before else None)
    _print_histogram("write", now.write_io_latency_histogram, before.write_io_latency_histogram if before else None)


def cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for d in discover(args.sysfs, args.dev):
        mapping = ""
        if d.kind is not VolumeKind.OTHER:
            try:  # the mapping name needs the identify ioctl: show what we can without it
                mapping = DeviceNode(d.controller_path).identify().block_device_mapping or ""
            except NvmeEbsError:
                mapping = "?"
        rows.append(
            {
                "device": d.block_device or d.controller_path,
                "controller": d.controller_path,
                "kind": d.kind.value,
                "volume_id": d.volume_id or "",
                "mapping": mapping,
                "model": d.model,
                "serial": d.serial,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no NVMe controllers under {args.sysfs}/class/nvme")
        return 0
    print(f"{'DEVICE':<16} {'KIND':<15} {'VOLUME':<22} {'MAPPING':<10} MODEL")
    for r in rows:
        print(f"{r['device']:<16} {r['kind']:<15} {r['volume_id'] or '-':<22} {r['mapping'] or '-':<10} {r['model']}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    device = DeviceNode(args.device)
    before: EbsStats | None = None
    shown = 0
    while True:
        now = device.read_stats()
        if args.json:
            print(json.dumps({"device": args.device, **_stats_dict(now)}))
        elif args.interval is None or before is not None:
            _print_stats(args.device, now, before, args.interval or 0.0)
        if args.interval is None:
            return 0
        if before is not None:
            shown += 1
            if args.count is not None and shown >= args.count:
                return 0
        before = now
        sys.stdout.flush()
        time.sleep(args.interval)


def _identify_hint(data: bytes) -> str:
    """When a file that is not a statistics page reads as an Identify Controller answer, say so."""
    try:
        identity = _native.parse_identify(data)
    except NvmeEbsError:
        return ""
    if not identity.model or not identity.model.isprintable() or not identity.model.isascii():
        return ""
    return f" (this looks like an Identify Controller dump, model {identity.model!r}: decode it with --identify)"


def cmd_decode(args: argparse.Namespace) -> int:
    try:
        data = Path(args.file).read_bytes()
    except OSError as e:
        raise CommandError(args.file, f"cannot read ({e.strerror or e})") from e
    if args.identify:
        if len(data) >= 4 and int.from_bytes(data[:4], "little") in (MAGIC_EBS, MAGIC_INSTANCE_STORE):
            raise CommandError(
                args.file, "a statistics page, not an Identify Controller dump (decode it without --identify)"
            )
        identity = _native.parse_identify(data, args.file)
        print(json.dumps({**dataclasses.asdict(identity), "volume_id": identity.volume_id}, indent=2))
        return 0
    try:
        stats = _native.parse_log_page(data, args.file)
    except PageFormatError as e:
        if e.check != "magic":
            raise
        raise CommandError(args.file, str(e).removeprefix(f"{args.file}: ") + _identify_hint(data)) from e
    if args.json:
        print(json.dumps(_stats_dict(stats), indent=2))
    else:
        _print_stats(args.file, stats, None, 0.0)
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    return top_view.run(args.sysfs, args.dev, args.interval, args.count, sys.stdout)


class CommandError(Exception):
    """A failure the command reports as `nvme-ebs: SUBJECT: what happened (cause)`."""

    def __init__(self, subject: str, text: str) -> None:
        super().__init__(f"{subject}: {text}")


def error_line(e: BaseException, subject: str) -> str:
    """One line naming the device or file once: nvme_ebs's errors already start with it."""
    if isinstance(e, OSError) and not isinstance(e, NvmeEbsError):
        name = e.filename if e.filename is not None else subject
        code = errno.errorcode.get(e.errno, e.errno) if e.errno is not None else "?"
        return f"nvme-ebs: {name}: {e.strerror or type(e).__name__} (errno {code})"
    text = str(e) or type(e).__name__
    if isinstance(e, CommandError) or (isinstance(e, NvmeEbsError) and e.device and text.startswith(f"{e.device}: ")):
        return f"nvme-ebs: {text}"
    return f"nvme-ebs: {subject}: {text}"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line and exit 2, instead of argparse's usage block: `--flag: value (what is wanted)`."""
        message = re.sub(r"^argument ([^:]+): ", r"\1: ", message)
        self.exit(2, f"nvme-ebs: {message}; see {self.prog} --help\n")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"invalid value {text!r} (want a positive number of seconds)")
    return value


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) == 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r} (want a whole number, 1 or more)")
    return int(text)


def _directory(text: str) -> str:
    try:
        is_dir = os.path.isdir(text)
        exists = is_dir or os.path.lexists(text)
    except ValueError:  # a NUL byte
        is_dir = exists = False
    if not is_dir:
        cause = "not a directory" if exists else "no such directory"
        raise argparse.ArgumentTypeError(f"invalid value {text!r} ({cause}; want an existing directory)")
    return text


def _path_flags(p: argparse.ArgumentParser) -> None:
    """The exporter's path flags, with the same names and defaults."""
    p.add_argument(
        "--path.sysfs",
        dest="sysfs",
        metavar="DIR",
        type=_directory,
        default="/sys",
        help="sysfs mount point, e.g. /host/sys in a container (default /sys)",
    )
    p.add_argument(
        "--path.dev",
        dest="dev",
        metavar="DIR",
        type=_directory,
        default="/dev",
        help="device directory, e.g. /host/dev in a container (default /dev)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nvme-ebs", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="one of:")
    p = sub.add_parser("list", help="NVMe controllers found in sysfs, with kind and volume id")
    _path_flags(p)
    p.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    p.set_defaults(func=cmd_list, subject=lambda args: args.sysfs)
    p = sub.add_parser("stats", help="a volume's statistics page (needs CAP_SYS_ADMIN)")
    p.add_argument("device", help="the volume's device node, e.g. /dev/nvme1n1 or /dev/nvme1")
    p.add_argument("--json", action="store_true", help="one JSON object per reading")
    p.add_argument("--interval", type=_seconds, metavar="SECONDS", help="seconds between readings; prints the change")
    p.add_argument(
        "--count", type=_count, metavar="N", help="with --interval: stop after N changes (default: until Ctrl-C)"
    )
    p.set_defaults(func=cmd_stats, subject=lambda args: args.device)
    p = sub.add_parser("decode", help="decode a raw page dump (nvme get-log ... -b > FILE)")
    p.add_argument("file", help="a statistics page (log 0xD0) dump, or with --identify an Identify Controller one")
    p.add_argument("--json", action="store_true", help="JSON instead of text")
    p.add_argument("--identify", action="store_true", help="the file is an Identify Controller dump")
    p.set_defaults(func=cmd_decode, subject=lambda args: args.file)
    p = sub.add_parser(
        "top",
        help="a live view of every volume: IOPS, MB/s, latency, queue, limits exceeded",
        description=top_view.HELP,
    )
    _path_flags(p)
    p.add_argument(
        "--interval", type=_seconds, metavar="SECONDS", default=1.0, help="seconds between refreshes (default 1)"
    )
    p.add_argument("--count", type=_count, metavar="N", help="stop after N refreshes (default: until Ctrl-C)")
    p.set_defaults(func=cmd_top, subject=lambda args: args.sysfs)
    return parser


def _quiet_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null, so the interpreter's last flush is silent."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return status
    except BrokenPipeError:  # the reader went away (| head): the end of the output, as coreutils see it
        _quiet_stdout()
        return 0
    except KeyboardInterrupt:
        return 130
    except (NvmeEbsError, CommandError, OSError, ValueError) as e:
        print(error_line(e, args.subject(args)), file=sys.stderr)
        return 1
