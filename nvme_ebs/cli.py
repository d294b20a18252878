"""`nvme-ebs`: list NVMe volumes, show their statistics, decode page dumps. For people."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import _native
from .device import DeviceNode
from .discovery import discover
from .errors import NvmeEbsError
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
            if args.count and shown >= args.count:
                return 0
        before = now
        sys.stdout.flush()
        time.sleep(args.interval)


def cmd_decode(args: argparse.Namespace) -> int:
    data = Path(args.file).read_bytes()
    if args.identify:
        identity = _native.parse_identify(data, args.file)
        print(json.dumps({**dataclasses.asdict(identity), "volume_id": identity.volume_id}, indent=2))
        return 0
    stats = _native.parse_log_page(data, args.file)
    if args.json:
        print(json.dumps(_stats_dict(stats), indent=2))
    else:
        _print_stats(args.file, stats, None, 0.0)
    return 0


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nvme-ebs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="NVMe controllers found in sysfs, with kind and volume id")
    p.add_argument("--sysfs", default="/sys", help="sysfs mount (default /sys)")
    p.add_argument("--dev", default="/dev", help="device directory (default /dev)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("stats", help="a volume's statistics page (needs CAP_SYS_ADMIN)")
    p.add_argument("device", help="e.g. /dev/nvme1n1 or /dev/nvme1")
    p.add_argument("--json", action="store_true", help="one JSON object per reading")
    p.add_argument("--interval", type=_positive, help="seconds between readings; prints the change")
    p.add_argument("--count", type=int, default=0, help="with --interval: stop after N changes")
    p.set_defaults(func=cmd_stats)
    p = sub.add_parser("decode", help="decode a raw page dump (nvme get-log ... -b > FILE)")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--identify", action="store_true", help="the file is an Identify Controller dump")
    p.set_defaults(func=cmd_decode)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (NvmeEbsError, OSError, ValueError) as e:
        print(f"nvme-ebs: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into head: not an error worth a traceback
        return 0
